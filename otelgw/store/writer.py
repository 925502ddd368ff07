"""Batched writer: JSONEachRow blocks per table, flushed by rows or by interval, inserted from
its own thread so no ClickHouse call ever runs on the event loop.

Shaped like the OTel SDK's BatchProcessor (bounded buffer, worker woken at batch size, timer
flush, flush/shutdown with timeouts), with what a gateway needs on top:
- it never drops: when full the producer waits;
- every block carries the write-ahead-log range it came from; the range is recorded in the
  cut log before the insert and names the block's deduplication token, so a replay after a
  crash repeats the token and ClickHouse keeps one copy;
- a store that is down is retried for as long as it takes (exponential backoff with jitter),
  and the log keeps the data meanwhile; a block ClickHouse rejects as bad data is split until
  the bad rows are isolated, and those go to a dead-letter file;
- once every table of a block is in, `on_commit(last_seq)` moves the log's checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from otelgw.pipeline.fastpath import NativeSpans, unpack_position
from otelgw.pipeline.rows import TABLES, EncodedBatch
from otelgw.pipeline.wal import CutLog
from otelgw.store.client import ClientFactory
from otelgw.store.native import NativeInserter

log = logging.getLogger(__name__)

INSERT_SETTINGS = {
    "input_format_skip_unknown_fields": 1,
    "input_format_null_as_default": 1,
    "insert_deduplicate": 1,
}

# ClickHouse error codes that mean "this data can never be inserted": retrying cannot help.
DATA_ERROR_CODES = frozenset({
    6, 25, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321, 349, 376, 407, 457, 1001,
})
# Besides those, for the fast path's Protobuf reads: BAD_ARGUMENTS (a oneof set twice),
# PROTOBUF_BAD_CAST, UNKNOWN_PROTOBUF_FORMAT. (36 is ClickHouse's catch-all: not for JSON rows.)
NATIVE_DATA_ERROR_CODES = DATA_ERROR_CODES | {36, 436, 444}
_CODE = re.compile(r"Code: (\d+)")
_MAX_BACKOFF_S = 30.0


def block_token(prefix: str, first: int, last: int, table: str, spans: str) -> str:
    """The deduplication token of one table's rows from log records first..last."""
    return f"{prefix}:{first}-{last}:{spans if table == 'spans' else table}"


def is_data_error(exc: BaseException) -> bool:
    match = _CODE.search(str(exc))
    return bool(match) and int(match.group(1)) in DATA_ERROR_CODES


def _native_data_error(exc: BaseException) -> bool:
    # Besides ClickHouse's refusals: a batch that cannot even be prepared (a position without its
    # resource) is a bug retrying cannot fix. Anything else (a closed client, a store that does
    # not answer) is retried, as for JSON rows.
    match = _CODE.search(str(exc))
    return (bool(match) and int(match.group(1)) in NATIVE_DATA_ERROR_CODES) or isinstance(exc, (IndexError, KeyError))


class WriterStats(msgspec.Struct):
    rows_written: dict[str, int] = {}
    flushes: int = 0
    insert_errors: int = 0
    dead_letter_rows: int = 0
    buffered_bytes: int = 0
    last_error: str = ""
    healthy: bool = True
    committed_seq: int = 0
    # Span rows the fast path had ClickHouse write (also counted in rows_written).
    native_rows: int = 0


class _Taken(msgspec.Struct):
    """What one flush writes."""

    buffers: dict[str, list[bytes]]
    plain: dict[str, list[bytes]]
    native: list[NativeSpans]
    native_plain: list[NativeSpans]
    rows: dict[str, int]
    first: int
    last: int
    # Blocks cut elsewhere (a mapping chunk's rows its worker could not insert): (table, block,
    # rows, token), inserted under their own tokens.
    prebuilt: list[tuple[str, bytes, int, str]]
    # Rows workers inserted themselves: (rows by table, seconds by table), for the statistics.
    inserted: list[tuple[dict[str, int], dict[str, float]]]
    # The first record of the block as logged before a crash, when the replay rebuilds only its
    # tail (the checkpoint had stopped inside it): the token and the cut keep the logged range.
    token_first: int


