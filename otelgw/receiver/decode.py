"""Request bytes to OTLP protobuf messages, protobuf or OTLP/JSON, with per-item validation.

Pure: no I/O. A body that cannot be decoded raises DecodeError (HTTP 400 / INVALID_ARGUMENT);
items that are invalid inside a valid body (a span whose trace id is not 16 bytes) are removed
and counted, so the caller can answer OTLP partial success and store the rest.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Any

import msgspec
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import DecodeError as ProtobufDecodeError

from otelgw.pipeline.request import REQUEST_TYPES, RESPONSE_TYPES, Decoded, Signal


class Encoding(StrEnum):
    PROTOBUF = "protobuf"
    JSON = "json"


class DecodeError(ValueError):
    """The body is not a valid OTLP request of the expected signal and encoding."""


_json_decoder = msgspec.json.Decoder()


def decode(signal: Signal, body: bytes, encoding: Encoding) -> Decoded:
    message = _from_protobuf(signal, body) if encoding is Encoding.PROTOBUF else _from_json(signal, body)
    if signal is Signal.TRACES:
        return _validate_traces(message)
    if signal is Signal.LOGS:
        return _validate_logs(message)
    return _count_metrics(message)


def _from_protobuf(signal: Signal, body: bytes) -> Any:
    try:
        return REQUEST_TYPES[signal].FromString(body)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"body is not a valid protobuf {REQUEST_TYPES[signal].__name__}: {exc}") from exc


# OTLP/JSON differs from the protobuf JSON mapping in one way that matters: trace and span ids
# are hex, not base64. These are the places ids live, by signal.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_to_b64(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        # Not hex: leave it empty so validation rejects the item, not the whole request.
        raw = b"\x00"
    return base64.b64encode(raw).decode()


def _fix_ids(obj: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        if key in obj:
            obj[key] = _hex_to_b64(obj[key])


def _items(obj: Any, *path: str) -> list[Any]:
    """All dicts found by following the list-valued keys in `path` (camelCase or snake_case)."""
    level = [obj]
    for key in path:
        snake = "".join("_" + c.lower() if c.isupper() else c for c in key)
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                value = item.get(key, item.get(snake))
                if isinstance(value, list):
                    nxt.extend(v for v in value if isinstance(v, dict))
                elif isinstance(value, dict):
                    nxt.append(value)
        level = nxt
    return level


def _from_json(signal: Signal, body: bytes) -> Any:
    try:
        doc = _json_decoder.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        # ValueError covers invalid UTF-8 in a string; RecursionError, nesting past the stack.
        raise DecodeError(f"body is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(doc, dict):
        raise DecodeError(f"body must be a JSON object (an OTLP {REQUEST_TYPES[signal].__name__})")
    if signal is Signal.TRACES:
        for span in _items(doc, "resourceSpans", "scopeSpans", "spans"):
            _fix_ids(span)
            for link in _items(span, "links"):
                _fix_ids(link)
    elif signal is Signal.LOGS:
        for record in _items(doc, "resourceLogs", "scopeLogs", "logRecords"):
            _fix_ids(record)
    else:
        for kind in ("gauge", "sum", "histogram", "exponentialHistogram"):
            for exemplar in _items(doc, "resourceMetrics", "scopeMetrics", "metrics", kind, "dataPoints", "exemplars"):
                _fix_ids(exemplar)
    message = REQUEST_TYPES[signal]()
    try:
        ParseDict(doc, message, ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError, OverflowError, binascii.Error, RecursionError) as exc:
        raise DecodeError(f"body is not a valid OTLP/JSON {REQUEST_TYPES[signal].__name__}: {exc}") from exc
    return message


def _reject(bad: list[int], index: int, reasons: set[str], by: dict[str, int], code: str, reason: str) -> None:
    bad.append(index)
    reasons.add(reason)
    by[code] = by.get(code, 0) + 1


def _validate_traces(message: Any) -> Decoded:
    accepted = rejected = 0
    reasons: set[str] = set()
    by: dict[str, int] = {}
    for resource_spans in message.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            bad: list[int] = []
            for i, span in enumerate(spans):
                trace_id = span.trace_id
                span_id = span.span_id
                if len(trace_id) != 16 or trace_id == b"\0" * 16:
                    _reject(bad, i, reasons, by, "invalid_trace_id", "trace_id must be 16 non-zero bytes")
                elif len(span_id) != 8 or span_id == b"\0" * 8:
                    _reject(bad, i, reasons, by, "invalid_span_id", "span_id must be 8 non-zero bytes")
                elif span.parent_span_id and len(span.parent_span_id) != 8:
                    _reject(bad, i, reasons, by, "invalid_parent_span_id", "parent_span_id must be empty or 8 bytes")
            for i in reversed(bad):
                del spans[i]
            accepted += len(spans)
            rejected += len(bad)
    return Decoded(Signal.TRACES, message, accepted, rejected, _reason(rejected, "spans", reasons), by)


def _validate_logs(message: Any) -> Decoded:
    accepted = rejected = 0
    reasons: set[str] = set()
    by: dict[str, int] = {}
    for resource_logs in message.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            records = scope_logs.log_records
            bad: list[int] = []
            for i, record in enumerate(records):
                if record.trace_id and len(record.trace_id) != 16:
                    _reject(bad, i, reasons, by, "invalid_trace_id", "trace_id must be empty or 16 bytes")
                elif record.span_id and len(record.span_id) != 8:
                    _reject(bad, i, reasons, by, "invalid_span_id", "span_id must be empty or 8 bytes")
            for i in reversed(bad):
                del records[i]
            accepted += len(records)
            rejected += len(bad)
    return Decoded(Signal.LOGS, message, accepted, rejected, _reason(rejected, "log records", reasons), by)


def _count_metrics(message: Any) -> Decoded:
    accepted = rejected = 0
    for resource_metrics in message.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            metrics = scope_metrics.metrics
            bad: list[int] = []
            for i, metric in enumerate(metrics):
                kind = metric.WhichOneof("data")
                points = len(getattr(metric, kind).data_points) if kind else 0
                if not metric.name:
                    bad.append(i)
                    rejected += max(points, 1)
                else:
                    accepted += points
            for i in reversed(bad):
                del metrics[i]
    return Decoded(Signal.METRICS, message, accepted, rejected,
                   _reason(rejected, "data points", {"metric name must not be empty"}),
                   {"empty_metric_name": rejected} if rejected else {})


def _reason(rejected: int, what: str, reasons: set[str]) -> str:
    if not rejected:
        return ""
    return f"rejected {rejected} {what}: " + "; ".join(sorted(reasons))


def partial_success(decoded: Decoded) -> Any:
    """The Export*ServiceResponse for a decoded request, with partial_success when items were
    rejected."""
    response = RESPONSE_TYPES[decoded.signal]()
    if decoded.rejected:
        field = {"traces": "rejected_spans", "logs": "rejected_log_records", "metrics": "rejected_data_points"}
        setattr(response.partial_success, field[decoded.signal], decoded.rejected)
        response.partial_success.error_message = decoded.error_message
    return response
