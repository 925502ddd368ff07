"""otelgw serve | migrate | keys | seed | retention | data | audit | version."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from otelgw import __version__
from otelgw.config import ConfigError, load_config
from otelgw.governance import audit_cmd, data_cmd, retention_cmd

# Commands that live in their own module: name -> module with add_command() and run().
_COMMAND_MODULES = {"retention": retention_cmd, "data": data_cmd, "audit": audit_cmd}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelgw", description="OTLP ingestion gateway for LLM observability")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", "-c", help="TOML configuration file (OTELGW_* variables override it)")
        return cmd

    command("serve", "run the gateway (OTLP gRPC + HTTP receivers and the query API)")
    migrate = command("migrate", "apply pending ClickHouse migrations and exit")
    migrate.add_argument("--cluster", help="the ON CLUSTER form for a ClickHouse cluster of this name "
                                           "(Replicated local tables + Distributed tables; docs/scaling.md)")
    migrate.add_argument("--print", action="store_true", dest="print_only",
                         help="with --cluster: print the statements instead of running them")
    migrate.add_argument("--check", action="store_true",
                         help="apply nothing; exit 0 if the schema is current, 3 if migrations are pending")
    migrate.add_argument("--wait", type=float, metavar="SECONDS",
                         help="apply nothing; wait until the schema is current (another process migrates), "
                              "exit 3 if it is not within SECONDS (an init container's job)")
    migrate.add_argument("--require-api-key", action="store_true",
                         help="with --check/--wait: an active API key must exist too")
    keys = command("keys", "manage API keys (the store must not be in use by a running embedded gateway)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--project", action="append", default=[], help="a project the key may use (repeatable; "
                                                                         "none = every project)")
    create.add_argument("--role", choices=["viewer", "editor", "admin"], required=True)
    create.add_argument("--ingest", action="store_true", help="the key may also send OTLP data")
    create.add_argument("--name", default="")
    keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    seed = command("seed", "write realistic synthetic inferences for demos and benchmarks")
    seed.add_argument("--inferences", type=int, default=100_000)
    seed.add_argument("--projects", type=int, default=3)
    seed.add_argument("--days", type=int, default=30)
    seed.add_argument("--seed", type=int, default=42)
    seed.add_argument("--no-messages", action="store_true")
    seed.add_argument("--traces", type=int, default=0, help="also write this many synthetic traces to spans")
    seed.add_argument("--spans-per-trace", type=int, default=50)
    for module in _COMMAND_MODULES.values():
        module.add_command(command)
    sub.add_parser("version", help="print the version")
    return parser


def _store(cfg: Any) -> Any:
    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.cluster import migrate_store

    clients = ClientFactory(DSN(cfg.clickhouse_dsn))
    migrate_store(clients.get(), cfg.clickhouse_cluster or None)
    return clients


def _keys(args: argparse.Namespace, cfg: Any) -> int:
    from otelgw.store.keys import KeyStore

    clients = _store(cfg)
    try:
        store = KeyStore(clients.get())
        if args.keys_command == "create":
            try:
                created = store.create(projects=args.project, role=args.role, ingest=args.ingest, name=args.name)
            except ValueError as exc:
                print(f"otelgw: {exc}", file=sys.stderr)
                return 2
            record = created.record
            print(created.key)
            print(f"# key_id={record.key_id} role={record.role} ingest={record.ingest} "
                  f"projects={','.join(record.projects) or '*'} (the key is not stored: keep it now)", file=sys.stderr)
        elif args.keys_command == "list":
            for key in store.all():
                state = "revoked" if key.revoked else "active"
                print(f"{key.key_id}\t{key.role}\t{'ingest' if key.ingest else '-'}\t"
                      f"{','.join(key.projects) or '*'}\t{state}\t{key.created_at}\t{key.name}")
        elif not store.revoke(args.key_id):
            print(f"otelgw: no key {args.key_id}", file=sys.stderr)
            return 1
        return 0
    finally:
        clients.close()


def _migrate_check(args: argparse.Namespace, cfg: Any) -> int:
    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.keys import KeyStore
    from otelgw.store.migrate import pending_migrations

    deadline = time.monotonic() + (args.wait or 0.0)
    while True:
        clients = ClientFactory(DSN(cfg.clickhouse_dsn))
        try:
            client = clients.get()
            missing = [f"{m.version:03d}_{m.name}" for m in pending_migrations(client)]
            if not missing and args.require_api_key and not any(not k.revoked for k in KeyStore(client).all()):
                missing = ["an active API key (otelgw keys create)"]
        except Exception as exc:  # the store is not up yet: the same as not ready
            missing = [f"store unavailable: {str(exc)[:300]}"]
        finally:
            clients.close()
        if not missing:
            print("schema is current")
            return 0
        if args.wait is None or time.monotonic() >= deadline:
            print("pending: " + ", ".join(missing), file=sys.stderr)
            return 3
        print("waiting for: " + ", ".join(missing), file=sys.stderr, flush=True)
        time.sleep(min(5.0, max(deadline - time.monotonic(), 0.1)))


def _migrate_cluster(args: argparse.Namespace, cfg: Any) -> int:
    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.cluster import apply_cluster_migrations, cluster_migrations

    try:
        migrations = cluster_migrations(args.cluster)
    except ValueError as exc:
        print(f"otelgw: {exc}", file=sys.stderr)
        return 2
    if args.print_only:
        for migration, statements in migrations:
            print(f"-- {migration.version:03d}_{migration.name}")
            for statement in statements:
                print(statement.strip() + ";\n")
        return 0
    clients = ClientFactory(DSN(cfg.clickhouse_dsn))
    try:
        applied = apply_cluster_migrations(clients.get(), args.cluster)
    except Exception as exc:  # the server's refusal (no such cluster, no Keeper) is the message
        print(f"otelgw: cluster migration failed: {exc}", file=sys.stderr)
        return 1
    finally:
        clients.close()
    print("applied: " + (", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "nothing (schema is current)"))
    return 0


def _seed(args: argparse.Namespace, cfg: Any) -> int:
    from otelgw.seed import seed, seed_spans

    if args.inferences <= 0 or args.projects <= 0 or args.days <= 0:
        print("otelgw: --inferences, --projects and --days must be positive", file=sys.stderr)
        return 2
    clients = _store(cfg)
    try:
        report = seed(clients.get(), inferences=args.inferences, projects=args.projects, days=args.days,
                      seed_value=args.seed, messages=not args.no_messages)
        if args.traces > 0:
            spans = seed_spans(clients.get(), traces=args.traces, spans_per_trace=args.spans_per_trace,
                               projects=args.projects, seed_value=args.seed)
            print(f"seeded {args.traces * args.spans_per_trace} spans in {args.traces} traces "
                  f"in {spans.seconds:.1f}s")
    finally:
        clients.close()
    print(f"seeded {report.inferences} inferences, {report.messages} messages, {report.feedback} feedback "
          f"in {report.seconds:.1f}s ({report.inferences / max(report.seconds, 1e-9):,.0f} inferences/s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"otelgw {__version__}")
        return 0
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"otelgw: {exc}", file=sys.stderr)
        return 2
    from otelgw.jsonlog import setup_logging

    setup_logging(cfg.log_level, cfg.log_format)
    if args.command == "migrate" and args.require_api_key and not (args.check or args.wait is not None):
        print("otelgw: --require-api-key goes with --check or --wait", file=sys.stderr)
        return 2
    if args.command != "serve":
        from otelgw.store.client import StoreError

        try:
            return _command(args, cfg)
        except StoreError as exc:  # e.g. an embedded store a running gateway holds
            hint = (" (one process at a time may hold an embedded store: is a gateway running on it? "
                    "Stop it, or use its API)" if cfg.clickhouse_dsn.startswith("chdb:") else "")
            print(f"otelgw: {exc}{hint}", file=sys.stderr)
            return 1
    from otelgw.app import StartError, serve

    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(serve(cfg))
        return uvloop.run(serve(cfg))
    except ConfigError as exc:
        print(f"otelgw: {exc}", file=sys.stderr)
        return 2
    except StartError as exc:
        print(f"otelgw: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace, cfg: Any) -> int:
    """Every command but `serve`."""
    if args.command == "migrate" and (args.check or args.wait is not None):
        return _migrate_check(args, cfg)
    if args.command == "migrate" and not args.cluster and cfg.clickhouse_cluster:
        args.cluster = cfg.clickhouse_cluster
    if args.command == "migrate" and args.cluster:
        return _migrate_cluster(args, cfg)
    if args.command == "migrate":
        from otelgw.app import migrate

        applied = migrate(cfg)
        print("applied: " + (", ".join(applied) if applied else "nothing (schema is current)"))
        return 0
    if args.command == "keys":
        return _keys(args, cfg)
    if args.command == "seed":
        return _seed(args, cfg)
    return _COMMAND_MODULES[args.command].run(args, cfg)


if __name__ == "__main__":
    raise SystemExit(main())
