"""Several gateways on one machine sharing the OTLP ports (`reuse_port`, SO_REUSEPORT), and the
default that refuses a taken port: two real `otelgw serve` processes, real sockets, the
ClickHouse-HTTP test double as their one store."""

from __future__ import annotations

import re
import sys
import threading
import urllib.request
from pathlib import Path

import clickhouse_connect
import grpc
import pytest
from chserver import ChServer
from gateway_process import GatewayProcess, free_port
from otlp_client import GRPC_METHODS, post_otlp
from test_overload import genai_request

from otelgw.config import Config

DATABASE = "otelgw_reuse"
PER_REQUEST = 20


def received(gateway: GatewayProcess, protocol: str) -> int:
    """Trace requests this process answered OK (its own /metrics: each gateway keeps its API port)."""
    with urllib.request.urlopen(f"{gateway.api_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    series = f'otelgw_receiver_request_duration_seconds_count{{outcome="ok",protocol="{protocol}",signal="traces"}}'
    match = re.search(re.escape(series) + r" ([0-9.e+]+)", text)
    return int(float(match.group(1))) if match else 0


def grpc_export(target: str, body: bytes) -> None:
    """On a connection of its own: channels to one target share a connection unless told not to."""
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        channel.unary_unary(GRPC_METHODS["traces"], request_serializer=None, response_deserializer=None)(
            body, timeout=30)


def test_a_taken_otlp_port_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    first = GatewayProcess(tmp_path / "first", workers="1")
    first.start()
    try:
        # gRPC sets SO_REUSEPORT by default: without turning it off, this second gateway would
        # start and silently take half of the first one's gRPC connections.
        for taken in ("OTLP_GRPC_ADDR", "OTLP_HTTP_ADDR"):
            second = GatewayProcess(tmp_path / f"second-{taken.lower()}", workers="1")
            second.env[f"OTELGW_{taken}"] = first.env[f"OTELGW_{taken}"]
            second.start(wait_ready=False)
            assert second.proc is not None
            assert second.proc.wait(60) == 1
            log = second.log_path.read_text()
            assert f"otelgw: cannot listen {'for OTLP/gRPC ' if 'GRPC' in taken else ''}on " \
                   f"{first.env[f'OTELGW_{taken}']}" in log, log[-2000:]
            assert "Traceback" not in log
        # Its own ports but the first one's data_dir (so its write-ahead log): refused at start.
        same_dir = GatewayProcess(tmp_path / "same-dir", workers="1")
        same_dir.env["OTELGW_DATA_DIR"] = first.env["OTELGW_DATA_DIR"]
        same_dir.start(wait_ready=False)
        assert same_dir.proc is not None and same_dir.proc.wait(60) == 2
        log = same_dir.log_path.read_text()
        assert f"is in use by another process (pid {first.proc.pid})" in log, log[-2000:]
        assert first.ready()
    finally:
        first.kill()


def test_reuse_port_needs_one_store() -> None:
    assert any(e.startswith("reuse_port:") for e in Config(reuse_port=True).validate())
    assert not Config(reuse_port=True, clickhouse_dsn="http://default:@127.0.0.1:8123/otelgw").validate()


@pytest.mark.timeout(240)
@pytest.mark.skipif(sys.platform != "linux", reason="counts on Linux spreading connections over SO_REUSEPORT sockets")
def test_two_gateways_share_the_otlp_ports_and_store_everything_once(tmp_path: Path) -> None:
    server = ChServer(tmp_path / "clickhouse").start()
    shared = {"OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{free_port()}", "OTELGW_OTLP_GRPC_ADDR": f"127.0.0.1:{free_port()}"}
    gateways = [GatewayProcess(tmp_path / f"gw{n}", clickhouse_dsn=server.dsn(DATABASE), reuse_port="true",
                               workers="1", flush_interval_ms="200") for n in (0, 1)]
    for gateway in gateways:
        gateway.env.update(shared)
    try:
        for gateway in gateways:
            gateway.start(wait_ready=False)
        for gateway in gateways:
            gateway.wait(gateway.ready, 60, "ready")
        url, target = gateways[0].http_url, gateways[0].grpc_target
        failures: list[str] = []
        # Every request on a new connection (urllib, a fresh gRPC channel): the kernel spreads
        # connections, not requests, over the listening processes.
        requests = [genai_request(1 + n * PER_REQUEST, PER_REQUEST, 100) for n in range(80)]

        def client(part: int) -> None:
            for n in range(part, len(requests), 4):
                try:
                    if n % 2:
                        grpc_export(target, requests[n])
                    elif (status := post_otlp(url, "traces", requests[n]).status) != 200:
                        failures.append(f"request {n}: HTTP {status}")
                except Exception as exc:  # noqa: BLE001  (reported by the main thread)
                    failures.append(f"request {n}: {exc!r}")

        threads = [threading.Thread(target=client, args=(part,)) for part in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert not failures, failures
        counts = [(received(g, "http"), received(g, "grpc")) for g in gateways]
        assert sum(h for h, _ in counts) == 40 and sum(g for _, g in counts) == 40, counts
        # Both processes served both protocols (Linux spreads connections by a hash of their
        # addresses: the chance that some process gets none of one protocol's 40 is ~2 ** -38).
        assert all(h > 0 and g > 0 for h, g in counts), counts

        # One gateway leaves (a rolling restart): once it has closed its listeners, the other
        # takes every new connection.
        assert gateways[1].terminate() == 0
        more = [genai_request(1 + (80 + n) * PER_REQUEST, PER_REQUEST, 100) for n in range(10)]
        for n, body in enumerate(more):
            if n % 2:
                grpc_export(target, body)
            else:
                assert post_otlp(url, "traces", body).status == 200
        assert gateways[0].terminate() == 0

        client_ = clickhouse_connect.get_client(dsn=server.dsn(DATABASE))
        try:
            total, distinct = client_.query("SELECT count(), uniqExact(inference_id) FROM inferences").result_rows[0]
        finally:
            client_.close()
        assert (total, distinct) == (90 * PER_REQUEST, 90 * PER_REQUEST)
    finally:
        for gateway in gateways:
            if gateway.proc is not None and gateway.proc.poll() is None:
                gateway.kill()
        server.stop()
