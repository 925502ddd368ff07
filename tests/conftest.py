"""Test harness: a real gateway (receivers, pipeline, writer, API) on ephemeral ports, backed by
real ClickHouse through embedded chDB.

chDB allows one data path per process, so the whole session shares one path and every gateway
gets its own database in it.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from otelgw.app import Gateway
from otelgw.config import Config
from otelgw.store.client import DSN, ClientFactory


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class RunningGateway:
    """A Gateway on its own event-loop thread, plus a ClickHouse client for assertions."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self._thread.start()
        self.gateway = Gateway(cfg)
        try:
            self._call(self.gateway.start())
        except BaseException:
            # A start that is refused (tests expect some) must not leave its loop running the
            # tasks it had started (the API-key refresher would log against a closed store).
            self._call(_cancel_other_tasks(), timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            raise
        self.ports = self.gateway.ports
        self._clients = ClientFactory(DSN(cfg.clickhouse_dsn))

    def _call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.otlp_http}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.otlp_grpc}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def settle(self, timeout: float = 30) -> None:
        """Everything accepted so far is mapped and in ClickHouse."""
        self._call(self.gateway.pipeline.drain(), timeout)
        assert self.gateway.writer.flush(timeout), "writer did not flush in time"

    def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return list(self._clients.get().query(sql, parameters=params).named_results())

    def scalar(self, sql: str, **params: Any) -> Any:
        return self._clients.get().query(sql, parameters=params).result_rows[0][0]

    def stop(self) -> bool:
        try:
            return self._call(self.gateway.stop(), timeout=120)
        finally:
            self._clients.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


def start_gateway(chdb_path: Path, database: str, data_dir: Path, **overrides: Any) -> RunningGateway:
    settings: dict[str, Any] = {
        "clickhouse_dsn": f"chdb://{chdb_path}?database={database}",
        "otlp_grpc_addr": "127.0.0.1:0",
        "otlp_http_addr": "127.0.0.1:0",
        "api_addr": "127.0.0.1:0",
        "flush_interval_ms": 100,
        "data_dir": str(data_dir),
        "log_format": "text",
        # Trace detail is tail-sampled in production; tests that read spans want every one
        # (test_sampling.py covers the sampler).
        "tail_sampling": False,
        # Two mapping worker processes, as production runs on this 2-core machine by default;
        # OTELGW_TEST_WORKERS=1 runs the suite with mapping on a thread of the gateway instead.
        "workers": int(os.environ.get("OTELGW_TEST_WORKERS", "2")),
        # The native fast path is off by default, but every test gateway runs with it on, so
        # the whole suite checks it stores what the Python path does (OTELGW_TEST_FAST_PATH=off
        # runs the suite without it).
        "fast_path": os.environ.get("OTELGW_TEST_FAST_PATH", "auto"),
        # Off by default too; on for every test gateway given a ClickHouse server DSN
        # (OTELGW_TEST_WORKER_INSERTS=off runs without).
        "worker_inserts": os.environ.get("OTELGW_TEST_WORKER_INSERTS", "auto"),
    }
    settings.update(overrides)
    return RunningGateway(Config(**settings))


@pytest.fixture(scope="module")
def gateway(chdb_path: Path, request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    database = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])
    running = start_gateway(chdb_path, database, tmp_path_factory.mktemp("gwdata"))
    try:
        yield running
    finally:
        assert running.stop(), "gateway did not flush everything on stop"
        # The session's one chDB would otherwise keep merging every finished module's parts
        # beside the later modules' work.
        clients = ClientFactory(DSN(f"chdb://{chdb_path}"))
        try:
            clients.get().command(f"DROP DATABASE IF EXISTS {database} SYNC")
        finally:
            clients.close()


def wait_until(predicate: Any, timeout: float = 20, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
