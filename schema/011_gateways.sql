-- Gateways writing to this database, by write-ahead-log id, with a heartbeat: two live gateways
-- with the same log id (a copied data directory) would drop each other's inserts as duplicates
-- (the log id is in every insert's deduplication token), so the second one refuses to start.
CREATE TABLE IF NOT EXISTS gateways
(
    wal_id     String,
    host       String,
    wal_dir    String,
    pid        UInt32,
    started_at DateTime64(3, 'UTC'),
    seen_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(seen_at)
ORDER BY (wal_id, host, wal_dir)
TTL toDateTime(seen_at) + INTERVAL 7 DAY;
