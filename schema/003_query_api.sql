-- Query API (issue 6): skip indexes for the listing filters that are not in the sort key, and
-- the API keys table.
ALTER TABLE inferences ADD INDEX IF NOT EXISTS idx_model request_model TYPE set(256) GRANULARITY 4;
ALTER TABLE inferences ADD INDEX IF NOT EXISTS idx_response_model response_model TYPE set(256) GRANULARITY 4;
ALTER TABLE inferences ADD INDEX IF NOT EXISTS idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4;
ALTER TABLE inferences ADD INDEX IF NOT EXISTS idx_user user_id TYPE bloom_filter(0.01) GRANULARITY 4;
ALTER TABLE inferences ADD INDEX IF NOT EXISTS idx_preview_in lower(input_preview) TYPE ngrambf_v1(4, 4096, 2, 0) GRANULARITY 4;
ALTER TABLE inferences ADD INDEX IF NOT EXISTS idx_preview_out lower(output_preview) TYPE ngrambf_v1(4, 4096, 2, 0) GRANULARITY 4;
ALTER TABLE feedback ADD INDEX IF NOT EXISTS idx_project project_id TYPE set(1024) GRANULARITY 4;

-- Keys are stored as a SHA-256 of their secret part; the key itself is shown once, at creation.
-- A revocation is a newer row for the same key_id (ReplacingMergeTree by updated_at).
CREATE TABLE IF NOT EXISTS api_keys
(
    key_id      String,
    secret_hash String,
    name        String,
    projects    Array(String),
    role        LowCardinality(String),
    ingest      Bool,
    revoked     Bool,
    created_at  DateTime64(3, 'UTC'),
    updated_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY key_id;
