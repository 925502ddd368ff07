-- Analytics rollups: the inferences table aggregated per minute, hour and day by project, model,
-- provider and service (the "endpoint"), kept by materialized views, so an analytics query over
-- 30 days or a year reads a few thousand pre-aggregated rows instead of millions of inferences.
-- Sums are SimpleAggregateFunction (merged by addition); latency, TTFT and queue-time
-- percentiles are t-digest states, which merge across rows, tiers and groups (approximate, like
-- any t-digest, to about a percent).
-- The hour table is fed from the minute table and the day table from the hour table (cascading
-- views), so each insert block is aggregated once from raw rows, then from a few rows each.
-- `minute` is the start of the row's period in every table (one column name, one query shape).
--
-- A re-sent span collapses in `inferences` (ReplacingMergeTree) but is counted twice here:
-- insert-level deduplication (schema/002) covers the write-ahead log's replays, so only an
-- exporter retrying a request whose answer it lost can double-count.

ALTER TABLE inferences ADD COLUMN IF NOT EXISTS queue_ms Nullable(Float64) AFTER ttft_source;

CREATE TABLE IF NOT EXISTS inference_stats_1m
(
    minute          DateTime('UTC'),
    project_id      LowCardinality(String),
    model           LowCardinality(String),
    provider        LowCardinality(String),
    service_name    LowCardinality(String),
    requests        SimpleAggregateFunction(sum, UInt64),
    successes       SimpleAggregateFunction(sum, UInt64),
    input_tokens    SimpleAggregateFunction(sum, UInt64),
    output_tokens   SimpleAggregateFunction(sum, UInt64),
    cached_tokens   SimpleAggregateFunction(sum, UInt64),
    cache_hits      SimpleAggregateFunction(sum, UInt64),
    cost_usd        SimpleAggregateFunction(sum, Float64),
    latency_ms_sum  SimpleAggregateFunction(sum, Float64),
    latency_ms_max  SimpleAggregateFunction(max, Float64),
    latency_ms_q    AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    ttft_count      SimpleAggregateFunction(sum, UInt64),
    ttft_ms_sum     SimpleAggregateFunction(sum, Float64),
    ttft_ms_q       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    queue_count     SimpleAggregateFunction(sum, UInt64),
    queue_ms_sum    SimpleAggregateFunction(sum, Float64),
    queue_ms_q      AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    -- Output tokens per second of generation, one sample per inference that produced tokens.
    tps_count       SimpleAggregateFunction(sum, UInt64),
    tps_sum         SimpleAggregateFunction(sum, Float64),
    tps_q           AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project_id, minute, model, provider, service_name);

CREATE TABLE IF NOT EXISTS inference_stats_1h AS inference_stats_1m
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project_id, minute, model, provider, service_name);

CREATE TABLE IF NOT EXISTS inference_stats_1d AS inference_stats_1m
ENGINE = AggregatingMergeTree
PARTITION BY toYear(minute)
ORDER BY (project_id, minute, model, provider, service_name);

-- Generation time excludes the wait for the first token when it is known.
CREATE MATERIALIZED VIEW IF NOT EXISTS inference_stats_1m_mv TO inference_stats_1m AS
SELECT
    toStartOfMinute(timestamp) AS minute,
    project_id,
    if(response_model != '', response_model, request_model) AS model,
    provider,
    service_name,
    count() AS requests,
    countIf(is_success) AS successes,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_tokens,
    countIf(cached_input_tokens > 0) AS cache_hits,
    sum(cost_usd) AS cost_usd,
    sum(latency_ms) AS latency_ms_sum,
    max(latency_ms) AS latency_ms_max,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms_q,
    count(ttft_ms) AS ttft_count,
    sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(ttft_ms, 0), ttft_ms IS NOT NULL) AS ttft_ms_q,
    count(queue_ms) AS queue_count,
    sum(ifNull(queue_ms, 0)) AS queue_ms_sum,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(queue_ms, 0), queue_ms IS NOT NULL) AS queue_ms_q,
    countIf(inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_count,
    sumIf(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)),
          inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_sum,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)),
          inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_q
FROM inferences
GROUP BY minute, project_id, model, provider, service_name;

CREATE MATERIALIZED VIEW IF NOT EXISTS inference_stats_1h_mv TO inference_stats_1h AS
SELECT
    toStartOfHour(minute) AS minute,
    project_id, model, provider, service_name,
    sum(requests) AS requests,
    sum(successes) AS successes,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_hits) AS cache_hits,
    sum(cost_usd) AS cost_usd,
    sum(latency_ms_sum) AS latency_ms_sum,
    max(latency_ms_max) AS latency_ms_max,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(latency_ms_q) AS latency_ms_q,
    sum(ttft_count) AS ttft_count,
    sum(ttft_ms_sum) AS ttft_ms_sum,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(ttft_ms_q) AS ttft_ms_q,
    sum(queue_count) AS queue_count,
    sum(queue_ms_sum) AS queue_ms_sum,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(queue_ms_q) AS queue_ms_q,
    sum(tps_count) AS tps_count,
    sum(tps_sum) AS tps_sum,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(tps_q) AS tps_q
FROM inference_stats_1m
GROUP BY minute, project_id, model, provider, service_name;

CREATE MATERIALIZED VIEW IF NOT EXISTS inference_stats_1d_mv TO inference_stats_1d AS
SELECT
    toStartOfDay(minute) AS minute,
    project_id, model, provider, service_name,
    sum(requests) AS requests,
    sum(successes) AS successes,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_hits) AS cache_hits,
    sum(cost_usd) AS cost_usd,
    sum(latency_ms_sum) AS latency_ms_sum,
    max(latency_ms_max) AS latency_ms_max,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(latency_ms_q) AS latency_ms_q,
    sum(ttft_count) AS ttft_count,
    sum(ttft_ms_sum) AS ttft_ms_sum,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(ttft_ms_q) AS ttft_ms_q,
    sum(queue_count) AS queue_count,
    sum(queue_ms_sum) AS queue_ms_sum,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(queue_ms_q) AS queue_ms_q,
    sum(tps_count) AS tps_count,
    sum(tps_sum) AS tps_sum,
    quantilesTDigestMergeState(0.5, 0.95, 0.99)(tps_q) AS tps_q
FROM inference_stats_1h
GROUP BY minute, project_id, model, provider, service_name;

-- Rows written before the views existed (the hour and day tables follow through their views).
INSERT INTO inference_stats_1m
SELECT
    toStartOfMinute(timestamp) AS minute,
    project_id,
    if(response_model != '', response_model, request_model) AS model,
    provider,
    service_name,
    count() AS requests,
    countIf(is_success) AS successes,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_tokens,
    countIf(cached_input_tokens > 0) AS cache_hits,
    sum(cost_usd) AS cost_usd,
    sum(latency_ms) AS latency_ms_sum,
    max(latency_ms) AS latency_ms_max,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms_q,
    count(ttft_ms) AS ttft_count,
    sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(ttft_ms, 0), ttft_ms IS NOT NULL) AS ttft_ms_q,
    count(queue_ms) AS queue_count,
    sum(ifNull(queue_ms, 0)) AS queue_ms_sum,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(queue_ms, 0), queue_ms IS NOT NULL) AS queue_ms_q,
    countIf(inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_count,
    sumIf(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)),
          inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_sum,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)),
          inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_q
FROM inferences FINAL
GROUP BY minute, project_id, model, provider, service_name;
