"""Crash test: clients send continuously while the gateway is killed with SIGKILL at random
moments and restarted. Every span and log record a client saw acknowledged must be in
ClickHouse exactly once afterwards."""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.error
from pathlib import Path

from gateway_process import GatewayProcess, chdb_query
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from otlp_client import post


class LoadGenerator(threading.Thread):
    """Sends GenAI spans and log records with unique ids; remembers those answered 200. It never
    retries a failed request, so nothing unacknowledged is sent twice."""

    def __init__(self, gateway: GatewayProcess, spans_per_request: int = 40) -> None:
        super().__init__(daemon=True)
        self.gateway = gateway
        self.per_request = spans_per_request
        self.acked_spans: set[str] = set()
        self.acked_logs: set[int] = set()
        self.stop_event = threading.Event()
        self.sent = 0
        self._next = 1

    def _traces(self) -> tuple[bytes, list[str]]:
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        ids = []
        for _ in range(self.per_request):
            n = self._next
            self._next += 1
            span = scope.spans.add(trace_id=(0xC0DE << 96 | n).to_bytes(16, "big"), span_id=n.to_bytes(8, "big"),
                                   name="chat gpt-4o-mini", start_time_unix_nano=1_764_150_000_000_000_000 + n,
                                   end_time_unix_nano=1_764_150_000_100_000_000 + n)
            if n % 2:
                span.attributes.extend([KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
                                        KeyValue(key="gen_ai.request.model",
                                                 value=AnyValue(string_value="gpt-4o-mini"))])
            else:  # a plain span: with the fast path on (the test default) ClickHouse writes its row
                span.name = "GET /orders"
                span.attributes.append(KeyValue(key="http.route", value=AnyValue(string_value="/orders")))
            ids.append(n.to_bytes(8, "big").hex())
        return request.SerializeToString(), ids

    def _logs(self) -> tuple[bytes, list[int]]:
        request = ExportLogsServiceRequest()
        scope = request.resource_logs.add().scope_logs.add()
        ids = []
        for _ in range(self.per_request):
            n = self._next
            self._next += 1
            record = scope.log_records.add(time_unix_nano=1_764_150_000_000_000_000 + n)
            record.body.string_value = f"log {n}"
            record.attributes.add(key="n", value=AnyValue(int_value=n))
            ids.append(n)
        return request.SerializeToString(), ids

    def run(self) -> None:
        while not self.stop_event.is_set():
            for kind in ("traces", "logs"):
                body, ids = self._traces() if kind == "traces" else self._logs()
                try:
                    result = post(f"{self.gateway.http_url}/v1/{kind}", body, timeout=10)
                except (OSError, urllib.error.URLError):
                    time.sleep(0.05)
                    continue
                self.sent += 1
                if result.status == 200:
                    (self.acked_spans if kind == "traces" else self.acked_logs).update(ids)  # type: ignore[arg-type]


