"""Request and response types of the query API. They validate what comes in (msgspec names the
offending field), shape what goes out, and generate the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

SortKey = Literal["timestamp", "tokens", "latency", "cost", "ttft"]
ExportFormat = Literal["csv", "json", "jsonl", "parquet"]
FeedbackType = Literal["boolean", "rating", "comment", "demonstration"]
MAX_LIMIT = 1000
INT64_MAX = 2**63 - 1

# ISO 8601 (a date alone or a time without zone is UTC), or unix seconds.
DateTime = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"}, max_length=64)]


class InferenceFilter(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Filters shared by listing and export. Dates are ISO 8601; a date without a zone is UTC."""

    from_date: DateTime
    to_date: DateTime | None = None
    project_id: str | None = None
    is_success: bool | None = None
    min_tokens: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None = None
    max_latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    model: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    service_name: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    has_feedback: bool | None = None
    search: str | None = None
    # Any spelling of it: the canonical reason and its spellings match (docs/api.md).
    finish_reason: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class ListRequest(InferenceFilter, forbid_unknown_fields=True, kw_only=True):
    sort_by: SortKey = "timestamp"
    sort_order: Literal["asc", "desc"] = "desc"
    offset: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = 50
    cursor: str | None = None


class ExportRequest(InferenceFilter, forbid_unknown_fields=True, kw_only=True):
    format: ExportFormat = "csv"
    include_messages: bool = False
    sort_order: Literal["asc", "desc"] = "desc"


class InferenceItem(msgspec.Struct, kw_only=True):
    inference_id: str
    timestamp: str
    project_id: str
    service_name: str
    endpoint: str
    provider: str
    model: str
    request_model: str
    response_model: str
    operation: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    total_tokens: int
    latency_ms: float
    ttft_ms: float | None
    cost_usd: float
    is_success: bool
    error_type: str
    is_streaming: bool
    prompt_preview: str
    response_preview: str
    feedback_count: int
    finish_reason: str = ""


class ListResponse(msgspec.Struct, kw_only=True):
    items: list[InferenceItem]
    total_count: int
    offset: int
    limit: int
    has_more: bool
    next_cursor: str | None = None


class FeedbackRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: FeedbackType
    value: bool | int | float | str | None = None
    comment: str = ""
    name: str = ""
    created_by: str = ""


class FeedbackItem(msgspec.Struct, kw_only=True):
    feedback_id: str
    # None only in a trace's feedback: an evaluation of a span no inference row stands for (an
    # agent, tool or retrieval span).
    inference_id: str | None
    kind: str
    name: str
    value: float | None
    label: str
    comment: str
    source: str
    created_by: str
    timestamp: str
    trace_id: str = ""
    span_id: str = ""


class FeedbackSummary(msgspec.Struct, kw_only=True):
    total: int
    by_kind: dict[str, int]
    mean_rating: float | None
    thumbs_up_ratio: float | None


class FeedbackList(msgspec.Struct, kw_only=True):
    inference_id: str
    items: list[FeedbackItem]
    summary: FeedbackSummary


class TraceFeedbackList(msgspec.Struct, kw_only=True):
    trace_id: str
    items: list[FeedbackItem]
    summary: FeedbackSummary
    # More than `limit` rows: the newest are listed.
    has_more: bool


class Message(msgspec.Struct, kw_only=True):
    direction: str
    index: int
    role: str
    content: str
    tool_calls: list[Any]
    tool_call_id: str
    name: str
    finish_reason: str
    source: str


class Phase(msgspec.Struct, kw_only=True):
    name: str
    offset_ms: float
    duration_ms: float | None
    source: str


class ModelBaseline(msgspec.Struct, kw_only=True):
    window_hours: int
    samples: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


class Performance(msgspec.Struct, kw_only=True):
    phases: list[Phase]
    total_ms: float
    ttft_ms: float | None
    ttft_source: str
    queue_ms: float | None
    prefill_ms: float | None
    decode_ms: float | None
    tokens_per_second: float | None
    model_baseline: ModelBaseline


class Overview(msgspec.Struct, kw_only=True):
    inference_id: str
    project_id: str
    trace_id: str
    span_id: str
    parent_span_id: str
    timestamp: str
    end_timestamp: str
    service_name: str
    span_name: str
    family: str
    operation: str
    provider: str
    request_model: str
    response_model: str
    is_success: bool
    error_type: str
    error_message: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_input_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: float
    cost_source: str
    latency_ms: float
    ttft_ms: float | None
    ttft_source: str
    is_streaming: bool
    finish_reason: str
    response_id: str
    session_id: str
    user_id: str
    trace_url: str  # empty for a call a log record said (no trace)
    trace_kept: bool


