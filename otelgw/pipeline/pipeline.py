"""The ingest pipeline: take decoded requests into a bounded queue, then map them to rows and
hand those to the writer.

`submit` returns once the request is accepted into the queue; that is the point where the
write-ahead log will sit (append, then answer). Decode and map are pure functions of the
request bytes, so they can move to worker processes without changing this shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from otelgw.pipeline.map_logs import map_logs
from otelgw.pipeline.map_metrics import map_metrics
from otelgw.pipeline.mapper import Mapper
from otelgw.pipeline.request import Decoded, Signal
from otelgw.pipeline.rows import RowBatch, encode_batch, ts
from otelgw.store.writer import BatchWriter

log = logging.getLogger(__name__)

class Overloaded(RuntimeError):
    """The pipeline cannot take more now; the client should retry later."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(Overloaded):
    pass


class PipelineStats(msgspec.Struct):
    requests: dict[str, int] = {}
    items_accepted: dict[str, int] = {}
    items_rejected: dict[str, int] = {}
    overloaded: int = 0
    map_errors: int = 0


class _Item(msgspec.Struct):
    decoded: Decoded
    project: str
    received_ns: int


class Pipeline:
    def __init__(self, mapper: Mapper, writer: BatchWriter, queue_size: int) -> None:
        self._mapper = mapper
        self._writer = writer
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        # One mapping thread: mapping is CPU-bound Python, a second thread would only contend
        # for the GIL.
        self._map_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-map")
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._encoder = msgspec.json.Encoder()
        signals = [s.value for s in Signal]
        self.stats = PipelineStats(
            requests=dict.fromkeys(signals, 0),
            items_accepted=dict.fromkeys(signals, 0),
            items_rejected=dict.fromkeys(signals, 0),
        )

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="otelgw-pipeline")

    def check_open(self) -> None:
        """Raise Overloaded now, before the receiver spends time decoding, if the request
        cannot be taken."""
        if self._closing:
            raise ShuttingDown("gateway is shutting down", retry_after_s=5.0)
        if self._queue.full():
            self.stats.overloaded += 1
            raise Overloaded("ingest queue is full")

    def submit(self, decoded: Decoded, project: str) -> None:
        """Accept one decoded request. Raises Overloaded when the queue is full or the gateway
        is stopping; once this returns, the request is the pipeline's to deliver."""
        signal = decoded.signal
        self.stats.requests[signal] += 1
        self.check_open()
        self._queue.put_nowait(_Item(decoded, project, time.time_ns()))
        self.stats.items_accepted[signal] += decoded.accepted
        self.stats.items_rejected[signal] += decoded.rejected

    def map_request(self, item: _Item) -> RowBatch:
        decoded = item.decoded
        if decoded.signal is Signal.TRACES:
            return self._mapper.map_traces(decoded.message, item.project, item.received_ns)
        if decoded.signal is Signal.LOGS:
            return map_logs(self._mapper, decoded.message, item.project, item.received_ns)
        return map_metrics(decoded.message, item.project, item.received_ns)

    def _process(self, item: _Item) -> None:
        try:
            batch = self.map_request(item)
        except Exception:
            # A mapper bug must not stop ingest: the request is logged and counted. The raw
            # bytes are in the WAL once it exists, so nothing is lost for good.
            self.stats.map_errors += 1
            log.exception("mapping failed", extra={"signal": item.decoded.signal, "project": item.project})
            return
        encoded = encode_batch(batch, ts(time.time_ns()), self._encoder)
        if encoded.blocks:
            self._writer.add(encoded)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            try:
                await loop.run_in_executor(self._map_pool, self._process, item)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every accepted request has been mapped and handed to the writer."""
        await self._queue.join()

    async def stop(self, timeout: float) -> bool:
        """Stop accepting, map everything queued, flush the writer. True if all of it landed."""
        self._closing = True
        deadline = time.monotonic() + timeout
        drained = True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            drained = False
            log.error("pipeline queue did not drain before the shutdown timeout",
                      extra={"queued": self._queue.qsize()})
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
        remaining = max(deadline - time.monotonic(), 1.0)
        flushed = await asyncio.get_running_loop().run_in_executor(None, self._writer.stop, remaining)
        self._map_pool.shutdown(wait=False)
        return drained and flushed

    def describe(self) -> dict[str, Any]:
        return {"queue_depth": self.queue_depth, **msgspec.to_builtins(self.stats)}
