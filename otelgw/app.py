"""Build and wire every component (the only place that does), start them, stop them in order.

Stop order: intake first (new requests get 503 / UNAVAILABLE), then the queue drains through
the mapper, then the writer flushes every buffered row, then the query side closes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import msgspec
from aiohttp import web
from google.protobuf import __version__ as protobuf_version

from otelgw import __version__
from otelgw.api import erasure as erasure_api
from otelgw.api import inferences as inferences_api
from otelgw.api import retention as retention_api
from otelgw.api.app import build_api_app
from otelgw.auth import Authenticator
from otelgw.config import Config, ConfigError, fast_path_on, parse_addr, wal_fsync, worker_inserts_on
from otelgw.governance.audit import Auditor
from otelgw.governance.erasure import ErasureRunner
from otelgw.pipeline.admission import Admission
from otelgw.pipeline.fastpath import rules_tag
from otelgw.pipeline.pipeline import Pipeline
from otelgw.pipeline.sampler import TailSampler, load_sampling
from otelgw.pipeline.wal import CutLog, WalError, WriteAheadLog
from otelgw.pipeline.wal_cipher import WalCipher
from otelgw.pipeline.workers import (
    MappingPool,
    build_record_mapper,
    load_mapper_inputs,
    mapping_workers,
)
from otelgw.receiver import ListenError
from otelgw.receiver.otlp_grpc import build_otlp_grpc_server
from otelgw.receiver.otlp_http import build_otlp_http_app
from otelgw.semconv import tables_digest
from otelgw.store.client import DSN, ClientFactory, server_timeouts
from otelgw.store.cluster import migrate_store
from otelgw.store.gateways import HEARTBEAT_S, DuplicateWalId, GatewayRegistry
from otelgw.store.keys import KeyStore
from otelgw.store.native import NativeInserter
from otelgw.store.reader import Reader
from otelgw.store.writer import BatchWriter
from otelgw.telemetry.registry import Telemetry

log = logging.getLogger(__name__)


def _loopback(addr: str) -> bool:
    parsed = parse_addr(addr) if addr else None
    if parsed is None:
        return True
    try:
        return ipaddress.ip_address(parsed[0]).is_loopback
    except ValueError:
        return parsed[0] == "localhost"


class StartError(Exception):
    """The gateway could not start serving: a listener could not bind its address."""


class Ports(msgspec.Struct):
    otlp_grpc: int = 0
    otlp_http: int = 0
    api: int = 0


def migrate(cfg: Config) -> list[str]:
    clients = ClientFactory(DSN(cfg.clickhouse_dsn))
    try:
        return [f"{m.version:03d}_{m.name}" for m in migrate_store(clients.get(), cfg.clickhouse_cluster or None)]
    finally:
        clients.close()


async def _start_site(app: web.Application, addr: str, reuse_port: bool = False,
                      **handler: Any) -> tuple[web.AppRunner, int]:
    """`handler`: aiohttp's request handler options (auto_decompress, max_line_size)."""
    host, port = parse_addr(addr)  # type: ignore[misc]  # validated with the config
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **handler)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        # DNS failures carry a negative errno that strerror does not know.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {addr}: {reason}") from exc
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, bound


