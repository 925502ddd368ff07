"""`otelgw audit`: read the audit log from the store (docs/privacy.md), newest first.

Like `otelgw keys`, it opens the store itself: not while an embedded (chDB) gateway holds the
same path; against a ClickHouse server it runs any time. Rows are tab-separated:
time, action, result, key_id, role, project, target, client, detail ("-" for empty), or one JSON
object per line with --json.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec


def add_command(command: Any) -> None:
    """Register the subcommand; `command(name, help)` returns its argparse parser."""
    cmd = command("audit", "read the audit log, newest first (the store must not be in use by a running "
                           "embedded gateway)")
    cmd.add_argument("--from", dest="from_date", help="from this time (ISO 8601 or unix seconds)")
    cmd.add_argument("--to", dest="to_date", help="before this time (ISO 8601 or unix seconds)")
    cmd.add_argument("--action", action="append", default=[], help="only this action (repeatable, or a,b)")
    cmd.add_argument("--key-id", default="", help="only events of this key id")
    cmd.add_argument("--project", default="", help="only events of this project")
    cmd.add_argument("--result", default="", help="only this result (ok, unauthorized, forbidden, ...)")
    cmd.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    cmd.add_argument("--offset", type=int, default=0, help="skip this many rows first")
    cmd.add_argument("--json", action="store_true", help="one JSON object per line")


def _time_ns(value: str | None, name: str) -> int | None:
    from otelgw.api.common import ApiError, parse_time_ns

    if not value:
        return None
    try:
        return parse_time_ns(value, name)
    except ApiError as exc:
        raise ValueError(exc.message) from exc


def run(args: argparse.Namespace, cfg: Any) -> int:
    from otelgw.api.common import rfc3339_ns
    from otelgw.governance.audit import AuditQuery, query_sql
    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.cluster import migrate_store

    try:
        query = AuditQuery(from_ns=_time_ns(args.from_date, "--from"), to_ns=_time_ns(args.to_date, "--to"),
                           actions=sorted({a.strip() for v in args.action for a in v.split(",") if a.strip()}),
                           key_id=args.key_id, project=args.project, result=args.result, limit=args.limit,
                           offset=args.offset)
    except ValueError as exc:
        print(f"otelgw: {exc}", file=sys.stderr)
        return 2
    if args.limit < 1 or args.offset < 0:
        print("otelgw: --limit must be positive and --offset not negative", file=sys.stderr)
        return 2
    clients = ClientFactory(DSN(cfg.clickhouse_dsn))
    try:
        client = clients.get()
        migrate_store(client, cfg.clickhouse_cluster or None)
        sql, _, params = query_sql(query)
        rows = list(client.query(sql, parameters=params).named_results())
    finally:
        clients.close()
    out = sys.stdout
    for row in rows:
        record = {"time": rfc3339_ns(row["time_ns"]), "action": row["action"], "result": row["result"],
                  "key_id": row["key_id"], "role": row["role"], "project": row["project"], "target": row["target"],
                  "client": row["client"], "detail": row["detail"]}
        if args.json:
            out.write(msgspec.json.encode(record).decode() + "\n")
        else:
            out.write("\t".join(_cell(v) for v in record.values()) + "\n")
    return 0


def _cell(value: str) -> str:
    return (value or "-").replace("\t", " ").replace("\n", " ")
