-- Messages sent as log records, one event each, may come in several export requests (an SDK's
-- SimpleLogRecordProcessor sends each record alone; a batch may end between two events of one
-- call). Their `index` is then a key of the event's own, not a position; `arrival` orders them
-- (the request's receive time in microseconds x 4096, plus the event's place among its call's
-- events in that request). Messages are read in (arrival, index) order: a span's own messages
-- (and a details record's) have arrival 0, so their index orders them, as before.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS arrival UInt64 DEFAULT 0 AFTER `index`;
