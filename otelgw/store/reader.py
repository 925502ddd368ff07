"""Read side of the store: run a named query on a worker thread and return dict rows, so the
API never blocks its event loop on ClickHouse."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from otelgw.store.client import ClientFactory
from otelgw.store.queries import load


class Reader:
    def __init__(self, clients: ClientFactory, max_workers: int = 4) -> None:
        self._clients = clients
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="otelgw-query")

    def _run(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            result = self._clients.get().query(sql, parameters=params)
        except Exception:
            self._clients.discard()
            raise
        return list(result.named_results())

    async def rows(self, resource: str, name: str, **params: Any) -> list[dict[str, Any]]:
        sql = load(resource)[name]
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, sql, params)

    def _ping(self) -> bool:
        try:
            self._clients.get().query("SELECT 1")
            return True
        except Exception:
            self._clients.discard()
            return False

    async def ping(self) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._ping)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
