"""GET /api/openapi.json: the OpenAPI 3.1 document, its schemas generated from the msgspec
types the handlers decode and encode (so the document cannot drift from the code)."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from otelgw import __version__
from otelgw.api import routes
from otelgw.api.schemas import (
    AnalyticsRequest,
    AnalyticsResponse,
    ErrorResponse,
    ExportRequest,
    FeedbackItem,
    FeedbackList,
    FeedbackRequest,
    InferenceDetail,
    ListRequest,
    ListResponse,
    SessionDetail,
    SessionDetailQuery,
    SessionListQuery,
    SessionListResponse,
    TraceFeedbackList,
)
from otelgw.receiver.bud_records import BulkEnvelope

_REF = "#/components/schemas/{name}"


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


def _json(kind: type) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(kind)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", **_json(ErrorResponse)} for code in codes}


def _query_parameters(kind: type) -> list[dict[str, Any]]:
    """The fields of a query-string struct as OpenAPI `in: query` parameters (a query string
    has no null: an optional field is simply left out)."""
    schema = msgspec.json.schema(kind)
    body = schema["$defs"][kind.__name__]
    parameters = []
    for name, field in body["properties"].items():
        options = [o for o in field.get("anyOf", []) if o != {"type": "null"}]
        if options:
            field = {**options[0], **{k: v for k, v in field.items() if k not in ("anyOf", "default")}}
        parameters.append({"name": name, "in": "query", "required": name in body.get("required", []),
                           "schema": field})
    return parameters


@cache
def build() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ListRequest, ListResponse, ExportRequest, InferenceDetail, FeedbackRequest, FeedbackItem, FeedbackList,
         TraceFeedbackList,
         ErrorResponse, AnalyticsRequest, AnalyticsResponse, BulkEnvelope, SessionListResponse, SessionDetail],
        ref_template=_REF)
    inference_id = {"name": "inference_id", "in": "path", "required": True,
                    "schema": {"type": "string", "format": "uuid"}}
    secured = [{"bearer": []}]
    paths = {
        routes.PATH_INFERENCES_LIST: {"post": {
            "summary": "List inferences with filters, sorting and offset or cursor pagination",
            "requestBody": {"required": True, **_json(ListRequest)}, "security": secured,
            "responses": {"200": {"description": "a page", **_json(ListResponse)}, **_errors(400, 401, 403)}}},
        routes.PATH_INFERENCES_EXPORT: {"post": {
            "summary": "Export every matching inference (streamed)",
            "requestBody": {"required": True, **_json(ExportRequest)}, "security": secured,
            "responses": {"200": {"description": "the export", "content": {
                "text/csv": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors(400, 401, 403)}}},
        routes.PATH_INFERENCE: {"get": {
            "summary": "One inference: overview, messages, performance waterfall, raw spans, feedback",
            "parameters": [inference_id], "security": secured,
            "responses": {"200": {"description": "the inference", **_json(InferenceDetail)},
                          **_errors(400, 401, 403, 404)}}},
        routes.PATH_INFERENCE_FEEDBACK: {
            "get": {"summary": "Feedback of an inference, newest first, with a summary", "parameters": [inference_id],
                    "security": secured,
                    "responses": {"200": {"description": "feedback", **_json(FeedbackList)},
                                  **_errors(400, 401, 403, 404)}},
            "post": {"summary": "Add feedback", "parameters": [inference_id], "security": secured,
                     "requestBody": {"required": True, **_json(FeedbackRequest)},
                     "responses": {"201": {"description": "stored", **_json(FeedbackItem)},
                                   **_errors(400, 401, 403, 404)}}},
        routes.PATH_TRACE_FEEDBACK: {"get": {
            "summary": "Feedback of every span of a trace, newest first: inference feedback and evaluations of "
                       "agent, tool and retrieval spans (inference_id null)",
            "parameters": [{"name": "trace_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{1,32}$"}},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000}}],
            "security": secured,
            "responses": {"200": {"description": "feedback", **_json(TraceFeedbackList)},
                          **_errors(400, 401, 403)}}},
        routes.PATH_ANALYTICS: {"post": {
            "summary": "Time series of requests, outcomes, tokens, latency, TTFT, queue time, throughput, "
                       "concurrency, cache and cost per bucket and group (Bud metrics service compatible)",
            "requestBody": {"required": True, **_json(AnalyticsRequest)}, "security": secured,
            "responses": {"200": {"description": "buckets, newest first", **_json(AnalyticsResponse)},
                          **_errors(400, 401, 403)}}},
        routes.PATH_OBSERVABILITY_ADD: {"post": {
            "summary": "Bulk inference records in Bud's CloudEvents envelope (entries[].event.data), made durable "
                       "like OTLP; authorized with an ingest key when ingest keys exist",
            "requestBody": {"required": True, **_json(BulkEnvelope)},
            "responses": {"200": {"description": "summary of inserted, duplicate and invalid records",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          **_errors(400, 401, 403, 429, 503)}}},
        routes.PATH_SESSIONS: {"get": {
            "summary": "Sessions (inferences grouped by project and session id) active in a time range, with their "
                       "figures, filters, sorting and offset pagination",
            "parameters": _query_parameters(SessionListQuery), "security": secured,
            "responses": {"200": {"description": "a page", **_json(SessionListResponse)}, **_errors(400, 401, 403)}}},
        routes.PATH_SESSION: {"get": {
            "summary": "One session: its figures and its inferences in time order (at most 1000), with messages",
            "parameters": [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}},
                           *_query_parameters(SessionDetailQuery)],
            "security": secured,
            "responses": {"200": {"description": "the session", **_json(SessionDetail)},
                          **_errors(400, 401, 403, 404)}}},
        routes.PATH_HEALTHZ: {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        routes.PATH_READY: {"get": {"summary": "Readiness", "responses": {
            "200": {"description": "ready"}, "503": {"description": "not ready"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "otelgw query API", "version": __version__},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


async def document(request: web.Request) -> web.Response:
    return web.json_response(build())
