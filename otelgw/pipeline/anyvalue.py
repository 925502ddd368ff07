"""OTLP AnyValue and KeyValue lists as plain Python values and as ClickHouse map strings."""

from __future__ import annotations

import base64
import itertools
import math
from typing import Any

import msgspec

# Deeper kvlist/array nesting than this is kept as a marker: attributes are never that deep in
# real instrumentation, and walking a hostile one would cost stack and time.
MAX_DEPTH = 16
TRUNCATED = "…[truncated]"

_json = msgspec.json.Encoder()


def any_to_py(value: Any, depth: int = 0) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if depth >= MAX_DEPTH:
        return "[too deep]"
    if which == "array_value":
        return [any_to_py(v, depth + 1) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_to_py(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value
    return None


DROPPED_ATTRIBUTES = "otelgw.dropped_attributes_count"


def attrs_to_dict(kvs: Any, max_count: int = 0) -> dict[str, Any]:
    """A KeyValue list as a dict. Past `max_count` entries the rest are dropped and counted
    under otelgw.dropped_attributes_count, as the OTel SDK's attribute limits do."""
    if max_count and len(kvs) > max_count:
        out = {kv.key: any_to_py(kv.value) for kv in itertools.islice(kvs, max_count)}
        out[DROPPED_ATTRIBUTES] = len(kvs) - max_count
        return out
    return {kv.key: any_to_py(kv.value) for kv in kvs}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    raise TypeError(type(obj).__name__)


_json_any = msgspec.json.Encoder(enc_hook=_json_default)


def to_json(value: Any) -> str:
    """JSON text for a Python value made by any_to_py (bytes become base64, NaN becomes null)."""
    try:
        return _json_any.encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        return _json_any.encode(_sanitize(value)).decode()


def _sanitize(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _sanitize(v) for k, v in value.items()}
    return value


def to_str(value: Any) -> str:
    """The string stored in a Map(String, String) column for one attribute value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return to_json(value)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def str_map(attrs: dict[str, Any], limit: int = 0) -> dict[str, str]:
    if limit:
        return {k: clip(to_str(v), limit) for k, v in attrs.items()}
    return {k: to_str(v) for k, v in attrs.items()}
