-- Feedback is read by trace too (GET /api/v1/traces/{trace_id}/feedback): evaluations of agent,
-- tool or retrieval spans belong to no inference, so the trace is the only way to them. The
-- table is ordered by inference_id; without this a trace's feedback is a full scan.
ALTER TABLE feedback ADD INDEX IF NOT EXISTS idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE feedback MATERIALIZE INDEX idx_trace_id;
