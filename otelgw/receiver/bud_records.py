"""Bud inference records (the CloudEvents `/observability/add` takes) as OTLP spans.

Each record becomes one span of its own trace, whose id is the inference id, so the record goes
through the same write-ahead log, mapper (semconv/80-bud.toml), tables and rollups as any OTLP
span, and a re-sent record collapses onto the first. The span runs from request arrival to
`request_end_time` when given (an otelgw extension), else to the forward time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otelgw.pipeline.anyvalue import to_json
from otelgw.pipeline.mapper import PROJECT_RESOURCE_ATTRIBUTE

MAX_ENTRIES = 1000
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Text = Annotated[str, msgspec.Meta(max_length=65_536)]
# OTLP carries them as int64 attributes.
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
# Span times are unsigned nanoseconds since 1970, and ClickHouse's DateTime64(9) ends in 2262.
_FIRST = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime(2262, 4, 11, tzinfo=UTC)


class BudRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Bud's InferenceDetailsMetrics, plus optional otelgw extensions (model name, provider,
    tokens, end time, TTFT) that fill the analytics a bare Bud record cannot."""

    inference_id: uuid.UUID
    project_id: _Id
    endpoint_id: _Id
    model_id: _Id
    is_success: bool
    request_arrival_time: datetime
    request_forward_time: datetime
    request_ip: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    cost: Annotated[float, msgspec.Meta(ge=0)] | None = None
    response_analysis: dict[str, Any] | None = None
    api_key_id: _Id | None = None
    user_id: _Id | None = None
    api_key_project_id: _Id | None = None
    error_code: _Text | None = None
    error_message: _Text | None = None
    error_type: _Text | None = None
    status_code: Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    # CloudEvent fields Bud's schema also allows on a record; ignored.
    specversion: Any = None
    topic: Any = None
    pubsubname: Any = None
    source: Any = None
    source_topic: Any = None
    data: Any = None
    traceid: Any = None
    tracestate: Any = None
    traceparent: Any = None
    type: Any = None
    time: Any = None
    debug: Any = None
    notification_metadata: Any = None
    # otelgw extensions.
    request_end_time: datetime | None = None
    model_name: _Id | None = None
    provider: _Id | None = None
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    cached_input_tokens: _Count | None = None
    ttft_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    is_streaming: bool | None = None

    def check(self) -> None:
        """Times without a zone are UTC (as Bud writes them); all within 1970 .. 2262."""
        for name in ("request_arrival_time", "request_forward_time", "request_end_time"):
            moment = getattr(self, name)
            if moment is None:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
                setattr(self, name, moment)
            if not _FIRST <= moment < _LAST:
                raise ValueError(f"{name}: {moment.isoformat()} is outside 1970-01-01 .. 2262-04-11")
        if self.request_forward_time < self.request_arrival_time:
            raise ValueError("request_forward_time must not be before request_arrival_time")
        if self.request_end_time is not None and self.request_end_time < self.request_arrival_time:
            raise ValueError("request_end_time must not be before request_arrival_time")


class Entry(msgspec.Struct, kw_only=True):
    event: dict[str, Any]
    entryId: str | None = None  # noqa: N815 - Dapr's name
    metadata: dict[str, Any] | None = None
    contentType: str | None = None  # noqa: N815 - Dapr's name


class BulkEnvelope(msgspec.Struct, kw_only=True):
    """Dapr's bulk pub/sub delivery; only `entries` is required here."""

    entries: Annotated[list[Entry], msgspec.Meta(max_length=MAX_ENTRIES)]
    id: str | None = None
    metadata: dict[str, Any] | None = None
    pubsubname: str | None = None
    topic: str | None = None
    type: str | None = None


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:  # Bud writes naive times in UTC
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _attribute(key: str, value: Any) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, dict):
        kv.value.string_value = to_json(value)
    else:
        kv.value.string_value = str(value)
    return kv


def to_request(records: list[BudRecord]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for record in records:
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend([
            _attribute("service.name", record.endpoint_id),
            _attribute(PROJECT_RESOURCE_ATTRIBUTE, record.project_id),
        ])
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "bud.observability.add"
        span = scope_spans.spans.add()
        ident = record.inference_id.bytes
        span.trace_id = ident
        span.span_id = ident[8:] if any(ident[8:]) else b"\x00" * 7 + b"\x01"
        span.name = "bud.inference"
        span.kind = Span.SPAN_KIND_SERVER
        start = _ns(record.request_arrival_time)
        forward = _ns(record.request_forward_time)
        span.start_time_unix_nano = start
        span.end_time_unix_nano = _ns(record.request_end_time) if record.request_end_time else forward
        if not record.is_success:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = record.error_message or record.error_type or "failed"
        values: dict[str, Any] = {
            "bud.inference_id": str(record.inference_id), "bud.model_id": record.model_id,
            "bud.endpoint_id": record.endpoint_id, "bud.queue_ms": (forward - start) / 1e6,
            "bud.request_forward_time": record.request_forward_time.isoformat(),
        }
        for name in ("request_ip", "cost", "response_analysis", "api_key_id", "user_id", "api_key_project_id",
                     "error_code", "error_message", "error_type", "status_code", "model_name", "provider",
                     "input_tokens", "output_tokens", "cached_input_tokens", "ttft_ms", "is_streaming"):
            value = getattr(record, name)
            if value is not None:
                values[f"bud.{name}"] = value
        span.attributes.extend(_attribute(k, v) for k, v in values.items())
    return request
