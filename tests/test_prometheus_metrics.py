"""GET /metrics: per-inference series derived from what was ingested (bounded label
cardinality), gateway internals, and a real Prometheus server scraping it and evaluating the
recording rules in deploy/prometheus/rules/."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningGateway, start_gateway, wait_until
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from otlp_client import post
from prometheus_client.parser import text_string_to_metric_families

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
# (model, successes, errors): first seen first, so with a limit of 3 the last two fold to "other".
MODELS = [("gpt-4o", 5, 1), ("claude-3-5-sonnet", 4, 0), ("llama-3-70b", 3, 0), ("mistral-large", 2, 0),
          ("o1", 1, 1)]
PROJECT = "prom"


@pytest.fixture(scope="module")
def gw(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = start_gateway(chdb_path, "t_prometheus_metrics", tmp_path_factory.mktemp("gwdata"),
                            metrics_max_models=3)
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "chat-app"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"{running.http_url}/v1/traces", headers={"x-otelgw-project": PROJECT})))
        tracer = provider.get_tracer("test.genai")
        start = time.time_ns() - 10_000_000_000
        for model, ok, errors in MODELS:
            for i in range(ok + errors):
                span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, start_time=start)
                span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                     "gen_ai.request.model": model, "gen_ai.usage.input_tokens": 100,
                                     "gen_ai.usage.output_tokens": 10 + i,
                                     "gen_ai.latency.time_to_first_token": 0.2})
                if i >= ok:
                    span.set_status(Status(StatusCode.ERROR, "boom"))
                    span.set_attribute("error.type", "RateLimitError")
                span.end(end_time=start + (1 + i) * 1_500_000_000)  # 1.5 s, 3 s, ...
        provider.shutdown()
        running.settle()
        yield running
    finally:
        assert running.stop()


def scrape(gw: RunningGateway) -> dict[str, list[Any]]:
    with urllib.request.urlopen(f"{gw.api_url}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
    return families


def value(samples: list[Any], name: str, **labels: str) -> float:
    matching = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(matching)


def test_inference_series_follow_ingested_rows_with_bounded_models(gw: RunningGateway) -> None:
    families = scrape(gw)
    requests = families["inference_requests"]
    models = {s.labels["model"] for s in requests}
    assert models == {"gpt-4o", "claude-3-5-sonnet", "llama-3-70b", "other"}
    assert value(requests, "inference_requests_total", model="gpt-4o", status="success", project=PROJECT) == 5
    assert value(requests, "inference_requests_total", model="gpt-4o", status="error") == 1
    assert value(requests, "inference_requests_total", model="other", status="success") == 3
    assert value(requests, "inference_requests_total", model="other", status="error") == 1
    total = sum(ok + err for _, ok, err in MODELS)
    assert value(requests, "inference_requests_total") == total
    tokens = families["inference_tokens"]
    assert value(tokens, "inference_tokens_total", type="input") == 100 * total
    assert value(tokens, "inference_tokens_total", type="output", model="llama-3-70b") == 10 + 11 + 12
    latency = families["inference_latency_seconds"]
    assert value(latency, "inference_latency_seconds_count", model="claude-3-5-sonnet") == 4
    assert value(latency, "inference_latency_seconds_sum", model="claude-3-5-sonnet") == pytest.approx(15.0)
    assert value(latency, "inference_latency_seconds_bucket", model="claude-3-5-sonnet", le="2.0") == 1
    assert value(latency, "inference_latency_seconds_bucket", model="claude-3-5-sonnet", le="+Inf") == 4
    ttft = families["inference_ttft_seconds"]
    assert value(ttft, "inference_ttft_seconds_count") == total
    assert value(ttft, "inference_ttft_seconds_bucket", le="0.25") == total
    cost = families["inference_cost_usd"]
    assert value(cost, "inference_cost_usd_total", model="gpt-4o") > 0  # priced from semconv/pricing.toml
    status = json.loads(urllib.request.urlopen(f"{gw.api_url}/api/v1/status", timeout=10).read())
    assert status["inference_series"]["folded_models"] == 4 and status["inference_series"]["models"] == 3


def test_gateway_internals(gw: RunningGateway) -> None:
    assert post(f"{gw.http_url}/v1/traces", b"\xff\xfe", "application/x-protobuf").status == 400
    families = scrape(gw)
    duration = families["otelgw_receiver_request_duration_seconds"]
    assert value(duration, "otelgw_receiver_request_duration_seconds_count", protocol="http", signal="traces",
                 outcome="ok") >= sum(ok + err for _, ok, err in MODELS)
    refused = families["otelgw_receiver_refused_requests"]
    assert value(refused, "otelgw_receiver_refused_requests_total", protocol="http", reason="invalid") == 1
    assert {s.labels["reason"] for s in refused} >= {"rate_limited", "unavailable"}  # present from the start
    for name in ("otelgw_wal_bytes", "otelgw_wal_max_bytes", "otelgw_wal_segments", "otelgw_pipeline_queue_records",
                 "otelgw_writer_lag_seconds", "otelgw_writer_store_healthy"):
        assert name in families, name
    assert value(families["otelgw_wal_segments"], "otelgw_wal_segments") >= 1
    assert value(families["otelgw_writer_store_healthy"], "otelgw_writer_store_healthy") == 1
    rows = families["otelgw_writer_batch_rows"]
    assert value(rows, "otelgw_writer_batch_rows_count", table="inferences") >= 1
    assert value(rows, "otelgw_writer_batch_rows_sum", table="inferences") == sum(ok + err for _, ok, err in MODELS)
    assert value(families["otelgw_receiver_rejected_items"], "otelgw_receiver_rejected_items_total",
                 signal="traces", reason="invalid_trace_id") == 0


def test_busiest_models_are_admitted_first_after_a_restart(gw: RunningGateway) -> None:
    # The rollups count every model (they are not bounded): the next start admits the busiest.
    assert gw.gateway.busiest_models()[:3] == ["gpt-4o", "claude-3-5-sonnet", "llama-3-70b"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(base: str) -> bool:
    try:
        return urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200
    except OSError:
        return False


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    answer = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_a_real_prometheus_scrapes_it_and_evaluates_the_rules(gw: RunningGateway, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make test` installs the Debian prometheus package")
    rules = sorted(str(p) for p in RULES.glob("*.yml"))
    assert rules, f"no rule files in {RULES}"
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rules,
        "scrape_configs": [{"job_name": "otelgw", "static_configs": [{"targets": [f"127.0.0.1:{gw.ports.api}"]}]}],
    }))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=log_path.open("wb"))
    try:
        wait_until(lambda: _ready(base) or process.poll() is not None, timeout=60, interval=0.2)
        assert process.poll() is None, log_path.read_text()[-3000:]
        wait_until(lambda: _query(base, 'up{job="otelgw"} == 1'), timeout=60, interval=0.5)
        total = sum(ok + err for _, ok, err in MODELS)
        result = _query(base, "sum(inference_requests_total)")
        assert float(result[0]["value"][1]) == total
        by_model = {r["metric"]["model"]: float(r["value"][1])
                    for r in _query(base, "sum by (model) (inference_requests_total)")}
        assert by_model == {"gpt-4o": 6, "claude-3-5-sonnet": 4, "llama-3-70b": 3, "other": 4}
        p99 = _query(base, "histogram_quantile(0.99, sum by (le) (inference_latency_seconds_bucket))")
        assert 5 <= float(p99[0]["value"][1]) <= 10  # the slowest spans took 9 s
        # Recording rules are evaluated: the 5-minute rate exists per model once two scrapes are in.
        recorded = wait_until(lambda: _query(base, "model:inference_requests:rate5m"), timeout=60, interval=0.5)
        assert {r["metric"]["model"] for r in recorded} == set(by_model)
        rules_state = json.loads(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10).read())
        health = [r["health"] for g in rules_state["data"]["groups"] for r in g["rules"]]
        assert health and all(h in ("ok", "unknown") for h in health), rules_state
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
