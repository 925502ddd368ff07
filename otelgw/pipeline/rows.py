"""Rows as they are written to ClickHouse. Field names are column names; the table a row goes
to is its Struct's `TABLE`. Timestamps travel as "sec.nanos" strings, the form ClickHouse's
JSONEachRow reads into DateTime64(9) without losing nanoseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# DateTime64(9) ends in April 2262 (int64 nanoseconds): later values are clamped, not rejected,
# so one bad timestamp cannot fail a whole insert block.
MAX_NS = 9_223_372_036_000_000_000


def ts(ns: int) -> str:
    if 1_000_000_000_000_000_000 <= ns <= MAX_NS:  # every real timestamp: cut the digits
        digits = str(ns)
        return f"{digits[:-9]}.{digits[-9:]}"
    seconds, frac = divmod(min(max(ns, 0), MAX_NS), 1_000_000_000)
    if seconds >= 1_000_000_000:
        return f"{seconds}.{frac:09d}"
    # ClickHouse reads fewer than 10 integer digits as a date, not as seconds: spell it out.
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S") + f".{frac:09d}"


def ts_ns(stamp: str) -> int:
    """`ts` back to nanoseconds."""
    seconds, _, frac = stamp.partition(".")
    if seconds.isdigit():
        whole = int(seconds)
    else:  # an early date `ts` spelled out
        whole = int((datetime.strptime(seconds, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) - _EPOCH).total_seconds())
    return whole * 1_000_000_000 + int((frac + "000000000")[:9])


class InferenceRow(msgspec.Struct, kw_only=True, gc=False):
    TABLE: ClassVar[str] = "inferences"
    inference_id: str
    project_id: str
    trace_id: str
    span_id: str
    parent_span_id: str
    timestamp: str
    end_timestamp: str
    service_name: str
    span_name: str
    span_kind: str
    scope_name: str
    family: str
    operation: str = ""
    provider: str = ""
    request_model: str = ""
    response_model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    cost_source: str = ""
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    ttft_source: str = ""
    queue_ms: float | None = None
    is_streaming: bool = False
    is_success: bool = True
    error_type: str = ""
    error_message: str = ""
    finish_reason: str = ""
    response_id: str = ""
    session_id: str = ""
    user_id: str = ""
    input_preview: str = ""
    output_preview: str = ""
    masked: bool = False
    attributes: dict[str, str] = {}
    ingested_at: str = ""


class MessageRow(msgspec.Struct, kw_only=True, gc=False):
    TABLE: ClassVar[str] = "messages"
    inference_id: str
    project_id: str
    timestamp: str
    direction: str
    index: int
    # Orders messages that came as log records, maybe in several requests (their index is then
    # a key, not a position): schema/015_message_arrival.sql.
    arrival: int = 0
    role: str
    content: str = ""
    content_length: int = 0
    tool_calls: str = ""
    tool_call_id: str = ""
    name: str = ""
    finish_reason: str = ""
    source: str = ""
    ingested_at: str = ""


class FeedbackRow(msgspec.Struct, kw_only=True, gc=False):
    TABLE: ClassVar[str] = "feedback"
    feedback_id: str
    inference_id: str
    project_id: str
    timestamp: str
    kind: str
    name: str
    value: float | None = None
    label: str = ""
    comment: str = ""
    source: str = ""
    created_by: str = ""
    response_id: str = ""
    trace_id: str = ""
    span_id: str = ""
    ingested_at: str = ""


class SpanRow(msgspec.Struct, kw_only=True, gc=False):
    TABLE: ClassVar[str] = "spans"
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    project_id: str
    service_name: str
    name: str
    kind: str
    start_time: str
    end_time: str
    duration_ns: int
    status_code: str
    status_message: str
    attributes: dict[str, str]
    resource_attributes: dict[str, str]
    scope_name: str
    scope_version: str
    events: str
    links: str
    inference_id: str = ""
    ingested_at: str = ""


class LogRow(msgspec.Struct, kw_only=True, gc=False):
    TABLE: ClassVar[str] = "logs"
    project_id: str
    service_name: str
    timestamp: str
    observed_timestamp: str
    trace_id: str
    span_id: str
    severity_number: int
    severity_text: str
    event_name: str
    body: str
    attributes: dict[str, str]
    resource_attributes: dict[str, str]
    scope_name: str
    flags: int
    ingested_at: str = ""


class MetricPointRow(msgspec.Struct, kw_only=True, gc=False):
    TABLE: ClassVar[str] = "metric_points"
    project_id: str
    service_name: str
    metric_name: str
    description: str
    unit: str
    type: str
    aggregation_temporality: str
    is_monotonic: bool
    timestamp: str
    start_timestamp: str
    attributes: dict[str, str]
    resource_attributes: dict[str, str]
    scope_name: str
    # float | str: NaN and ±Inf travel as "nan", "inf", "-inf" (map_metrics._finite).
    value: float | str = 0.0
    count: int = 0
    sum: float | str = 0.0
    min: float | str | None = None
    max: float | str | None = None
    bucket_counts: list[int] = []
    explicit_bounds: list[float | str] = []
    extra: str = ""
    ingested_at: str = ""


class UnmappedRow(msgspec.Struct, kw_only=True, gc=False):
    TABLE: ClassVar[str] = "unmapped_attributes"
    project_id: str
    key: str
    scope_name: str
    count: int
    last_seen: str
    example: str


Row = InferenceRow | MessageRow | FeedbackRow | SpanRow | LogRow | MetricPointRow | UnmappedRow

TABLES: tuple[str, ...] = (
    "inferences", "messages", "feedback", "spans", "logs", "metric_points", "unmapped_attributes",
)


class NativeSpan(msgspec.Struct, array_like=True, gc=False):
    """A span whose row ClickHouse writes from the request bytes (the native fast path): its
    position in the request and what the tail sampler reads."""

    position: int
    trace_id: str
    span_id: str
    project_id: str
    status_code: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]


class RowBatch(msgspec.Struct):
    """Rows mapped from one request, by table."""

    inferences: list[InferenceRow] = []
    messages: list[MessageRow] = []
    feedback: list[FeedbackRow] = []
    spans: list[SpanRow] = []
    logs: list[LogRow] = []
    metric_points: list[MetricPointRow] = []
    unmapped_attributes: list[UnmappedRow] = []
    # Fast path: spans left for ClickHouse to write, and (project, service) of every resource.
    native: list[NativeSpan] = []
    native_resources: list[tuple[str, str]] = []

    def count(self) -> int:
        return sum(len(getattr(self, t)) for t in TABLES)


class EncodedBatch(msgspec.Struct):
    """A RowBatch as JSONEachRow blocks: what crosses from the mapper to the writer (cheap to
    hand between threads or processes)."""

    blocks: dict[str, bytes]
    rows: dict[str, int]


def encode_batch(batch: RowBatch, ingested_at: str, encoder: msgspec.json.Encoder | None = None) -> EncodedBatch:
    enc = encoder or msgspec.json.Encoder()
    blocks: dict[str, bytes] = {}
    rows: dict[str, int] = {}
    for table in TABLES:
        items = getattr(batch, table)
        if not items:
            continue
        if table != "unmapped_attributes":
            for row in items:
                row.ingested_at = ingested_at
        buf = bytearray()
        for row in items:
            enc.encode_into(row, buf, len(buf))
            buf += b"\n"
        blocks[table] = bytes(buf)
        rows[table] = len(items)
    return EncodedBatch(blocks=blocks, rows=rows)
