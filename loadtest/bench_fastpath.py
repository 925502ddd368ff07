#!/usr/bin/env python3
"""What the native fast path costs against the Python path, per span and per stage, in one
process on the same requests (docs/performance.md, issue 11):

    python map    the mapper + secret masking + JSONEachRow encoding (a mapping worker's work)
    python walk   the same with the fast path on: what the worker still does (detection, unmapped
                  counts, eligibility) for spans it leaves to ClickHouse
    python floor  what a worker could not avoid even with eligibility decided from bytes: decode
                  the request and make each span's sampler digest (ids, status, times), no attributes
    json insert   chDB inserting those rows (JSONEachRow), into a Null copy of `spans` and `spans`
    pb flatten    chDB reading the request files (Protobuf) and building the same rows, into Null
    pb insert     the fast path's whole INSERT ... SELECT into `spans` (files + selection join)

    .venv/bin/python loadtest/bench_fastpath.py [--requests 40] [--spans 512] [--genai]

`--genai` uses the load generator's GenAI chat spans (which the fast path leaves to Python; the
chDB figures then show what a GenAI fast path would start from); by default plain spans
(tests/plain_spans.py). CPU is this process's (chDB's threads included), best of 3.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "loadtest"))

import bench_ingest  # noqa: E402
from bench_stages import cpu_s  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from plain_spans import build_request  # noqa: E402

from otelgw.config import Config  # noqa: E402
from otelgw.governance.masking import masker_from_config  # noqa: E402
from otelgw.pipeline.fastpath import NativeCheck, NativeSource, NativeSpans, position_key  # noqa: E402
from otelgw.pipeline.rows import encode_batch, ts  # noqa: E402
from otelgw.pipeline.workers import build_mapper  # noqa: E402
from otelgw.store.client import DSN, ClientFactory  # noqa: E402
from otelgw.store.migrate import apply_migrations  # noqa: E402
from otelgw.store.native import COLUMNS, NativeInserter  # noqa: E402
from otelgw.store.writer import INSERT_SETTINGS  # noqa: E402


def best_of(runs: int, fn: object) -> float:
    best = float("inf")
    for _ in range(runs):
        started = cpu_s()
        fn()  # type: ignore[operator]
        best = min(best, cpu_s() - started)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--spans", type=int, default=512, help="spans a request")
    p.add_argument("--genai", action="store_true", help="the load generator's GenAI spans instead of plain ones")
    args = p.parse_args()
    rnd = random.Random(1)
    if args.genai:
        requests = bench_ingest.build_requests(args.requests * args.spans, args.spans, 16, 1)
    else:
        requests = [build_request(rnd, args.spans) for _ in range(args.requests)]
    spans = args.requests * args.spans
    work = Path(tempfile.mkdtemp(prefix="otelgw-fastpath-"))
    client = ClientFactory(DSN(f"chdb://{work / 'chdb'}")).get()
    apply_migrations(client)
    client.command("CREATE TABLE spans_null AS spans ENGINE = Null")
    inserter = NativeInserter(work / "native")
    inserter.prepare()
    mapper = build_mapper(Config())
    stages: dict[str, float] = {}

    blocks: list[bytes] = []

    cfg = Config()
    masker = masker_from_config(cfg, mapper.conventions.content_attributes())
    check = NativeCheck(cfg.max_attributes_per_span, cfg.max_attribute_chars, masker)

    def python_map() -> None:
        blocks.clear()
        for body in requests:
            batch = mapper.map_traces(ExportTraceServiceRequest.FromString(body), "", time.time_ns())
            masker.apply(batch)
            blocks.append(encode_batch(batch, ts(time.time_ns())).blocks["spans"])

    stages["python map + mask + encode"] = best_of(3, python_map)
    rows = b"".join(blocks)

    def python_walk() -> None:
        for body in requests:
            batch = mapper.map_traces(ExportTraceServiceRequest.FromString(body), "", time.time_ns(), check)
            masker.apply(batch)
            encode_batch(batch, ts(time.time_ns()))

    stages["python walk (fast path on)"] = best_of(3, python_walk)

    def python_floor() -> None:
        for body in requests:
            request = ExportTraceServiceRequest.FromString(body)
            digests = [(span.trace_id.hex(), span.span_id.hex(), span.status.code, span.start_time_unix_nano,
                        span.end_time_unix_nano)
                       for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
            assert digests

    stages["python floor (decode + digests)"] = best_of(3, python_floor)
    stages["json insert -> Null"] = best_of(3, lambda: client.raw_insert(
        "spans_null", insert_block=rows, settings=INSERT_SETTINGS, fmt="JSONEachRow"))
    stages["json insert -> spans"] = best_of(3, lambda: client.raw_insert(
        "spans", insert_block=rows, settings={**INSERT_SETTINGS, "insert_deduplicate": 0}, fmt="JSONEachRow"))

    files = work / "files"
    files.mkdir()
    for n, body in enumerate(requests):
        (files / f"{n}.pb").write_bytes(body)
    columns = ", ".join(COLUMNS)
    flatten = (f"INSERT INTO spans_null ({columns}) SELECT trace_id, span_id, parent_span_id, trace_state, '', '', "
               f"name, kind, fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC'), "
               f"fromUnixTimestamp64Nano(toInt64(end_ns), 'UTC'), end_ns - start_ns, status_code, status_message, "
               f"attributes, resource_attributes, scope_name, scope_version, events, links, '', now64(3) "
               f"FROM ({inserter.flatten(str(files / '*.pb'))})")
    stages["pb flatten -> Null"] = best_of(3, lambda: client.command(flatten, settings=inserter.settings()))

    items = []
    for body in requests:
        request = ExportTraceServiceRequest.FromString(body)
        positions = [position_key(r, s, i) for r, rs in enumerate(request.resource_spans)
                     for s, ss in enumerate(rs.scope_spans) for i in range(len(ss.spans))]
        items.append(NativeSpans(NativeSource(body, [("", "")] * len(request.resource_spans)), positions))
    stages["pb insert -> spans (fast path)"] = best_of(3, lambda: inserter.insert(
        client, items, settings={**INSERT_SETTINGS, "insert_deduplicate": 0}))

    size = sum(len(r) for r in requests) / spans
    print(f"=== fast path vs Python path: {spans:,} {'GenAI' if args.genai else 'plain'} spans, {size:.0f} B/span ===")
    print(f"{'stage':<34} {'µs/span':>8} {'spans/CPU-s':>12}")
    for name, seconds in stages.items():
        print(f"{name:<34} {seconds * 1e6 / spans:8.1f} {spans / seconds:12,.0f}")
    python_total = stages["python map + mask + encode"] + stages["json insert -> spans"]
    fast_total = stages["python walk (fast path on)"] + stages["pb insert -> spans (fast path)"]
    print(f"Python path (map + JSON insert): {python_total * 1e6 / spans:.1f} µs/span, of which the chDB owner "
          f"{stages['json insert -> spans'] * 1e6 / spans:.1f}; fast path (walk + its insert): "
          f"{fast_total * 1e6 / spans:.1f} µs/span, of which the chDB owner "
          f"{stages['pb insert -> spans (fast path)'] * 1e6 / spans:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
