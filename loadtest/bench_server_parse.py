#!/usr/bin/env python3
"""What "the server parses the bytes" would cost (issue 11's native fast path, not built): the
load generator's OTLP requests POSTed as they are, 20 a query, `INSERT INTO otlp_spans_in FORMAT
Protobuf`, to the ClickHouse-HTTP test double (`tests/chserver.py`, chDB behind HTTP), where a
materialized view over a Null table lands one `spans`-shaped row per span
(`native_spans_identity.py`'s SQL). It prints spans/s and the CPU per span on each side: the
sender (what a gateway would spend) and the server.

    .venv/bin/python loadtest/bench_server_parse.py [--spans 102400] [--per-query 20]

The double is Python (aiohttp) in front of chDB and writes each body to a file for `file()`
(chDB reads no inline Protobuf), so its figure is a ceiling for a real server's cost, not a floor.
A real server also needs the schema file in its `format_schema_path`.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "loadtest"))

import bench_ingest  # noqa: E402
import clickhouse_connect  # noqa: E402
from chserver import ChServer  # noqa: E402
from native_spans_identity import PROTO, SELECT, STRUCT, TAIL  # noqa: E402

from otelgw.protowire import varint  # noqa: E402

COLUMNS = ("trace_id String, span_id String, parent_span_id String, trace_state String, name String, kind String, "
           "status_code String, status_message String, resource_attributes Map(String, String), "
           "attributes Map(String, String), scope_name String, scope_version String, events String")



def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=102_400)
    p.add_argument("--per-query", type=int, default=20, help="requests per INSERT (default 20)")
    args = p.parse_args()
    requests = bench_ingest.build_requests(args.spans, 512, 16, 1)
    spans = len(requests) * 512
    work = Path(tempfile.mkdtemp(prefix="otelgw-server-parse-"))
    schema = work / "otlp.proto"
    schema.write_text(PROTO)
    server = ChServer(work / "chdb").start()
    try:
        assert server.proc is not None
        client = clickhouse_connect.get_client(dsn=server.dsn("default"))
        client.command(f"CREATE TABLE otlp_spans_in ({STRUCT}) ENGINE = Null")
        client.command(f"CREATE TABLE spans_native ({COLUMNS}) ENGINE = MergeTree ORDER BY (trace_id, span_id)")
        client.command(f"CREATE MATERIALIZED VIEW spans_native_mv TO spans_native AS SELECT {SELECT} "
                       f"FROM otlp_spans_in {TAIL}")
        settings = {"format_schema": f"{schema}:ExportTraceServiceRequest", "input_format_protobuf_oneof_presence": 1,
                    "output_format_json_escape_forward_slashes": 0}
        bodies = [b"".join(varint(len(r)) + r for r in requests[i:i + args.per_query])
                  for i in range(0, len(requests), args.per_query)]
        pid = server.proc.pid
        server_cpu0, client_cpu0, wall0 = bench_ingest.proc_cpu_s(pid) or 0.0, self_cpu_s(), time.perf_counter()
        for body in bodies:
            client.raw_insert("otlp_spans_in", insert_block=body, fmt="Protobuf", settings=settings)
        wall = time.perf_counter() - wall0
        server_cpu = (bench_ingest.proc_cpu_s(pid) or 0.0) - server_cpu0
        client_cpu = self_cpu_s() - client_cpu0
        landed = client.command("SELECT count() FROM spans_native")
        assert landed == spans, (landed, spans)
        mib = sum(len(b) for b in bodies) / 2**20
        print(f"=== server-side parse: {spans:,} spans, {mib:.1f} MiB, {args.per_query} requests a query ===")
        print(f"landed           {spans / wall:,.0f} spans/s ({mib / wall:.0f} MiB/s), {wall:.2f} s")
        print(f"sender CPU       {client_cpu:.2f} s = {client_cpu * 1e6 / spans:.1f} µs/span "
              f"({spans / max(client_cpu, 1e-9):,.0f} spans per CPU-second)")
        print(f"server CPU       {server_cpu:.2f} s = {server_cpu * 1e6 / spans:.1f} µs/span "
              f"({spans / max(server_cpu, 1e-9):,.0f} spans per CPU-second; chDB + the double's HTTP)")
        client.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
