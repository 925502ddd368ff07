"""POST /observability/add: Bud's bulk CloudEvents of inference records, made durable through the
write-ahead log and mapped into the same tables (and rollups) as OTLP spans."""

from __future__ import annotations

import json
import uuid
from typing import Any

from otlp_client import post

PATH = "/observability/add"
PROJECT = "0197a1b2-0000-7000-8000-00000000b0d0"


def record(**overrides: Any) -> dict[str, Any]:
    base = {"inference_id": str(uuid.uuid4()), "project_id": PROJECT,
            "endpoint_id": "550e8400-e29b-41d4-a716-446655440003", "model_id": "550e8400-e29b-41d4-a716-446655440004",
            "is_success": True, "cost": 0.025, "request_ip": "192.168.1.1",
            "request_arrival_time": "2026-03-10T10:30:00+00:00",
            "request_forward_time": "2026-03-10T10:30:00.250+00:00",
            "response_analysis": {"sentiment": "positive"}}
    return {**base, **overrides}


def envelope(*records: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "metadata": {"source": "test"}, "pubsubname": "pubsub",
            "topic": "budMetricsMessages", "type": "com.dapr.event.sent.bulk",
            "entries": [{"entryId": str(i), "contentType": "application/json",
                         "metadata": {"cloudevent.type": "add_observability_metrics"},
                         "event": {"specversion": "1.0", "type": "add_observability_metrics",
                                   "source": "gateway-service", "id": str(uuid.uuid4()),
                                   "datacontenttype": "application/json", "data": r}}
                        for i, r in enumerate(records)]}


def send(gateway, body: Any) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    result = post(f"{gateway.api_url}{PATH}", raw, "application/json")
    return result.status, json.loads(result.body)


def test_records_land_in_the_inference_tables_and_rollups(gateway) -> None:
    plain = record()
    rich = record(model_name="llama-3-70b", provider="vllm", input_tokens=120, output_tokens=30,
                  cached_input_tokens=20, request_end_time="2026-03-10T10:30:02+00:00", ttft_ms=400.0,
                  is_streaming=True, user_id="550e8400-e29b-41d4-a716-446655440009")
    failed = record(is_success=False, error_type="RateLimitError", error_message="429 from upstream",
                    error_code="rate_limited", status_code=429, request_arrival_time="2026-03-10T10:31:00",
                    request_forward_time="2026-03-10T10:31:00.100")
    bad = record(request_forward_time="2026-03-10T10:29:00+00:00")
    unknown_field = record(tokens=5)
    status, answer = send(gateway, envelope(plain, rich, failed, bad, rich, unknown_field))
    assert status == 200, answer
    summary = answer["param"]["summary"]
    assert summary == {"total_entries": 6, "successfully_inserted": 3, "duplicates_skipped": 1,
                       "validation_failures": 2}
    assert answer["object"] == "info" and "Successfully inserted 3 new records" in answer["message"]
    errors = answer["param"]["details"]["validation_errors"]
    assert [e["index"] for e in errors] == [3, 5]
    assert "request_forward_time" in errors[0]["error"] and "tokens" in errors[1]["error"]
    assert errors[0]["inference_id"] == bad["inference_id"]
    gateway.settle()

    rows = {r["inference_id"]: r for r in gateway.query(
        "SELECT toString(inference_id) AS inference_id, project_id, service_name, request_model, provider, "
        "input_tokens, output_tokens, cached_input_tokens, cost_usd, latency_ms, ttft_ms, queue_ms, is_success, "
        "is_streaming, error_type, error_message, user_id, trace_id, attributes "
        "FROM inferences FINAL WHERE project_id = {p:String}", p=PROJECT)}
    assert set(rows) == {plain["inference_id"], rich["inference_id"], failed["inference_id"]}
    p, r, f = rows[plain["inference_id"]], rows[rich["inference_id"]], rows[failed["inference_id"]]
    assert p["service_name"] == plain["endpoint_id"] and p["request_model"] == plain["model_id"]
    assert p["cost_usd"] == 0.025 and p["queue_ms"] == 250.0 and p["latency_ms"] == 250.0 and p["is_success"]
    assert p["trace_id"] == uuid.UUID(plain["inference_id"]).hex
    assert p["attributes"]["bud.request_ip"] == "192.168.1.1"
    assert json.loads(p["attributes"]["bud.response_analysis"]) == {"sentiment": "positive"}
    assert (r["request_model"], r["provider"], r["input_tokens"], r["output_tokens"], r["cached_input_tokens"]) == \
        ("llama-3-70b", "vllm", 120, 30, 20)
    assert r["latency_ms"] == 2000.0 and r["ttft_ms"] == 400.0 and r["is_streaming"]
    assert r["user_id"] == rich["user_id"]
    assert not f["is_success"] and f["error_type"] == "RateLimitError" and f["error_message"] == "429 from upstream"
    assert f["attributes"]["bud.status_code"] == "429"

    result = post(f"{gateway.api_url}/observability/analytics", json.dumps({
        "metrics": ["request_count", "failure_request", "queuing_time", "input_token"],
        "from_date": "2026-03-10T00:00:00Z", "to_date": "2026-03-11T00:00:00Z", "frequency_unit": "day",
        "filters": {"project": PROJECT}, "group_by": ["model"], "return_delta": False}).encode(), "application/json")
    assert result.status == 200
    items = {i["model_id"]: i["data"] for i in json.loads(result.body)["items"][0]["items"]}
    assert items[plain["model_id"]]["request_count"]["count"] == 2
    assert items[plain["model_id"]]["failure_request"]["count"] == 1
    assert items[plain["model_id"]]["queuing_time"]["avg_time_ms"] == 175.0
    assert items["llama-3-70b"]["input_token"]["count"] == 120