class Gateway:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ports = Ports()
        self.dsn = DSN(cfg.clickhouse_dsn)
        # The writer's (and migrations'): a hung server is given up on and retried.
        self._write_clients = ClientFactory(self.dsn, options=server_timeouts(cfg.clickhouse_insert_timeout_s))
        self._read_clients = ClientFactory(self.dsn)
        wal_dir = Path(cfg.wal_dir) if cfg.wal_dir else Path(cfg.data_dir) / "wal"
        dead_letter_dir = Path(cfg.data_dir) / "dead-letter"
        self.wal = WriteAheadLog(wal_dir, fsync_ms=wal_fsync(cfg), max_bytes=cfg.wal_max_bytes,
                                 segment_bytes=cfg.wal_segment_bytes,
                                 cipher=WalCipher(cfg.wal_encryption_key) if cfg.wal_encryption_key else None)
        self.writer = BatchWriter(
            self._write_clients,
            batch_rows=cfg.batch_rows,
            flush_interval_s=cfg.flush_interval_ms / 1000,
            max_bytes=cfg.writer_max_bytes,
            attempts=cfg.insert_attempts,
            dead_letter_dir=dead_letter_dir,
            cuts=CutLog(wal_dir),
            native=NativeInserter(Path(cfg.data_dir) / "fast-path") if fast_path_on(cfg) else None,
        )
        admission = Admission(max_inflight_requests=cfg.max_inflight_requests,
                              max_inflight_per_connection=cfg.max_inflight_per_connection,
                              project_rate_limit=cfg.project_rate_limit)
        try:
            sampling = load_sampling(cfg.sampling_file or None, cfg.tail_sampling)
            sampler = TailSampler(sampling) if sampling.enabled else None
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.telemetry = Telemetry(max_models=cfg.metrics_max_models, max_projects=cfg.metrics_max_projects,
                                   max_providers=cfg.metrics_max_providers)
        self.writer.on_insert = self.telemetry.writer.observe
        try:
            # Read once: worker processes (and any started later, after a crash) get these.
            inputs = load_mapper_inputs(cfg, sampler.keys if sampler else None)
            local = build_record_mapper(cfg, inputs)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.writer.set_native_tag(rules_tag(cfg.max_attributes_per_span, cfg.max_attribute_chars, cfg.mask_pii,
                                             inputs.masking, [__version__, protobuf_version, tables_digest()]))
        mapper, masker = local.mapper, local.masker
        pool = MappingPool(local, mapping_workers(cfg), cfg, inputs)
        # Read at every start, whatever worker_inserts is now: chunks logged before a crash
        # replay under their own tokens.
        self.pipeline = Pipeline(mapper, self.writer, self.wal, admission, dead_letter_dir, sampler,
                                 inference_series=self.telemetry.inferences, masker=masker, pool=pool,
                                 chunk_log=CutLog(wal_dir, "chunks.log"),
                                 worker_inserts=worker_inserts_on(cfg, pool.workers),
                                 worker_insert_min_bytes=cfg.worker_insert_min_bytes,
                                 fold_wait_s=cfg.fold_wait_ms / 1000)
        self.telemetry.watch_status(self.status)
        self.reader = Reader(self._read_clients)
        self.auth = Authenticator(lambda: KeyStore(self._read_clients.get()).all(),
                                  allow_anonymous=cfg.allow_anonymous or _loopback(cfg.api_addr))
        self.auditor = Auditor(self._read_clients)
        self.erasure = ErasureRunner(self.dsn, cluster=cfg.clickhouse_cluster or None)
        self._decode_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-decode")
        self._runners: list[web.AppRunner] = []
        self._grpc: grpc.aio.Server | None = None
        self._api_runner: web.AppRunner | None = None
        self._stopping = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._serving = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        applied = await loop.run_in_executor(
            None, lambda: migrate_store(self._write_clients.get(), self.cfg.clickhouse_cluster or None))
        log.info("store ready", extra={"dsn": self.dsn.redacted(), "database": self.dsn.database,
                                       "migrations_applied": [m.name for m in applied]})
        top = await loop.run_in_executor(None, self.busiest_models)
        self.telemetry.inferences.preadmit_models(top)
        await self.auth.start()
        cfg = self.cfg
        if not self.auth.keys_configured:
            if not self.auth.allow_anonymous:
                raise ConfigError(f"api_addr {cfg.api_addr} is not loopback and no API key exists: create one with "
                                  "`otelgw keys create`, or set OTELGW_ALLOW_ANONYMOUS=true")
            log.warning("no API key exists: the query API answers anyone who can reach it",
                        extra={"api_addr": cfg.api_addr})
        id_file = self.wal.dir / "id"
        if id_file.exists():  # a new log gets a new id: only an existing one can be a copy
            registry = GatewayRegistry(id_file.read_text().strip(), str(self.wal.dir))
            try:
                await loop.run_in_executor(None, lambda: registry.check(self._write_clients.get()))
            except DuplicateWalId as exc:
                raise ConfigError(str(exc)) from exc
        self.writer.start()
        try:
            await self.pipeline.start()
        except WalError as exc:  # e.g. an encrypted log and no (or the wrong) key: refuse, keep it
            raise ConfigError(str(exc)) from exc
        self._registry = GatewayRegistry(self.wal.id, str(self.wal.dir))
        self._heartbeat = asyncio.create_task(self._beat(), name="otelgw-heartbeat")
        if cfg.api_addr:
            # Serving: every listener bound (the API comes up first; ready means OTLP is taken too).
            checks = {"writer": lambda: self.writer.stats.healthy, "accepting": lambda: not self._stopping,
                      "replayed": lambda: self.pipeline.replayed, "serving": lambda: self._serving,
                      "consuming": lambda: not self.pipeline.consumer_failed}
            api = build_api_app(self.reader, self.auth, cfg.flush_interval_ms / 1000, checks, self.status,
                                self.telemetry, self.pipeline, self.auditor)
            api[erasure_api.RUNNER_KEY] = self.erasure
            api[retention_api.CLUSTER_KEY] = cfg.clickhouse_cluster
            api[inferences_api.PREVIEW_CHARS_KEY] = cfg.preview_chars
            await self.auditor.start()
            # TraceQL travels in the URL (Grafana's Tempo data source): longer than aiohttp's
            # 8 KiB request line, as Go's HTTP server (Tempo's) allows.
            self._api_runner, self.ports.api = await _start_site(api, cfg.api_addr, max_line_size=64 * 1024)
        await self.erasure.start()  # resumes the erasure jobs a stop interrupted
        if cfg.otlp_http_addr:
            app = build_otlp_http_app(self.pipeline, self.auth, cfg.max_request_bytes, self._decode_pool,
                                      self.telemetry.receiver)
            # The receiver decompresses its bodies itself (receiver/body.py).
            runner, self.ports.otlp_http = await _start_site(app, cfg.otlp_http_addr, cfg.reuse_port,
                                                             auto_decompress=False)
            self._runners.append(runner)
        if cfg.otlp_grpc_addr:
            self._grpc, self.ports.otlp_grpc = build_otlp_grpc_server(
                self.pipeline, self.auth, cfg.otlp_grpc_addr, cfg.max_request_bytes, self._decode_pool,
                self.telemetry.receiver, reuse_port=cfg.reuse_port)
            await self._grpc.start()
        self._serving = True
        log.info("otelgw serving", extra={"version": __version__, **msgspec.to_builtins(self.ports)})

    async def _beat(self) -> None:
        """Keep this gateway's log id registered as live (see store/gateways.py)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, lambda: self._registry.heartbeat(self._read_clients.get()))
            except Exception as exc:  # the store being down must not stop the gateway
                log.debug("gateway heartbeat failed", extra={"error": str(exc)[:200]})
            await asyncio.sleep(HEARTBEAT_S)

    def busiest_models(self) -> list[str]:
        """The models with the most requests over the last 7 days, busiest first, so the bounded
        `model` label of /metrics goes to them rather than to whichever models come first."""
        rows = self._write_clients.get().query(
            "SELECT model FROM inference_stats_1h WHERE minute >= now() - INTERVAL 7 DAY GROUP BY model "
            "ORDER BY sum(requests) DESC LIMIT {n:UInt32}", parameters={"n": self.cfg.metrics_max_models})
        return [row[0] for row in rows.result_rows]

    def status(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline.describe(), "writer": msgspec.to_builtins(self.writer.stats)}

    async def stop(self) -> bool:
        """Stop intake, deliver everything accepted, close. True if every row was flushed."""
        self._stopping = True
        timeout = self.cfg.shutdown_timeout_s
        # The listeners stay open while the pipeline drains, answering 503 / UNAVAILABLE, so
        # exporters get a retryable answer rather than a refused connection; then they close.
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        flushed = await self.pipeline.stop(timeout)
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        for runner in self._runners:
            await runner.cleanup()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        await self.erasure.stop()
        await self.auditor.stop()
        await self.auth.stop()
        self.reader.close()
        self._decode_pool.shutdown(wait=False)
        self._write_clients.close()
        self._read_clients.close()
        log.info("otelgw stopped", extra={"flushed": flushed, **msgspec.to_builtins(self.writer.stats)})
        return flushed


async def serve(cfg: Config) -> int:
    gateway = Gateway(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
    except ListenError as exc:
        # The listeners bind last, after the log replayed and the workers started: stop those,
        # so the workers exit and what was replayed is flushed, and say why in one line.
        log.error("cannot start", extra={"error": str(exc)})
        await gateway.stop()
        raise StartError(str(exc)) from exc
    await stop.wait()
    log.info("shutdown requested")
    flushed = await gateway.stop()
    if not flushed:
        # Nothing is lost: what did not reach ClickHouse is in the write-ahead log and replays
        # at the next start. Exit 0 so supervisors do not treat a clean stop as a crash.
        log.warning("stopped with rows still in the write-ahead log; they replay at the next start")
    return 0
