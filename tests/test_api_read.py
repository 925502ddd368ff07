"""The minimal read path over HTTP: inference detail with messages and feedback (span-event,
log-record and response-id evaluations), 404/400 answers, health, readiness, unmapped report."""

from __future__ import annotations

import json

from otlp_client import get_json, post_otlp

from otelgw.pipeline.mapper import derived_inference_id

TRACE = "d" * 32
SPAN = "00000000000000d7"


def _kv(key: str, value) -> dict:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def test_inference_detail_with_feedback_and_unmapped(gateway) -> None:
    spans = {"resourceSpans": [{"resource": {"attributes": [_kv("service.name", "api-test")]}, "scopeSpans": [{
        "scope": {"name": "vendor.sdk"},
        "spans": [{
            "traceId": TRACE, "spanId": SPAN, "name": "chat claude-sonnet-4", "kind": 3,
            "startTimeUnixNano": "1764150000000000000", "endTimeUnixNano": "1764150002000000000",
            "status": {"code": 1},
            "attributes": [
                _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", "anthropic"),
                _kv("gen_ai.request.model", "claude-sonnet-4"), _kv("gen_ai.response.id", "msg_123"),
                _kv("gen_ai.usage.input_tokens", 100), _kv("gen_ai.usage.output_tokens", 10),
                _kv("gen_ai.server.time_to_first_token", "0.25"),
                _kv("gen_ai.vendor.secret_sauce", "xyz"), _kv("gen_ai.vendor.secret_sauce2", "abc"),
                _kv("gen_ai.input.messages", json.dumps([{"role": "user", "content": "Hello"}])),
                _kv("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": "Hi there",
                                                            "finish_reason": "end_turn"}])),
            ],
        }],
    }]}]}
    assert post_otlp(gateway.http_url, "traces", json.dumps(spans).encode(), "json").status == 200
    logs = {"resourceLogs": [{"resource": {"attributes": [_kv("service.name", "evaluator")]}, "scopeLogs": [{
        "logRecords": [
            {"eventName": "gen_ai.evaluation.result", "traceId": TRACE, "spanId": SPAN,
             "timeUnixNano": "1764150003000000000",
             "attributes": [_kv("gen_ai.evaluation.name", "helpfulness"),
                            {"key": "gen_ai.evaluation.score.value", "value": {"doubleValue": 4.0}}]},
            # No span id: found through the provider's response id.
            {"eventName": "gen_ai.evaluation.result", "timeUnixNano": "1764150004000000000",
             "attributes": [_kv("gen_ai.evaluation.name", "toxicity"), _kv("gen_ai.response.id", "msg_123"),
                            _kv("gen_ai.evaluation.score.label", "safe"),
                            _kv("gen_ai.evaluation.explanation", "no issues")]},
        ]}]}]}
    assert post_otlp(gateway.http_url, "logs", json.dumps(logs).encode(), "json").status == 200
    gateway.settle()

    inference_id = derived_inference_id(TRACE, SPAN)
    status, body = get_json(f"{gateway.api_url}/api/v1/metrics/inferences/{inference_id}")
    assert status == 200
    assert body["inference_id"] == inference_id
    overview = body["overview"]
    assert (overview["provider"], overview["request_model"], overview["response_id"]) == (
        "anthropic", "claude-sonnet-4", "msg_123")
    assert overview["timestamp"] == "2025-11-26T09:40:00.000000000Z" and overview["latency_ms"] == 2000.0
    assert (overview["ttft_ms"], overview["ttft_source"]) == (250.0, "attribute:gen_ai.server.time_to_first_token")
    assert overview["finish_reason"] == "stop"  # Anthropic's end_turn, canonical
    assert [(m["direction"], m["role"], m["content"]) for m in body["messages"]] == [
        ("input", "user", "Hello"), ("output", "assistant", "Hi there")]
    phases = [p["name"] for p in body["performance"]["phases"]]
    assert phases == ["request_received", "forwarded_to_provider", "first_token", "complete"]
    assert body["performance"]["phases"][2]["offset_ms"] == 250.0
    assert body["performance"]["total_ms"] == 2000.0
    feedback = {f["name"]: f for f in body["feedback"]["items"]}
    assert feedback["helpfulness"]["value"] == 4.0 and feedback["helpfulness"]["source"] == "log"
    assert feedback["toxicity"]["label"] == "safe" and feedback["toxicity"]["comment"] == "no issues"
    assert feedback["toxicity"]["value"] is None

    status, body = get_json(f"{gateway.api_url}/api/v1/semconv/unmapped")
    assert status == 200
    found = {(u["key"], u["scope_name"]): u for u in body["unmapped"]}
    sauce = found[("gen_ai.vendor.secret_sauce", "vendor.sdk")]
    assert sauce["count"] == 1 and sauce["example"] == "xyz" and sauce["last_seen"].startswith("2025-11-26T09:40:00")
    # Mapped and known attributes are not reported.
    assert not any(k in ("gen_ai.request.model", "gen_ai.input.messages") for k, _ in found)
    status, body = get_json(f"{gateway.api_url}/api/v1/semconv/unmapped?project=nobody")
    assert (status, body) == (200, {"unmapped": []})


def test_not_found_and_bad_id(gateway) -> None:
    status, body = get_json(f"{gateway.api_url}/api/v1/metrics/inferences/00000000-0000-4000-8000-000000000000")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = get_json(f"{gateway.api_url}/api/v1/metrics/inferences/not-a-uuid")
    assert status == 400 and "not a UUID" in body["error"]["message"]
    status, body = get_json(f"{gateway.api_url}/api/v1/nothing-here")
    assert status == 404 and "error" in body
    status, body = get_json(f"{gateway.api_url}/api/v1/semconv/unmapped?limit=0")
    assert status == 400


def test_health_ready_and_metrics(gateway) -> None:
    assert get_json(f"{gateway.api_url}/healthz") == (200, {"status": "ok"})
    status, body = get_json(f"{gateway.api_url}/ready")
    assert status == 200 and body["checks"] == {"store": True, "writer": True, "accepting": True, "replayed": True,
                                                "serving": True, "consuming": True}
    status, body = get_json(f"{gateway.api_url}/api/v1/status")
    assert status == 200 and body["writer"]["rows_written"]["inferences"] >= 1
    from otlp_client import post

    text = post(f"{gateway.api_url}/metrics", None, method="GET").body.decode()
    assert 'otelgw_writer_rows_written_total{table="inferences"}' in text
    assert 'otelgw_receiver_requests_total{signal="traces"}' in text
