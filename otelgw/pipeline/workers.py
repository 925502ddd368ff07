"""Mapping, in this process or spread over worker processes (`workers`).

The gateway process keeps everything that needs one place: the receivers, the write-ahead log
(one ordered log is what makes replay exactly-once), the tail sampler (a trace's spans must meet
in one sampler), the writer (one owner of an embedded chDB directory) and /metrics. What costs
CPU per span, decoding a logged request again and mapping it to rows, masking and encoding them,
runs in `RecordMapper`, which a worker process can run as well as a thread: it takes log records
and gives back ready-to-insert JSONEachRow blocks plus the little the gateway still needs (span
digests for the sampler, inference digests for /metrics, evaluation scores, masking counts).
Results are applied in log order whatever order workers finish in.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from otelgw.config import fast_path_on, worker_inserts_on
from otelgw.governance.masking import MaskingFile, MaskingStats, load_masking, masker_from_config
from otelgw.jsonlog import setup_logging
from otelgw.pipeline.anyvalue import to_str
from otelgw.pipeline.fastpath import NativeCheck, canonical
from otelgw.pipeline.map_logs import map_logs
from otelgw.pipeline.map_metrics import map_metrics
from otelgw.pipeline.mapper import FoldContext, Mapper, MapperOptions
from otelgw.pipeline.request import REQUEST_TYPES, Signal
from otelgw.pipeline.rows import RowBatch, encode_batch, ts
from otelgw.pipeline.sampler import SpanDigest, digest_spans
from otelgw.pipeline.wal import WalRecord
from otelgw.pricing import Pricing
from otelgw.semconv import load_conventions
from otelgw.store.worker_inserts import ChunkInserter

if TYPE_CHECKING:
    from otelgw.config import Config
    from otelgw.governance.masking import Masker

log = logging.getLogger(__name__)

# A record that kills its worker this many times (each time as its pool's one task) is
# dead-lettered instead of retried again.
CRASH_ATTEMPTS = 3
# How long a new pool may take to show one worker able to map (spawn + imports take ~1 s).
PROBE_TIMEOUT_S = 60.0


class InferenceDigest(msgspec.Struct, array_like=True):
    """The fields of an inference row the /metrics series count (InferenceSeries.observe)."""

    project_id: str
    request_model: str
    response_model: str
    provider: str
    is_success: bool
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None


class Evaluation(msgspec.Struct, array_like=True):
    trace_id: str
    value: float | None
    label: str


class MappedRecord(msgspec.Struct, array_like=True):
    seq: int
    blocks: dict[str, bytes] = {}
    rows: dict[str, int] = {}
    # Span rows wait in the sampler when it is on, so they travel as digests, not in `blocks`.
    spans: list[SpanDigest] = []
    inferences: list[InferenceDigest] = []
    evaluations: list[Evaluation] = []
    # Set when mapping raised: the gateway dead-letters the record and logs this.
    error: str = ""
    # Fast path: spans ClickHouse writes from the record's bytes (positions; with a sampler they
    # travel as digests in `spans`), and (project, service) of each resource.
    native_positions: list[int] = []
    native_resources: list[tuple[str, str]] = []
    # 1: a trace request the fast path was on for, whose bytes were not canonical (all Python).
    non_canonical: int = 0


class MappedChunk(msgspec.Struct, array_like=True):
    records: list[MappedRecord]
    masking: list[MaskingStats] = []
    worker_pid: int = 0
    cpu_s: float = 0.0
    # worker_inserts: the log range the worker named its inserts by (None: it inserted nothing),
    # the rows and seconds of the tables that went in, and why the rest did not (those rows are
    # still in `records`, for the gateway's writer under the same tokens).
    token_range: tuple[int, int] | None = None
    inserted_rows: dict[str, int] = {}
    inserted_s: dict[str, float] = {}
    insert_error: str = ""
    # A call traced twice was folded across two of the chunk's records: their rows depend on
    # each other, so a replay must map exactly these records together again (chunks.log).
    folded_across: bool = False


class RecordMapper:
    """Log records -> MappedChunk. Pure apart from the masker's counts, which it hands over."""

    def __init__(self, mapper: Mapper, masker: Masker | None, sampler_keys: frozenset[str] | None,
                 digest_inferences: bool = True, native: NativeCheck | None = None) -> None:
        self.mapper = mapper
        self.native = native
        self.masker = masker
        # None: no sampler, span rows are encoded with the rest.
        self.sampler_keys = sampler_keys
        self.digest_inferences = digest_inferences
        self._encoder = msgspec.json.Encoder()

    def rows(self, record: WalRecord) -> RowBatch:
        batch, context, _ = self._rows(record)
        if context is not None:
            self.mapper.fold([(batch, context)])
        return batch

    def _rows(self, record: WalRecord) -> tuple[RowBatch, FoldContext | None, bool]:
        """The record's rows (a trace request's not yet folded: with its FoldContext), and
        whether the fast path had to pass on it (bytes not canonical)."""
        message = REQUEST_TYPES[record.signal].FromString(record.request)
        if record.signal is Signal.TRACES:
            native = self.native
            declined = native is not None and not canonical(message, record.request)
            batch, context = self.mapper.map_traces_unfolded(message, record.project, record.received_ns,
                                                             None if declined else native)
            return batch, context, declined
        if record.signal is Signal.LOGS:
            return map_logs(self.mapper, message, record.project, record.received_ns), None, False
        return map_metrics(message, record.project, record.received_ns, self.mapper.options), None, False

    def _folded(self, records: list[WalRecord],
                alone: frozenset[int] = frozenset()) -> tuple[list[tuple[RowBatch, bool] | str], bool]:
        """Each record's rows, or why mapping it failed, and whether rows of two records could be
        one call: a call traced twice is folded across the chunk's trace requests (each span in
        its own request, as a SimpleSpanProcessor sends them, still meets the span it was part
        of), but for the records at the positions in `alone`, which fold each by itself."""
        staged: list[tuple[RowBatch, FoldContext | None, bool] | str] = []
        for i, record in enumerate(records):
            try:
                batch, context, declined = self._rows(record)
                if context is not None and i in alone:
                    self.mapper.fold([(batch, context)])
                staged.append((batch, context, declined))
            except Exception:
                staged.append(traceback.format_exc(limit=8))
        traces = [(item[0], item[1]) for i, item in enumerate(staged)
                  if not isinstance(item, str) and item[1] is not None and i not in alone]
        crossed = False
        if traces:
            try:
                crossed = self.mapper.fold(traces)
            except Exception:
                # It may have changed some of their rows: each record again, folded alone (a
                # failure then is that record's).
                return self._folded(records, frozenset(range(len(records))))
        return [item if isinstance(item, str) else (item[0], item[2]) for item in staged], crossed

    def _finish(self, record: WalRecord, batch: RowBatch, declined: bool) -> MappedRecord:
        """Masks, digests and encodes a record's rows."""
        try:
            if self.masker is not None:
                # Before anything is encoded: masked text never reaches a table.
                self.masker.apply(batch)
            out = MappedRecord(seq=record.seq, non_canonical=int(declined))
            if self.digest_inferences and batch.inferences:
                out.inferences = [InferenceDigest(r.project_id, r.request_model, r.response_model, r.provider,
                                                  r.is_success, r.input_tokens, r.output_tokens,
                                                  r.cached_input_tokens, r.cost_usd, r.latency_ms, r.ttft_ms)
                                  for r in batch.inferences]
            if self.sampler_keys is not None:
                out.evaluations = [Evaluation(f.trace_id, f.value, f.label) for f in batch.feedback if f.trace_id]
                out.spans = digest_spans(batch.spans, self.sampler_keys, self._encoder)
                batch.spans = []
            if batch.native:
                out.native_resources = batch.native_resources
                keys = self.sampler_keys
                if keys is None:
                    out.native_positions = [n.position for n in batch.native]
                else:
                    out.spans.extend(SpanDigest(n.trace_id, n.span_id, n.project_id, n.status_code,
                                                {k: to_str(v) for k, v in n.attributes.items() if k in keys},
                                                n.start_ns, n.end_ns, b"", n.position) for n in batch.native)
            encoded = encode_batch(batch, ts(time.time_ns()), self._encoder)
            out.blocks, out.rows = encoded.blocks, encoded.rows
            return out
        except Exception:
            # A mapper bug must not stop ingest: the gateway dead-letters the record as received.
            return MappedRecord(seq=record.seq, error=traceback.format_exc(limit=8))

    def map_chunk(self, records: list[WalRecord], fold_across: bool = True) -> MappedChunk:
        """`fold_across` False: each record folds alone (records replayed from before a crash
        that no logged chunk covers: they were mapped so, or not stored at all)."""
        # This thread's CPU only: on the gateway's own thread, process time would count the event
        # loop and the writer too.
        started = time.thread_time()
        alone = frozenset() if fold_across else frozenset(range(len(records)))
        staged, crossed = self._folded(records, alone)
        mapped = self._finished(records, staged)
        failed = frozenset(i for i, m in enumerate(mapped) if m.error and not isinstance(staged[i], str))
        if crossed and failed:
            # A record that failed after the fold (masking, encoding) is dead-lettered: the others
            # must not keep rows that gave way to its rows. Mapped again without it in the fold.
            if self.masker is not None:
                self.masker.take_stats()  # counted again below
            staged, crossed = self._folded(records, alone | failed)
            mapped = self._finished(records, staged)
        masking = [self.masker.take_stats()] if self.masker is not None else []
        return MappedChunk(mapped, masking, os.getpid(), time.thread_time() - started, folded_across=crossed)

    def _finished(self, records: list[WalRecord], staged: list[tuple[RowBatch, bool] | str]) -> list[MappedRecord]:
        return [MappedRecord(seq=record.seq, error=item) if isinstance(item, str) else self._finish(record, *item)
                for record, item in zip(records, staged, strict=True)]


