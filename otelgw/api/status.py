"""Internal counters: GET /api/v1/status as JSON and GET /metrics in the Prometheus text format
(prometheus-client; the series are listed in docs/operations.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from otelgw.api.common import json_response, principal
from otelgw.telemetry.registry import CONTENT_TYPE, Telemetry

# The app registers a callable returning {"pipeline": {...}, "writer": {...}}.
STATUS_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("status", object)  # type: ignore[arg-type]
TELEMETRY_KEY: web.AppKey[Telemetry] = web.AppKey("telemetry", Telemetry)


async def status(request: web.Request) -> web.Response:
    snapshot = request.app[STATUS_KEY]()
    caller = principal(request)
    masking = snapshot["pipeline"].get("masking") or {}
    # Per-project figures only for the caller's projects.
    snapshot["pipeline"]["masking"] = {p: c for p, c in masking.items() if caller.sees(p)}
    snapshot["inference_series"] = request.app[TELEMETRY_KEY].inferences.stats()
    return json_response(snapshot)


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[TELEMETRY_KEY].render(), headers={"X-Content-Type-Options": "nosniff"})
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
