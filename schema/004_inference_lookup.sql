-- Lookup by inference id without scanning: a narrow table ordered by inference_id, kept by a
-- materialized view, gives (project_id, timestamp), which are the inferences table's sort key.
CREATE TABLE IF NOT EXISTS inference_lookup
(
    inference_id UUID,
    project_id   LowCardinality(String),
    timestamp    DateTime64(9, 'UTC'),
    trace_id     String
)
ENGINE = ReplacingMergeTree
ORDER BY inference_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS inference_lookup_mv TO inference_lookup AS
SELECT inference_id, project_id, timestamp, trace_id FROM inferences;

INSERT INTO inference_lookup SELECT inference_id, project_id, timestamp, trace_id FROM inferences;
