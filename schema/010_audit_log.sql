-- The audit log (docs/privacy.md): who did what to which data. One row per event; never message
-- content, never a key's secret (only its id). Written by otelgw/governance/audit.py in batches,
-- with a deduplication token per batch so a retried insert keeps one copy.
-- Kept 400 days (TTL below); change it with ALTER TABLE audit_log MODIFY TTL ... .
CREATE TABLE IF NOT EXISTS audit_log
(
    time    DateTime64(9, 'UTC'),
    key_id  String,
    role    LowCardinality(String),
    project LowCardinality(String),
    action  LowCardinality(String),
    target  String,
    client  String,
    result  LowCardinality(String),
    detail  String,
    INDEX idx_key_id key_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_action action TYPE set(100) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY time
TTL toDateTime(time) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000;
