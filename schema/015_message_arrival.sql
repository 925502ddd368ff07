-- Messages sent as log records, one event each, may come in several export requests (an SDK's
-- SimpleLogRecordProcessor sends each record alone; a batch may end between two events of one
-- call). Their `index` is then a key unique to the event, not a position; `arrival` orders
-- events with equal timestamps (the request's receive time in microseconds, x1000, plus the
-- record's position in it). Messages read in (timestamp, arrival, index) order; a span's own
-- messages share one timestamp and arrival 0, so their index orders them, as before.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS arrival UInt64 DEFAULT 0 AFTER `index`;
