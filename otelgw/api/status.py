"""Internal counters: GET /api/v1/status as JSON and GET /metrics in Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from otelgw.api.common import json_response

# The app registers a callable returning {"pipeline": {...}, "writer": {...}}.
STATUS_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("status", object)  # type: ignore[arg-type]


async def status(request: web.Request) -> web.Response:
    return json_response(request.app[STATUS_KEY]())


def _prometheus(snapshot: dict[str, Any]) -> str:
    pipeline, writer = snapshot["pipeline"], snapshot["writer"]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    metric("otelgw_receiver_requests_total", "counter", "OTLP export requests received, by signal.",
           [(f'{{signal="{k}"}}', v) for k, v in pipeline["requests"].items()])
    metric("otelgw_receiver_accepted_items_total", "counter", "Spans, log records and data points accepted.",
           [(f'{{signal="{k}"}}', v) for k, v in pipeline["items_accepted"].items()])
    metric("otelgw_receiver_rejected_items_total", "counter", "Items rejected through OTLP partial success.",
           [(f'{{signal="{k}"}}', v) for k, v in pipeline["items_rejected"].items()])
    metric("otelgw_receiver_overloaded_total", "counter", "Requests refused with 503 / UNAVAILABLE.",
           [("", pipeline["overloaded"])])
    metric("otelgw_receiver_rate_limited_total", "counter", "Requests refused with 429 / RESOURCE_EXHAUSTED.",
           [("", pipeline["rate_limited"])])
    metric("otelgw_pipeline_map_errors_total", "counter", "Log records the mapper failed on (dead-lettered).",
           [("", pipeline["map_errors"])])
    wal = pipeline["wal"]
    metric("otelgw_wal_bytes", "gauge", "Bytes in the write-ahead log.", [("", wal["bytes"])])
    metric("otelgw_wal_max_bytes", "gauge", "The write-ahead log's limit.", [("", wal["max_bytes"])])
    metric("otelgw_wal_pending_records", "gauge", "Records not yet committed in ClickHouse.",
           [("", wal["pending_records"])])
    metric("otelgw_wal_fsyncs_total", "counter", "Group-commit fsyncs.", [("", wal["fsyncs"])])
    metric("otelgw_wal_truncated_tails_total", "counter", "Torn or corrupt segment tails cut at start.",
           [("", wal["truncated_tails"])])
    sampler = pipeline.get("sampler")
    if sampler:
        metric("otelgw_sampler_traces_total", "counter", "Traces decided by the tail sampler.",
               [('{decision="kept"}', sampler["traces_kept"]), ('{decision="dropped"}', sampler["traces_dropped"])])
        metric("otelgw_sampler_kept_by_policy_total", "counter", "Traces kept, by the policy that kept them.",
               [(f'{{policy="{k}"}}', v) for k, v in sampler["kept_by_policy"].items()])
        metric("otelgw_sampler_late_spans_total", "counter", "Spans that arrived after their trace's decision.",
               [('{decision="kept"}', sampler["late_spans_kept"]),
                ('{decision="dropped"}', sampler["late_spans_dropped"])])
        metric("otelgw_sampler_early_decisions_total", "counter", "Traces decided early under memory pressure.",
               [("", sampler["early_decisions"])])
        metric("otelgw_sampler_buffered_traces", "gauge", "Traces waiting for a decision.",
               [("", sampler["buffered_traces"])])
        metric("otelgw_sampler_buffered_spans", "gauge", "Spans waiting for a decision.",
               [("", sampler["buffered_spans"])])
        metric("otelgw_sampler_buffered_bytes", "gauge", "Approximate bytes waiting for a decision.",
               [("", sampler["buffered_bytes"])])
    metric("otelgw_writer_rows_written_total", "counter", "Rows inserted into ClickHouse, by table.",
           [(f'{{table="{k}"}}', v) for k, v in writer["rows_written"].items()])
    metric("otelgw_writer_flushes_total", "counter", "Writer flush rounds.", [("", writer["flushes"])])
    metric("otelgw_writer_insert_errors_total", "counter", "Failed insert attempts.", [("", writer["insert_errors"])])
    metric("otelgw_writer_dead_letter_rows_total", "counter", "Rows ClickHouse rejected, kept in dead-letter files.",
           [("", writer["dead_letter_rows"])])
    metric("otelgw_writer_store_healthy", "gauge", "1 while the last insert worked.", [("", int(writer["healthy"]))])
    metric("otelgw_writer_buffered_bytes", "gauge", "Encoded bytes waiting for the next flush.",
           [("", writer["buffered_bytes"])])
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=_prometheus(request.app[STATUS_KEY]()), content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"})
