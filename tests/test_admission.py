"""Admission control on its own: in-flight slots per gateway and per connection, per-project
rate limits and fair share of a filling log; and per-connection fairness over a real gRPC
connection."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from otelgw.pipeline.admission import Admission, Exhausted, Overloaded, RateLimited


class FakeLog:
    """Only the two numbers admission reads; the real log is tested in test_wal.py."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size_bytes = size
        self.max_bytes = max_bytes


def test_inflight_slots() -> None:
    admission = Admission(max_inflight_requests=3, max_inflight_per_connection=2)
    with admission.slot("a"), admission.slot("a"):
        with pytest.raises(Overloaded, match="on this connection"), admission.slot("a"):
            pass
        with admission.slot("b"), pytest.raises(Overloaded, match="too many requests in flight"), admission.slot("c"):
            pass
    assert admission.inflight == 0 and admission.stats.refused_connection == 1 and admission.stats.refused_inflight == 1


def test_rate_limit_token_bucket() -> None:
    admission = Admission(max_inflight_requests=10, max_inflight_per_connection=10, project_rate_limit=100)
    log = FakeLog(0, 1000)
    admission.admit(log, "p", "c", 100, 10)
    with pytest.raises(RateLimited) as caught:
        admission.admit(log, "p", "c", 50, 10)
    assert 0.1 <= caught.value.retry_after_s <= 1.0
    admission.admit(log, "other", "c", 100, 10)  # another project has its own bucket
    time.sleep(0.6)
    admission.admit(log, "p", "c", 50, 10)  # refilled at 100/s
    # A batch bigger than one second's budget still passes on a full bucket (never refused for ever).
    big = Admission(max_inflight_requests=10, max_inflight_per_connection=10, project_rate_limit=10)
    big.admit(log, "p", "c", 500, 10)


def test_full_log_and_fair_share() -> None:
    admission = Admission(max_inflight_requests=10, max_inflight_per_connection=10)
    with pytest.raises(Exhausted):
        admission.admit(FakeLog(1000, 1000), "p", "c", 1, 1)
    # Two projects hold the log's bytes: 700 from "flood", 100 from "calm".
    admission.track(1, "flood", 700)
    admission.track(2, "calm", 100)
    filling = FakeLog(800, 1000)
    with pytest.raises(Overloaded, match="share"):
        admission.admit(filling, "flood", "c", 1, 1)
    admission.admit(filling, "calm", "c", 1, 1)
    # Below half full nobody is held back; after the checkpoint passes seq 1, the flood is free.
    admission.admit(FakeLog(400, 1000), "flood", "c", 1, 1)
    admission.release_through(1)
    admission.admit(filling, "flood", "c", 1, 1)


def test_one_grpc_connection_cannot_take_every_slot(tmp_path: Path) -> None:
    from gateway_process import GatewayProcess
    from test_overload import genai_request

    # A long group-commit window keeps each request in flight long enough to overlap.
    gateway = GatewayProcess(tmp_path, wal_fsync_ms="300", max_inflight_per_connection="4")
    gateway.start()
    try:
        with grpc.insecure_channel(gateway.grpc_target) as channel:
            call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                       request_serializer=None, response_deserializer=None)
            bodies = [genai_request(1 + i * 10, 10) for i in range(20)]

            def send(body: bytes) -> grpc.StatusCode:
                try:
                    call(body, timeout=30)
                    return grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    return exc.code()

            with ThreadPoolExecutor(20) as pool:
                codes = list(pool.map(send, bodies))
        assert codes.count(grpc.StatusCode.UNAVAILABLE) > 0 and codes.count(grpc.StatusCode.OK) >= 4
        # Another connection is served meanwhile.
        from otlp_client import post

        assert post(f"{gateway.http_url}/v1/traces", genai_request(5000, 10)).status == 200
    finally:
        assert gateway.terminate() == 0