# -- worker processes -----------------------------------------------------------------------------

# Per-process state of a pool worker, set once by its initializer: a ProcessPoolExecutor task can
# only reach it through a module global. The gateway process never sets it.
_WORKER: dict[str, RecordMapper | ChunkInserter | str] = {}


class MapperInputs(msgspec.Struct, frozen=True):
    """What the gateway read from files at start, handed to every worker as is: a pool started
    later (after a crash) maps and masks exactly as the gateway started, whatever happened to the
    files since, and its span digests carry the attributes the gateway's sampler reads."""

    pricing: Any  # otelgw.pricing.Pricing
    masking: MaskingFile
    sampler_keys: frozenset[str] | None


def load_mapper_inputs(cfg: Config, sampler_keys: frozenset[str] | None) -> MapperInputs:
    return MapperInputs(Pricing.load(cfg.pricing_file or None), load_masking(cfg.masking_file or None), sampler_keys)


def build_mapper(cfg: Config, pricing: Pricing | None = None) -> Mapper:
    return Mapper(
        load_conventions(),
        pricing or Pricing.load(cfg.pricing_file or None),
        MapperOptions(preview_chars=cfg.preview_chars, attribute_value_max_chars=cfg.attribute_value_max_chars,
                      max_attributes=cfg.max_attributes_per_span, max_attribute_chars=cfg.max_attribute_chars,
                      max_message_chars=cfg.max_message_chars),
    )