class _Abort(Exception):
    """Shutdown ran out of time while the store was failing: leave the data in the log."""


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
        cuts: CutLog | None = None,
        token_prefix: str = "otelgw",
        native: NativeInserter | None = None,
    ) -> None:
        self._clients = clients
        self._batch_rows = batch_rows
        self._interval = flush_interval_s
        self._max_bytes = max_bytes
        self._attempts = attempts
        self._dead_letter_dir = Path(dead_letter_dir)
        self._cuts = cuts
        self.token_prefix = token_prefix
        # The fast path's inserter: spans ClickHouse writes from request bytes (None: off).
        self._native_inserter = native
        self._spans_token = "spans@off" if native is None else "spans@native"
        self.on_commit: Callable[[int], None] | None = None
        # (table, rows, seconds) after each successful insert, for the metrics.
        self.on_insert: Callable[[str, int, float], None] | None = None
        self._cond = threading.Condition()
        self._buffers: dict[str, list[bytes]] = {t: [] for t in TABLES}
        self._rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        # Rows whose content on a replay may differ (tail-sampled spans): inserted without a
        # deduplication token, deduplicated by their ReplacingMergeTree key instead.
        self._plain: dict[str, list[bytes]] = {t: [] for t in TABLES}
        # Fast-path spans, with and without a token as above.
        self._native: list[NativeSpans] = []
        self._native_plain: list[NativeSpans] = []
        self._native_rows = 0
        self._prebuilt: list[tuple[str, bytes, int, str]] = []
        self._inserted: list[tuple[dict[str, int], dict[str, float]]] = []
        self._token_first = 0
        # The floor of an add() waiting for room: its rows are not buffered yet, but the sampler
        # has already let go of them.
        self._adding_floor = 0
        # The oldest log record the buffered (and the in-flight) rows depend on: the checkpoint
        # must stay below it until they are committed.
        self._floor = 0
        self._inflight_floor = 0
        self._bytes = 0
        self._first_seq = 0
        self._last_seq = 0
        self._holding = False
        self._cut_now = False
        self._oldest = 0.0
        self._flush_requested = 0  # generation counters: a flush() waits for its own round
        self._flush_done = 0
        self._stopping = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = WriterStats(rows_written=dict.fromkeys(TABLES, 0))

    def set_native_tag(self, tag: str) -> None:
        """Which spans the fast path writes depends on its rules and settings (`tag`): with it on,
        the span blocks' tokens carry the tag, so a replay under other rules inserts again (a
        duplicate a merge removes) instead of skipping a block whose other half was never written."""
        # Off has its own tag too: "spans" alone was the token of versions before the tag, with
        # the fast path on as well.
        self._spans_token = f"spans@{tag}" if self._native_inserter is not None else "spans@off"

    @property
    def spans_token(self) -> str:
        return self._spans_token

    def pending_cuts(self, checkpoint: int) -> list[tuple[int, int]]:
        return self._cuts.pending(checkpoint) if self._cuts else []

    def highest_cut(self) -> int:
        return self._cuts.highest() if self._cuts else 0

    def prune_cuts(self, checkpoint: int) -> None:
        if self._cuts:
            self._cuts.prune(checkpoint)

    def start(self) -> None:
        if self._native_inserter is not None:
            self._native_inserter.prepare()
        self._thread = threading.Thread(target=self._run, name="otelgw-writer", daemon=True)
        self._thread.start()

    def add(self, batch: EncodedBatch, seq: int = 0, *, hold: bool = False, cut_end: int = 0,
            timeout: float | None = None, floor: int = 0, tokened: bool = True,
            native: list[NativeSpans] | None = None, prebuilt: list[tuple[str, bytes, int, str]] | None = None,
            inserted: tuple[dict[str, int], dict[str, float]] | None = None, cut_start: int = 0) -> bool:
        """Buffer the rows of log record `seq`; waits while the buffer is full. `hold` keeps the
        writer from flushing (a replayed block is being rebuilt); `cut_end` flushes right after
        this record (the replayed block is complete). `native`: spans for the fast path (their
        request bytes count against the buffer). False if it timed out or the writer is stopped
        (the caller still owns the rows). `prebuilt`: (table, block, rows, token) to insert as they
        are, with this flush; `inserted`: rows a worker inserted, counted with this flush;
        `cut_start`: the first record of the replayed cut this record belongs to."""
        if native and self._native_inserter is None:
            raise ValueError("fast-path spans given to a writer without a native inserter")
        size = (sum(len(b) for b in batch.blocks.values()) + sum(len(n.source.payload) for n in native or ())
                + sum(len(p[1]) for p in prebuilt or ()))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if floor:
                # Until the rows are buffered, the checkpoint must not pass them either.
                self._adding_floor = floor
            try:
                # A block that must end at a given record (a replayed cut) is taken by the writer
                # thread before anything else is added to the buffer.
                while self._cut_now and not self._stopping:
                    self._cond.wait(0.5)
                while (self._bytes and self._bytes + size > self._max_bytes and not self._holding
                       and not self._stopping):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.notify_all()
                    self._cond.wait(remaining if remaining is not None else 0.5)
                if self._stopping and self._thread is None:
                    return False
                if not self._bytes and not self._first_seq:
                    self._oldest = time.monotonic()
                target = self._buffers if tokened else self._plain
                for table, block in batch.blocks.items():
                    target[table].append(block)
                    self._rows[table] += batch.rows.get(table, 0)
                if native:
                    (self._native if tokened else self._native_plain).extend(native)
                    self._native_rows += sum(len(n.positions) for n in native)
                if prebuilt:
                    self._prebuilt.extend(prebuilt)
                if inserted:
                    self._inserted.append(inserted)
                if floor:
                    self._floor = min(self._floor, floor) if self._floor else floor
                self._bytes += size
                if seq:
                    if cut_start and not self._first_seq:
                        self._token_first = cut_start
                    self._first_seq = self._first_seq or seq
                    self._last_seq = seq
                    # Only records hold or release a replayed cut (sampled spans released meanwhile
                    # must not end it early).
                    self._holding = hold
                if cut_end:
                    self._holding = False
                    self._cut_now = True
                self.stats.buffered_bytes = self._bytes
                if self._cut_now or self._full():
                    self._cond.notify_all()
                return True
            finally:
                self._adding_floor = 0

    def _full(self) -> bool:
        return max(self._rows.values()) >= self._batch_rows or self._native_rows >= self._batch_rows

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything buffered now; True once it is in ClickHouse (or dead-lettered)."""
        with self._cond:
            self._flush_requested += 1
            wanted = self._flush_requested
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._flush_done >= wanted, timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """Flush and stop. If the store keeps failing past `timeout`, give up: the rows stay in
        the write-ahead log for the next start. True if everything was committed."""
        ok = self.flush(timeout)
        if not ok:
            self._abort.set()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(timeout or 0, 5.0))
            self._thread = None
        if self._cuts:
            self._cuts.close()
        return ok

    def pending_floor(self) -> int:
        """The oldest log record buffered or in-flight rows depend on (0: none)."""
        with self._cond:
            floors = [f for f in (self._floor, self._inflight_floor, self._adding_floor) if f]
        return min(floors, default=0)

    def _take(self) -> _Taken:
        taken = _Taken(self._buffers, self._plain, self._native, self._native_plain, self._rows,
                       self._first_seq, self._last_seq, self._prebuilt, self._inserted, self._token_first)
        self._prebuilt, self._inserted = [], []
        self._token_first = 0
        self._buffers = {t: [] for t in TABLES}
        self._plain = {t: [] for t in TABLES}
        self._native, self._native_plain = [], []
        self._native_rows = 0
        self._inflight_floor, self._floor = self._floor, 0
        self._rows = dict.fromkeys(TABLES, 0)
        self._bytes = 0
        self._first_seq = self._last_seq = 0
        self._cut_now = False
        self.stats.buffered_bytes = 0
        return taken

    def _due(self) -> bool:
        if self._holding:
            return False
        pending = self._bytes or self._first_seq
        if self._cut_now or self._full():
            return True
        return bool(pending) and time.monotonic() - self._oldest >= self._interval

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    flush_wanted = self._flush_requested > self._flush_done
                    if self._due() or (flush_wanted and not self._holding) or self._stopping:
                        break
                    pending = self._bytes or self._first_seq
                    wait = self._interval - (time.monotonic() - self._oldest) if pending else self._interval
                    self._cond.wait(max(wait, 0.005))
                round_id = self._flush_requested
                taken = self._take()
                first, last = taken.first, taken.last
                stopping = self._stopping
                self._cond.notify_all()  # producers waiting for room
            try:
                self._write_plain(taken.plain, taken.native_plain)
                for table, block, rows, token in taken.prebuilt:
                    self._insert(table, block, rows, token)
                self._write_block(taken.buffers, taken.native, taken.rows, taken.token_first or first, last)
                self._count_inserted(taken.inserted)
                with self._cond:
                    self._inflight_floor = 0
                # After every flush, not only those with new records: sampled spans released
                # later let the checkpoint move past the records they came from.
                if self.on_commit is not None and self.stats.committed_seq:
                    self.on_commit(self.stats.committed_seq)
            except _Abort:
                log.error("store still failing at shutdown; rows stay in the write-ahead log",
                          extra={"first_seq": first, "last_seq": last})
                with self._cond:
                    self._cond.notify_all()
                return
            with self._cond:
                self._inflight_floor = 0
                self._flush_done = max(self._flush_done, round_id)
                self.stats.flushes += 1
                self._cond.notify_all()
            if stopping:
                return

    def _write_plain(self, plain: dict[str, list[bytes]], native: list[NativeSpans]) -> None:
        for table in TABLES:
            if plain[table]:
                block = b"".join(plain[table])
                self._insert(table, block, block.count(b"\n"), None)
        if native:
            self._insert_native(native, None)

    def _write_block(self, buffers: dict[str, list[bytes]], native: list[NativeSpans], rows: dict[str, int],
                     first: int, last: int) -> None:
        if not first and not any(buffers.values()) and not native:
            return
        if first and self._cuts:
            self._append_cut(first, last)
        for table in TABLES:
            if buffers[table]:
                token = block_token(self.token_prefix, first, last, table, self._spans_token)
                self._insert(table, b"".join(buffers[table]), rows[table], token)
        if native:
            self._insert_native(native, f"{self.token_prefix}:{first}-{last}:{self._spans_token}-native")
        if last:
            self.stats.committed_seq = last

    def _append_cut(self, first: int, last: int) -> None:
        """The cut must be on disk before its insert; a disk that refuses (full, read-only) is
        retried like a store that is down, instead of ending the writer thread."""
        assert self._cuts is not None
        delay = 0.2
        while True:
            try:
                self._cuts.append(first, last)
                return
            except OSError as exc:
                self.stats.healthy = False
                self.stats.last_error = f"cuts.log: {type(exc).__name__}: {exc}"
                log.error("cannot write the cut log; retrying", extra={"error": self.stats.last_error})
                if self._abort.wait(delay * (0.5 + random.random())):
                    raise _Abort from exc
                delay = min(delay * 2, _MAX_BACKOFF_S)

    def _count_inserted(self, inserted: list[tuple[dict[str, int], dict[str, float]]]) -> None:
        # On the writer thread, like every other update of the row counts.
        for rows, seconds in inserted:
            for table, count in rows.items():
                self.stats.rows_written[table] = self.stats.rows_written.get(table, 0) + count
                if self.on_insert is not None:
                    self.on_insert(table, count, seconds.get(table, 0.0))

    def _insert(self, table: str, block: bytes, rows: int, token: str | None) -> None:
        """Insert one block, retrying a failing store for as long as it takes. A block the
        store rejects as bad data is split in halves (deterministically, so tokens repeat on
        replay) until the bad rows are alone; those are dead-lettered."""
        def run(settings: dict[str, Any]) -> None:
            self._clients.get().raw_insert(table, insert_block=block, settings=settings, fmt="JSONEachRow")

        self._retrying(table, rows, token, run, lambda: self._split_or_dead_letter(table, block, token))

    def _insert_native(self, items: list[NativeSpans], token: str | None) -> None:
        """The fast path's spans, in one query. ClickHouse refusing them as data (which the
        mapper's checks should prevent) splits the batch by request, deterministically so tokens
        repeat on replay; a request refused alone goes to the dead-letter directory."""
        inserter = self._native_inserter
        assert inserter is not None

        def run(settings: dict[str, Any]) -> None:
            inserter.insert(self._clients.get(), items, settings=settings)

        def split() -> None:
            if len(items) == 1:
                self._dead_letter_native(items[0], token)
                return
            for n, item in enumerate(items):
                self._insert_native([item], f"{token}/{n}" if token else None)

        rows = sum(len(item.positions) for item in items)
        if self._retrying("spans", rows, token, run, split, _native_data_error):
            self.stats.native_rows += rows

    def _retrying(self, table: str, rows: int, token: str | None, run: Callable[[dict[str, Any]], None],
                  on_bad_data: Callable[[], None],
                  data_error: Callable[[BaseException], bool] = is_data_error) -> bool:
        """True once `run` succeeded; False if the rows were handed to `on_bad_data`."""
        delay = 0.2
        data_errors = 0
        while True:
            try:
                settings = {**INSERT_SETTINGS, "insert_deduplication_token": token} if token else \
                    {**INSERT_SETTINGS, "insert_deduplicate": 0}
                started = time.monotonic()
                run(settings)
                self.stats.rows_written[table] += rows
                if self.on_insert is not None:
                    self.on_insert(table, rows, time.monotonic() - started)
                if not self.stats.healthy:
                    log.info("store is taking inserts again", extra={"table": table})
                self.stats.healthy = True
                return True
            except Exception as exc:  # every driver error is classified the same way
                self.stats.insert_errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
                if data_error(exc):
                    data_errors += 1
                    if data_errors >= self._attempts:
                        on_bad_data()
                        return False
                else:
                    self.stats.healthy = False
                    self._clients.discard()
                log.warning("insert failed", extra={"table": table, "rows": rows, "data_error": data_error(exc),
                                                    "error": self.stats.last_error})
                if self._abort.wait(delay * (0.5 + random.random())):
                    raise _Abort from exc
                delay = min(delay * 2, _MAX_BACKOFF_S)

    def _split_or_dead_letter(self, table: str, block: bytes, token: str | None) -> None:
        lines = block.rstrip(b"\n").split(b"\n")
        if len(lines) == 1:
            self._dead_letter(table, block, token or f"{table}-{time.time_ns()}")
            return
        middle = len(lines) // 2
        for half, part in ((0, lines[:middle]), (1, lines[middle:])):
            self._insert(table, b"\n".join(part) + b"\n", len(part), f"{token}/{half}" if token else None)

    def _dead_letter_native(self, item: NativeSpans, token: str | None) -> None:
        """The request as received, and which of its spans were not stored (its other spans were,
        by the Python path or in other inserts)."""
        self._dead_letter_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", token or f"spans-native-{time.time_ns()}")
        path = self._dead_letter_dir / f"{name}-{os.getpid()}.pb"
        path.write_bytes(item.source.payload)
        path.with_suffix(".positions.json").write_bytes(msgspec.json.encode(
            {"spans_not_stored": [unpack_position(p) for p in item.positions], "resources": item.source.resources}))
        self.stats.dead_letter_rows += len(item.positions)
        log.error("ClickHouse rejected fast-path spans as bad data; the request was written to the dead-letter "
                  "directory", extra={"path": str(path), "spans": len(item.positions),
                                      "error": self.stats.last_error})

    def _dead_letter(self, table: str, block: bytes, token: str) -> None:
        self._dead_letter_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", token)
        path = self._dead_letter_dir / f"{name}-{os.getpid()}.jsonl"
        path.write_bytes(block)
        self.stats.dead_letter_rows += block.count(b"\n")
        log.error("ClickHouse rejected a row as bad data; it was written to a dead-letter file",
                  extra={"table": table, "path": str(path), "error": self.stats.last_error})
