"""otelgw serve | migrate | version."""

from __future__ import annotations

import argparse
import asyncio
import sys

from otelgw import __version__
from otelgw.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelgw", description="OTLP ingestion gateway for LLM observability")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "run the gateway (OTLP gRPC + HTTP receivers and the query API)"),
                            ("migrate", "apply pending ClickHouse migrations and exit")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", "-c", help="TOML configuration file (OTELGW_* variables override it)")
    sub.add_parser("version", help="print the version")
    return parser


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
    if args.command == "migrate":
        from otelgw.app import migrate

        applied = migrate(cfg)
        print("applied: " + (", ".join(applied) if applied else "nothing (schema is current)"))
        return 0
    from otelgw.app import serve

    try:
        import uvloop

        return uvloop.run(serve(cfg))
    except ImportError:
        return asyncio.run(serve(cfg))


if __name__ == "__main__":
    raise SystemExit(main())