def build_record_mapper(cfg: Config, inputs: MapperInputs) -> RecordMapper:
    """The mapper, masker and sampler keys of the gateway, from what it read at start."""
    mapper = build_mapper(cfg, inputs.pricing)
    masker = masker_from_config(cfg, mapper.conventions.content_attributes(), policies=inputs.masking)
    native = NativeCheck(cfg.max_attributes_per_span, cfg.max_attribute_chars, masker) if fast_path_on(cfg) else None
    return RecordMapper(mapper, masker, inputs.sampler_keys, native=native)


def mapping_workers(cfg: Config, cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """`workers`, or the CPUs this process may use: its affinity, and a container's CPU quota
    (cgroup v2 cpu.max) rounded up, so a pod limited to 2 CPUs on a 32-core node starts 2."""
    if cfg.workers:
        return cfg.workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class WorkerInitError(RuntimeError):
    """A worker process could not build its mapper (a broken install, a semconv table that no
    longer loads): raised by its tasks, so the pool stays usable and the gateway can map on its
    own thread instead."""


def _init_worker(cfg: Config, inputs: MapperInputs, parent: int) -> None:
    # The gateway's pid comes from the gateway: read here, a gateway killed before this runs
    # would already have been replaced by init as the parent.
    threading.Thread(target=_exit_with_parent, args=(parent,), name="otelgw-parent-watch", daemon=True).start()
    # The gateway decides when workers stop (its pool's shutdown after a drain): a Ctrl-C sent to
    # the terminal's process group must not kill them in the middle of a drain. SIGTERM keeps
    # its default: the pool terminates the workers of a broken pool with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(cfg.log_level, cfg.log_format)
    # An initializer that raises leaves a worker the pool can neither use nor always reap: keep
    # the process, and let its tasks raise instead.
    try:
        _WORKER["mapper"] = build_record_mapper(cfg, inputs)
        if worker_inserts_on(cfg, workers=2):  # this is one of several worker processes
            _WORKER["inserter"] = ChunkInserter(cfg.clickhouse_dsn, cfg.clickhouse_insert_timeout_s)
    except Exception as exc:
        _WORKER["error"] = f"{type(exc).__name__}: {exc}"


def _exit_with_parent(parent: int) -> None:
    # A worker holds both ends of its task queue's pipe, so a gateway killed with SIGKILL never
    # shows it an end of file: it would wait for work for ever. PR_SET_PDEATHSIG is no help
    # either, it fires when the spawning *thread* exits.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _mapper() -> RecordMapper:
    mapper = _WORKER.get("mapper")
    if not isinstance(mapper, RecordMapper):
        raise WorkerInitError(str(_WORKER.get("error", "worker not initialised")))
    return mapper


def _map_in_worker(records: list[WalRecord], token_prefix: str | None = None,
                   token_range: tuple[int, int] | None = None, fold_across: bool = True) -> bytes:
    chunk = _mapper().map_chunk(records, fold_across)
    inserter = _WORKER.get("inserter")
    if token_prefix is not None and token_range is not None and isinstance(inserter, ChunkInserter):
        inserter.insert(chunk, token_range, token_prefix)
    return msgspec.msgpack.encode(chunk)


def _warm() -> int:
    _mapper()
    return os.getpid()


class MappingStats(msgspec.Struct):
    workers: int = 1
    chunks: int = 0
    records: int = 0
    worker_restarts: int = 0
    crashed_records: int = 0
    # True once worker processes could not start again (after a crash): mapping went back to a
    # thread of the gateway process, which keeps ingest going at one core's pace.
    fell_back_to_thread: bool = False
    # CPU seconds spent mapping, by worker process id.
    cpu_s: dict[str, float] = {}


class MappingPool:
    """Runs RecordMapper.map_chunk on a thread (workers=1) or on worker processes."""

    def __init__(self, local: RecordMapper, workers: int = 1, cfg: Config | None = None,
                 inputs: MapperInputs | None = None) -> None:
        self.workers = max(workers, 1)
        self.local = local
        self._cfg = cfg
        self._inputs = inputs
        self._decoder = msgspec.msgpack.Decoder(MappedChunk)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-map")
        self._procs: ProcessPoolExecutor | None = None
        self._replacing = asyncio.Lock()
        # Tasks submitted to each pool (by generation) and not finished: a crash is blamed on a
        # record only when it was the one task its pool had.
        self._generation = 0
        self._live: collections.Counter[int] = collections.Counter()
        self.stats = MappingStats(workers=self.workers)
        if self.workers > 1:
            if cfg is None or inputs is None:
                raise ValueError("worker processes need the configuration and inputs to build their mappers")
            self._procs = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the gateway holds threads (chDB, gRPC, the writer) a fork would copy
        # in whatever state they were in.
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self._cfg, self._inputs, os.getpid()))
        self._generation += 1
        for _ in range(self.workers):  # start them now, not on the first request
            pool.submit(_warm)
        return pool

    def worker_pids(self) -> list[int]:
        # The executor keeps its processes in a private mapping; only tests and shutdown read it.
        procs = self._procs
        return [p.pid for p in getattr(procs, "_processes", {}).values() if p.pid] if procs else []

    async def map(self, records: list[WalRecord], token_prefix: str | None = None,
                  token_range: tuple[int, int] | None = None, fold_across: bool = True) -> MappedChunk:
        """`token_prefix`, `token_range`: a chunk logged in chunks.log, whose rows go into
        ClickHouse under tokens named by them: inserted by its worker (worker_inserts), or,
        mapped anywhere else (a thread, records re-mapped after a worker died, a worker that
        does not insert), returned with `token_range` set for the writer to insert them so."""
        try:
            chunk = await self._map_remote(records, 0, token_prefix, token_range, fold_across)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the consumer is stopping
            # A pool this task had submitted to was shut down under it: map here instead.
            chunk = await self._map_here(records, fold_across)
        if token_prefix is not None and chunk.token_range is None:
            chunk.token_range = token_range
        self.stats.chunks += 1
        self.stats.records += len(records)
        if chunk.worker_pid:
            key = str(chunk.worker_pid)
            self.stats.cpu_s[key] = self.stats.cpu_s.get(key, 0.0) + chunk.cpu_s
        return chunk

    async def _map_here(self, records: list[WalRecord], fold_across: bool = True) -> MappedChunk:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.local.map_chunk, records,
                                                                fold_across)

    async def _map_remote(self, records: list[WalRecord], crashes: int, token_prefix: str | None = None,
                          token_range: tuple[int, int] | None = None, fold_across: bool = True) -> MappedChunk:
        pool = self._procs
        if pool is None:
            return await self._map_here(records, fold_across)
        generation = self._generation
        self._live[generation] += 1
        try:
            blob = await asyncio.wrap_future(pool.submit(_map_in_worker, records, token_prefix, token_range,
                                                         fold_across))
        except WorkerInitError as exc:
            await self._fall_back(pool, str(exc))
            return await self._map_remote(records, crashes, token_prefix, token_range, fold_across)
        except BrokenProcessPool:
            alone = self._live[generation] == 1
            await self._replace(pool)
            if len(records) > 1:
                # Some record killed a worker (or the OS did): find it by mapping them one by one.
                # Their rows come back (map() gives them the chunk's tokens, which also covers
                # what the dead worker may have inserted already).
                parts = [await self._map_remote([r], 0) for r in records]
                return MappedChunk([p.records[0] for p in parts], [m for p in parts for m in p.masking],
                                   parts[0].worker_pid, sum(p.cpu_s for p in parts))
            # Only a crash while this record was its pool's one task counts against it; with
            # others in flight, any of them (or the OS) may have been the cause.
            crashes += int(alone)
            if crashes >= CRASH_ATTEMPTS:
                self.stats.crashed_records += 1
                error = f"a mapping worker died {CRASH_ATTEMPTS} times on this record alone"
                return MappedChunk([MappedRecord(seq=records[0].seq, error=error)])
            return await self._map_remote(records, crashes, token_prefix, token_range, fold_across)
        else:
            self._live[generation] -= 1
        return self._decoder.decode(blob)

    async def _replace(self, broken: ProcessPoolExecutor) -> None:
        async with self._replacing:
            if self._procs is not broken:
                return  # another task already replaced it
            self.stats.worker_restarts += 1
            log.error("a mapping worker process died; starting a new pool", extra={"workers": self.workers})
            # The broken pool has failed every task it held (BrokenProcessPool): nothing to cancel.
            broken.shutdown(wait=False, cancel_futures=False)
            pool: ProcessPoolExecutor | None = None
            try:
                pool = self._new_pool()
                # A pool whose workers cannot start (a broken install: the import fails) would
                # make every record look like a killer.
                await asyncio.wait_for(asyncio.wrap_future(pool.submit(_warm)), PROBE_TIMEOUT_S)
            except (BrokenProcessPool, WorkerInitError, TimeoutError, OSError) as exc:
                await self._fall_back_locked(pool, f"{type(exc).__name__}: {exc}")
                return
            self._procs = pool

    async def _fall_back(self, pool: ProcessPoolExecutor, error: str) -> None:
        async with self._replacing:
            if self._procs is pool:
                await self._fall_back_locked(pool, error)

    async def _fall_back_locked(self, pool: ProcessPoolExecutor | None, error: str) -> None:
        """Workers that cannot start would make every record look like a killer: map on a thread
        of the gateway process instead, and say so."""
        self._procs = None
        self.stats.fell_back_to_thread = True
        log.error("mapping worker processes cannot start; mapping on a thread of the gateway process from now on "
                  "(restart the gateway once the cause is fixed)", extra={"error": error})
        if pool is not None:
            # Tasks it still holds raise (WorkerInitError) or fail (BrokenProcessPool) and are
            # mapped here by their callers; cancelling them would end their callers instead.
            pool.shutdown(wait=False, cancel_futures=False)

    def shutdown(self, timeout: float = 10.0) -> None:
        """After a drain: stop the workers; one still busy past `timeout` is terminated."""
        self._thread.shutdown(wait=True)
        procs, self._procs = self._procs, None
        if procs is None:
            return
        processes = list(getattr(procs, "_processes", {}).values())
        procs.shutdown(wait=False, cancel_futures=True)
        # Wait on the exit sentinels rather than join(): the pool's own thread joins (reaps) the
        # same processes, and of two waitpid() callers the loser sees a worker that already
        # exited as alive (a false "did not stop" and a SIGTERM to a pid that may be reused).
        running = {process.sentinel: process for process in processes}
        deadline = time.monotonic() + timeout
        while running and (left := deadline - time.monotonic()) > 0:
            for sentinel in multiprocessing.connection.wait(list(running), left):
                running.pop(sentinel)  # type: ignore[call-overload]
        for process in running.values():
            log.warning("a mapping worker did not stop in time; terminating it", extra={"pid": process.pid})
            process.terminate()
            process.join(5.0)
