#!/usr/bin/env python3
"""Where a chDB insert's CPU goes, per table, piece by piece: parsing the JSONEachRow rows (a
`Null` copy of the table), the table with its indexes, each materialized view the table feeds,
and `optimize_on_insert = 0`. The rows are the load generator's spans (`bench_ingest.py`) mapped
as a worker maps them; each variant runs in a fresh process with a fresh chDB directory and
merges stopped, so only the inserts are measured.

    .venv/bin/python loadtest/bench_insert_costs.py [--spans 51200] [--rows-per-insert 12800] [--reps 3]
                                                    [--only spans]

Figures are CPU microseconds of the process per row inserted (the median of `--reps` rounds
after one warm-up insert); the inferences table gets one row a span, messages ~3, spans 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# Variant name -> (table, what to do to the schema first, insert settings).
VARIANTS: dict[str, tuple[str, list[str], dict[str, int]]] = {
    "inferences: parse only (Null engine)": (
        "inferences_null", ["CREATE TABLE inferences_null AS inferences ENGINE = Null"], {}),
    "inferences: table + indexes, no views": (
        "inferences", ["DROP VIEW inference_stats_1m_mv", "DROP VIEW inference_lookup_mv"], {}),
    "inferences: + lookup view": ("inferences", ["DROP VIEW inference_stats_1m_mv"], {}),
    "inferences: + rollup views (1m, 1h, 1d)": ("inferences", ["DROP VIEW inference_lookup_mv"], {}),
    "inferences: as shipped": ("inferences", [], {}),
    "inferences: as shipped, optimize_on_insert=0": ("inferences", [], {"optimize_on_insert": 0}),
    "messages: parse only (Null engine)": (
        "messages_null", ["CREATE TABLE messages_null AS messages ENGINE = Null"], {}),
    "messages: as shipped": ("messages", [], {}),
    "messages: as shipped, optimize_on_insert=0": ("messages", [], {"optimize_on_insert": 0}),
    "spans: parse only (Null engine)": ("spans_null", ["CREATE TABLE spans_null AS spans ENGINE = Null"], {}),
    "spans: table, no tag-names view": ("spans", ["DROP VIEW span_tag_names_mv"], {}),
    "spans: as shipped": ("spans", [], {}),
    "spans: as shipped, optimize_on_insert=0": ("spans", [], {"optimize_on_insert": 0}),
}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_blocks(spans: int, out: Path) -> dict[str, int]:
    """Map the load generator's spans as a worker does; one file of JSONEachRow lines a table."""
    import bench_ingest

    from otelgw.config import Config
    from otelgw.pipeline.request import Signal
    from otelgw.pipeline.wal import WalRecord
    from otelgw.pipeline.workers import build_record_mapper, load_mapper_inputs

    cfg = Config(tail_sampling=False)
    mapper = build_record_mapper(cfg, load_mapper_inputs(cfg, None))
    rows: dict[str, int] = {}
    files: dict[str, object] = {}
    for i, body in enumerate(bench_ingest.build_requests(spans, 512, 16, 1)):
        for record in mapper.map_chunk([WalRecord(i + 1, Signal.TRACES, "", time.time_ns(), body)]).records:
            for table, block in record.blocks.items():
                if table not in files:
                    files[table] = open(out / f"{table}.jsonl", "wb")  # noqa: SIM115  (closed below)
                files[table].write(block)  # type: ignore[attr-defined]
                rows[table] = rows.get(table, 0) + record.rows.get(table, 0)
    for fh in files.values():
        fh.close()  # type: ignore[attr-defined]
    return rows


def run_variant(name: str, blocks: Path, rows_per_insert: int, reps: int) -> float:
    """In this (fresh) process: a new chDB, the schema changed as the variant says, merges
    stopped; the median CPU µs per row of `reps` rounds of inserting every row."""
    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.migrate import apply_migrations

    table, ddl, settings = VARIANTS[name]
    source = table.removesuffix("_null")
    lines = (blocks / f"{source}.jsonl").read_bytes().splitlines(keepends=True)
    inserts = [b"".join(lines[i:i + rows_per_insert]) for i in range(0, len(lines), rows_per_insert)]
    with tempfile.TemporaryDirectory(prefix="otelgw-insert-costs-") as work:
        clients = ClientFactory(DSN(f"chdb://{work}/chdb"))
        client = clients.get()
        apply_migrations(client)
        for statement in ddl:
            client.command(statement)
        client.command("SYSTEM STOP MERGES")
        client.raw_insert(table, insert_block=inserts[0], fmt="JSONEachRow", settings=settings)  # warm-up
        rounds = []
        for _ in range(reps):
            started = cpu_s()
            for block in inserts:
                client.raw_insert(table, insert_block=block, fmt="JSONEachRow", settings=settings)
            rounds.append((cpu_s() - started) * 1e6 / len(lines))
        clients.close()
    return statistics.median(rounds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=51_200)
    p.add_argument("--rows-per-insert", type=int, default=12_800,
                   help="rows an insert (the writer's one-second flush at ~12k spans/s is ~12,800)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default="", help="run the variants whose name holds this text")
    p.add_argument("--json", action="store_true")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant
    p.add_argument("--blocks", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, Path(args.blocks), args.rows_per_insert, args.reps)))
        return 0
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="otelgw-insert-blocks-") as blocks:
        rows = build_blocks(args.spans, Path(blocks))
        for name in [v for v in VARIANTS if args.only in v]:
            done = subprocess.run(
                [sys.executable, __file__, "--variant", name, "--blocks", blocks,
                 "--rows-per-insert", str(args.rows_per_insert), "--reps", str(args.reps)],
                capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                return 1
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps({"spans": args.spans, "rows": rows, "rows_per_insert": args.rows_per_insert,
                          "us_per_row": {k: round(v, 2) for k, v in results.items()}}))
        return 0
    print(f"=== chDB insert cost by piece: {args.spans:,} spans -> rows {rows}, "
          f"{args.rows_per_insert:,} rows an insert, median of {args.reps} ===")
    print(f"{'variant':<48} {'CPU µs/row':>10}")
    for name, value in results.items():
        print(f"{name:<48} {value:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
