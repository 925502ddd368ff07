"""Batched writer: JSONEachRow blocks per table, flushed by rows or by interval, inserted from
its own thread so no ClickHouse call ever runs on the event loop.

Shaped like the OTel SDK's BatchProcessor (bounded buffer, worker woken at batch size, timer
flush, flush/shutdown with timeouts), with one difference that matters for a gateway: when full
it makes the producer wait, it never drops.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from pathlib import Path

import msgspec

from otelgw.pipeline.rows import TABLES, EncodedBatch
from otelgw.store.client import ClientFactory

log = logging.getLogger(__name__)

INSERT_SETTINGS = {
    "input_format_skip_unknown_fields": 1,
    "input_format_null_as_default": 1,
}


class WriterStats(msgspec.Struct):
    rows_written: dict[str, int] = {}
    flushes: int = 0
    insert_errors: int = 0
    dead_letter_blocks: int = 0
    buffered_bytes: int = 0
    last_error: str = ""
    healthy: bool = True


class BatchWriter:
    def __init__(
        self,
        clients: ClientFactory,
        *,
        batch_rows: int,
        flush_interval_s: float,
        max_bytes: int,
        attempts: int,
        dead_letter_dir: str | Path,
    ) -> None:
        self._clients = clients
        self._batch_rows = batch_rows
        self._interval = flush_interval_s
        self._max_bytes = max_bytes
        self._attempts = attempts
        self._dead_letter_dir = Path(dead_letter_dir)
        self._cond = threading.Condition()
        self._buffers: dict[str, list[bytes]] = {t: [] for t in TABLES}
        self._rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._bytes = 0
        self._oldest = 0.0
        self._flush_requested = 0  # generation counters: a flush() waits for its own round
        self._flush_done = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = WriterStats(rows_written=dict.fromkeys(TABLES, 0))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otelgw-writer", daemon=True)
        self._thread.start()

    def add(self, batch: EncodedBatch, timeout: float | None = None) -> bool:
        """Buffer a batch; waits while the buffer is full. False if it timed out or the writer
        is stopping (the caller still owns the rows)."""
        size = sum(len(b) for b in batch.blocks.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._bytes and self._bytes + size > self._max_bytes and not self._stopping:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.notify_all()
                self._cond.wait(remaining if remaining is not None else 0.5)
            if self._stopping and self._thread is None:
                return False
            if not self._bytes:
                self._oldest = time.monotonic()
            for table, block in batch.blocks.items():
                self._buffers[table].append(block)
                self._rows[table] += batch.rows.get(table, 0)
            self._bytes += size
            self.stats.buffered_bytes = self._bytes
            if max(self._rows.values()) >= self._batch_rows:
                self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything buffered now; True once it is in ClickHouse (or dead-lettered)."""
        with self._cond:
            self._flush_requested += 1
            wanted = self._flush_requested
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._flush_done >= wanted, timeout)

    def stop(self, timeout: float | None = None) -> bool:
        ok = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        return ok

    def _take(self) -> tuple[dict[str, list[bytes]], dict[str, int], int]:
        buffers, rows, size = self._buffers, self._rows, self._bytes
        self._buffers = {t: [] for t in TABLES}
        self._rows = dict.fromkeys(TABLES, 0)
        self._bytes = 0
        self.stats.buffered_bytes = 0
        return buffers, rows, size

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    due = self._bytes and (time.monotonic() - self._oldest >= self._interval)
                    full = max(self._rows.values()) >= self._batch_rows
                    flush_wanted = self._flush_requested > self._flush_done
                    if due or full or flush_wanted or self._stopping:
                        break
                    wait = self._interval - (time.monotonic() - self._oldest) if self._bytes else self._interval
                    self._cond.wait(max(wait, 0.005))
                round_id = self._flush_requested
                buffers, rows, _ = self._take()
                stopping = self._stopping
                self._cond.notify_all()  # producers waiting for room
            for table in TABLES:
                if buffers[table]:
                    self._insert(table, b"".join(buffers[table]), rows[table])
            with self._cond:
                self._flush_done = max(self._flush_done, round_id)
                self.stats.flushes += 1
                self._cond.notify_all()
            if stopping:
                return

    def _insert(self, table: str, block: bytes, rows: int) -> None:
        delay = 0.2
        for attempt in range(1, self._attempts + 1):
            try:
                self._clients.get().raw_insert(table, insert_block=block, settings=INSERT_SETTINGS, fmt="JSONEachRow")
                self.stats.rows_written[table] += rows
                self.stats.healthy = True
                return
            except Exception as exc:  # every driver error is retried the same way
                self.stats.insert_errors += 1
                self.stats.healthy = False
                self.stats.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
                log.warning("insert failed", extra={"table": table, "rows": rows, "attempt": attempt,
                                                    "error": self.stats.last_error})
                self._clients.discard()
                if attempt < self._attempts:
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
        self._dead_letter(table, block, rows)

    def _dead_letter(self, table: str, block: bytes, rows: int) -> None:
        self._dead_letter_dir.mkdir(parents=True, exist_ok=True)
        path = self._dead_letter_dir / f"{table}-{time.time_ns()}-{os.getpid()}.jsonl"
        path.write_bytes(block)
        self.stats.dead_letter_blocks += 1
        log.error("insert gave up; block written to dead-letter file",
                  extra={"table": table, "rows": rows, "path": str(path), "error": self.stats.last_error})
