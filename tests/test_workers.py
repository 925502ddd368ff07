"""Mapping in worker processes (OTELGW_WORKERS=2): what the earlier issues built keeps working
when requests are mapped in other processes than the one that receives, samples and writes. The
same tests run with mapping on a thread (workers=1)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningGateway, start_gateway, wait_until
from gateway_process import GatewayProcess, chdb_query
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otlp_client import post, post_otlp

BASE = 1_764_150_000_000_000_000


@pytest.fixture(scope="module", params=[2, 1], ids=["processes", "thread"])
def pooled(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[RunningGateway]:
    policies = tmp_path_factory.mktemp("sampling") / "sampling.toml"
    policies.write_text(
        'decision_wait_s = 0.5\n'
        '[[policies]]\nname = "negative-evaluation"\ntype = "evaluation"\nbelow = 0.5\n'
        '[[policies]]\nname = "baseline"\ntype = "probabilistic"\nsampling_percentage = 50\n')
    running = start_gateway(chdb_path, f"t_workers_{request.param}", tmp_path_factory.mktemp("gw"),
                            workers=request.param, tail_sampling=True, sampling_file=str(policies), mask_pii=True)
    try:
        yield running
    finally:
        assert running.stop(), "gateway did not flush everything on stop"


def _settled(gw: RunningGateway) -> None:
    gw.settle()
    wait_until(lambda: gw.gateway.pipeline.describe()["sampler"]["buffered_traces"] == 0, timeout=30)
    gw.settle()


def _metrics(gw: RunningGateway) -> str:
    return post(f"{gw.api_url}/metrics", None, method="GET").body.decode()


def test_sdk_spans_are_mapped_in_worker_processes(pooled: RunningGateway) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "pool-svc", "project.id": "pool"}))
    # Small export batches: a trace's spans arrive in different requests, so in different
    # mapping tasks and (often) different workers; the sampler must still see them together.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{pooled.http_url}/v1/traces"),
                                                   max_export_batch_size=7, schedule_delay_millis=20))
    tracer = provider.get_tracer("pool-test")
    traces = 60
    for t in range(traces):
        with tracer.start_as_current_span("POST /ask"):
            for n in range(2):
                with tracer.start_as_current_span(f"chat m-{t % 3}") as span:
                    span.set_attribute("gen_ai.operation.name", "chat")
                    span.set_attribute("gen_ai.request.model", f"m-{t % 3}")
                    span.set_attribute("gen_ai.usage.input_tokens", 10 + n)
                    span.set_attribute("gen_ai.usage.output_tokens", 5)
                    span.set_attribute("gen_ai.input.messages", json.dumps(
                        [{"role": "user", "parts": [{"type": "text", "content": f"mail me at user{t}@example.com"}]}]))
    assert provider.force_flush(30_000)
    provider.shutdown()
    _settled(pooled)

    rows = pooled.query("SELECT count() AS n, uniqExact(inference_id) AS u, sum(input_tokens) AS tokens "
                        "FROM inferences FINAL WHERE project_id = 'pool'")[0]
    assert rows["n"] == rows["u"] == traces * 2
    assert rows["tokens"] == traces * (10 + 11)
    # One decision per trace: all three spans of a trace, or none.
    per_trace = pooled.query("SELECT trace_id, count() AS n FROM spans FINAL WHERE project_id = 'pool' "
                             "GROUP BY trace_id")
    assert per_trace and all(r["n"] == 3 for r in per_trace)
    assert 0 < len(per_trace) < traces  # probabilistic 50 %: some kept, some not
    # Masked in the workers, counted in the gateway's /metrics.
    contents = [r["content"] for r in pooled.query("SELECT content FROM messages FINAL WHERE project_id = 'pool'")]
    assert len(contents) == traces * 2 and not any("@example.com" in c for c in contents)
    metrics = _metrics(pooled)
    masked = [line for line in metrics.splitlines()
              if line.startswith("otelgw_masked_items_total") and 'project="pool"' in line and "email" in line]
    # Each distinct address at least once (a repeat within one request is masked from a memo).
    assert masked and float(masked[0].rsplit(" ", 1)[1]) >= traces
    total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("inference_requests_total{") and 'project="pool"' in line)
    assert total == traces * 2
    mapping = pooled.gateway.pipeline.describe()["mapping"]
    assert mapping["workers"] == pooled.cfg.workers and mapping["records"] > 0
    series = {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("otelgw_mapping_")}
    assert series["otelgw_mapping_workers"] == pooled.cfg.workers
    assert series["otelgw_mapping_on_thread"] == (pooled.cfg.workers == 1)
    assert series["otelgw_mapping_records_total"] >= mapping["records"] > 0
    assert series["otelgw_mapping_cpu_seconds_total"] > 0
    if pooled.cfg.workers == 1:
        assert set(mapping["cpu_s"]) == {str(os.getpid())}
    else:  # the mapping CPU was spent in the worker processes, not in the gateway's
        assert str(os.getpid()) not in mapping["cpu_s"]
        assert set(mapping["cpu_s"]) <= {str(p) for p in pooled.gateway.pipeline.mapping.worker_pids()}


def _span_request(trace: bytes, span: bytes, name: str = "chat m") -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(KeyValue(key="project.id", value=AnyValue(string_value="evals")))
    s = resource.scope_spans.add().spans.add(trace_id=trace, span_id=span, name=name, start_time_unix_nano=BASE,
                                             end_time_unix_nano=BASE + 10_000_000)
    s.attributes.extend([KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
                         KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="m"))])
    return request.SerializeToString()


def test_an_evaluation_in_a_later_request_keeps_its_trace(pooled: RunningGateway) -> None:
    # Trace ids the 50 % baseline would drop, so only the evaluation can keep them.
    from otelgw.pipeline.sampler import trace_hash_percent

    candidates = (bytes([0xE0, n]) + bytes(14) for n in range(256))
    traces = [t for t in candidates if trace_hash_percent(t.hex()) >= 50][:2]
    for trace in traces:
        assert post_otlp(pooled.http_url, "traces", _span_request(trace, b"\x01" * 8)).status == 200
    logs = ExportLogsServiceRequest()
    resource = logs.resource_logs.add()
    resource.resource.attributes.append(KeyValue(key="project.id", value=AnyValue(string_value="evals")))
    record = resource.scope_logs.add().log_records.add(time_unix_nano=BASE + 20_000_000, trace_id=traces[0],
                                                       span_id=b"\x01" * 8, event_name="gen_ai.evaluation.result")
    record.attributes.extend([KeyValue(key="gen_ai.evaluation.name", value=AnyValue(string_value="relevance")),
                              KeyValue(key="gen_ai.evaluation.score.value", value=AnyValue(double_value=0.1))])
    assert post_otlp(pooled.http_url, "logs", logs.SerializeToString()).status == 200
    _settled(pooled)
    kept = {r["trace_id"] for r in pooled.query("SELECT DISTINCT trace_id FROM spans FINAL WHERE project_id = 'evals'")}
    assert kept == {traces[0].hex()}
    feedback = pooled.query("SELECT name, value FROM feedback FINAL WHERE project_id = 'evals'")
    assert feedback == [{"name": "relevance", "value": pytest.approx(0.1)}]


def _burst(url: str, requests: int, per_request: int, first: int) -> int:
    for r in range(requests):
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        for i in range(per_request):
            n = first + r * per_request + i + 1  # span id 0 is invalid
            span = scope.spans.add(trace_id=(0xB0B << 100 | n).to_bytes(16, "big"), span_id=n.to_bytes(8, "big"),
                                   name="chat m", start_time_unix_nano=BASE + n, end_time_unix_nano=BASE + n + 5_000)
            span.attributes.extend([KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
                                    KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="burst"))])
        assert post_otlp(url, "traces", request.SerializeToString()).status == 200
    return requests * per_request


def test_a_killed_worker_is_replaced_and_nothing_is_lost(pooled: RunningGateway) -> None:
    if pooled.cfg.workers == 1:
        pytest.skip("no worker process to kill: mapping runs on a thread")
    pool = pooled.gateway.pipeline.mapping
    wait_until(lambda: len(pool.worker_pids()) == 2)
    victim = pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    sent = _burst(pooled.http_url, 30, 200, 0)
    _settled(pooled)
    assert pooled.scalar("SELECT count() FROM inferences FINAL WHERE request_model = 'burst'") == sent
    assert pooled.scalar("SELECT uniqExact(inference_id) FROM inferences WHERE request_model = 'burst'") == sent
    assert pool.stats.worker_restarts >= 1 and pool.stats.crashed_records == 0
    assert "otelgw_mapping_worker_restarts_total 1.0" in _metrics(pooled)
    assert victim not in pool.worker_pids() and len(pool.worker_pids()) == 2
    assert pooled.gateway.pipeline.stats.map_errors == 0


def _chat_with(text: str, span: int) -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(KeyValue(key="project.id", value=AnyValue(string_value="restarts")))
    s = resource.scope_spans.add().spans.add(trace_id=(0xFA11 << 64 | span).to_bytes(16, "big"),
                                             span_id=span.to_bytes(8, "big"), name="chat m",
                                             start_time_unix_nano=BASE, end_time_unix_nano=BASE + 1_000_000)
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])
    s.attributes.extend([KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
                         KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="m")),
                         KeyValue(key="gen_ai.input.messages", value=AnyValue(string_value=messages))])
    return request.SerializeToString()


def test_replaced_workers_keep_the_start_settings_and_broken_ones_fall_back(chdb_path: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    masking = tmp_path / "masking.toml"
    masking.write_text("[defaults]\npii = true\n")
    gw = start_gateway(chdb_path, "t_workers_restarts", tmp_path / "gw", workers=2, masking_file=str(masking))
    try:
        pool = gw.gateway.pipeline.mapping
        wait_until(lambda: len(pool.worker_pids()) == 2)
        # The masking file goes away; a replacement pool still masks as the gateway started.
        masking.unlink()
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        assert post_otlp(gw.http_url, "traces", _chat_with("write to ann@example.com", 1)).status == 200
        gw.settle()
        assert pool.stats.worker_restarts == 1 and not pool.stats.fell_back_to_thread
        (content,) = [r["content"] for r in gw.query("SELECT content FROM messages FINAL "
                                                     "WHERE project_id = 'restarts'")]
        assert "ann@example.com" not in content and "write to" in content

        # A broken install: workers started from now on cannot even import otelgw.
        shim = tmp_path / "shim" / "otelgw"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text("raise ImportError('a broken install')\n")
        monkeypatch.syspath_prepend(str(shim.parent))
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        sent = _burst(gw.http_url, 10, 200, 0)
        assert post_otlp(gw.http_url, "traces", _chat_with("call bob@example.org", 2)).status == 200
        gw.settle()
        assert gw.scalar("SELECT count() FROM inferences FINAL WHERE request_model = 'burst'") == sent
        assert pool.stats.fell_back_to_thread and pool.stats.crashed_records == 0
        assert gw.gateway.pipeline.stats.map_errors == 0 and pool.worker_pids() == []
        assert str(os.getpid()) in pool.stats.cpu_s  # mapped here from then on
        contents = [r["content"] for r in gw.query("SELECT content FROM messages FINAL WHERE project_id = 'restarts'")]
        assert len(contents) == 2 and not any("@example" in c for c in contents)
    finally:
        assert gw.stop()


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.update(int(p) for p in text)
    return out


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_sigterm_drains_every_worker_and_sigkill_leaves_no_orphans(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, workers="2", flush_interval_ms="200")
    gateway.start()
    assert gateway.proc is not None
    gateway.wait(lambda: len(_children(gateway.proc.pid)) >= 2, 30, "running its workers")
    workers = _children(gateway.proc.pid)
    # A worker killed first: its pool is broken, replaced, and the broken one's processes reaped
    # (a worker that ignored SIGTERM once kept the gateway from exiting).
    os.kill(next(p for p in workers if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()), signal.SIGKILL)
    sent = _burst(gateway.http_url, 20, 250, 0)
    gateway.wait(lambda: gateway.status()["pipeline"]["mapping"]["worker_restarts"] >= 1, 30, "replacing the pool")
    workers |= _children(gateway.proc.pid)
    assert gateway.terminate(timeout=60) == 0
    # A straggler of the broken pool gets SIGTERM from the gateway and its parent-watch thread
    # checks every second: give a loaded machine a moment before calling it an orphan.
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived the gateway"
    rows = chdb_query(tmp_path / "chdb", "SELECT count() AS n, uniqExact(inference_id) AS u FROM inferences")
    assert int(rows[0]["n"]) == int(rows[0]["u"]) == sent

    gateway.start()
    gateway.wait(lambda: len(_children(gateway.proc.pid)) >= 2, 30, "running its workers")
    workers = _children(gateway.proc.pid)
    more = _burst(gateway.http_url, 10, 250, sent)
    gateway.kill()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived a killed gateway"
    gateway.start()  # replays what the kill left in the log
    gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "replayed")
    assert gateway.terminate() == 0
    rows = chdb_query(tmp_path / "chdb", "SELECT count() AS n, uniqExact(inference_id) AS u FROM inferences FINAL")
    assert int(rows[0]["n"]) == int(rows[0]["u"]) == sent + more


def test_default_worker_count_follows_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    from otelgw.config import Config
    from otelgw.pipeline.workers import mapping_workers

    cpus = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert mapping_workers(Config(workers=3), cpu_max) == 3
    assert mapping_workers(Config(), cpu_max) == cpus  # no cgroup file: the affinity
    for quota, expected in (("max 100000", cpus), ("150000 100000", min(cpus, 2)), ("50000 100000", 1),
                            ("100000000 100000", cpus)):
        cpu_max.write_text(quota + "\n")
        assert mapping_workers(Config(), cpu_max) == expected, quota
