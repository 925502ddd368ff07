"""The API application: routes wired to their handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from otelgw.api import health, inferences, routes, semconv, status
from otelgw.api.common import READER_KEY, error
from otelgw.store.reader import Reader

log = logging.getLogger(__name__)


@web.middleware
async def errors_as_json(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except Exception as exc:  # a store error must answer JSON, not take the handler down
        log.exception("API request failed", extra={"path": request.path})
        return error(500, "internal", f"{type(exc).__name__}: {str(exc)[:300]}")


def build_api_app(reader: Reader, ready_checks: dict[str, Callable[[], bool]],
                  status_snapshot: Callable[[], dict[str, Any]]) -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    app[READER_KEY] = reader
    app[health.READY_CHECKS_KEY] = ready_checks
    app[status.STATUS_KEY] = status_snapshot
    app.add_routes([
        web.get(routes.PATH_HEALTHZ, health.healthz),
        web.get(routes.PATH_READY, health.ready),
        web.get(routes.PATH_INFERENCE, inferences.get_inference),
        web.get(routes.PATH_SEMCONV_UNMAPPED, semconv.unmapped),
        web.get(routes.PATH_STATUS, status.status),
        web.get(routes.PATH_METRICS, status.metrics),
    ])
    return app
