"""`otelgw retention show | set | unset | apply` (docs/privacy.md, "Retention").

Like `otelgw keys`, it opens the store itself: not while an embedded (chDB) gateway holds the
same path; against a ClickHouse server it runs any time, and a running gateway's API sees the
change at once (the TTLs live in the tables, not in the gateway).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec


def _days(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from exc


def add_command(command: Any) -> None:
    """Register the subcommand; `command(name, help)` returns its argparse parser."""
    cmd = command("retention", "how long content, span detail and numbers are kept, per project (the store must not "
                               "be in use by a running embedded gateway)")
    sub = cmd.add_subparsers(dest="retention_command", required=True)
    show = sub.add_parser("show", help="print the defaults and every project's own policy")
    show.add_argument("--json", action="store_true", help="one JSON object")
    put = sub.add_parser("set", help="set a project's policy ('*': the defaults); omitted kinds keep their value")
    put.add_argument("--project", required=True, help="the project id, or '*' for the defaults")
    put.add_argument("--content-days", type=_days, help="messages, previews, attributes, span events, log bodies")
    put.add_argument("--numbers-days", type=_days, help="inference rows, feedback, metric points, analytics rollups")
    put.add_argument("--spans-days", type=_days, help="spans, logs and span tag names")
    unset = sub.add_parser("unset", help="drop a project's own policy: it follows the defaults again ('*': back to "
                                         "the built-in defaults)")
    unset.add_argument("--project", required=True)
    sub.add_parser("apply", help="re-write every table's TTL from the stored policies")


def _line(name: str, policy: Any) -> str:
    return f"{name}\t{policy.content_days}\t{policy.numbers_days}\t{policy.spans_days}"


def run(args: argparse.Namespace, cfg: Any) -> int:
    from otelgw.governance.retention import InvalidPolicy, RetentionStore, with_changes
    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.cluster import migrate_store

    clients = ClientFactory(DSN(cfg.clickhouse_dsn))
    try:
        client = clients.get()
        migrate_store(client, cfg.clickhouse_cluster or None)
        store = RetentionStore(client, cluster=cfg.clickhouse_cluster or None)
        command = args.retention_command
        if command == "show":
            settings = store.get_all()
            if args.json:
                print(msgspec.json.encode({"defaults": settings.defaults, "projects": settings.projects}).decode())
            else:
                print("project\tcontent_days\tnumbers_days\tspans_days")
                print(_line("* (defaults)", settings.defaults))
                for policy in settings.projects:
                    print(_line(policy.project, policy))
        elif command == "set":
            days = {"content_days": args.content_days, "numbers_days": args.numbers_days,
                    "spans_days": args.spans_days}
            if all(v is None for v in days.values()):
                print("otelgw: give at least one of --content-days, --numbers-days, --spans-days", file=sys.stderr)
                return 2
            policy = with_changes(store.get(args.project), **days)
            try:
                stored = store.set(policy, by="cli")
            except InvalidPolicy as exc:
                print(f"otelgw: {exc}", file=sys.stderr)
                return 2
            print(_line(stored.project, stored))
        elif command == "unset":
            if not store.unset(args.project, by="cli"):
                print(f"otelgw: project {args.project!r} has no policy of its own", file=sys.stderr)
                return 1
            print(_line(args.project, store.get(args.project)))
        else:
            tables = store.apply()
            print("applied to: " + ", ".join(tables))
        return 0
    finally:
        clients.close()
