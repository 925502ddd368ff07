"""Overload: clients send several times what the gateway can store. The gateway refuses with
retryable answers instead of growing, its memory stays bounded, and every request it
acknowledged is stored once the load stops. Also admission limits: per-project rate (429)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gateway_process import GatewayProcess, chdb_query
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_client import post, post_otlp

RSS_LIMIT = 1536 * 1024 * 1024  # documented bound for the default configuration (docs/reliability.md)


def genai_request(first: int, count: int, content_chars: int = 600) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    text = "x" * content_chars
    for n in range(first, first + count):
        span = scope.spans.add(trace_id=(0xF00D << 96 | n).to_bytes(16, "big"), span_id=n.to_bytes(8, "big"),
                               name="chat gpt-4o-mini", start_time_unix_nano=1_764_150_000_000_000_000 + n,
                               end_time_unix_nano=1_764_150_000_500_000_000 + n)
        span.attributes.extend([
            KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
            KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o-mini")),
            KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=100)),
            KeyValue(key="gen_ai.input.messages",
                     value=AnyValue(string_value=f'[{{"role":"user","content":"{text}"}}]')),
        ])
    return request.SerializeToString()


def test_overload_stays_bounded_and_delivers_everything_acknowledged(tmp_path: Path) -> None:
    # A small log so the flood reaches the limit within the test.
    gateway = GatewayProcess(tmp_path, wal_max_bytes=str(96 * 1024 * 1024), wal_segment_bytes=str(8 * 1024 * 1024))
    gateway.start()
    acked: list[range] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(1, 10**9, 512))
    rss: list[int] = []

    def sender() -> None:
        while not stop.is_set():
            with lock:
                first = next(counter)
            result = post(f"{gateway.http_url}/v1/traces", genai_request(first, 512), timeout=30)
            with lock:
                statuses[result.status] = statuses.get(result.status, 0) + 1
                if result.status == 200:
                    acked.append(range(first, first + 512))
                else:
                    assert result.status == 503 and "Retry-After" in result.headers, result.status
            if result.status != 200:
                time.sleep(0.05)

    senders = [threading.Thread(target=sender, daemon=True) for _ in range(8)]
    for thread in senders:
        thread.start()
    deadline = time.monotonic() + 20
    refused_seen = False
    while time.monotonic() < deadline:
        rss.append(gateway.rss_bytes())
        refused_seen = refused_seen or statuses.get(503, 0) > 0
        time.sleep(0.25)
    stop.set()
    for thread in senders:
        thread.join(60)
    assert refused_seen, f"the flood never reached a limit: {statuses}"
    assert max(rss) < RSS_LIMIT, f"peak RSS {max(rss) / 2**20:.0f} MiB"
    gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 300, "drained")
    assert gateway.terminate() == 0
    want = sum(len(r) for r in acked)
    stored = chdb_query(tmp_path / "chdb", "SELECT span_id FROM inferences FINAL")
    ids = {int(row["span_id"], 16) for row in stored}
    missing = [n for r in acked for n in r if n not in ids]
    assert not missing, f"{len(missing)} of {want} acknowledged spans missing"


def test_project_rate_limit_answers_429(tmp_path: Path) -> None:
    import grpc
    from otlp_client import grpc_export

    gateway = GatewayProcess(tmp_path, project_rate_limit="1000")
    gateway.start()
    try:
        codes = [post_otlp(gateway.http_url, "traces", genai_request(i * 400 + 1, 400), project="noisy").status
                 for i in range(5)]
        assert codes[0] == 200 and 429 in codes
        limited = post_otlp(gateway.http_url, "traces", genai_request(9000, 400), project="noisy")
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        # Another project is not held back by the noisy one.
        assert post_otlp(gateway.http_url, "traces", genai_request(20_000, 100), project="quiet").status == 200
        try:
            for i in range(5):
                grpc_export(gateway.grpc_target, "traces", genai_request(30_000 + i * 400, 400), project="noisy")
            raise AssertionError("no RESOURCE_EXHAUSTED")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            from google.rpc.error_details_pb2 import RetryInfo
            from google.rpc.status_pb2 import Status

            metadata = dict(exc.trailing_metadata())
            delay = RetryInfo.FromString(metadata["google.rpc.retryinfo-bin"]).retry_delay
            assert delay.seconds + delay.nanos / 1e9 > 0
            status = Status.FromString(metadata["grpc-status-details-bin"])
            assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert status.details[0].type_url.endswith("google.rpc.RetryInfo")
    finally:
        assert gateway.terminate() == 0
