"""OTLP/HTTP receiver (aiohttp): /v1/traces, /v1/logs, /v1/metrics, and the Langfuse SDK path.

Bodies are decompressed by `receiver/body.py`, not by aiohttp (whose gzip decoder accepts a
truncated stream): gzip, deflate and zstd, bounded to max_request_bytes while they are
decompressed (413), streams that end early refused (400). Answers follow the OTLP
spec: the response in the request's encoding, google.rpc.Status bodies on errors, 503 with
Retry-After when the gateway cannot take more.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import Executor

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf.json_format import MessageToJson

from otelgw import protowire
from otelgw.auth import Authenticator, Forbidden, Unauthorized, bearer_token
from otelgw.jsonlog import log_context
from otelgw.pipeline.admission import Overloaded, RateLimited
from otelgw.pipeline.pipeline import Pipeline
from otelgw.pipeline.request import Signal
from otelgw.receiver.body import ENCODINGS as body_encodings
from otelgw.receiver.body import BodyError, decompress
from otelgw.receiver.decode import DecodeError, Encoding
from otelgw.receiver.ingest import BadProject, clean_project, http_connection, ingest
from otelgw.telemetry.gateway import ReceiverInstruments

log = logging.getLogger(__name__)

PATHS: dict[str, Signal] = {
    "/v1/traces": Signal.TRACES,
    "/v1/logs": Signal.LOGS,
    "/v1/metrics": Signal.METRICS,
    # The Langfuse SDK posts OTLP here: apps instrumented for Langfuse switch by changing a URL.
    "/api/public/otel/v1/traces": Signal.TRACES,
}

CONTENT_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": Encoding.PROTOBUF,
    "application/protobuf": Encoding.PROTOBUF,
    "application/json": Encoding.JSON,
}
MEDIA_TYPE = {Encoding.PROTOBUF: "application/x-protobuf", Encoding.JSON: "application/json"}
PROJECT_HEADER = "x-otelgw-project"

PIPELINE_KEY: web.AppKey[Pipeline] = web.AppKey("pipeline", Pipeline)
AUTH_KEY: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
EXECUTOR_KEY: web.AppKey[Executor | None] = web.AppKey("decode_executor", object)  # type: ignore[arg-type]
INSTRUMENTS_KEY: web.AppKey[ReceiverInstruments | None] = web.AppKey("instruments", object)  # type: ignore[arg-type]
# The outcome label of an answer, by status.
OUTCOMES = {200: "ok", 400: "invalid", 401: "unauthenticated", 403: "forbidden", 413: "too_large",
            415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable"}

# google.rpc.Code values for the Status body of an error answer.
_RPC_CODE = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 429: 8, 503: 14, 500: 13}


def status_protobuf(code: int, message: str) -> bytes:
    """A google.rpc.Status message (code = 1, message = 2) without pulling in googleapis."""
    return protowire.status(code, message)


def error_response(status: int, message: str, encoding: Encoding | None,
                   headers: dict[str, str] | None = None) -> web.Response:
    code = _RPC_CODE.get(status, 2)
    if encoding is Encoding.PROTOBUF:
        return web.Response(status=status, body=status_protobuf(code, message),
                            content_type=MEDIA_TYPE[Encoding.PROTOBUF], headers=headers)
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


async def handle_export(request: web.Request) -> web.Response:
    started = time.monotonic()
    response = await _export(request)
    outcome = OUTCOMES.get(response.status, "error")
    instruments = request.app[INSTRUMENTS_KEY]
    if instruments is not None:
        instruments.observe("http", PATHS[request.path].value, outcome, time.monotonic() - started)
    if 400 <= response.status < 429:
        # A client that cannot send (bad body, bad key) is worth a line; overload refusals are
        # counted in /metrics instead of flooding the log.
        log.info("export refused", extra={"protocol": "http", "path": request.path, "status": response.status,
                                          "outcome": outcome})
    return response


async def _export(request: web.Request) -> web.Response:
    signal = PATHS[request.path]
    encoding = CONTENT_TYPES.get(request.content_type)
    if encoding is None:
        return error_response(415, f"unsupported Content-Type {request.content_type!r}: use "
                                   "application/x-protobuf or application/json", None)
    content_encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if content_encoding not in body_encodings:
        return error_response(415, f"unsupported Content-Encoding {content_encoding!r}: use gzip, deflate, "
                                   "zstd or none", encoding)
    try:
        project = request.app[AUTH_KEY].ingest_project(bearer_token(request.headers.get("Authorization")),
                                                       clean_project(request.headers.get(PROJECT_HEADER)))
    except BadProject as exc:
        return error_response(400, str(exc), encoding)
    except Unauthorized as exc:
        return error_response(401, str(exc), encoding, headers={"WWW-Authenticate": 'Bearer realm="otelgw"'})
    except Forbidden as exc:
        return error_response(403, str(exc), encoding)
    pipeline = request.app[PIPELINE_KEY]
    connection = http_connection(request)
    try:
        with pipeline.admission.slot(connection):
            pipeline.check_open(project, connection)
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return error_response(413, f"request body exceeds {request.client_max_size} bytes", encoding)
            except (RequestPayloadError, HttpProcessingError, ValueError) as exc:
                return error_response(400, f"cannot read request body: {exc}".strip(), encoding)
            try:
                if content_encoding in ("", "identity"):
                    body = decompress(raw, content_encoding, request.client_max_size)
                else:  # a few KiB can inflate to max_request_bytes: never on the event loop
                    body = await asyncio.get_running_loop().run_in_executor(
                        request.app[EXECUTOR_KEY], decompress, raw, content_encoding, request.client_max_size)
            except BodyError as exc:
                return error_response(exc.status, str(exc), encoding)
            del raw
            response = await ingest(pipeline, request.app[EXECUTOR_KEY], signal, body, encoding, project, connection)
    except DecodeError as exc:
        return error_response(400, str(exc), encoding)
    except Overloaded as exc:
        status = 429 if isinstance(exc, RateLimited) else 503
        return error_response(status, str(exc), encoding,
                              headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
    if encoding is Encoding.PROTOBUF:
        return web.Response(body=response.SerializeToString(), content_type=MEDIA_TYPE[encoding])
    return web.Response(text=MessageToJson(response, indent=None), content_type=MEDIA_TYPE[encoding])


def build_otlp_http_app(pipeline: Pipeline, auth: Authenticator, max_request_bytes: int,
                        executor: Executor | None, instruments: ReceiverInstruments | None = None) -> web.Application:
    app = web.Application(client_max_size=max_request_bytes, middlewares=[log_context])
    app[INSTRUMENTS_KEY] = instruments
    app[PIPELINE_KEY] = pipeline
    app[AUTH_KEY] = auth
    app[EXECUTOR_KEY] = executor
    app.add_routes([web.post(path, handle_export) for path in PATHS])
    return app
