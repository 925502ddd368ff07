-- Erasure jobs (otelgw/governance/erasure.py, docs/privacy.md): `POST /api/v1/data/delete` and
-- `otelgw data delete` write a job here before answering; the gateway's runner resumes every
-- pending or running job at start. A state change is a newer row for the same job_id
-- (ReplacingMergeTree by version, read with FINAL); `steps_done` records the finished steps, so
-- a job stopped half-way re-runs only the steps left.
CREATE TABLE IF NOT EXISTS erasure_jobs
(
    job_id      String,
    project_id  String,
    selector    String,
    dry_run     Bool,
    status      LowCardinality(String),
    steps_done  Array(String),
    counts      Map(String, UInt64),
    error       String,
    attempts    UInt32,
    created_by  String,
    created_at  DateTime64(3, 'UTC'),
    updated_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY job_id;

-- What a job matched, resolved once from `inferences` by its selector: kind 'inference' rows are
-- the matched inferences (id, trace, span, response id), kind 'trace' rows the traces every
-- inference of which matched (deleted whole). The delete steps read this snapshot, so a resumed
-- job deletes what the job matched when it started. Ids only; removed when the job ends.
CREATE TABLE IF NOT EXISTS erasure_targets
(
    job_id       String,
    kind         LowCardinality(String),
    inference_id UUID,
    trace_id     String,
    span_id      String,
    response_id  String
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, kind, trace_id, span_id, inference_id);
