-- The ngram bloom filters on the previews (migration 003) never served a search and cost about a
-- third of every inference insert (~9-17 us of ~30-40 us a row in chDB, loadtest/bench_stages.py):
-- - the listing's search is `positionCaseInsensitiveUTF8(...)`, which `ngrambf_v1` does not
--   answer (EXPLAIN indexes=1 shows it skipping nothing; only LIKE / equality / multiSearchAny
--   use it);
-- - even with LIKE, a 4 KiB filter per 4 granules (32,768 rows of ~1,000 4-grams each) is
--   saturated on real text: every granule would "match".
-- Search scans the window's previews, as it always did.
ALTER TABLE inferences DROP INDEX IF EXISTS idx_preview_in;
ALTER TABLE inferences DROP INDEX IF EXISTS idx_preview_out;
