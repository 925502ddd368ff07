-- Analytics rollups: the inferences table aggregated per minute, hour and day by project, model,
-- provider and service (the "endpoint"), kept by materialized views, so an analytics query over
-- 30 days or a year reads a few thousand pre-aggregated rows instead of millions of inferences.
-- Sums are SimpleAggregateFunction (merged by addition). Latency, TTFT, queue time and
-- throughput keep log-bucketed histograms (sparse maps, merged with sumMap): bucket
-- k = round(ln(value * 1000) / ln(1.05)), so a percentile read back as 1.05^k / 1000 is within
-- 2.5 % of the true value, and a state has as many entries as distinct buckets, whatever the row
-- count. (t-digest states hold every value up to ~2000 of them, so merging a month of hourly
-- states cost as much as reading the rows: 2x slower here, loadtest/bench_analytics.py.)
-- The hour table is fed from the minute table and the day table from the hour table (cascading
-- views), so each insert block is aggregated once from raw rows, then from a few rows each.
-- `minute` is the start of the row's period in every table (one column name, one query shape).
--
-- A re-sent span collapses in `inferences` (ReplacingMergeTree) but is counted twice here:
-- insert-level deduplication (schema/002) covers the write-ahead log's replays, so only an
-- exporter retrying a request whose answer it lost can double-count.

ALTER TABLE inferences ADD COLUMN IF NOT EXISTS queue_ms Nullable(Float64) AFTER ttft_source;

-- When a migration step happened (the first time, whichever gateway ran it): backfills read only
-- rows stored before their view existed.
CREATE TABLE IF NOT EXISTS migration_marks
(
    name String,
    at   DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY name;

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
    latency_ms_h    SimpleAggregateFunction(sumMap, Map(UInt16, UInt64)),
    ttft_count      SimpleAggregateFunction(sum, UInt64),
    ttft_ms_sum     SimpleAggregateFunction(sum, Float64),
    ttft_ms_h       SimpleAggregateFunction(sumMap, Map(UInt16, UInt64)),
    queue_count     SimpleAggregateFunction(sum, UInt64),
    queue_ms_sum    SimpleAggregateFunction(sum, Float64),
    queue_ms_h      SimpleAggregateFunction(sumMap, Map(UInt16, UInt64)),
    -- Output tokens per second of generation, one sample per inference that produced tokens.
    tps_count       SimpleAggregateFunction(sum, UInt64),
    tps_sum         SimpleAggregateFunction(sum, Float64),
    tps_h           SimpleAggregateFunction(sumMap, Map(UInt16, UInt64))
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
    sumMap(map(toUInt16(greatest(0, least(65535, round(log(greatest(latency_ms, 0.000001) * 1000) / log(1.05))))), toUInt64(1))) AS latency_ms_h,
    count(ttft_ms) AS ttft_count,
    sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum,
    sumMapIf(map(toUInt16(greatest(0, least(65535, round(log(greatest(ifNull(ttft_ms, 0), 0.000001) * 1000) / log(1.05))))), toUInt64(1)), ttft_ms IS NOT NULL) AS ttft_ms_h,
    count(queue_ms) AS queue_count,
    sum(ifNull(queue_ms, 0)) AS queue_ms_sum,
    sumMapIf(map(toUInt16(greatest(0, least(65535, round(log(greatest(ifNull(queue_ms, 0), 0.000001) * 1000) / log(1.05))))), toUInt64(1)), queue_ms IS NOT NULL) AS queue_ms_h,
    countIf(inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_count,
    sumIf(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)),
          inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_sum,
    sumMapIf(map(toUInt16(greatest(0, least(65535, round(log(greatest(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)), 0.000001) * 1000) / log(1.05))))), toUInt64(1)),
             inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_h
FROM inferences
GROUP BY minute, project_id, model, provider, service_name;

INSERT INTO migration_marks VALUES ('inference_stats_1m_mv', now64(3));

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
    sumMap(latency_ms_h) AS latency_ms_h,
    sum(ttft_count) AS ttft_count,
    sum(ttft_ms_sum) AS ttft_ms_sum,
    sumMap(ttft_ms_h) AS ttft_ms_h,
    sum(queue_count) AS queue_count,
    sum(queue_ms_sum) AS queue_ms_sum,
    sumMap(queue_ms_h) AS queue_ms_h,
    sum(tps_count) AS tps_count,
    sum(tps_sum) AS tps_sum,
    sumMap(tps_h) AS tps_h
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
    sumMap(latency_ms_h) AS latency_ms_h,
    sum(ttft_count) AS ttft_count,
    sum(ttft_ms_sum) AS ttft_ms_sum,
    sumMap(ttft_ms_h) AS ttft_ms_h,
    sum(queue_count) AS queue_count,
    sum(queue_ms_sum) AS queue_ms_sum,
    sumMap(queue_ms_h) AS queue_ms_h,
    sum(tps_count) AS tps_count,
    sum(tps_sum) AS tps_sum,
    sumMap(tps_h) AS tps_h
FROM inference_stats_1h
GROUP BY minute, project_id, model, provider, service_name;

-- Rows written before the views existed (the hour and day tables follow through their views).
-- Safe when several gateways start together and each applies this migration: the backfill has
-- a fixed deduplication token (a second copy is dropped, and so are its views' inserts), and
-- it reads only rows stored before the minute view was created (later ones are the view's).
ALTER TABLE inference_stats_1m MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE inference_stats_1h MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE inference_stats_1d MODIFY SETTING non_replicated_deduplication_window = 1000;

INSERT INTO inference_stats_1m
SETTINGS insert_deduplication_token = 'otelgw-migration-006-backfill', insert_deduplicate = 1,
         deduplicate_blocks_in_dependent_materialized_views = 1
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
    sumMap(map(toUInt16(greatest(0, least(65535, round(log(greatest(latency_ms, 0.000001) * 1000) / log(1.05))))), toUInt64(1))) AS latency_ms_h,
    count(ttft_ms) AS ttft_count,
    sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum,
    sumMapIf(map(toUInt16(greatest(0, least(65535, round(log(greatest(ifNull(ttft_ms, 0), 0.000001) * 1000) / log(1.05))))), toUInt64(1)), ttft_ms IS NOT NULL) AS ttft_ms_h,
    count(queue_ms) AS queue_count,
    sum(ifNull(queue_ms, 0)) AS queue_ms_sum,
    sumMapIf(map(toUInt16(greatest(0, least(65535, round(log(greatest(ifNull(queue_ms, 0), 0.000001) * 1000) / log(1.05))))), toUInt64(1)), queue_ms IS NOT NULL) AS queue_ms_h,
    countIf(inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_count,
    sumIf(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)),
          inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_sum,
    sumMapIf(map(toUInt16(greatest(0, least(65535, round(log(greatest(inferences.output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)), 0.000001) * 1000) / log(1.05))))), toUInt64(1)),
             inferences.output_tokens > 0 AND latency_ms - ifNull(ttft_ms, 0) > 0) AS tps_h
FROM inferences FINAL
WHERE ingested_at < (SELECT min(at) FROM migration_marks WHERE name = 'inference_stats_1m_mv')
GROUP BY minute, project_id, model, provider, service_name;
