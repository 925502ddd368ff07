"""Liveness and readiness. Ready means the store answers, the writer's last insert worked and
the gateway is not shutting down."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from otelgw.api.common import READER_KEY, json_response

# Extra readiness checks the app registers (writer health, shutdown state): name -> ok?
READY_CHECKS_KEY: web.AppKey[dict[str, Callable[[], bool]]] = web.AppKey("ready_checks", dict)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    checks = {"store": await request.app[READER_KEY].ping()}
    for name, check in request.app[READY_CHECKS_KEY].items():
        checks[name] = bool(check())
    ok = all(checks.values())
    return json_response({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)
