"""Read side of the store: queries run on worker threads (each with its own client) and return
dict rows, so the API never blocks its event loop on ClickHouse. Long results stream from a
dedicated thread through a bounded queue: constant memory whatever the size."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from otelgw.store.client import ClientFactory, server_timeouts
from otelgw.store.queries import load

_END = object()
_PING_TIMEOUT_S = 5.0


class Reader:
    def __init__(self, clients: ClientFactory, max_workers: int = 4) -> None:
        self._clients = clients
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="otelgw-query")
        # Readiness pings: a server that does not answer within seconds is not ready, and one
        # ping at a time, so probes of a hung server do not take every query thread.
        self._ping_clients = ClientFactory(clients.dsn, options=server_timeouts(_PING_TIMEOUT_S))
        # Its own thread: slow queries filling the pool must not make the store look down.
        self._ping_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-ping")
        self._ping_future: asyncio.Future[bool] | None = None

    def _run(self, sql: str, params: dict[str, Any], settings: dict[str, Any] | None) -> list[dict[str, Any]]:
        result = self._clients.call(lambda client: client.query(sql, parameters=params, settings=settings))
        return list(result.named_results())

    async def rows(self, resource: str, name: str, **params: Any) -> list[dict[str, Any]]:
        return await self.sql(load(resource)[name], params)

    async def sql(self, sql: str, params: dict[str, Any], settings: dict[str, Any] | None = None,
                  ) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, sql, params, settings)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking store function with this thread's client as its first argument."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._clients.call, fn, *args)

    async def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        await self.call(lambda client: client.insert(table, rows, column_names=list(columns)))

    async def stream(self, queries: Callable[[Any], Any], chunk_bytes: int = 1 << 20) -> AsyncIterator[bytes]:
        """Bytes produced by `queries(client)` (a generator of byte chunks run on its own thread
        with its own client), handed over through a queue of a few chunks."""
        loop = asyncio.get_running_loop()
        handoff: queue.Queue[Any] = queue.Queue(maxsize=4)
        cancelled = threading.Event()

        def put(item: Any) -> bool:
            while not cancelled.is_set():
                try:
                    handoff.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            factory = ClientFactory(self._clients.dsn)
            try:
                for chunk in queries(factory.get()):
                    if not put(chunk):
                        return
                put(_END)
            except Exception as exc:  # handed to the reader, which raises it
                put(exc)
            finally:
                factory.close()

        thread = threading.Thread(target=produce, name="otelgw-export", daemon=True)
        thread.start()
        try:
            while True:
                item = await loop.run_in_executor(None, handoff.get)
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancelled.set()

    def _ping(self) -> bool:
        try:
            self._ping_clients.get().query("SELECT 1")
            return True
        except Exception:
            self._ping_clients.discard()
            return False

    async def ping(self) -> bool:
        if self._ping_future is None or self._ping_future.done():
            self._ping_future = asyncio.get_running_loop().run_in_executor(self._ping_pool, self._ping)
        try:
            return await asyncio.wait_for(asyncio.shield(self._ping_future), _PING_TIMEOUT_S + 1)
        except TimeoutError:
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._ping_pool.shutdown(wait=False, cancel_futures=True)
        self._ping_clients.close()
