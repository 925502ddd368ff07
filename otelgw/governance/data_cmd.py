"""`otelgw data delete --project P (--user-id U | --session-id S | --inference-id ID... |
--from ISO --to ISO) [--dry-run]`: an erasure job (otelgw/governance/erasure.py) run here,
synchronously, against the store, printing the rows per table. `otelgw data status JOB_ID`
shows a job; `otelgw data resume JOB_ID` finishes one that was interrupted.

An embedded (chDB) store must not be in use by a running gateway, as for `otelgw keys`; against
a ClickHouse server the gateway may run meanwhile."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from otelgw.governance.erasure import DONE, FAILED, RUNNING, TABLES, Eraser, Job, SelectorError, build_selector, new_job


def add_command(command: Any) -> None:
    """Register the subcommand; `command(name, help)` returns its argparse parser."""
    data = command("data", "erase data (the store must not be in use by a running embedded gateway)")
    sub = data.add_subparsers(dest="data_command", required=True)
    delete = sub.add_parser("delete", help="delete one user's, session's, some inferences' or a time range's data "
                                           "in a project (messages, feedback, spans, log events too)")
    delete.add_argument("--project", required=True, help="the project to erase in")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--user-id")
    which.add_argument("--session-id")
    which.add_argument("--inference-id", nargs="+", metavar="ID", help="one or more inference ids")
    which.add_argument("--from", dest="from_date", metavar="ISO", help="start of a time range (with --to)")
    delete.add_argument("--to", dest="to_date", metavar="ISO", help="end of the time range (exclusive)")
    delete.add_argument("--dry-run", action="store_true", help="count the rows that would go; delete nothing")
    status = sub.add_parser("status", help="show an erasure job")
    status.add_argument("job_id")
    resume = sub.add_parser("resume", help="finish an interrupted or failed erasure job")
    resume.add_argument("job_id")


def _print_counts(job: Job) -> None:
    verb = "would delete" if job.dry_run else "deleted"
    width = max(len(t) for t in TABLES)
    for table in TABLES:
        print(f"{table:<{width}}  {job.counts.get(table, 0)}")
    print(f"# job {job.job_id}: {job.status}; {verb} the rows above", file=sys.stderr)


def _execute(eraser: Eraser, job: Job) -> int:
    try:
        eraser.run(job)
    except Exception as exc:
        job.status, job.error = FAILED, f"{type(exc).__name__}: {str(exc)[:500]}"
        try:
            eraser.jobs.save(job)
        except Exception:
            pass
        print(f"otelgw: erasure job {job.job_id} failed: {job.error}", file=sys.stderr)
        return 1
    _print_counts(job)
    return 0


def run(args: argparse.Namespace, cfg: Any) -> int:
    if args.data_command == "delete":
        try:
            selector = build_selector(user_id=args.user_id, session_id=args.session_id,
                                      inference_ids=args.inference_id, from_date=args.from_date,
                                      to_date=args.to_date)
        except SelectorError as exc:
            print(f"otelgw: {exc}", file=sys.stderr)
            return 2
    from otelgw.cli import _store

    clients = _store(cfg)
    try:
        eraser = Eraser(clients.get(), cfg.clickhouse_cluster or None)
        if args.data_command == "delete":
            return _execute(eraser, new_job(args.project, selector, dry_run=args.dry_run, created_by="cli"))
        job = eraser.jobs.get(args.job_id)
        if job is None:
            print(f"otelgw: no erasure job {args.job_id}", file=sys.stderr)
            return 1
        if args.data_command == "status":
            print(json.dumps(job.public(), indent=2))
            return 0
        if job.status == DONE:
            print(f"otelgw: erasure job {job.job_id} is done already", file=sys.stderr)
            return 1
        if job.status == FAILED:
            job.status, job.attempts = RUNNING, 0
        return _execute(eraser, job)
    finally:
        clients.close()
