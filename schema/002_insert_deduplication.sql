-- Insert deduplication for the write-ahead log's replays: every insert carries a token made of
-- the log range it came from, and ClickHouse remembers the last N tokens per table. On a
-- Replicated table this is replicated_deduplication_window (on by default); plain MergeTree
-- needs the window set.
ALTER TABLE inferences MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE messages MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE feedback MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE spans MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE logs MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE metric_points MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE unmapped_attributes MODIFY SETTING non_replicated_deduplication_window = 10000;
