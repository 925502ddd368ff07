-- Core tables. The names and the columns listed in the ingestion issue are a contract other
-- tools read: add columns freely, never rename these.
-- Times are DateTime64 in UTC, so text timestamps parse the same on any server time zone.
-- ReplacingMergeTree(ingested_at) on every GenAI table: a re-sent span (an exporter retry, a
-- replayed WAL segment) collapses to one row; read with FINAL or argMax.

CREATE TABLE IF NOT EXISTS inferences
(
    inference_id        UUID,
    project_id          LowCardinality(String),
    trace_id            String,
    span_id             String,
    parent_span_id      String,
    timestamp           DateTime64(9, 'UTC'),
    end_timestamp       DateTime64(9, 'UTC'),
    service_name        LowCardinality(String),
    span_name           String,
    span_kind           LowCardinality(String),
    scope_name          LowCardinality(String),
    family              LowCardinality(String),
    operation           LowCardinality(String),
    provider            LowCardinality(String),
    request_model       LowCardinality(String),
    response_model      LowCardinality(String),
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    reasoning_tokens    UInt64,
    total_tokens        UInt64,
    cost_usd            Float64,
    cost_source         LowCardinality(String),
    latency_ms          Float64,
    ttft_ms             Nullable(Float64),
    ttft_source         LowCardinality(String),
    is_streaming        Bool,
    is_success          Bool,
    error_type          String,
    error_message       String,
    finish_reason       LowCardinality(String),
    response_id         String,
    session_id          String,
    user_id             String,
    input_preview       String,
    output_preview      String,
    attributes          Map(String, String),
    ingested_at         DateTime64(3, 'UTC'),
    INDEX idx_inference_id inference_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_response_id response_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, timestamp, inference_id);

-- Keyed by message position, not by source: the same message carried both on the span and on
-- a log record (OTel GenAI with SPAN_AND_EVENT) collapses to one row.
CREATE TABLE IF NOT EXISTS messages
(
    inference_id   UUID,
    project_id     LowCardinality(String),
    timestamp      DateTime64(9, 'UTC'),
    direction      LowCardinality(String),
    `index`        UInt32,
    role           LowCardinality(String),
    content        String,
    tool_calls     String,
    tool_call_id   String,
    name           String,
    finish_reason  LowCardinality(String),
    source         LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (inference_id, direction, `index`);

-- response_id is kept so an evaluation that names only the provider's response id finds its
-- inference at read time, whichever of the two arrived first.
CREATE TABLE IF NOT EXISTS feedback
(
    feedback_id   UUID,
    inference_id  UUID,
    project_id    LowCardinality(String),
    timestamp     DateTime64(9, 'UTC'),
    kind          LowCardinality(String),
    name          String,
    value         Nullable(Float64),
    label         String,
    comment       String,
    source        LowCardinality(String),
    created_by    String,
    response_id   String,
    trace_id      String,
    span_id       String,
    ingested_at   DateTime64(3, 'UTC'),
    INDEX idx_response_id response_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (inference_id, feedback_id);

-- Ordered by trace id first: a trace-by-ID lookup reads a few granules.
CREATE TABLE IF NOT EXISTS spans
(
    trace_id             String,
    span_id              String,
    parent_span_id       String,
    trace_state          String,
    project_id           LowCardinality(String),
    service_name         LowCardinality(String),
    name                 String,
    kind                 LowCardinality(String),
    start_time           DateTime64(9, 'UTC'),
    end_time             DateTime64(9, 'UTC'),
    duration_ns          UInt64,
    status_code          LowCardinality(String),
    status_message       String,
    attributes           Map(String, String),
    resource_attributes  Map(String, String),
    scope_name           LowCardinality(String),
    scope_version        LowCardinality(String),
    events               String,
    links                String,
    inference_id         String,
    ingested_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(start_time)
ORDER BY (trace_id, span_id);

CREATE TABLE IF NOT EXISTS logs
(
    project_id           LowCardinality(String),
    service_name         LowCardinality(String),
    timestamp            DateTime64(9, 'UTC'),
    observed_timestamp   DateTime64(9, 'UTC'),
    trace_id             String,
    span_id              String,
    severity_number      UInt8,
    severity_text        LowCardinality(String),
    event_name           String,
    body                 String,
    attributes           Map(String, String),
    resource_attributes  Map(String, String),
    scope_name           LowCardinality(String),
    flags                UInt32,
    ingested_at          DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (project_id, service_name, timestamp);

-- One row per data point. Number points fill value; histogram points fill count/sum/min/max
-- and the buckets; exponential histograms and summaries keep their full point in `extra`.
CREATE TABLE IF NOT EXISTS metric_points
(
    project_id              LowCardinality(String),
    service_name            LowCardinality(String),
    metric_name             LowCardinality(String),
    description             String,
    unit                    LowCardinality(String),
    type                    LowCardinality(String),
    aggregation_temporality LowCardinality(String),
    is_monotonic            Bool,
    timestamp               DateTime64(9, 'UTC'),
    start_timestamp         DateTime64(9, 'UTC'),
    attributes              Map(String, String),
    resource_attributes     Map(String, String),
    scope_name              LowCardinality(String),
    value                   Float64,
    count                   UInt64,
    sum                     Float64,
    min                     Nullable(Float64),
    max                     Nullable(Float64),
    bucket_counts           Array(UInt64),
    explicit_bounds         Array(Float64),
    extra                   String,
    ingested_at             DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (project_id, metric_name, timestamp);

-- GenAI-looking attributes no convention table maps: what a user's instrumentation sends
-- that otelgw does not understand yet. Each flush adds partial sums; merges fold them.
CREATE TABLE IF NOT EXISTS unmapped_attributes
(
    project_id   LowCardinality(String),
    key          String,
    scope_name   LowCardinality(String),
    count        SimpleAggregateFunction(sum, UInt64),
    last_seen    SimpleAggregateFunction(max, DateTime64(9, 'UTC')),
    example      SimpleAggregateFunction(anyLast, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (project_id, key, scope_name);
