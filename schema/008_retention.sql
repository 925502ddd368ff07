-- Retention (otelgw/governance/retention.py, docs/privacy.md "Retention"): per project and per kind
-- of data, enforced by ClickHouse TTL during merges. Content 30 days, span detail 14 days,
-- numbers 400 days by default, counted from when otelgw stored the row.
--
-- The policies: one row per change, the newest per project wins (argMax by updated_at); the row
-- for project '*' holds the defaults, `deleted` drops a project's own policy.
CREATE TABLE IF NOT EXISTS project_retention
(
    project_id   String,
    content_days UInt16,
    numbers_days UInt16,
    spans_days   UInt16,
    deleted      Bool,
    updated_by   String,
    updated_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY project_id;

-- Tables a materialized view fills have no ingestion time: `stored_at` is set at insert (hidden
-- from SELECT * and from positional INSERTs). The rollups merge rows: their `stored_at` is the
-- newest, so a bucket is kept while it is still being added to.
ALTER TABLE inference_lookup ADD COLUMN IF NOT EXISTS stored_at DateTime('UTC') MATERIALIZED now();
ALTER TABLE span_tag_names ADD COLUMN IF NOT EXISTS stored_at DateTime('UTC') MATERIALIZED now();
ALTER TABLE inference_stats_1m ADD COLUMN IF NOT EXISTS stored_at SimpleAggregateFunction(max, DateTime('UTC')) MATERIALIZED now();
ALTER TABLE inference_stats_1h ADD COLUMN IF NOT EXISTS stored_at SimpleAggregateFunction(max, DateTime('UTC')) MATERIALIZED now();
ALTER TABLE inference_stats_1d ADD COLUMN IF NOT EXISTS stored_at SimpleAggregateFunction(max, DateTime('UTC')) MATERIALIZED now();
ALTER TABLE unmapped_attributes ADD COLUMN IF NOT EXISTS stored_at SimpleAggregateFunction(max, DateTime('UTC')) MATERIALIZED now();

-- A TTL change only recomputes each part's TTL bounds (reading project_id and the clock column),
-- not a rewrite of every part: the background merges then drop what expired.
ALTER TABLE messages MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE inferences MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE inference_lookup MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE feedback MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE inference_stats_1m MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE inference_stats_1h MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE inference_stats_1d MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE metric_points MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE spans MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE logs MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE span_tag_names MODIFY SETTING materialize_ttl_recalculate_only = 1;
ALTER TABLE unmapped_attributes MODIFY SETTING materialize_ttl_recalculate_only = 1;

-- The default TTLs, exactly as retention.ttl_statements() writes them when no project has a
-- policy of its own (tests/test_retention.py checks that the two agree). A policy change
-- re-writes these with the per-project values as literals.
ALTER TABLE messages MODIFY TTL toDateTime(ingested_at) + toIntervalDay(30);
ALTER TABLE inferences MODIFY COLUMN input_preview TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY COLUMN output_preview TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY COLUMN attributes TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY TTL toDateTime(ingested_at) + toIntervalDay(400);
ALTER TABLE inference_lookup MODIFY TTL toDateTime(stored_at) + toIntervalDay(400);
ALTER TABLE feedback MODIFY COLUMN comment TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY TTL toDateTime(ingested_at) + toIntervalDay(400);
ALTER TABLE inference_stats_1m MODIFY TTL toDateTime(stored_at) + toIntervalDay(400);
ALTER TABLE inference_stats_1h MODIFY TTL toDateTime(stored_at) + toIntervalDay(400);
ALTER TABLE inference_stats_1d MODIFY TTL toDateTime(stored_at) + toIntervalDay(400);
ALTER TABLE metric_points MODIFY TTL toDateTime(ingested_at) + toIntervalDay(400);
ALTER TABLE spans MODIFY COLUMN attributes TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY COLUMN events TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY TTL toDateTime(ingested_at) + toIntervalDay(14);
ALTER TABLE logs MODIFY COLUMN body TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY COLUMN attributes TTL toDateTime(ingested_at) + toIntervalDay(30), MODIFY TTL toDateTime(ingested_at) + toIntervalDay(14);
ALTER TABLE span_tag_names MODIFY TTL toDateTime(stored_at) + toIntervalDay(14);
ALTER TABLE unmapped_attributes MODIFY TTL toDateTime(stored_at) + toIntervalDay(30)
