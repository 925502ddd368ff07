-- Tokens written to the provider's prompt cache (Anthropic bills them at 1.25x the input rate, 2x
-- for one-hour entries): part of input_tokens, as cached (read) tokens are, priced apart.
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS cache_write_input_tokens UInt64 DEFAULT 0 AFTER cached_input_tokens;
