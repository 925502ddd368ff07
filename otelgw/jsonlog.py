"""Structured logging: one JSON object per line (time, level, message, logger, the `extra=`
fields of the call, and the trace and span ids of the request being handled), or text for a
terminal.

A request's ids come from its W3C `traceparent` header (gRPC metadata or HTTP header) when the
caller sent one, so a log line joins the caller's trace; otherwise they are new. The span id is
always new: it names this gateway's handling of the request.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_encoder = msgspec.json.Encoder(enc_hook=str)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
# (trace_id, span_id) of the request the current task is handling. A ContextVar, not a global:
# each asyncio task (each request) sees its own.
REQUEST_IDS: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("otelgw_request_ids",
                                                                                     default=None)


def request_ids(traceparent: str | None) -> tuple[str, str]:
    """(trace_id, span_id) for a request: the caller's trace when its traceparent is valid."""
    match = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    trace_id = match.group(1) if match and match.group(1) != "0" * 32 else os.urandom(16).hex()
    return trace_id, os.urandom(8).hex()


@contextlib.contextmanager
def request_scope(traceparent: str | None) -> Iterator[tuple[str, str]]:
    ids = request_ids(traceparent)
    token = REQUEST_IDS.set(ids)
    try:
        yield ids
    finally:
        REQUEST_IDS.reset(token)


@web.middleware
async def log_context(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """aiohttp middleware: the request's ids on every log line written while handling it."""
    with request_scope(request.headers.get("traceparent")):
        return await handler(request)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "logger": record.name,
        }
        ids = REQUEST_IDS.get()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: the message, then the call's fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        ids = REQUEST_IDS.get()
        if ids is not None:
            fields = f"{fields} trace_id={ids[0]} span_id={ids[1]}".strip()
        return f"{text} {fields}" if fields else text


class ClientErrorFilter(logging.Filter):
    """Lines libraries log at ERROR, with a traceback, for what a client sent: grpcio for a
    metadata value that is not UTF-8 (it quotes the value: an Authorization header's secret),
    aiohttp for a request line or header past its limits (a header excerpt). Any client can
    trigger them, so they are kept short, at INFO, without the value."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("grpc") and str(record.msg).startswith("Invalid encoding"):
            record.msg, record.args = "refused a gRPC metadata value that is not UTF-8 (value withheld)", ()
        elif record.name == "aiohttp.server" and record.exc_info and isinstance(record.exc_info[1],
                                                                              HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "unknown"
            record.msg = "refused a malformed HTTP request from %s: %s"
            record.args = (peer, type(record.exc_info[1]).__name__)
        else:
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return logging.getLogger().isEnabledFor(logging.INFO)  # (the level check ran at ERROR)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The drivers are chatty at INFO; their warnings still show.
    for noisy in ("clickhouse_connect", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # On the handler: the libraries log through their own loggers, whose filters a record from
    # a child logger would skip.
    handler.addFilter(ClientErrorFilter())
