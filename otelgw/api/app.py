"""The API application: routes wired to their handlers, behind JSON errors and API-key auth."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from otelgw.api import (
    analytics,
    audit_log,
    dead_letter,
    erasure,
    export,
    feedback,
    health,
    inferences,
    keys,
    observability_add,
    openapi,
    retention,
    routes,
    search,
    semconv,
    sessions,
    status,
    traces,
)
from otelgw.api import web as web_ui
from otelgw.api.common import (
    AUTH_KEY,
    BASELINE_CACHE_KEY,
    CANONICAL_KEY,
    FLUSH_INTERVAL_KEY,
    PIPELINE_KEY,
    PRINCIPAL,
    READER_KEY,
    ApiError,
    TTLCache,
    error,
)
from otelgw.auth import Authenticator, Forbidden, Unauthorized, bearer_token
from otelgw.canonical import CanonicalValues
from otelgw.governance.audit import AUDIT_KEY, Auditor, audit
from otelgw.jsonlog import log_context
from otelgw.pipeline.pipeline import Pipeline
from otelgw.store.reader import Reader
from otelgw.telemetry.registry import Telemetry

log = logging.getLogger(__name__)
# Query bodies are small; /observability/add takes up to 1000 records in one body.
MAX_BODY_BYTES = 8 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (method, path, handler, role needed; None = public)
ROUTES: list[tuple[str, str, Handler, str | None]] = [
    ("GET", routes.PATH_HEALTHZ, health.healthz, None),
    ("GET", routes.PATH_READY, health.ready, None),
    ("GET", routes.PATH_METRICS, status.metrics, None),
    ("GET", routes.PATH_OPENAPI, openapi.document, None),
    ("GET", routes.PATH_STATUS, status.status, routes.VIEWER),
    ("POST", routes.PATH_INFERENCES_LIST, inferences.list_inferences, routes.VIEWER),
    ("POST", routes.PATH_INFERENCES_EXPORT, export.export_inferences, routes.VIEWER),
    ("GET", routes.PATH_INFERENCE, inferences.get_inference, routes.VIEWER),
    ("GET", routes.PATH_INFERENCE_FEEDBACK, feedback.get_feedback, routes.VIEWER),
    ("POST", routes.PATH_INFERENCE_FEEDBACK, feedback.post_feedback, routes.EDITOR),
    ("GET", routes.PATH_SEMCONV_UNMAPPED, semconv.unmapped, routes.VIEWER),
    ("GET", routes.PATH_INFERENCE_TRACE, traces.inference_trace, routes.VIEWER),
    ("GET", routes.PATH_TRACE_FEEDBACK, feedback.get_trace_feedback, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_TRACE, traces.trace_v1, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_TRACE_V2, traces.trace_v2, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_SEARCH, search.search, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_TAGS, search.tags_v1, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_TAGS_V2, search.tags_v2, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_TAG_VALUES, search.tag_values_v1, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_TAG_VALUES_V2, search.tag_values_v2, routes.VIEWER),
    ("GET", routes.PATH_TEMPO_ECHO, traces.echo, None),
    ("GET", routes.PATH_TEMPO_BUILDINFO, traces.buildinfo, None),
    ("POST", routes.PATH_ANALYTICS, analytics.analytics, routes.VIEWER),
    # Authorized as OTLP ingest is (ingest keys), inside the handler.
    ("POST", routes.PATH_OBSERVABILITY_ADD, observability_add.add, None),
    ("GET", routes.PATH_SESSIONS, sessions.list_sessions, routes.VIEWER),
    ("GET", routes.PATH_SESSION, sessions.get_session, routes.VIEWER),
    ("GET", routes.PATH_WHOAMI, keys.whoami, routes.VIEWER),
    ("GET", routes.PATH_RETENTION, retention.get_retention, routes.ADMIN),
    ("PUT", routes.PATH_RETENTION, retention.set_retention, routes.ADMIN),
    ("POST", routes.PATH_DATA_DELETE, erasure.create_job, routes.ADMIN),
    ("GET", routes.PATH_DATA_DELETE_JOB, erasure.get_job, routes.ADMIN),
    ("GET", routes.PATH_AUDIT, audit_log.list_audit, routes.ADMIN),
    ("GET", routes.PATH_KEYS, keys.list_keys, routes.ADMIN),
    ("POST", routes.PATH_KEYS, keys.create_key, routes.ADMIN),
    ("DELETE", routes.PATH_KEY, keys.revoke_key, routes.ADMIN),
    ("GET", routes.PATH_DEAD_LETTER, dead_letter.list_dead_letters, routes.ADMIN),
    ("POST", routes.PATH_DEAD_LETTER_REPLAY, dead_letter.replay, routes.ADMIN),
]


def _guard(handler: Handler, role: str | None) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if role is not None:
            caller = request.app[AUTH_KEY].principal(bearer_token(request.headers.get("Authorization")))
            request[PRINCIPAL] = caller  # before the role check: a refusal is audited with the caller
            if not caller.can(role):
                raise Forbidden(f"this key's role ({caller.role}) may not do this (needs {role})")
        return await handler(request)

    return guarded


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status == 403:
            audit(request, "access.denied", target=f"{request.method} {request.path}", result="forbidden")
        return error(exc.status, exc.code, exc.message)
    except Unauthorized as exc:
        audit(request, "login.failed", target=f"{request.method} {request.path}", result="unauthorized")
        response = error(401, "unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = 'Bearer realm="otelgw"'
        return response
    except Forbidden as exc:
        audit(request, "access.denied", target=f"{request.method} {request.path}", result="forbidden")
        return error(403, "forbidden", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        if "Allow" in exc.headers:  # a 405 says what the path takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:  # a store error must answer JSON, not take the handler down
        log.exception("API request failed", extra={"path": request.path})
        return error(500, "internal", f"{type(exc).__name__}: {str(exc)[:300]}")


def build_api_app(reader: Reader, auth: Authenticator, flush_interval_s: float,
                  ready_checks: dict[str, Callable[[], bool]],
                  status_snapshot: Callable[[], dict[str, Any]], telemetry: Telemetry,
                  pipeline: Pipeline, auditor: Auditor | None = None) -> web.Application:
    app = web.Application(middlewares=[log_context, errors_as_json], client_max_size=MAX_BODY_BYTES)
    app[READER_KEY] = reader
    app[CANONICAL_KEY] = CanonicalValues.load()
    app[AUTH_KEY] = auth
    app[FLUSH_INTERVAL_KEY] = flush_interval_s
    app[BASELINE_CACHE_KEY] = TTLCache(ttl_s=300)
    app[health.READY_CHECKS_KEY] = ready_checks
    app[status.STATUS_KEY] = status_snapshot
    app[status.TELEMETRY_KEY] = telemetry
    app[PIPELINE_KEY] = pipeline
    app[AUDIT_KEY] = auditor or Auditor()
    # GET routes answer HEAD too (probes and link checkers send it), as aiohttp's add_get does.
    for method, path, handler, role in ROUTES:
        if method == "GET":
            app.router.add_get(path, _guard(handler, role))
        else:
            app.router.add_route(method, path, _guard(handler, role))
    app[web_ui.WEB_ASSETS_KEY] = web_ui.WebAssets()
    for path in routes.UI_PAGES:
        app.router.add_get(path, web_ui.shell)
    app.router.add_get(routes.PATH_UI_ASSET, web_ui.asset)
    return app
