"""Tail sampling: the policies over thousands of generated traces, late spans, early decisions
under memory pressure, and a real gateway (inferences never sampled, dropped traces rebuilt from
their inference rows, a crash in the middle of the decision wait)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import start_gateway, wait_until
from otlp_client import get_json, post_otlp

from otelgw.pipeline.mapper import derived_inference_id
from otelgw.pipeline.rows import SpanRow, ts
from otelgw.pipeline.sampler import (
    DEFAULT_POLICIES,
    PolicySpec,
    SamplingConfig,
    TailSampler,
    load_sampling,
    trace_hash_percent,
)

BASE = 1_764_150_000_000_000_000


def span(trace: int, n: int, *, duration_ms: float = 100, status: str = "unset", project: str = "p",
         **attrs: str) -> SpanRow:
    return SpanRow(trace_id=f"{trace:032x}", span_id=f"{n:016x}", parent_span_id="", trace_state="",
                   project_id=project, service_name="s", name="op", kind="internal", start_time=ts(BASE),
                   end_time=ts(BASE + int(duration_ms * 1e6)), duration_ns=int(duration_ms * 1e6),
                   status_code=status, status_message="", attributes=dict(attrs), resource_attributes={},
                   scope_name="", scope_version="", events="[]", links="[]")


def sampler(*policies: PolicySpec, **config: object) -> TailSampler:
    return TailSampler(SamplingConfig(policies=list(policies or DEFAULT_POLICIES), decision_wait_s=10, **config))


def decide(s: TailSampler, spans: list[SpanRow]) -> set[str]:
    s.add(spans, seq=1, now=0.0)
    return {row.trace_id for row in s.tick(now=100.0)}


def test_default_policies_over_many_traces() -> None:
    s = sampler()
    spans, errors, slow = [], set(), set()
    for t in range(1, 5001):
        if t % 50 == 0:
            spans.append(span(t, 1, status="error"))
            errors.add(f"{t:032x}")
        elif t % 77 == 0:
            spans.append(span(t, 1, duration_ms=2500))
            slow.add(f"{t:032x}")
        else:
            spans.append(span(t, 1))
        spans.append(span(t, 2))
    kept = decide(s, spans)
    assert errors <= kept and slow <= kept
    rest = kept - errors - slow
    assert 0.07 < len(rest) / (5000 - len(errors) - len(slow)) < 0.13
    # Probabilistic by trace-id hash: the same ids always get the same answer.
    assert rest == {f"{t:032x}" for t in range(1, 5001)
                    if f"{t:032x}" not in errors | slow and trace_hash_percent(f"{t:032x}") < 10}
    assert s.stats.kept_by_policy["errors"] == len(errors)
    assert s.stats.traces_kept + s.stats.traces_dropped == 5000


def test_attribute_rate_and_combined_policies() -> None:
    s = sampler(PolicySpec(name="model", type="string_attribute", key="gen_ai.request.model", values=["gpt-4o"]))
    assert decide(s, [span(1, 1, **{"gen_ai.request.model": "gpt-4o"}), span(2, 1)]) == {f"{1:032x}"}
    s = sampler(PolicySpec(name="not-health", type="string_attribute", key="http.route", values=["/health"],
                           invert_match=True))
    assert decide(s, [span(1, 1, **{"http.route": "/health"}), span(2, 1, **{"http.route": "/ask"})]) == {
        f"{2:032x}"}
    s = sampler(PolicySpec(name="big", type="numeric_attribute", key="gen_ai.usage.output_tokens", min_value=1000))
    assert decide(s, [span(1, 1, **{"gen_ai.usage.output_tokens": "1500"}), span(2, 1, **{
        "gen_ai.usage.output_tokens": "10"})]) == {f"{1:032x}"}
    s = sampler(PolicySpec(name="both", type="and", policies=[
        PolicySpec(name="e", type="status_code"), PolicySpec(name="s", type="latency", threshold_ms=1000)]))
    assert decide(s, [span(1, 1, status="error", duration_ms=2000), span(2, 1, status="error")]) == {f"{1:032x}"}
    s = sampler(PolicySpec(name="any", type="composite", policies=[
        PolicySpec(name="e", type="status_code"), PolicySpec(name="all", type="always_sample")]))
    assert len(decide(s, [span(1, 1), span(2, 1)])) == 2
    s = sampler(PolicySpec(name="rate", type="rate_limiting", spans_per_second=10))
    kept = decide(s, [span(t, n) for t in range(1, 21) for n in range(1, 3)])
    assert len(kept) == 5  # 10 spans/s, 2 spans a trace
    s = sampler(PolicySpec(name="eval", type="evaluation", below=0.5, labels=["bad"]))
    s.add([span(1, 1), span(2, 1), span(3, 1)], seq=1, now=0.0)
    s.note_evaluation(f"{1:032x}", 0.2, "")
    s.note_evaluation(f"{2:032x}", None, "BAD")
    s.note_evaluation(f"{3:032x}", 0.9, "good")
    assert {r.trace_id for r in s.tick(now=100.0)} == {f"{1:032x}", f"{2:032x}"}


def test_wait_late_spans_and_floor() -> None:
    s = sampler(PolicySpec(name="errors", type="status_code"))
    s.add([span(1, 1, status="error"), span(2, 1)], seq=7, now=0.0)
    assert s.tick(now=5.0) == [] and s.floor_seq == 7  # still waiting: record 7 must not be checkpointed
    s.add([span(1, 2)], seq=9, now=6.0)  # a later span of trace 1 extends its wait
    kept = s.tick(now=12.0)  # trace 2 is due (last seen 0.0), trace 1 not (6.0)
    assert kept == [] and s.stats.traces_dropped == 1 and s.floor_seq == 7
    kept = s.tick(now=16.1)
    assert {(r.trace_id, r.span_id) for r in kept} == {(f"{1:032x}", f"{1:016x}"), (f"{1:032x}", f"{2:016x}")}
    assert s.floor_seq == 0 and s.released_floor == 7
    # Spans arriving after the decision follow it.
    late = s.add([span(1, 3), span(2, 2)], seq=11, now=20.0)
    assert [r.span_id for r in late] == [f"{3:016x}"]
    assert (s.stats.late_spans_kept, s.stats.late_spans_dropped) == (1, 1)


def test_memory_pressure_decides_oldest_early() -> None:
    s = sampler(PolicySpec(name="all", type="always_sample"), num_traces=100)
    s.add([span(t, 1) for t in range(1, 301)], seq=1, now=0.0)
    kept = s.tick(now=1.0)
    assert len(kept) == 200 and s.stats.early_decisions == 200 and s.stats.buffered_traces == 100
    assert {r.trace_id for r in kept} == {f"{t:032x}" for t in range(1, 201)}  # the oldest first


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "sampling.toml"
    path.write_text('decision_wait_s = 2\n[[policies]]\nname = "e"\ntype = "status_code"\n'
                    '[[projects.vip]]\nname = "all"\ntype = "always_sample"\n')
    config = load_sampling(str(path), True)
    assert config.decision_wait_s == 2 and [p.name for p in config.policies] == ["e"]
    s = TailSampler(config)
    s.add([span(1, 1, project="vip"), span(2, 1, project="other")], seq=1, now=0.0)
    assert {r.trace_id for r in s.tick(now=10.0)} == {f"{1:032x}"}
    path.write_text('[[policies]]\nname = "x"\ntype = "sometimes"\n')
    with pytest.raises(ValueError, match="sampling policies"):
        load_sampling(str(path), True)
    path.write_text('[[policies]]\nname = "x"\ntype = "numeric_attribute"\n')
    with pytest.raises(ValueError, match="needs a key"):
        TailSampler(load_sampling(str(path), True))


def _trace_body(trace: str, *, error: bool = False, slow: bool = False) -> bytes:
    end = BASE + (3_000_000_000 if slow else 100_000_000)
    spans = [
        {"traceId": trace, "spanId": "00000000000000a1", "name": "POST /ask", "kind": 2,
         "startTimeUnixNano": str(BASE), "endTimeUnixNano": str(end), "status": {"code": 2 if error else 0}},
        {"traceId": trace, "spanId": "00000000000000a2", "parentSpanId": "00000000000000a1", "name": "chat m",
         "kind": 3, "startTimeUnixNano": str(BASE + 1000), "endTimeUnixNano": str(end - 1000), "attributes": [
             {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
             {"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]},
    ]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def test_gateway_samples_trace_detail_but_never_inferences(chdb_path: Path, tmp_path: Path) -> None:
    policies = tmp_path / "sampling.toml"
    policies.write_text('decision_wait_s = 0.3\n[[policies]]\nname = "errors"\ntype = "status_code"\n'
                        '[[policies]]\nname = "slow"\ntype = "latency"\nthreshold_ms = 2000\n')
    gateway = start_gateway(chdb_path, "t_sampling", tmp_path / "gw", tail_sampling=True,
                            sampling_file=str(policies))
    try:
        traces = {"err": ("e1" * 16, {"error": True}), "slow": ("e2" * 16, {"slow": True}), "fast": ("e3" * 16, {})}
        for trace, kwargs in traces.values():
            assert post_otlp(gateway.http_url, "traces", _trace_body(trace, **kwargs), "json").status == 200
        gateway.settle()

        def decided() -> bool:
            return gateway.gateway.pipeline.describe()["sampler"]["buffered_traces"] == 0

        wait_until(decided, timeout=20)
        gateway.settle()
        stored = {r["trace_id"] for r in gateway.query("SELECT DISTINCT trace_id FROM spans FINAL")}
        assert stored == {traces["err"][0], traces["slow"][0]}
        assert gateway.scalar("SELECT count() FROM inferences FINAL") == 3
        fast_id = derived_inference_id(traces["fast"][0], "00000000000000a2")
        status, detail = get_json(f"{gateway.api_url}/api/v1/metrics/inferences/{fast_id}")
        assert status == 200 and detail["overview"]["trace_kept"] is False
        status, trace = get_json(f"{gateway.api_url}/api/v2/traces/{traces['fast'][0]}")
        assert status == 200 and "sampled out" in trace["message"]
        sampler_stats = gateway.gateway.pipeline.describe()["sampler"]
        assert sampler_stats["kept_by_policy"] == {"errors": 1, "slow": 1} and sampler_stats["traces_dropped"] == 1
        from otlp_client import post

        metrics = post(f"{gateway.api_url}/metrics", None, method="GET").body.decode()
        assert 'otelgw_sampler_traces_total{decision="kept"} 2' in metrics
        assert 'otelgw_sampler_kept_by_policy_total{policy="slow"} 1' in metrics
        # Everything committed: the checkpoint reached the last record once the decisions were made.
        wait_until(lambda: gateway.gateway.wal.checkpoint_seq == gateway.gateway.wal.durable_seq, timeout=10)
    finally:
        assert gateway.stop()


def test_crash_in_the_middle_of_the_decision_wait(tmp_path: Path) -> None:
    from gateway_process import GatewayProcess, chdb_query

    waiting = tmp_path / "wait.toml"
    waiting.write_text('decision_wait_s = 60\n[[policies]]\nname = "errors"\ntype = "status_code"\n')
    gateway = GatewayProcess(tmp_path, tail_sampling="true", sampling_file=str(waiting), flush_interval_ms="100")
    gateway.start()
    assert post_otlp(gateway.http_url, "traces", _trace_body("f1" * 16, error=True), "json").status == 200
    assert post_otlp(gateway.http_url, "traces", _trace_body("f2" * 16), "json").status == 200
    gateway.wait(lambda: gateway.status()["pipeline"]["sampler"]["buffered_traces"] == 2, 30, "buffering")
    time.sleep(0.5)  # the inference rows flush; the spans wait for their decision
    status = gateway.status()["pipeline"]["wal"]
    assert status["checkpoint_seq"] < status["durable_seq"], "records with waiting spans were checkpointed"
    gateway.kill()
    quick = tmp_path / "quick.toml"
    quick.write_text('decision_wait_s = 0.2\n[[policies]]\nname = "errors"\ntype = "status_code"\n')
    gateway.env["OTELGW_SAMPLING_FILE"] = str(quick)
    gateway.start()
    gateway.wait(lambda: gateway.status()["pipeline"]["wal"]["pending_records"] == 0, 60, "replayed and decided")
    assert gateway.terminate() == 0
    traces = {r["trace_id"] for r in chdb_query(tmp_path / "chdb", "SELECT DISTINCT trace_id FROM spans FINAL")}
    assert traces == {"f1" * 16}
    counts = chdb_query(tmp_path / "chdb", "SELECT count() AS n FROM inferences FINAL")
    assert int(counts[0]["n"]) == 2


def test_a_long_lived_trace_is_decided_after_the_max_wait() -> None:
    s = sampler(PolicySpec(name="all", type="always_sample"), max_trace_wait_s=60)
    for second in range(0, 100, 5):  # a span every 5 s: never quiet for the 10 s wait
        s.add([span(1, second + 1)], seq=second + 1, now=float(second))
        kept = s.tick(now=float(second) + 0.1)
        if kept:
            break
    assert kept and second >= 60 and s.floor_seq == 0