class InferenceDetail(msgspec.Struct, kw_only=True):
    inference_id: str
    overview: Overview
    messages: list[Message]
    performance: Performance
    raw: dict[str, Any]
    feedback: FeedbackList


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


# -- analytics (compatible with the Bud metrics service's POST /observability/analytics) ------

AnalyticsMetric = Literal["request_count", "success_request", "failure_request", "queuing_time", "input_token",
                          "output_token", "concurrent_requests", "ttft", "latency", "throughput", "cache", "cost"]
FrequencyUnit = Literal["hour", "day", "week", "month", "quarter", "year"]
GroupKey = Literal["model", "project", "endpoint", "provider"]
FilterValue = Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=512)]], msgspec.Meta(min_length=1, max_length=1000)]


class AnalyticsFilters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Each a value or a list of values; `endpoint` and `service_name` name the same column."""

    project: FilterValue | None = None
    model: FilterValue | None = None
    endpoint: FilterValue | None = None
    service_name: FilterValue | None = None
    provider: FilterValue | None = None


class AnalyticsRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    metrics: Annotated[list[AnalyticsMetric], msgspec.Meta(min_length=1)]
    from_date: DateTime
    to_date: DateTime | None = None
    frequency_unit: FrequencyUnit = "day"
    frequency_interval: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    filters: AnalyticsFilters | None = None
    group_by: list[GroupKey] | None = None
    return_delta: bool = True
    fill_time_gaps: bool = True
    topk: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    # Bud's switch between inference and prompt rows; otelgw has inference rows only.
    data_source: Literal["inference"] = "inference"


class AnalyticsGroup(msgspec.Struct, kw_only=True):
    """One group's metrics in one bucket. The ids of the grouped (or singly filtered) columns are
    set; `model_id` is the model name, `endpoint_id` the service name."""

    model_id: str | None = None
    project_id: str | None = None
    endpoint_id: str | None = None
    provider: str | None = None
    api_key_id: str | None = None
    data: dict[str, dict[str, Any]]


class AnalyticsBucket(msgspec.Struct, kw_only=True):
    time_period: str  # UTC, "YYYY-MM-DDTHH:MM:SS" as the Bud service writes it
    items: list[AnalyticsGroup]


class AnalyticsResponse(msgspec.Struct, kw_only=True):
    object: str = "observability_metrics"
    items: list[AnalyticsBucket]
    # Whole-range values per group, their delta against the same length of time just before.
    summary: list[AnalyticsGroup] | None = None


# -- sessions: inferences grouped by (project_id, session_id) -------------------------------

SessionSortKey = Literal["last_seen", "first_seen", "inferences", "tokens", "cost", "errors"]
MAX_SESSION_LIMIT = 500
MAX_SESSION_OFFSET = 10_000_000
MAX_SESSION_INFERENCES = 1000
# A query-string value (the UI and curl send these), bounded like the other text inputs.
QueryText = Annotated[str, msgspec.Meta(max_length=512)]


class SessionListQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """GET /api/v1/sessions query parameters; an empty value is the same as none."""

    from_date: DateTime
    to_date: DateTime | None = None
    project_id: QueryText | None = None
    user_id: QueryText | None = None
    model: QueryText | None = None
    search: QueryText | None = None
    has_errors: bool | None = None
    sort_by: SessionSortKey = "last_seen"
    sort_order: Literal["asc", "desc"] = "desc"
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_SESSION_LIMIT)] = 50
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_SESSION_OFFSET)] = 0


class SessionDetailQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """GET /api/v1/sessions/{session_id} query parameters."""

    project_id: QueryText | None = None


class SessionItem(msgspec.Struct, kw_only=True):
    session_id: str
    project_id: str
    user_id: str
    first_seen: str
    last_seen: str
    inference_count: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float
    error_count: int
    models: list[str]


class SessionListResponse(msgspec.Struct, kw_only=True):
    items: list[SessionItem]
    total_count: int
    limit: int
    offset: int
    has_more: bool


class SessionMessage(msgspec.Struct, kw_only=True):
    direction: str
    index: int
    role: str
    content: str
    tool_calls: list[Any]
    tool_call_id: str
    name: str
    finish_reason: str


class SessionInference(msgspec.Struct, kw_only=True):
    inference_id: str
    timestamp: str
    model: str
    provider: str
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    is_success: bool
    error_type: str
    trace_id: str
    messages: list[SessionMessage]


class SessionDetail(SessionItem, kw_only=True):
    # More than MAX_SESSION_INFERENCES: the first ones only (the figures above cover them all).
    truncated: bool
    inferences: list[SessionInference]
