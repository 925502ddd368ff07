#!/usr/bin/env python3
"""What a GenAI fast path could save: the load generator's GenAI chat spans (OTel GenAI
semantic conventions, messages as `gen_ai.input.messages` / `gen_ai.output.messages` JSON)
turned into `spans`, `inferences` and `messages` rows two ways, in one process, on the same
requests (docs/performance.md, issue 11, "Where the next one of us starts" item 2):

    python         the mapper + secret masking + JSONEachRow encoding (a mapping worker's work),
                   then chDB inserting the three tables' rows (their views included)
    sql            chDB reading the request files (Protobuf) into a Null staging table whose
                   materialized views build the three tables' rows: inference id (uuid5 by
                   SHA1), model, provider, tokens, cost from the pricing table (longest prefix),
                   previews, message rows from the messages JSON, the span row without its
                   message attributes

The SQL covers only this one convention and no masking; it is an estimate of what ClickHouse
would spend, not a path otelgw takes (the mapper stays the reference). A sample of rows is
compared with the Python rows on the main fields, and mismatches are printed, so the two sides
are known to do comparable work.

    .venv/bin/python loadtest/bench_genai_sql.py [--requests 20] [--spans 512]

CPU is this process's (chDB's threads included), best of 3, tables emptied before each run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "loadtest"))

import bench_ingest  # noqa: E402
from bench_stages import cpu_s  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from otelgw.config import Config  # noqa: E402
from otelgw.governance.masking import masker_from_config  # noqa: E402
from otelgw.pipeline.anyvalue import TRUNCATED  # noqa: E402
from otelgw.pipeline.mapper import derived_inference_id_sql  # noqa: E402
from otelgw.pipeline.rows import encode_batch, ts  # noqa: E402
from otelgw.pipeline.workers import build_mapper  # noqa: E402
from otelgw.pricing import Pricing  # noqa: E402
from otelgw.store.client import DSN, ClientFactory, quote_string  # noqa: E402
from otelgw.store.migrate import apply_migrations  # noqa: E402
from otelgw.store.native import NativeInserter  # noqa: E402
from otelgw.store.writer import INSERT_SETTINGS  # noqa: E402

TABLES = ("spans", "inferences", "messages")
# Inference columns compared between the two sides (all but the times of insertion, masking
# and the attributes map, whose order differs).
SAMPLED = ("inference_id, project_id, trace_id, span_id, timestamp, end_timestamp, service_name, span_name, span_kind, "
           "scope_name, family, operation, provider, request_model, response_model, input_tokens, output_tokens, "
           "cached_input_tokens, total_tokens, cost_usd, cost_source, latency_ms, is_streaming, is_success, "
           "finish_reason, response_id, session_id, user_id, input_preview, output_preview")
MESSAGE_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages")


def _prices_literal() -> str:
    """[(prefix, exact, input, cached_input, output)], exact names first, then longest prefix."""
    pricing = Pricing.load()
    entries = [(name, 1, p) for name, p in pricing._exact.items()]
    entries += [(prefix, 0, p) for prefix, p in pricing._prefixes]
    items = [f"({quote_string(name)}, {exact}, {p.input}, {p.cached_input if p.cached_input is not None else p.input},"
             f" {p.output})" for name, exact, p in entries]
    return "[" + ", ".join(items) + "]"


def _messages(attr: str) -> str:
    """(role, content, tool_calls JSON, finish_reason) per message of an OTel parts-shaped JSON."""
    return (f"arrayMap(m -> (JSONExtractString(m, 'role'), "
            f"arrayStringConcat(arrayMap(p -> JSONExtractString(p, 'content'), "
            f"arrayFilter(p -> JSONExtractString(p, 'type') = 'text', JSONExtractArrayRaw(m, 'parts'))), ''), "
            f"if(has(arrayMap(p -> JSONExtractString(p, 'type'), JSONExtractArrayRaw(m, 'parts')), 'tool_call'), "
            f"'[' || arrayStringConcat(arrayMap(p -> '{{\"id\":' || toJSONString(JSONExtractString(p, 'id')) || "
            f"',\"name\":' || toJSONString(JSONExtractString(p, 'name')) || ',\"arguments\":' || "
            f"toJSONString(JSONExtractRaw(p, 'arguments')) || '}}', arrayFilter(p -> JSONExtractString(p, 'type') = "
            f"'tool_call', JSONExtractArrayRaw(m, 'parts'))), ',') || ']', ''), "
            f"JSONExtractString(m, 'finish_reason')), JSONExtractArrayRaw(attributes['{attr}']))")


STAGE_COLUMNS = """
    inference_id UUID, trace_id String, span_id String, parent_span_id String, trace_state String, name String,
    kind String, start_ns UInt64, end_ns UInt64, status_code String, status_message String,
    attributes Map(String, String), resource_attributes Map(String, String), scope_name String,
    scope_version String, events String, links String,
    inputs Array(Tuple(String, String, String, String)), outputs Array(Tuple(String, String, String, String))
