"""What every API module shares: app keys, JSON answers, the error shape, time formatting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from otelgw.store.reader import Reader

READER_KEY: web.AppKey[Reader] = web.AppKey("reader", Reader)

_encoder = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


def rfc3339_ns(ns: int) -> str:
    """2026-11-26T11:05:02.299512345Z: nanoseconds kept, unlike datetime."""
    if ns <= 0:
        return ""
    seconds, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
