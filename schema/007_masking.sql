-- Masking at ingest (otelgw/governance/masking.py): a flag on the inference row when masking
-- changed it or its messages, and each message's original length (kept when the content
-- capture policy stores no content at all).
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS masked Bool DEFAULT false AFTER output_preview;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS content_length UInt32 DEFAULT length(content) AFTER content;