class RecordingExporter(SpanExporter):
    """The stock OTLP/HTTP exporter, remembering the spans of every export it reports a success."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.acked: set[str] = set()
        self.lock = threading.Lock()

    def export(self, spans):  # type: ignore[no-untyped-def]
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            with self.lock:
                self.acked.update(f"{s.context.span_id:016x}" for s in spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, flush_interval_ms=200, batch_rows=2000)
    gateway.start()
    generator = LoadGenerator(gateway)
    exporter = RecordingExporter(OTLPSpanExporter(endpoint=f"{gateway.http_url}/v1/traces", timeout=5))
    provider = TracerProvider(resource=Resource.create({"service.name": "crash-sdk"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100, max_export_batch_size=64))
    tracer = provider.get_tracer("crash-test")
    stop_sdk = threading.Event()

    def sdk_app() -> None:
        while not stop_sdk.is_set():
            with tracer.start_as_current_span("chat gpt-4o") as span:
                span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"})
            time.sleep(0.002)

    app = threading.Thread(target=sdk_app, daemon=True)
    generator.start()
    app.start()
    rng = random.Random(20261126)
    try:
        for _ in range(4):
            time.sleep(rng.uniform(0.3, 2.0))
            gateway.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            gateway.start()
        time.sleep(1.0)
    finally:
        stop_sdk.set()
        app.join(10)
        provider.force_flush(30_000)
        provider.shutdown()
        generator.stop_event.set()
        generator.join(30)
    gateway.wait(gateway.ready, 120, "replayed")
    if os.environ.get("OTELGW_TEST_FAST_PATH", "auto") != "off":
        gateway.wait(lambda: gateway.status()["writer"]["native_rows"] > 0, 30, "writing plain spans natively")
    assert gateway.terminate() == 0, gateway.log_tail()

    acked_spans = generator.acked_spans | exporter.acked
    assert len(generator.acked_spans) > 500 and len(exporter.acked) > 100, (len(generator.acked_spans),
                                                                           len(exporter.acked))
    stored = chdb_query(tmp_path / "chdb", "SELECT span_id FROM spans FINAL")
    stored_ids = {row["span_id"] for row in stored}
    missing = acked_spans - stored_ids
    assert not missing, f"{len(missing)} acknowledged spans lost, e.g. {sorted(missing)[:5]}"
    counts = chdb_query(tmp_path / "chdb", "SELECT count() AS n, uniqExact(span_id) AS u FROM inferences FINAL")[0]
    assert int(counts["n"]) == int(counts["u"])
    # Replayed inserts repeat their deduplication tokens, the fast path's INSERT ... SELECT too:
    # no span row twice even before merges. (The generator's spans only: the SDK exporter resends
    # a batch whose answer a kill cut off, and those are two requests.)
    counts = chdb_query(tmp_path / "chdb", "SELECT count() AS n, uniqExact(span_id) AS u FROM spans "
                                           "WHERE startsWith(trace_id, '0000c0de')")[0]
    assert int(counts["n"]) == int(counts["u"]), counts
    # `logs` is a plain MergeTree: a record inserted twice would show as two rows.
    logs = chdb_query(tmp_path / "chdb", "SELECT attributes['n'] AS n, count() AS c FROM logs GROUP BY n")
    per_id = {int(row["n"]): int(row["c"]) for row in logs}
    assert not {n for n in generator.acked_logs if per_id.get(n) != 1}, "acknowledged log records lost or doubled"
    assert all(c == 1 for c in per_id.values()), "a log record was stored twice"
    log_text = gateway.log_path.read_text()
    assert "replaying write-ahead log" in log_text


def test_a_call_folded_across_requests_is_replayed_as_one_chunk(tmp_path: Path) -> None:
    """A SimpleSpanProcessor's three requests of one call (the SDK's span, an HTTP span, the
    library's span around them) fold into one inference in one mapping chunk. `kill -9` before
    anything is flushed: the replay maps exactly those records together again (chunks.log) and
    stores the call once, with what only the SDK's span measured. Without the logged range the
    replay maps each record alone, as records from before a crash are (then the call counts
    twice: that is what the log is for)."""
    from test_mapper import traced_twice_requests

    bodies = [request.SerializeToString() for request in traced_twice_requests()]
    for keep_chunk_log in (True, False):
        workdir = tmp_path / f"keep-{keep_chunk_log}"
        gateway = GatewayProcess(workdir, flush_interval_ms="600000", fold_wait_ms="1000")
        try:
            gateway.start()
            for body in bodies:
                assert post(f"{gateway.http_url}/v1/traces", body).status == 200
            gateway.wait(lambda gw=gateway: gw.status()["pipeline"]["cross_folded_chunks"] == 1, 30, "folded across")
            gateway.kill()
            chunk_log = workdir / "data" / "wal" / "chunks.log"
            assert chunk_log.read_text().split() == ["1", "3"]
            if not keep_chunk_log:
                chunk_log.unlink()
            gateway = GatewayProcess(workdir, flush_interval_ms="200", fold_wait_ms="0")
            gateway.start()
            gateway.wait(lambda gw=gateway: gw.status()["pipeline"]["replayed"], 60, "replayed")
            assert gateway.terminate() == 0
        finally:
            if gateway.proc is not None and gateway.proc.poll() is None:
                gateway.kill()
        rows = chdb_query(workdir / "chdb", "SELECT span_id, ttft_ms, input_tokens FROM inferences ORDER BY span_id")
        if keep_chunk_log:
            assert rows == [{"span_id": (2).to_bytes(8, "big").hex(), "ttft_ms": 250.0, "input_tokens": 25}]
        else:
            assert len(rows) == 2


def test_a_folded_chunk_the_log_refuses_is_stored_as_a_replay_would(chdb_path: Path, tmp_path: Path) -> None:
    """chunks.log refuses the line of a chunk whose requests folded into each other: a replay
    would map those records each alone, so they are mapped and stored so now (two rows for the
    call, as before the fold), never half folded under writer tokens."""
    from conftest import start_gateway, wait_until
    from test_mapper import traced_twice_requests

    from otelgw.pipeline.wal import CutNotLogged

    gateway = start_gateway(chdb_path, "t_fold_refused", tmp_path, fold_wait_ms=1000)
    try:
        def refuse(first: int, last: int) -> None:
            raise CutNotLogged(f"no room for {first} {last}")

        gateway.gateway.pipeline._chunk_log.append = refuse
        for request in traced_twice_requests():
            assert post(f"{gateway.http_url}/v1/traces", request.SerializeToString()).status == 200
        stats = gateway.gateway.pipeline.stats
        wait_until(lambda: stats.chunk_log_failures >= 1, 30)
        gateway.settle()
        assert stats.cross_folded_chunks == 0
        rows = gateway.query("SELECT span_id, ttft_ms FROM inferences FINAL ORDER BY span_id")
        assert [r["span_id"][-1] for r in rows] == ["2", "4"]
    finally:
        assert gateway.stop()
