"""The production `http://` store path against a real ClickHouse HTTP interface (the chDB-backed
test server), through a store outage and a full write-ahead log: everything acknowledged
arrives once, /ready flips and comes back, refusals are retryable."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import clickhouse_connect
import grpc
from chserver import ChServer
from gateway_process import GatewayProcess
from otlp_client import get_json, grpc_export, post
from test_overload import genai_request


class Sender(threading.Thread):
    def __init__(self, gateway: GatewayProcess, first: int, per_request: int = 100, pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.gateway = gateway
        self.next = first
        self.per_request = per_request
        self.pause = pause
        self.acked: list[range] = []
        self.statuses: dict[int, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            first = self.next
            self.next += self.per_request
            try:
                result = post(f"{self.gateway.http_url}/v1/traces", genai_request(first, self.per_request, 200),
                              timeout=10)
            except OSError:
                continue
            self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
            if result.status == 200:
                self.acked.append(range(first, first + self.per_request))
            time.sleep(self.pause)


def _stored_ids(server: ChServer, database: str) -> set[int]:
    client = clickhouse_connect.get_client(dsn=server.dsn(database))
    rows = client.query("SELECT span_id FROM inferences FINAL").result_rows
    return {int(span_id, 16) for (span_id,) in rows}


def _ready(gateway: GatewayProcess) -> tuple[int, dict]:
    return get_json(f"{gateway.api_url}/ready", timeout=5)


def test_outage_under_load_delivers_everything_once(tmp_path: Path) -> None:
    server = ChServer(tmp_path / "clickhouse").start()
    gateway = GatewayProcess(tmp_path / "gw", clickhouse_dsn=server.dsn("otelgw"), flush_interval_ms="200")
    try:
        gateway.start()
        sender = Sender(gateway, first=1)
        sender.start()
        time.sleep(1.5)
        server.stop()
        # The store is down: the gateway keeps accepting (into the WAL) and says it is not ready.
        gateway.wait(lambda: _ready(gateway)[0] == 503, 30, "not ready during the outage")
        status, body = _ready(gateway)
        assert body["checks"]["store"] is False or body["checks"]["writer"] is False, body
        accepted_before = sum(len(r) for r in sender.acked)
        time.sleep(4)
        assert sum(len(r) for r in sender.acked) > accepted_before, "requests were refused during the outage"
        assert gateway.status()["pipeline"]["wal"]["pending_records"] > 0
        server.start()
        gateway.wait(lambda: _ready(gateway)[0] == 200, 60, "ready after the outage")
        time.sleep(1)
        sender.stop_event.set()
        sender.join(30)
        gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "drained")
        assert gateway.terminate() == 0
        stored = _stored_ids(server, "otelgw")
        acked = [n for r in sender.acked for n in r]
        assert acked and not [n for n in acked if n not in stored]
        client = clickhouse_connect.get_client(dsn=server.dsn("otelgw"))
        # Once: no duplicate rows even before merges (insert deduplication by token).
        total, unique = client.query("SELECT count(), uniqExact(span_id) FROM spans").result_rows[0]
        assert total == unique
    finally:
        if gateway.proc and gateway.proc.poll() is None:
            gateway.proc.kill()
        server.stop()


def test_a_hung_store_is_given_up_on_and_retried(tmp_path: Path) -> None:
    """SIGSTOP: the server accepts connections and never answers. The writer's and the workers'
    inserts give up after `clickhouse_insert_timeout_s` (the driver's default would wait 300 s),
    the writer reports the store unhealthy and retries under the same tokens, /ready says not
    ready within seconds; after SIGCONT the server also runs the inserts it had queued, and
    everything is stored once."""
    server = ChServer(tmp_path / "clickhouse").start()
    gateway = GatewayProcess(tmp_path / "gw", clickhouse_dsn=server.dsn("otelgw"), flush_interval_ms="100",
                             clickhouse_insert_timeout_s="2", worker_insert_min_bytes="1")
    try:
        gateway.start()
        for r in range(2):
            assert post(f"{gateway.http_url}/v1/traces", genai_request(1 + r * 100, 100, 200)).status == 200
        gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "drained")
        server.pause()
        try:
            for r in range(2, 5):
                assert post(f"{gateway.http_url}/v1/traces", genai_request(1 + r * 100, 100, 200)).status == 200
            began = time.monotonic()
            gateway.wait(lambda: gateway.status()["writer"]["healthy"] is False, 30, "an insert given up on")
            assert time.monotonic() - began < 20
            assert "timed out" in gateway.status()["writer"]["last_error"].lower()
            # Readiness answers (not ready) within seconds, probe after probe: pings give up and
            # do not pile up on the query threads, which still answer what needs no store.
            for _ in range(3):
                asked = time.monotonic()
                status, body = get_json(f"{gateway.api_url}/ready", timeout=15)
                assert status == 503 and body["checks"]["store"] is False and time.monotonic() - asked < 8
        finally:
            server.resume()
        gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "drained")
        assert gateway.status()["writer"]["healthy"] is True
        assert gateway.terminate() == 0
        assert _stored_ids(server, "otelgw") >= set(range(1, 501))
        client = clickhouse_connect.get_client(dsn=server.dsn("otelgw"))
        # Before merges: the inserts the server ran late and their retries left one copy.
        assert client.query("SELECT count(), uniqExact(span_id) FROM inferences").result_rows[0] == (500, 500)
    finally:
        server.resume()
        if gateway.proc and gateway.proc.poll() is None:
            gateway.proc.kill()
        server.stop()


def test_full_wal_refuses_then_recovers(tmp_path: Path) -> None:
    server = ChServer(tmp_path / "clickhouse").start()
    gateway = GatewayProcess(tmp_path / "gw", clickhouse_dsn=server.dsn("otelgw"), flush_interval_ms="100",
                             wal_max_bytes=str(2 * 1024 * 1024), wal_segment_bytes=str(256 * 1024))
    acked: list[range] = []
    try:
        gateway.start()
        server.kill()
        first, refused = 1, None
        for _ in range(200):
            result = post(f"{gateway.http_url}/v1/traces", genai_request(first, 100, 200), timeout=10)
            if result.status == 200:
                acked.append(range(first, first + 100))
                first += 100
                continue
            refused = result
            break
        assert refused is not None and refused.status == 503, "the WAL limit was never reached"
        assert "write-ahead log is full" in refused.body.decode() and int(refused.headers["Retry-After"]) >= 1
        try:
            grpc_export(gateway.grpc_target, "traces", genai_request(900_000, 100, 200))
            raise AssertionError("gRPC accepted with a full WAL")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert gateway.healthy()  # alive, just full
        server.start()
        gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "drained")
        result = post(f"{gateway.http_url}/v1/traces", genai_request(first, 100, 200), timeout=10)
        assert result.status == 200
        acked.append(range(first, first + 100))
        gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "drained")
        assert gateway.terminate() == 0
        stored = _stored_ids(server, "otelgw")
        assert not [n for r in acked for n in r if n not in stored]
    finally:
        if gateway.proc and gateway.proc.poll() is None:
            gateway.proc.kill()
        server.stop()


def test_sigterm_during_outage_keeps_data_in_the_wal(tmp_path: Path) -> None:
    server = ChServer(tmp_path / "clickhouse").start()
    gateway = GatewayProcess(tmp_path / "gw", clickhouse_dsn=server.dsn("otelgw"), flush_interval_ms="100",
                             shutdown_timeout_s="3")
    try:
        gateway.start()
        server.kill()
        for i in range(5):
            assert post(f"{gateway.http_url}/v1/traces", genai_request(1 + i * 100, 100, 100)).status == 200
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        # While it drains (the store is down, so until the shutdown timeout) it answers 503 / UNAVAILABLE.
        time.sleep(0.5)
        assert post(f"{gateway.http_url}/v1/traces", genai_request(9000, 10)).status == 503
        try:
            grpc_export(gateway.grpc_target, "traces", genai_request(9100, 10))
            raise AssertionError("accepted while shutting down")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert gateway.proc.wait(30) == 0
        assert time.monotonic() - started < 15
        assert "replay at the next start" in gateway.log_tail(50)
        server.start()
        gateway.start()
        gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "replayed")
        assert gateway.terminate() == 0
        assert len(_stored_ids(server, "otelgw")) == 500
    finally:
        if gateway.proc and gateway.proc.poll() is None:
            gateway.proc.kill()
        server.stop()
