#!/usr/bin/env python3
"""Spans per CPU-second of each ingest stage, one at a time, in this process, on the load
generator's requests (`bench_ingest.py`'s ~1.5 KB OTel GenAI chat spans, 512 a request):

    receive   the receiver's decode: protobuf parse + per-span validation (`receiver/decode.py`)
    log       write-ahead-log append + group fsync (`pipeline/wal.py`, fsync every 10 ms)
    map       decode again + map + mask (secrets; `--pii` adds PII) + encode (`RecordMapper`, what a
              mapping worker runs)
    write     chDB inserts of the mapped blocks, each table with its views and indexes
              (JSONEachRow, as the writer does); merges are not included

    .venv/bin/python loadtest/bench_stages.py [--spans 51200] [--pii] [--json]

CPU is this process's user+system time (chDB's threads included) around each stage. "serial" is
what one core would do running every stage for each span; the end-to-end benchmark
(`bench_ingest.py`) adds HTTP, the hand-over between processes and the merges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_ingest  # noqa: E402  (the load generator's span builder)

from otelgw.config import Config  # noqa: E402
from otelgw.pipeline.request import Signal  # noqa: E402
from otelgw.pipeline.wal import WalRecord, WriteAheadLog  # noqa: E402
from otelgw.pipeline.workers import build_record_mapper, load_mapper_inputs  # noqa: E402
from otelgw.receiver.decode import Encoding, decode  # noqa: E402
from otelgw.store.client import DSN, ClientFactory  # noqa: E402
from otelgw.store.migrate import apply_migrations  # noqa: E402

# The Go OTel Collector's published rate into ClickHouse, small spans, per core (issue 11).
COLLECTOR_PER_CORE = 137_000


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _append_all(wal: WriteAheadLog, requests: list[bytes]) -> None:
    await asyncio.gather(*[_append(wal, body) for body in requests])


async def _append(wal: WriteAheadLog, body: bytes) -> None:
    _, durable = wal.append(Signal.TRACES, "", time.time_ns(), body)
    await durable


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=51_200)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--pii", action="store_true", help="mask PII too (mask_pii=true)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    requests = bench_ingest.build_requests(args.spans, args.batch, 16, 1)
    spans = len(requests) * args.batch
    mib = sum(len(r) for r in requests) / 2**20
    work = Path(tempfile.mkdtemp(prefix="otelgw-stages-"))
    stages: dict[str, float] = {}

    started = cpu_s()
    for body in requests:
        decode(Signal.TRACES, body, Encoding.PROTOBUF)
    stages["receive"] = cpu_s() - started

    wal = WriteAheadLog(work / "wal", fsync_ms=10, max_bytes=8 * 2**30)
    wal.recover()

    async def log_stage() -> float:
        await wal.start()
        began = cpu_s()
        await _append_all(wal, requests)
        spent = cpu_s() - began
        await wal.close()
        return spent

    stages["log"] = asyncio.run(log_stage())

    cfg = Config(tail_sampling=False, mask_pii=args.pii)
    mapper = build_record_mapper(cfg, load_mapper_inputs(cfg, None))
    records = [WalRecord(i + 1, Signal.TRACES, "", time.time_ns(), body) for i, body in enumerate(requests)]
    mapper.map_chunk(records[:1])  # caches warm, as in a running worker
    started = cpu_s()
    chunks = [mapper.map_chunk([record]) for record in records]
    stages["map"] = cpu_s() - started
    assert not any(r.error for c in chunks for r in c.records)

    blocks: dict[str, list[bytes]] = {}
    for chunk in chunks:
        for record in chunk.records:
            for table, block in record.blocks.items():
                blocks.setdefault(table, []).append(block)
    clients = ClientFactory(DSN(f"chdb://{work / 'chdb'}"))
    client = clients.get()
    apply_migrations(client)
    by_table: dict[str, float] = {}
    for table, parts in blocks.items():
        data = b"".join(parts)
        began = cpu_s()
        # Writer-sized blocks (its batch_rows is 50,000 rows of one table).
        step = max(len(parts) // 4, 1)
        for i in range(0, len(parts), step):
            client.raw_insert(table, insert_block=b"".join(parts[i:i + step]), fmt="JSONEachRow")
        by_table[table] = cpu_s() - began
        del data
    stages["write"] = sum(by_table.values())
    clients.close()

    per_cpu_s = {name: round(spans / seconds) for name, seconds in stages.items()}
    serial = round(spans / sum(stages.values()))
    result = {"spans": spans, "mib": round(mib, 1), "pii": args.pii,
              "cpu_s": {k: round(v, 2) for k, v in stages.items()},
              "spans_per_cpu_s": per_cpu_s, "us_per_span": {k: round(v * 1e6 / spans, 1) for k, v in stages.items()},
              "write_us_per_span_by_table": {k: round(v * 1e6 / spans, 1) for k, v in by_table.items()},
              "serial_spans_per_cpu_s": serial, "collector_per_core": COLLECTOR_PER_CORE}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"=== otelgw ingest stages: {spans:,} spans, {mib:.1f} MiB protobuf, masking "
          f"{'secrets + PII' if args.pii else 'secrets'} ===")
    print(f"{'stage':<9} {'CPU s':>7} {'µs/span':>8} {'spans/CPU-s':>12}")
    for name, seconds in stages.items():
        print(f"{name:<9} {seconds:7.2f} {seconds * 1e6 / spans:8.1f} {per_cpu_s[name]:12,}")
    print(f"{'serial':<9} {sum(stages.values()):7.2f} {sum(stages.values()) * 1e6 / spans:8.1f} {serial:12,}")
    print("write by table (µs/span): " + ", ".join(f"{k} {v}" for k, v in result["write_us_per_span_by_table"].items()))
    print(f"Go OTel Collector into ClickHouse (published, small spans): {COLLECTOR_PER_CORE:,} spans/core-s, "
          f"{COLLECTOR_PER_CORE / serial:.0f}x otelgw's serial figure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
