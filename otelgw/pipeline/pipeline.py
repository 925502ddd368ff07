"""The ingest pipeline: admit a decoded request, append it to the write-ahead log, answer once it
is durable; a consumer reads the log back in order, maps each record to rows and hands them to
the writer, whose commits move the log's checkpoint.

The log is the queue: what ClickHouse has not taken yet waits on disk, bounded by
`wal_max_bytes`, so memory stays bounded whatever the backlog. Admission refuses with a
retryable answer when the log is full, too many requests are in flight (overall or on one
connection), a project exceeds its rate, or, when the log is filling, a project holds more than
its share of it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from otelgw.governance.masking import MaskingCounts
from otelgw.pipeline.admission import Admission, Exhausted, Overloaded, RateLimited, ShuttingDown
from otelgw.pipeline.dead_letter import DeadLetters
from otelgw.pipeline.fastpath import NativeSource, NativeSpans
from otelgw.pipeline.mapper import Mapper
from otelgw.pipeline.request import Decoded, Signal
from otelgw.pipeline.rows import EncodedBatch, RowBatch
from otelgw.pipeline.sampler import BufferedSpan, TailSampler
from otelgw.pipeline.wal import CutLog, CutNotLogged, WalError, WalFull, WalRecord, WriteAheadLog
from otelgw.pipeline.workers import MappedChunk, MappingPool, RecordMapper
from otelgw.store.worker_inserts import chunk_token
from otelgw.store.writer import BatchWriter
from otelgw.telemetry.inference import InferenceSeries

if TYPE_CHECKING:
    from otelgw.governance.masking import Masker

log = logging.getLogger(__name__)

__all__ = ["Overloaded", "Pipeline", "RateLimited", "ShuttingDown"]

# Records read back from the log per mapping task: enough to amortise a hand-over to a worker
# process, small enough that several workers each get a share of a burst. At most
# `_TASKS_PER_WORKER` tasks per worker are in flight, which bounds the memory mapping holds.
_READ_BYTES = 2 * 1024 * 1024
# When workers insert their chunks themselves, each chunk is one insert per table: 8 MiB (~5k
# GenAI spans) keeps ClickHouse's per-insert cost near the writer's (~1.3k-span inserts cost the
# server 1.8x the CPU of the writer's flushes; 8 MiB chunks 1.1x; docs/performance.md).
_READ_BYTES_WORKER_INSERTS = 8 * 1024 * 1024
_TASKS_PER_WORKER = 2


def refusal_reason(exc: Overloaded) -> str:
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, Exhausted):
        return "wal_full"
    if isinstance(exc, ShuttingDown):
        return "shutting_down"
    return "overloaded"


class PipelineStats(msgspec.Struct):
    requests: dict[str, int] = {}
    items_accepted: dict[str, int] = {}
    items_rejected: dict[str, int] = {}
    rejected_by_reason: dict[str, dict[str, int]] = {}  # signal -> reason code -> items
    refused: dict[str, int] = {}  # reason -> requests refused before they were durable
    overloaded: int = 0
    rate_limited: int = 0
    map_errors: int = 0
    records_mapped: int = 0
    # Trace requests the fast path could not take because their bytes were not canonical.
    fast_path_non_canonical: int = 0
    replay_target_seq: int = 0
    # worker_inserts: chunks whose rows their worker inserted (all tables, or some), and chunks
    # whose worker could not insert some table (the writer took the rest, same tokens).
    worker_inserted_chunks: int = 0
    worker_insert_fallbacks: int = 0
    # Appends to chunks.log that failed (each retried, or its chunk left to the writer).
    chunk_log_failures: int = 0
    # Chunks whose records fold into each other (a call traced twice across requests), logged in
    # chunks.log and written under the chunk's tokens.
    cross_folded_chunks: int = 0


class Pipeline:
    def __init__(self, mapper: Mapper, writer: BatchWriter, wal: WriteAheadLog, admission: Admission,
                 dead_letter_dir: str | Path, sampler: TailSampler | None = None,
                 inference_series: InferenceSeries | None = None, masker: Masker | None = None,
                 pool: MappingPool | None = None, chunk_log: CutLog | None = None,
                 worker_inserts: bool = False, worker_insert_min_bytes: int = 4 * 1024 * 1024,
                 fold_wait_s: float = 0.0) -> None:
        """`worker_inserts`: the workers insert the rows of chunks of at least
        `worker_insert_min_bytes` themselves; each such chunk's log range goes to `chunk_log`
        first, and a replay rebuilds the chunks logged there (whatever the setting is then), so
        their tokens repeat. `fold_wait_s`: how long a small read of trace requests waits for
        more (Mapper.fold works within one mapping chunk)."""
        self._sampler = sampler
        self._masker = masker
        self._inference_series = inference_series
        # (seq, received time) of accepted requests not yet committed: the writer's lag.
        self._uncommitted: collections.deque[tuple[int, float]] = collections.deque()
        self._writer = writer
        self.wal = wal
        self.admission = admission
        self.dead_letters = DeadLetters(Path(dead_letter_dir))
        # Mapping runs in the pool (a thread, or worker processes); its results are applied in
        # log order on one thread: sampler, metrics, writer.
        self.mapping = pool or MappingPool(RecordMapper(mapper, masker, sampler.keys if sampler else None,
                                                        digest_inferences=inference_series is not None))
        self._map_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-apply")
        self._applied_seq = 0
        self.consumer_failed = False
        # Masking counts of every mapped chunk, whichever process masked it: /metrics reads these.
        self._masking = MaskingCounts()
        self._consumer: asyncio.Task[None] | None = None
        self._closing = False
        self._pending_cuts: collections.deque[tuple[int, int]] = collections.deque()
        self._chunk_log = chunk_log
        self._worker_inserts = worker_inserts and chunk_log is not None
        self._worker_insert_min_bytes = worker_insert_min_bytes
        self._fold_wait_s = fold_wait_s
        # Logged chunks to rebuild (a replay), and every logged chunk not yet checkpointed past:
        # the checkpoint never stops inside one, so a replay can rebuild it whole.
        self._pending_chunks: collections.deque[tuple[int, int]] = collections.deque()
        self._chunk_ranges: collections.deque[tuple[int, int]] = collections.deque()
        self._replay_end = 0
        self._dead_lettered_before: set[str] = set()
        self._releasing_floor = 0
        self._inflight_appends = 0
        signals = [s.value for s in Signal]
        self.stats = PipelineStats(
            requests=dict.fromkeys(signals, 0),
            items_accepted=dict.fromkeys(signals, 0),
            items_rejected=dict.fromkeys(signals, 0),
            rejected_by_reason={"traces": dict.fromkeys(("invalid_trace_id", "invalid_span_id",
                                                         "invalid_parent_span_id"), 0),
                                "logs": dict.fromkeys(("invalid_trace_id", "invalid_span_id"), 0),
                                "metrics": {"empty_metric_name": 0}},
            refused=dict.fromkeys(("rate_limited", "wal_full", "overloaded", "shutting_down"), 0),
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the log (recovering it) and start consuming from its checkpoint. Records left
        from before a crash are replayed first, in order, cut into the same insert blocks as
        before so their deduplication tokens match."""
        self.wal.recover()
        await self.wal.start()
        self._writer.token_prefix = f"otelgw-{self.wal.id}"
        checkpoint = self.wal.checkpoint_seq
        cuts = self._writer.pending_cuts(checkpoint)
        chunks = self._chunk_log.pending(checkpoint) if self._chunk_log is not None else []
        # Numbers already in tokens are never handed out again (fsync off and a power loss).
        named = max(self._writer.highest_cut(), self._chunk_log.highest() if self._chunk_log is not None else 0)
        if named > self.wal.durable_seq:
            self.wal.skip_to(named)
        # Only cuts the log still holds whole can be rebuilt; the rest replays as new blocks.
        self._pending_cuts.extend(cut for cut in cuts if cut[1] <= self.wal.durable_seq)
        # A chunk the log kept only in part (fsync off and a power loss) is rebuilt with what is
        # left, under its tokens (its worker may have inserted it whole); new records are
        # numbered past it (skip_to above).
        self._pending_chunks.extend(chunks)
        # For the checkpoint rule, such a chunk ends with the last record left (the rest never
        # comes: waiting for it would hold the checkpoint, and /ready, for ever).
        self._chunk_ranges.extend((first, min(last, self.wal.durable_seq)) for first, last in chunks
                                  if first <= self.wal.durable_seq)
        # Records from before the crash that no logged chunk covers go to the writer, as they
        # did before (it rebuilds its own cuts); new chunks are only for new records.
        self._replay_end = self.wal.durable_seq
        self.stats.replay_target_seq = self.wal.durable_seq
        # Records dead-lettered before this start (the replay maps them to nothing again).
        self._dead_lettered_before = self.dead_letters.names() if self.wal.pending_records() else set()
        self._writer.on_commit = self._committed
        if self.wal.pending_records():
            log.info("replaying write-ahead log", extra={"from_seq": checkpoint + 1, "to_seq": self.wal.durable_seq,
                                                         "records": self.wal.pending_records(),
                                                         "cuts": len(self._pending_cuts)})
        self._cursor = self.wal.cursor(checkpoint)
        self._consumer = asyncio.create_task(self._consume(), name="otelgw-consumer")
        self._consumer.add_done_callback(self._consumer_ended)

    def _consumer_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Nothing is being written any more: say it loudly and stop answering ready. Accepted data
        # stays in the log for the next start.
        self.consumer_failed = True
        log.critical("the write-ahead-log consumer stopped; accepted data waits in the log until a restart",
                     exc_info=task.exception())

    @property
    def replayed(self) -> bool:
        """True once everything that was in the log at start is committed."""
        return self.wal.checkpoint_seq >= self.stats.replay_target_seq

    @property
    def closing(self) -> bool:
        return self._closing

    def _committed(self, last_seq: int) -> None:
        # Called from the writer thread after every table of a block is in ClickHouse.
        loop = self._loop
        loop.call_soon_threadsafe(self._checkpoint, last_seq)

    def _checkpoint(self, seq: int) -> None:
        while self._uncommitted and self._uncommitted[0][0] <= seq:
            self._uncommitted.popleft()
        # Records with spans still waiting for a sampling decision, or kept spans not yet
        # committed, hold the checkpoint back: a crash must replay them.
        # In this order: the apply thread sets the releasing floor, then moves the sampler's,
        # then gives the writer its own.
        for floor in (self._sampler.floor_seq if self._sampler else 0, self._releasing_floor,
                      self._writer.pending_floor()):
            if floor:
                seq = min(seq, floor - 1)
        # Never inside a logged chunk: a replay rebuilds chunks whole (their tokens repeat).
        ranges = self._chunk_ranges
        while ranges and ranges[0][1] <= seq:
            ranges.popleft()
        if ranges and ranges[0][0] <= seq:
            seq = ranges[0][0] - 1
        self.wal.checkpoint(seq)
        self.admission.release_through(seq)
        self._writer.prune_cuts(seq)
        if self._chunk_log is not None:
            self._chunk_log.prune(seq)

    # -- intake --------------------------------------------------------------------------------

    def check_open(self, project: str, connection: str) -> None:
        """Refuse early, before the request is decoded, when it cannot be taken."""
        try:
            if self._closing:
                raise ShuttingDown("gateway is shutting down", retry_after_s=5.0)
            self.admission.check_capacity(self.wal, project, connection)
        except Overloaded as exc:
            self.stats.refused[refusal_reason(exc)] += 1
            raise

    async def accept(self, decoded: Decoded, payload: bytes, project: str, admission_project: str,
                     connection: str, received_ns: int | None = None) -> None:
        """Make one decoded request durable; returns once it is in the log (fsynced, unless
        fsync is off). Raises Overloaded / RateLimited / ShuttingDown. `received_ns`: when it
        first arrived (a dead-lettered record taken in again), else now."""
        signal = decoded.signal
        self.stats.requests[signal] += 1
        try:
            if self._closing:
                raise ShuttingDown("gateway is shutting down", retry_after_s=5.0)
            self.admission.admit(self.wal, admission_project, connection, decoded.accepted, len(payload))
            try:
                seq, durable = self.wal.append(signal, project, received_ns or time.time_ns(), payload)
            except WalFull as exc:
                raise Exhausted(str(exc), retry_after_s=5.0) from exc
        except RateLimited as exc:
            self.stats.rate_limited += 1
            self.stats.refused[refusal_reason(exc)] += 1
            raise
        except Overloaded as exc:
            self.stats.overloaded += 1
            self.stats.refused[refusal_reason(exc)] += 1
            raise
        self.admission.track(seq, admission_project, len(payload))
        self._inflight_appends += 1
        # Counted when the record is durable, even if the caller went away meanwhile (a client
        # that cancels still has its record stored): shield keeps its cancellation off `durable`.
        durable.add_done_callback(lambda done: self._durable(done, seq, decoded))
        try:
            await asyncio.shield(durable)
        except WalError as exc:
            self.stats.overloaded += 1
            self.stats.refused["overloaded"] += 1
            raise Overloaded(f"write-ahead log: {exc}") from exc

    def _durable(self, done: asyncio.Future[None], seq: int, decoded: Decoded) -> None:
        self._inflight_appends -= 1
        if done.cancelled() or done.exception() is not None:
            return
        signal = decoded.signal
        self._uncommitted.append((seq, time.monotonic()))
        self.stats.items_accepted[signal] += decoded.accepted
        self.stats.items_rejected[signal] += decoded.rejected
        by_reason = self.stats.rejected_by_reason[signal]
        for code, count in decoded.rejected_by.items():
            by_reason[code] = by_reason.get(code, 0) + count

    # -- consuming -----------------------------------------------------------------------------

    def map_record(self, record: WalRecord) -> RowBatch:
        """One record's rows, mapped here (tests, tools)."""
        return self.mapping.local.rows(record)

    def _release(self, spans: list[BufferedSpan]) -> None:
        """Write the spans of kept traces. Their log records stay un-checkpointed (the writer's
        floor) until they are committed."""
        assert self._sampler is not None
        lines = [s.line for s in spans if s.source is None]
        native: dict[int, NativeSpans] = {}
        for span in spans:
            if span.source is not None:
                item = native.get(id(span.source))
                if item is None:
                    item = native[id(span.source)] = NativeSpans(span.source, [])
                item.positions.append(span.position)
        encoded = EncodedBatch(blocks={"spans": b"".join(lines)} if lines else {},
                               rows={"spans": len(lines)} if lines else {})
        self._writer.add(encoded, 0, floor=self._sampler.released_floor, tokened=False, native=list(native.values()))

    def tick(self, flush_all: bool = False) -> None:
        """Decide the traces whose wait is over (the apply thread calls this)."""
        if self._sampler is not None:
            # The sampler's floor moves past the kept spans before the writer has them: until
            # it does, their records hold the checkpoint from here.
            self._releasing_floor = self._sampler.floor_seq
            try:
                kept = self._sampler.tick(flush_all=flush_all)
                if kept:
                    self._release(kept)
            finally:
                self._releasing_floor = 0

    def _chunk_inserts(self, chunk: MappedChunk) -> dict[str, Any]:
        """What the writer does for a chunk whose worker inserted its rows: count them, and
        insert what the worker could not, under the tokens the worker used."""
        if chunk.token_range is None:
            return {}
        first, last = chunk.token_range
        if chunk.inserted_rows:
            self.stats.worker_inserted_chunks += 1
        leftovers: dict[str, list[bytes]] = {}
        rows: dict[str, int] = {}
        for mapped in chunk.records:
            for table, block in mapped.blocks.items():
                leftovers.setdefault(table, []).append(block)
                rows[table] = rows.get(table, 0) + mapped.rows.get(table, 0)
            mapped.blocks, mapped.rows = {}, {}
        if chunk.insert_error:
            self.stats.worker_insert_fallbacks += 1
            log.warning("a mapping worker could not insert its rows; the writer inserts them",
                        extra={"first_seq": first, "last_seq": last, "error": chunk.insert_error})
        prefix = self._writer.token_prefix
        # Span rows under the writer's tag: a chunk mapped here (its fold crossed records) may
        # have left spans to the fast path, whose rules a restart may change.
        spans = self._writer.spans_token
        return {"prebuilt": [(table, b"".join(parts), rows[table], chunk_token(prefix, first, last, table, spans))
                             for table, parts in leftovers.items()],
                "inserted": (chunk.inserted_rows, chunk.inserted_s)}

    def _apply(self, records: list[WalRecord], chunk: MappedChunk) -> None:
        """Hand one mapped chunk to the sampler, the metrics and the writer, in log order."""
        for counts in chunk.masking:
            self._masking.merge(counts)
        # With the chunk's first record: the writer commits it with (or before) the records it
        # covers.
        inserts = self._chunk_inserts(chunk)
        for record, mapped in zip(records, chunk.records, strict=True):
            encoded = EncodedBatch(blocks=mapped.blocks, rows=mapped.rows)
            # Fast path: spans ClickHouse writes from this record's bytes.
            source = NativeSource(record.request, mapped.native_resources) if mapped.native_resources else None
            native = [NativeSpans(source, mapped.native_positions)] if source and mapped.native_positions else []
            if mapped.error:
                # The record goes to the dead-letter directory as it was received, with a log
                # line and a counter.
                self.stats.map_errors += 1
                log.error("mapping failed; record written to dead-letter",
                          extra={"seq": record.seq, "signal": record.signal, "error": mapped.error})
                self.dead_letters.write_record(record, self.wal.id, mapped.error)
            else:
                if self._inference_series is not None and mapped.inferences:
                    self._inference_series.observe(mapped.inferences)
                if self._sampler is not None:
                    # Span rows go to the tail sampler instead of the writer; evaluations it may
                    # keep a trace for are noted first.
                    for ev in mapped.evaluations:
                        self._sampler.note_evaluation(ev.trace_id, ev.value, ev.label)
                    late = self._sampler.add_digests(mapped.spans, record.seq, source=source)
                    if late:
                        self._release(late)
            self.stats.records_mapped += 1
            self.stats.fast_path_non_canonical += mapped.non_canonical
            hold, cut_end, cut_start = False, 0, 0
            if self._pending_cuts:
                # Rebuilding a block that was cut before a crash: same records (those after the
                # checkpoint, if it stopped inside the block), same token.
                first, last = self._pending_cuts[0]
                if first <= record.seq <= last:
                    hold, cut_end, cut_start = record.seq < last, (last if record.seq == last else 0), first
                if record.seq >= last:
                    self._pending_cuts.popleft()
            self._writer.add(encoded, record.seq, hold=hold, cut_end=cut_end, native=native, cut_start=cut_start,
                             **inserts)
            inserts = {}
        self.tick()

    def _still_dead_lettered(self, records: list[WalRecord]) -> list[WalRecord]:
        """Replayed records an earlier run dead-lettered map to nothing again, whether or not
        they would map now: the blocks they were in are rebuilt under the same tokens (ClickHouse
        drops a repeated token's rows, so new rows there would be lost or, if the block never
        landed, stored beside the dead-letter file that a later replay lands too). They are taken
        in by replaying the dead-letter file (POST /api/v1/dead-letter/replay), a new record; one
        replayed already is never taken twice."""
        if not records or records[0].seq > self._replay_end:
            return records
        out = []
        for record in records:
            if record.seq <= self._replay_end and self.dead_letters.was_dead_lettered(
                    self.wal.id, record, self._dead_lettered_before):
                log.warning("replayed record was dead-lettered before the restart; it stays in the dead-letter "
                            "directory until replayed from there", extra={"seq": record.seq, "signal": record.signal})
                record = WalRecord(record.seq, record.signal, record.project, record.received_ns, b"")
            out.append(record)
        return out

    async def _consume(self) -> None:
        """Read the log in order into mapping tasks (several in flight, so every worker is
        busy) and apply their results in the same order."""
        loop = asyncio.get_running_loop()
        assert self.wal.durable_changed is not None
        inflight: collections.deque[tuple[list[WalRecord], int, asyncio.Future[MappedChunk]]] = collections.deque()
        limit = _TASKS_PER_WORKER * self.mapping.workers
        try:
            while True:
                self.wal.durable_changed.clear()
                if len(inflight) < limit:
                    records, token_range = self._next_chunk()
                    if records and token_range is None and self._fold_wait_s > 0:
                        records += await self._more_for_folding(records)
                    records = self._still_dead_lettered(records)
                    if records:
                        if token_range is None and self._inserts_by_worker(records):
                            token_range = (records[0].seq, records[-1].seq)
                            if not await self._log_chunk(token_range):
                                token_range = None
                        prefix = self._writer.token_prefix if token_range is not None else None
                        # Replayed records no logged chunk covers were mapped each alone (a chunk
                        # whose records folded into each other is logged), or never stored.
                        fold_across = token_range is not None or records[0].seq > self._replay_end
                        task = asyncio.ensure_future(self.mapping.map(records, prefix, token_range, fold_across))
                        inflight.append((records, self._cursor.position, task))
                        continue
                if inflight:
                    records, through, task = inflight[0]
                    chunk = await task
                    inflight.popleft()
                    if (chunk.folded_across and chunk.token_range is None and self._chunk_log is not None
                            and not (self._chunk_ranges and self._chunk_ranges[-1][1] >= records[0].seq)):
                        # Rows of one record gave way to another's: a replay must rebuild these
                        # records as one chunk, under the chunk's tokens, or it could store the
                        # call twice or lose what the folded span measured. (Not after a later
                        # chunk logged for its worker's inserts: chunks.log reads a range below
                        # the one before it as a renumbering, which would drop that chunk.)
                        token_range = (records[0].seq, records[-1].seq)
                        if await self._log_chunk(token_range):
                            chunk.token_range = token_range
                            self.stats.cross_folded_chunks += 1
                    if chunk.folded_across and chunk.token_range is None:
                        # Not logged (the disk refused the line, or a later chunk is logged): a
                        # replay would map these records each alone, so they are stored so now.
                        chunk = await self.mapping.map(records, None, None, fold_across=False)
                    await loop.run_in_executor(self._map_pool, self._apply, records, chunk)
                    self._applied_seq = through
                    continue
                self._applied_seq = self._cursor.position
                try:
                    # Idle: still decide waiting traces every second.
                    await asyncio.wait_for(self.wal.durable_changed.wait(), 1.0)
                except TimeoutError:
                    await loop.run_in_executor(self._map_pool, self.tick)
        finally:
            for _, _, task in inflight:
                task.cancel()

    async def _more_for_folding(self, records: list[WalRecord]) -> list[WalRecord]:
        """Records that became durable within `fold_wait_s` after a small read of trace requests
        (none when the read was half a chunk or more, or a logged chunk is next). A
        SimpleSpanProcessor exports each span as it ends: the span a model call's own span sits in
        comes a request later, milliseconds after, and the two fold into one inference only when
        mapped in one chunk (Mapper.fold). Under load, reads fill a chunk without waiting."""
        size = sum(len(r.request) for r in records)
        if (size >= _READ_BYTES // 2 or self._pending_chunks or records[0].seq <= self._replay_end
                or not any(r.signal is Signal.TRACES for r in records)):
            return []
        await asyncio.sleep(self._fold_wait_s)
        return self._cursor.read(self.wal.durable_seq, _READ_BYTES - size)

    async def _log_chunk(self, token_range: tuple[int, int]) -> bool:
        """Log a chunk's range before any worker inserts under it. False: the line could not be
        written and was taken back out, so the writer inserts the chunk instead (a worker insert
        nothing on disk names would be duplicated by a replay that cuts the records otherwise).
        A failure that may have left the line in the file is retried: the chunk must then keep
        its tokens."""
        assert self._chunk_log is not None
        delay = 0.5
        while True:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._chunk_log.append, *token_range)
                break
            except CutNotLogged as exc:
                self.stats.chunk_log_failures += 1
                log.error("cannot write chunks.log; the writer inserts this chunk", extra={"error": str(exc)})
                return False
            except OSError as exc:
                self.stats.chunk_log_failures += 1
                log.error("cannot write chunks.log; retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._chunk_ranges.append(token_range)
        return True

    def _inserts_by_worker(self, records: list[WalRecord]) -> bool:
        return (self._worker_inserts and self._chunk_log is not None and records[0].seq > self._replay_end
                and sum(len(r.request) for r in records) >= self._worker_insert_min_bytes)

    def _next_chunk(self) -> tuple[list[WalRecord], tuple[int, int] | None]:
        """The next records to map, and the logged chunk they rebuild after a crash (then
        exactly its range, under its tokens), or None (fresh records; they stop short of the
        next logged chunk)."""
        max_bytes = _READ_BYTES_WORKER_INSERTS if self._worker_inserts else _READ_BYTES
        while self._pending_chunks:
            first, last = self._pending_chunks[0]
            if self._cursor.position >= last:
                self._pending_chunks.popleft()
                continue
            # (A checkpoint inside a chunk, from a version without the rule: its tail is rebuilt.)
            if self._cursor.position + 1 < first:
                records = self._cursor.read(min(self.wal.durable_seq, first - 1), max_bytes)
                if records:
                    return records, None
                # Nothing before it (numbers skipped after a lost tail): rebuild it now.
            records = []
            while self._cursor.position < last:
                more = self._cursor.read(last, _READ_BYTES_WORKER_INSERTS)
                if not more:
                    break
                records += more
            self._pending_chunks.popleft()
            return records, (first, last)
        return self._cursor.read(self.wal.durable_seq, max_bytes), None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self._consumer is not None
        return self._consumer.get_loop()

    async def drain(self) -> None:
        """Wait until every durable record has been mapped and handed to the writer."""
        while self._applied_seq < self.wal.durable_seq or self._inflight_appends:
            await asyncio.sleep(0.01)
        # The apply thread may still be adding the last batch.
        await asyncio.get_running_loop().run_in_executor(self._map_pool, lambda: None)

    async def decide_all(self) -> None:
        """Decide every waiting trace now (shutdown, tests)."""
        await asyncio.get_running_loop().run_in_executor(self._map_pool, self.tick, True)

    async def stop(self, timeout: float) -> bool:
        """Refuse new requests, map what is in the log, flush and checkpoint. True if all of it
        is in ClickHouse; anything left stays in the log for the next start."""
        self._closing = True
        deadline = time.monotonic() + timeout
        drained = True
        try:
            await asyncio.wait_for(self.drain(), timeout)
            # Traces still waiting are decided now (counted as early decisions), so a clean stop
            # leaves nothing behind; a crash leaves them in the log instead.
            await self.decide_all()
        except TimeoutError:
            drained = False
            log.error("shutdown timeout before the log was drained; the rest stays in the WAL",
                      extra={"position": self._cursor.position, "durable_seq": self.wal.durable_seq})
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except (asyncio.CancelledError, Exception):
                pass
        loop = asyncio.get_running_loop()
        # After a timeout the apply thread may still be handing a chunk to the writer: it
        # finishes before the writer stops.
        await loop.run_in_executor(None, self._map_pool.shutdown, True)
        remaining = max(deadline - time.monotonic(), 0.5)
        flushed = await loop.run_in_executor(None, self._writer.stop, remaining)
        # Checkpoints arrive via call_soon_threadsafe: let them run before closing the log.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Idle workers exit at once; the floor covers a loaded machine starting their exit.
        await loop.run_in_executor(None, self.mapping.shutdown, max(deadline - time.monotonic(), 5.0))
        self._cursor.close()
        if self._chunk_log is not None:
            self._chunk_log.close()
        await self.wal.close()
        return drained and flushed and self.wal.checkpoint_seq >= self.wal.durable_seq

    def describe(self) -> dict[str, Any]:
        return {
            **msgspec.to_builtins(self.stats),
            "wal": {
                **msgspec.to_builtins(self.wal.stats),
                "bytes": self.wal.size_bytes,
                "max_bytes": self.wal.max_bytes,
                "durable_seq": self.wal.durable_seq,
                "checkpoint_seq": self.wal.checkpoint_seq,
                "consumed_seq": self._cursor.position if self._consumer else 0,
                "pending_records": self.wal.pending_records(),
                "segments": self.wal.segment_count,
            },
            "writer_lag_s": round(time.monotonic() - self._uncommitted[0][1], 3) if self._uncommitted else 0.0,
            "replayed": self.replayed,
            "sampler": msgspec.to_builtins(self._sampler.stats) if self._sampler else None,
            "masking": self._masking.snapshot() if self._masker else {},
            "admission": self.admission.describe(),
            "mapping": msgspec.to_builtins(self.mapping.stats),
        }
