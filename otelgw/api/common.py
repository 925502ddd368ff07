"""What every API module shares: app keys, JSON answers, the error shape, request decoding,
the caller's identity, time formatting."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from otelgw.auth import Authenticator, Principal
from otelgw.canonical import CanonicalValues
from otelgw.pipeline.pipeline import Pipeline
from otelgw.pipeline.rows import MAX_NS
from otelgw.store.reader import Reader

READER_KEY: web.AppKey[Reader] = web.AppKey("reader", Reader)
# The finish reasons' spellings, for filters (semconv/values.toml, read once at start).
CANONICAL_KEY: web.AppKey[CanonicalValues] = web.AppKey("canonical_values", CanonicalValues)
AUTH_KEY: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
# Settings the API passes on: how long a flushed row may take to show, for feedback waits.
FLUSH_INTERVAL_KEY: web.AppKey[float] = web.AppKey("flush_interval_s", float)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
# The gateway's pipeline, for routes that take data in (/observability/add, dead-letter replay).
PIPELINE_KEY: web.AppKey[Pipeline] = web.AppKey("pipeline", Pipeline)


class TTLCache:
    """A small bounded cache with expiry, for figures that need not be fresher than a minute
    (a model's 24 h baseline)."""

    def __init__(self, ttl_s: float, max_items: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._items.get(key)
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        return hit[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._items) >= self.max_items:
            self._items.clear()
        self._items[key] = (time.monotonic(), value)


BASELINE_CACHE_KEY: web.AppKey[TTLCache] = web.AppKey("baseline_cache", TTLCache)

_encoder = msgspec.json.Encoder()
T = TypeVar("T")


class ApiError(Exception):
    """Raised by handlers; the middleware turns it into {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def no_rows() -> list[dict[str, Any]]:
    """An awaitable empty result, for a query a handler skips inside asyncio.gather."""
    return []


async def decode_body(request: web.Request, kind: type[T]) -> T:
    """The JSON body as `kind`; a 400 naming the field when it does not fit."""
    raw = await request.read()
    if not raw:
        raise ApiError(400, "invalid_request", "a JSON body is required")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc


def rfc3339_ns(ns: int) -> str:
    """2026-11-26T11:05:02.299512345Z: nanoseconds kept, unlike datetime."""
    if ns <= 0:
        return ""
    seconds, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


# What ClickHouse's DateTime64(9) holds (1900-01-01 .. 2262-04-11, within Int64 nanoseconds). A
# time outside is taken as the nearest end, so "to 9999-12-31" means "to the end" instead of
# wrapping around as an Int64 parameter (which matched nothing, and erased nothing).
# (MAX_NS is where the mapper clamps span times: `clamp_ns` relies on the two being one.)
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime.fromtimestamp(MAX_NS // 1_000_000_000, UTC)
MIN_NS = int(MIN_TIME.timestamp()) * 1_000_000_000


def clamp_ns(ns: int) -> int:
    """Into the storable range, or one past its end: the mapper stores later span times as
    MAX_NS, and an exclusive `to` at MAX_NS would leave those rows out."""
    return min(max(ns, MIN_NS), MAX_NS + 1)


def clamp_time(at: datetime) -> datetime:
    """`at` (zone-aware) moved into the storable range."""
    try:
        at = at.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset that takes it past datetime's range
        return MIN_TIME if at.year < 1900 else MAX_TIME
    return min(max(at, MIN_TIME), MAX_TIME)


def parse_time_ns(value: str, field: str) -> int:
    """ISO 8601 (a date alone, or a time without zone, is UTC) or unix seconds, to ns, clamped to
    the storable range (at or past its end: one past it, see `clamp_ns`)."""
    text = value.strip()
    try:
        if len(text) > 64:
            raise ValueError("too long")
        if text.replace(".", "", 1).isdigit():
            seconds = float(text)
            return MAX_NS + 1 if seconds == float("inf") else clamp_ns(int(seconds * 1_000_000_000))
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"{field}: {value[:80]!r} is not an ISO 8601 date or time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = clamp_time(parsed)
    return MAX_NS + 1 if parsed >= MAX_TIME else clamp_ns(int(parsed.timestamp() * 1_000_000) * 1000)