def test_resent_records_are_reported_as_duplicates_and_not_written_twice(gateway) -> None:
    first = [record() for _ in range(3)]
    status, answer = send(gateway, envelope(*first))
    assert status == 200 and answer["param"]["summary"]["successfully_inserted"] == 3
    gateway.settle()
    status, answer = send(gateway, envelope(*first, record()))
    assert status == 200
    assert answer["param"]["summary"]["successfully_inserted"] == 1
    assert answer["param"]["summary"]["duplicates_skipped"] == 3
    assert sorted(answer["param"]["details"]["duplicate_inference_ids"]) == sorted(r["inference_id"] for r in first)
    gateway.settle()
    ids = [r["inference_id"] for r in first]
    assert gateway.scalar("SELECT count() FROM inferences WHERE toString(inference_id) IN {ids:Array(String)}",
                          ids=ids) == 3


def test_records_a_span_cannot_hold_are_validation_failures(gateway) -> None:
    """Each of these took the whole batch down with a 500 (a naive time compared with an aware
    one; times and counts past what an OTLP span holds); now each is its own validation failure,
    and the good records beside them land."""
    mixed = record(request_arrival_time="2026-03-10T10:30:00", request_forward_time="2026-03-10T10:30:00.5Z")
    bad = [record(request_arrival_time="0001-01-01T00:00:00+00:00"),
           record(request_arrival_time="9999-12-31T00:00:00+00:00", request_forward_time="9999-12-31T00:00:01+00:00"),
           record(request_end_time="2026-03-10T10:29:00"),
           record(input_tokens=2**64),
           record(status_code=2**70),
           record(status_code=-(2**70))]
    status, answer = send(gateway, envelope(mixed, *bad))
    assert status == 200, answer
    assert answer["param"]["summary"] == {"total_entries": 7, "successfully_inserted": 1, "duplicates_skipped": 0,
                                          "validation_failures": 6}
    errors = {e["index"]: e["error"] for e in answer["param"]["details"]["validation_errors"]}
    assert "outside 1970-01-01 .. 2262-04-11" in errors[1] and "outside" in errors[2]
    assert "request_end_time must not be before" in errors[3]
    gateway.settle()
    row = gateway.query("SELECT latency_ms FROM inferences FINAL WHERE inference_id = {i:UUID}",
                        i=mixed["inference_id"])
    assert row == [{"latency_ms": 500.0}]


def test_bad_envelopes_get_a_clear_400(gateway) -> None:
    status, answer = send(gateway, envelope(record(is_success="maybe"), record(inference_id="not-a-uuid")))
    assert status == 400 and "no valid record in 2 entries" in answer["error"]["message"]
    assert "entries[0]" in answer["error"]["message"] and "is_success" in answer["error"]["message"]
    status, answer = send(gateway, {"id": "x"})
    assert status == 400 and "entries" in answer["error"]["message"]
    status, answer = send(gateway, {"entries": [{"event": {"data": record()}}] * 1001})
    assert status == 400 and "at most 1000" in answer["error"]["message"]
    status, answer = send(gateway, b"{not json")
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, answer = send(gateway, {"entries": [{"event": {"no_data": 1}}]})
    assert status == 400 and "event.data" in answer["error"]["message"]
    status, answer = send(gateway, {"entries": []})
    assert status == 200 and answer["message"] == "No records to process"
