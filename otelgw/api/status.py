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
    metric("otelgw_receiver_overloaded_total", "counter", "Requests refused because the queue was full.",
           [("", pipeline["overloaded"])])
    metric("otelgw_pipeline_map_errors_total", "counter", "Requests the mapper failed on.",
           [("", pipeline["map_errors"])])
    metric("otelgw_pipeline_queue_depth", "gauge", "Requests waiting to be mapped.", [("", pipeline["queue_depth"])])
    metric("otelgw_writer_rows_written_total", "counter", "Rows inserted into ClickHouse, by table.",
           [(f'{{table="{k}"}}', v) for k, v in writer["rows_written"].items()])
    metric("otelgw_writer_flushes_total", "counter", "Writer flush rounds.", [("", writer["flushes"])])
    metric("otelgw_writer_insert_errors_total", "counter", "Failed insert attempts.", [("", writer["insert_errors"])])
    metric("otelgw_writer_dead_letter_blocks_total", "counter", "Blocks given up on and written to dead-letter files.",
           [("", writer["dead_letter_blocks"])])
    metric("otelgw_writer_buffered_bytes", "gauge", "Encoded bytes waiting for the next flush.",
           [("", writer["buffered_bytes"])])
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=_prometheus(request.app[STATUS_KEY]()), content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"})