"""


def _stage_insert(inserter: NativeInserter, files: str) -> str:
    flat = inserter.flatten(files)
    uuid5 = derived_inference_id_sql("trace_id", "span_id")
    return (f"INSERT INTO genai_stage SELECT {uuid5}, trace_id, span_id, parent_span_id, trace_state, name, kind, "
            f"start_ns, end_ns, status_code, status_message, attributes, resource_attributes, scope_name, "
            f"scope_version, events, links, {_messages(MESSAGE_KEYS[0])}, {_messages(MESSAGE_KEYS[1])} "
            f"FROM ({flat})")


def _clip(text: str) -> str:
    """anyvalue.clip(text, 512) (the previews)."""
    return f"if(lengthUTF8({text}) > 512, substringUTF8({text}, 1, 512) || {quote_string(TRUNCATED)}, {text})"


def _views(prices: str) -> list[str]:
    model = "lower(attributes['gen_ai.request.model'])"
    price = f"arrayFirst(p -> if(p.2 = 1, p.1 = {model}, startsWith({model}, p.1)), {prices})"
    keep = f"mapFilter((k, v) -> k NOT IN {MESSAGE_KEYS}, attributes)"
    return [
        f"""CREATE MATERIALIZED VIEW genai_inferences_mv TO inferences AS
        WITH {price} AS price
        SELECT inference_id, 'bench' AS project_id, trace_id, span_id, parent_span_id,
          fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC') AS timestamp,
          fromUnixTimestamp64Nano(toInt64(end_ns), 'UTC') AS end_timestamp,
          resource_attributes['service.name'] AS service_name, name AS span_name, kind AS span_kind, scope_name,
          'otel_genai' AS family, attributes['gen_ai.operation.name'] AS operation,
          attributes['gen_ai.provider.name'] AS provider, attributes['gen_ai.request.model'] AS request_model,
          attributes['gen_ai.response.model'] AS response_model,
          toUInt64OrZero(attributes['gen_ai.usage.input_tokens']) AS input_tokens,
          toUInt64OrZero(attributes['gen_ai.usage.output_tokens']) AS output_tokens,
          toUInt64OrZero(attributes['gen_ai.usage.cache_read.input_tokens']) AS cached_input_tokens,
          0 AS reasoning_tokens, input_tokens + output_tokens AS total_tokens,
          if(price.1 = '', 0, ((input_tokens - least(cached_input_tokens, input_tokens)) * price.3
             + least(cached_input_tokens, input_tokens) * price.4 + output_tokens * price.5) / 1e6) AS cost_usd,
          if(price.1 = '', '', 'pricing') AS cost_source, (end_ns - start_ns) / 1e6 AS latency_ms,
          CAST(NULL, 'Nullable(Float64)') AS ttft_ms, '' AS ttft_source, CAST(NULL, 'Nullable(Float64)') AS queue_ms,
          attributes['gen_ai.request.stream'] = 'true' AS is_streaming, status_code != 'error' AS is_success,
          attributes['error.type'] AS error_type, status_message AS error_message,
          JSONExtractString(attributes['gen_ai.response.finish_reasons'], 1) AS finish_reason,
          attributes['gen_ai.response.id'] AS response_id, attributes['gen_ai.conversation.id'] AS session_id,
          attributes['user.id'] AS user_id,
          {_clip("arrayLast(m -> m.1 = 'user', inputs).2")} AS input_preview,
          {_clip("outputs[1].2")} AS output_preview, false AS masked,
          {keep} AS attributes, now64(3) AS ingested_at
        FROM genai_stage""",
        """CREATE MATERIALIZED VIEW genai_messages_mv TO messages AS
        SELECT inference_id, 'bench' AS project_id, fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC') AS timestamp,
          m.1 AS direction, toUInt32(m.2) AS `index`, m.3.1 AS role, m.3.2 AS content, m.3.3 AS tool_calls,
          '' AS tool_call_id, '' AS name, m.3.4 AS finish_reason, 'span' AS source, now64(3) AS ingested_at
        FROM genai_stage
        ARRAY JOIN arrayConcat(arrayMap((x, i) -> ('input', i - 1, x), inputs, arrayEnumerate(inputs)),
                               arrayMap((x, i) -> ('output', i - 1, x), outputs, arrayEnumerate(outputs))) AS m""",
        f"""CREATE MATERIALIZED VIEW genai_spans_mv TO spans AS
        SELECT trace_id, span_id, parent_span_id, trace_state, 'bench' AS project_id,
          resource_attributes['service.name'] AS service_name, name, kind,
          fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC') AS start_time,
          fromUnixTimestamp64Nano(toInt64(end_ns), 'UTC') AS end_time, end_ns - start_ns AS duration_ns,
          status_code, status_message, {keep} AS attributes, resource_attributes, scope_name, scope_version,
          events, links, toString(inference_id) AS inference_id, now64(3) AS ingested_at
        FROM genai_stage""",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--spans", type=int, default=512, help="spans a request")
    p.add_argument("--threads", type=int, default=0,
                   help="SQL side: max_threads and max_insert_threads, with 4-request blocks (0: chDB's defaults)")
    args = p.parse_args()
    requests = bench_ingest.build_requests(args.requests * args.spans, args.spans, 16, 1)
    spans = args.requests * args.spans
    work = Path(tempfile.mkdtemp(prefix="otelgw-genai-sql-"))
    client = ClientFactory(DSN(f"chdb://{work / 'chdb'}")).get()
    apply_migrations(client)
    inserter = NativeInserter(work / "native")
    inserter.prepare()
    cfg = Config()
    mapper = build_mapper(cfg)
    masker = masker_from_config(cfg, mapper.conventions.content_attributes())
    settings = {**INSERT_SETTINGS, "insert_deduplicate": 0}

    def empty() -> None:
        for table in TABLES:
            client.command(f"TRUNCATE TABLE {table}")

    walls: dict[int, float] = {}

    def best_of(fn: object, before: object = empty) -> float:
        best = float("inf")
        for _ in range(3):
            before()  # type: ignore[operator]
            started, wall = cpu_s(), time.perf_counter()
            fn()  # type: ignore[operator]
            if cpu_s() - started < best:
                best, walls[id(fn)] = cpu_s() - started, time.perf_counter() - wall
        return best

    blocks: dict[str, list[bytes]] = {t: [] for t in TABLES}

    def python_map() -> None:
        for table in TABLES:
            blocks[table].clear()
        for body in requests:
            batch = mapper.map_traces(ExportTraceServiceRequest.FromString(body), "bench", time.time_ns())
            masker.apply(batch)
            encoded = encode_batch(batch, ts(time.time_ns())).blocks
            for table in TABLES:
                blocks[table].append(encoded[table])

    stages: dict[str, float] = {"python: map + mask + encode": best_of(python_map, lambda: None)}
    for table in TABLES:
        rows = b"".join(blocks[table])
        stages[f"python: JSON insert -> {table}"] = best_of(
            lambda rows=rows, table=table: client.raw_insert(table, insert_block=rows, settings=settings,
                                                             fmt="JSONEachRow"),
            lambda table=table: client.command(f"TRUNCATE TABLE {table}"))
    python_rows = {t: client.query(f"SELECT count() FROM {t}").result_rows[0][0] for t in TABLES}
    sample = client.query(f"SELECT {SAMPLED} FROM inferences "
                          "ORDER BY inference_id LIMIT 200").result_rows
    sample_messages = client.query("SELECT inference_id, direction, `index`, role, content FROM messages "
                                   "ORDER BY inference_id, direction, `index` LIMIT 200").result_rows

    files = work / "files"
    files.mkdir()
    for n, body in enumerate(requests):
        (files / f"{n}.pb").write_bytes(body)
    client.command(f"CREATE TABLE genai_stage ({STAGE_COLUMNS}) ENGINE = Null")
    for view in _views(_prices_literal()):
        client.command(view)
    statement = _stage_insert(inserter, str(files / "*.pb"))
    parallel = ({"max_threads": args.threads, "max_insert_threads": args.threads, "max_block_size": 4}
                if args.threads else {})

    def sql_insert() -> None:
        client.command(statement, settings={**inserter.settings(), **settings, **parallel})

    stages["sql: Protobuf -> stage -> 3 views"] = best_of(sql_insert)
    sql_wall = walls[id(sql_insert)]
    sql_rows = {t: client.query(f"SELECT count() FROM {t}").result_rows[0][0] for t in TABLES}
    sql_sample = client.query(f"SELECT {SAMPLED} FROM inferences "
                              "ORDER BY inference_id LIMIT 200").result_rows
    sql_messages = client.query("SELECT inference_id, direction, `index`, role, content FROM messages "
                                "ORDER BY inference_id, direction, `index` LIMIT 200").result_rows

    size = sum(len(r) for r in requests) / spans
    print(f"=== GenAI spans: Python path vs SQL (estimate): {spans:,} spans, {size:.0f} B/span ===")
    print(f"{'stage':<40} {'µs/span':>8} {'spans/CPU-s':>12}")
    for name, seconds in stages.items():
        print(f"{name:<40} {seconds * 1e6 / spans:8.1f} {spans / seconds:12,.0f}")
    python_total = sum(v for k, v in stages.items() if k.startswith("python"))
    python_inserts = sum(v for k, v in stages.items() if k.startswith("python: JSON"))
    sql_total = stages["sql: Protobuf -> stage -> 3 views"]
    print(f"Python path: {python_total * 1e6 / spans:.1f} µs/span ({python_inserts * 1e6 / spans:.1f} of it chDB "
          f"inserts; its mapping includes secret masking, which the SQL side does not do)")
    print(f"SQL: {sql_total * 1e6 / spans:.1f} µs/span, all in the chDB owner "
          f"({spans / sql_wall:,.0f} spans/s wall: its threads)")
    print(f"rows  python {python_rows}  sql {sql_rows}")
    inference_mismatches = sum(a != b for a, b in zip(sample, sql_sample, strict=True))
    message_mismatches = sum(a != b for a, b in zip(sample_messages, sql_messages, strict=True))
    print(f"sampled rows differing: inferences {inference_mismatches}/{len(sample)}, "
          f"messages {message_mismatches}/{len(sample_messages)}")
    for a, b in [(a, b) for a, b in zip(sample, sql_sample, strict=True) if a != b][:3]:
        print(f"  python {a}\n  sql    {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
