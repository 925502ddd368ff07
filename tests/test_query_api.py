"""The query API over HTTP on a running gateway: listing (filters, sort keys, offset and cursor
pagination, validation), detail with its timing waterfall, feedback, export."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
import urllib.request
import uuid
from typing import Any

import pytest
from otlp_client import get_json, post, post_otlp

from otelgw.pipeline.mapper import derived_inference_id
from otelgw.seed import seed

FROM = "2000-01-01T00:00:00Z"


def api(gateway, path: str, body: Any = None, method: str = "POST") -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    result = post(f"{gateway.api_url}{path}", data, "application/json", method=method)
    try:
        return result.status, json.loads(result.body)
    except ValueError:
        return result.status, result.body


@pytest.fixture(scope="module")
def seeded(gateway):
    seed(gateway._clients.get(), inferences=3000, projects=2, days=5, seed_value=7)
    return gateway


def lst(gateway, **body: Any) -> dict[str, Any]:
    status, answer = api(gateway, "/api/v1/metrics/inferences/list", {"from_date": FROM, **body})
    assert status == 200, answer
    return answer


def test_listing_defaults_and_total(seeded) -> None:
    page = lst(seeded)
    assert page["total_count"] == 3000 and page["limit"] == 50 and page["has_more"] is True
    assert len(page["items"]) == 50
    stamps = [i["timestamp"] for i in page["items"]]
    assert stamps == sorted(stamps, reverse=True)
    item = page["items"][0]
    for field in ("inference_id", "timestamp", "project_id", "endpoint", "provider", "model", "input_tokens",
                  "output_tokens", "cached_input_tokens", "latency_ms", "ttft_ms", "cost_usd", "is_success",
                  "error_type", "is_streaming", "prompt_preview", "response_preview", "feedback_count"):
        assert field in item


@pytest.mark.parametrize("sort_by,field", [("timestamp", "timestamp"), ("tokens", "total_tokens"),
                                           ("latency", "latency_ms"), ("cost", "cost_usd"), ("ttft", "ttft_ms")])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_keys(seeded, sort_by: str, field: str, order: str) -> None:
    items = lst(seeded, sort_by=sort_by, sort_order=order, limit=200)["items"]
    values = [(-1 if i[field] is None else i[field]) for i in items]
    assert values == sorted(values, reverse=order == "desc")


def test_filters(seeded) -> None:
    for body, check in [
        ({"model": "gpt-4o"}, lambda i: i["model"] == "gpt-4o"),
        ({"provider": "anthropic"}, lambda i: i["provider"] == "anthropic"),
        ({"is_success": False}, lambda i: not i["is_success"] and i["error_type"]),
        ({"min_tokens": 500, "max_tokens": 800}, lambda i: 500 <= i["input_tokens"] + i["output_tokens"] <= 800),
        ({"max_latency_ms": 300}, lambda i: i["latency_ms"] <= 300),
        ({"project_id": "project-1"}, lambda i: i["project_id"] == "project-1"),
        ({"endpoint": "support-bot"}, lambda i: i["endpoint"] == "support-bot"),
        ({"search": "capital of FRANCE"}, lambda i: "capital of France" in i["prompt_preview"]),
        ({"has_feedback": True}, lambda i: i["feedback_count"] > 0),
        ({"has_feedback": False}, lambda i: i["feedback_count"] == 0),
    ]:
        page = lst(seeded, limit=100, **body)
        assert page["items"], body
        assert all(check(i) for i in page["items"]), body
        assert page["total_count"] < 3000, body


def test_session_and_user_filters(seeded) -> None:
    first = lst(seeded, limit=1)["items"][0]
    detail = get_json(f"{seeded.api_url}/api/v1/metrics/inferences/{first['inference_id']}")[1]["overview"]
    by_session = lst(seeded, session_id=detail["session_id"], limit=1000)
    assert first["inference_id"] in {i["inference_id"] for i in by_session["items"]}
    by_user = lst(seeded, user_id=detail["user_id"], limit=1000)
    assert by_user["total_count"] >= 1


def test_cursor_pages_match_offset_pages(seeded) -> None:
    for sort_by in ("timestamp", "latency", "ttft"):
        seen: list[str] = []
        cursor = None
        while True:
            body = {"sort_by": sort_by, "limit": 400, **({"cursor": cursor} if cursor else {})}
            page = lst(seeded, **body)
            seen += [i["inference_id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                assert cursor is None
                break
        assert len(seen) == len(set(seen)) == 3000, sort_by
        by_offset = lst(seeded, sort_by=sort_by, limit=400, offset=800)["items"]
        assert [i["inference_id"] for i in by_offset] == seen[800:1200], sort_by


def _cursor(fields: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


@pytest.mark.parametrize("body,field", [
    ({"from_date": "yesterday"}, "from_date"),
    ({"from_date": FROM, "limit": 1001}, "limit"),
    ({"from_date": FROM, "sort_by": "speed"}, "sort_by"),
    ({"from_date": FROM, "min_tokens": 10, "max_tokens": 5}, "min_tokens"),
    ({"from_date": FROM, "colour": "red"}, "colour"),
    ({"to_date": "2026-01-01"}, "from_date"),
    ({"from_date": "2026-01-02", "to_date": "2026-01-01"}, "from_date"),
    ({"from_date": FROM, "cursor": "garbage!"}, "cursor"),
    # Tampered cursors: each reached ClickHouse as a value it could not take (500).
    ({"from_date": FROM, "cursor": _cursor(["timestamp", "desc", 1e300, "not-a-uuid"])}, "cursor"),
    ({"from_date": FROM, "cursor": _cursor(["timestamp", "desc", 1.5, str(uuid.uuid4())])}, "cursor"),
    ({"from_date": FROM, "cursor": _cursor(["timestamp", "desc", 2**63, str(uuid.uuid4())])}, "cursor"),
    ({"from_date": FROM, "sort_by": "latency", "cursor": _cursor(["latency", "desc", 1.5, "x"])}, "cursor"),
    ({"from_date": FROM, "sort_by": "latency", "cursor": _cursor(["latency", "desc", 10**400, str(uuid.uuid4())])},
     "cursor"),
    # Past UInt64 it wrapped around and matched everything.
    ({"from_date": FROM, "min_tokens": 2**64}, "min_tokens"),
    ({"from_date": FROM, "limit": "ten"}, "limit"),
])
def test_listing_validation(seeded, body: dict, field: str) -> None:
    status, answer = api(seeded, "/api/v1/metrics/inferences/list", body)
    assert status == 400 and field in answer["error"]["message"], answer


def _span(trace: str, span: str, parent: str, name: str, kind: int, start_ms: float, end_ms: float,
          attrs: dict[str, Any], events: list[tuple[str, float]] = ()) -> dict[str, Any]:
    base = 1_764_150_000_000_000_000

    def kv(k: str, v: Any) -> dict[str, Any]:
        if isinstance(v, float):
            return {"key": k, "value": {"doubleValue": v}}
        if isinstance(v, int):
            return {"key": k, "value": {"intValue": str(v)}}
        return {"key": k, "value": {"stringValue": v}}

    return {"traceId": trace, "spanId": span, "parentSpanId": parent, "name": name, "kind": kind,
            "startTimeUnixNano": str(base + int(start_ms * 1e6)), "endTimeUnixNano": str(base + int(end_ms * 1e6)),
            "attributes": [kv(k, v) for k, v in attrs.items()],
            "events": [{"name": n, "timeUnixNano": str(base + int(t * 1e6))} for n, t in events]}


def test_detail_waterfall_from_gateway_client_and_vllm_spans(gateway) -> None:
    trace = "ab" * 16
    spans = [
        _span(trace, "0000000000000001", "", "POST /v1/chat/completions", 2, 0, 1000, {"http.route": "/v1/chat"}),
        _span(trace, "0000000000000002", "0000000000000001", "chat llama-3.1-8b-instruct", 3, 20, 990, {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "llama-3.1-8b-instruct",
            "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 200, "gen_ai.request.stream": "true",
        }, events=[("gen_ai.first_token", 320)]),
        _span(trace, "0000000000000003", "0000000000000002", "llm_request", 2, 40, 980, {
            "gen_ai.response.model": "llama-3.1-8b-instruct", "gen_ai.latency.time_in_queue": 0.05,
            "gen_ai.latency.time_to_first_token": 0.25, "gen_ai.latency.time_in_model_prefill": 0.2,
            "gen_ai.latency.time_in_model_decode": 0.64, "gen_ai.usage.prompt_tokens": 100,
            "gen_ai.usage.completion_tokens": 200,
        }),
    ]
    body = json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "waterfall"}}]}, "scopeSpans": [{"spans": spans}]}]})
    assert post_otlp(gateway.http_url, "traces", body.encode(), "json").status == 200
    gateway.settle()
    inference_id = derived_inference_id(trace, "0000000000000002")
    status, detail = get_json(f"{gateway.api_url}/api/v1/metrics/inferences/{inference_id}")
    assert status == 200
    perf = detail["performance"]
    phases = {p["name"]: p for p in perf["phases"]}
    assert phases["request_received"]["source"].startswith("span:POST /v1/chat/completions")
    # Forwarded = the vLLM span's start + its queue time: 40 ms + 50 ms after the gateway span began.
    assert phases["forwarded_to_provider"]["offset_ms"] == pytest.approx(90, abs=0.01)
    assert "time_in_queue" in phases["forwarded_to_provider"]["source"]
    assert phases["first_token"]["offset_ms"] == pytest.approx(320, abs=0.01)
    assert phases["first_token"]["source"] == "event:gen_ai.first_token"
    assert phases["complete"]["offset_ms"] == pytest.approx(990, abs=0.01)
    assert perf["queue_ms"] == pytest.approx(50) and perf["prefill_ms"] == pytest.approx(200)
    assert perf["decode_ms"] == pytest.approx(640)
    assert perf["tokens_per_second"] == pytest.approx(200 / 0.64)
    assert perf["model_baseline"]["samples"] >= 1
    overview = detail["overview"]
    assert overview["trace_kept"] is True and overview["trace_url"] == f"/api/v2/traces/{trace}"
    assert {s["spanId"] for s in detail["raw"]["spans"]} == {"0000000000000001", "0000000000000002",
                                                             "0000000000000003"}


def test_feedback_types_validation_and_summary(seeded) -> None:
    target = lst(seeded, has_feedback=False, limit=1)["items"][0]["inference_id"]
    path = f"/api/v1/metrics/inferences/{target}/feedback"
    for body in ({"type": "boolean", "value": True}, {"type": "boolean", "value": False},
                 {"type": "rating", "value": 4}, {"type": "rating", "value": 2, "name": "accuracy"},
                 {"type": "comment", "comment": "too long"},
                 {"type": "demonstration", "value": "Paris.", "created_by": "alice"}):
        status, answer = api(seeded, path, body)
        assert status == 201, answer
        assert answer["kind"] == body["type"] and answer["source"] == "api"
    for body, field in (({"type": "thumbs", "value": True}, "type"), ({"type": "rating", "value": 6}, "value"),
                        ({"type": "rating", "value": True}, "value"), ({"type": "boolean", "value": "yes"}, "value"),
                        ({"type": "comment"}, "comment"), ({"type": "demonstration"}, "value"),
                        ({"value": 1}, "type")):
        status, answer = api(seeded, path, body)
        assert status == 400 and field in answer["error"]["message"], (body, answer)
    status, listing = get_json(f"{seeded.api_url}{path}")
    assert status == 200
    summary = listing["summary"]
    assert summary["total"] == 6 and summary["by_kind"]["rating"] == 2
    assert summary["mean_rating"] == 3.0 and summary["thumbs_up_ratio"] == 0.5
    stamps = [i["timestamp"] for i in listing["items"]]
    assert stamps == sorted(stamps, reverse=True)
    assert lst(seeded, search=None, has_feedback=True, limit=1000)["total_count"] >= 1
    missing = "00000000-0000-4000-8000-00000000dead"
    status, answer = api(seeded, f"/api/v1/metrics/inferences/{missing}/feedback", {"type": "rating", "value": 3})
    assert status == 404


def test_feedback_for_an_inference_still_in_the_pipeline(gateway) -> None:
    trace = "cd" * 16
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [_span(
        trace, "00000000000000aa", "", "chat m", 3, 0, 10, {"gen_ai.operation.name": "chat",
                                                           "gen_ai.request.model": "m"})]}]}]})
    assert post_otlp(gateway.http_url, "traces", body.encode(), "json").status == 200
    inference_id = derived_inference_id(trace, "00000000000000aa")
    # No settle(): the row may not be flushed yet; the API waits for it briefly.
    status, answer = api(gateway, f"/api/v1/metrics/inferences/{inference_id}/feedback",
                         {"type": "boolean", "value": True})
    assert status == 201, answer


def _export(gateway, **body: Any) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{gateway.api_url}/api/v1/metrics/inferences/export",
                                     data=json.dumps({"from_date": FROM, **body}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, dict(response.headers), response.read()


def test_export_formats(seeded, monkeypatch) -> None:
    import otelgw.api.export as export

    monkeypatch.setattr(export, "BATCH_ROWS", 700)  # several keyset batches
    status, headers, body = _export(seeded, format="csv", project_id="project-0")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    expected = lst(seeded, project_id="project-0")["total_count"]
    assert len(rows) == expected == int(headers["X-Export-Total-Count"])
    assert len({r["inference_id"] for r in rows}) == expected
    assert rows[0]["timestamp"] >= rows[-1]["timestamp"]

    status, headers, body = _export(seeded, format="json", model="gpt-4o", include_messages=True)
    document = json.loads(body)
    meta = document["export_metadata"]
    assert meta["total_count"] == len(document["items"]) == lst(seeded, model="gpt-4o")["total_count"]
    assert meta["filters"]["model"] == "gpt-4o" and meta["format_version"] == "1"
    assert len(json.loads(document["items"][0]["messages"])) == 3

    status, headers, body = _export(seeded, format="jsonl", is_success=False)
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert lines and all(line["is_success"] is False for line in lines)

    status, headers, body = _export(seeded, format="parquet", project_id="project-1")
    assert body[:4] == b"PAR1" and body[-4:] == b"PAR1"


def test_openapi_document(gateway) -> None:
    status, document = get_json(f"{gateway.api_url}/api/openapi.json")
    assert status == 200 and document["openapi"] == "3.1.0"
    assert "/api/v1/metrics/inferences/list" in document["paths"]
    assert "ListRequest" in document["components"]["schemas"]


def test_time_window(seeded) -> None:
    now = time.time()
    recent = lst(seeded, from_date=str(now - 86400), to_date=str(now + 60))
    everything = lst(seeded)
    assert 0 < recent["total_count"] < everything["total_count"]
    # Times past what DateTime64(9) holds are its ends: they wrapped around as Int64 and matched
    # nothing.
    # A span from past 2262 is stored at the store's end (and its absurd queue time is no
    # measurement: the detail's waterfall overflowed on it, a 500).
    far_span = _span("fa" * 16, "00000000000000fa", "", "chat far", 3, 0, 1, {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.latency.time_in_queue": 1e300})
    far_span["startTimeUnixNano"] = far_span["endTimeUnixNano"] = str(2**64 - 1)
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [far_span]}]}]})
    assert post_otlp(seeded.http_url, "traces", body.encode(), "json").status == 200
    seeded.settle()
    far_id = derived_inference_id("fa" * 16, "00000000000000fa")
    assert get_json(f"{seeded.api_url}/api/v1/metrics/inferences/{far_id}")[0] == 200
    for far in ({"from_date": "1000-01-01", "to_date": "9999-12-31"}, {"to_date": "99999999999999"},
                {"from_date": "0001-01-01T00:00:00+14:00", "to_date": "9999-12-31T23:59:59-14:00"}):
        assert lst(seeded, **far)["total_count"] == everything["total_count"] + 1, far


def test_head_and_405_allow(gateway) -> None:
    """GET routes answer HEAD (405 before); a 405 names what the path takes (the JSON error
    dropped aiohttp's Allow header)."""
    import http.client

    for path in ("/healthz", "/ready", "/metrics", "/api/v1/status", "/"):
        conn = http.client.HTTPConnection("127.0.0.1", gateway.ports.api, timeout=10)
        conn.request("HEAD", path)
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b"", path
        conn.close()
    status, headers, body = _request(gateway, "DELETE", "/healthz")
    assert status == 405 and "GET" in headers["Allow"] and json.loads(body)["error"]["code"] == "method_not_allowed"
    # GET on the POST-only list and export routes (the id route matched them: 400 "not a UUID").
    for path in ("/api/v1/metrics/inferences/list", "/api/v1/metrics/inferences/export"):
        status, headers, _ = _request(gateway, "GET", path)
        assert status == 405 and headers["Allow"] == "POST", path


def _request(gateway, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{gateway.api_url}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_finish_reason_filter_takes_any_spelling_and_finds_rows_stored_as_sent(gateway) -> None:
    """Anthropic's end_turn, Gemini's STOP and OpenAI's stop are all `stop`; a filter may name any
    of them, and rows stored before finish reasons were canonical (as sent) match too."""
    trace = "cd" * 16
    reasons = {"0000000000000011": "end_turn", "0000000000000012": "STOP", "0000000000000013": "max_tokens",
               "0000000000000014": "tool_use", "0000000000000015": "pause_turn"}
    spans = [_span(trace, span, "", "chat m", 3, 0, 100, {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.finish_reasons": json.dumps([reason])}) for span, reason in reasons.items()]
    body = json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "finish"}}]}, "scopeSpans": [{"spans": spans}]}]})
    assert post_otlp(gateway.http_url, "traces", body.encode(), "json", project="finish-reasons").status == 200
    gateway.settle()
    # A row an older version stored with Gemini's enum as sent.
    gateway._clients.get().command(
        "INSERT INTO inferences (inference_id, project_id, trace_id, span_id, timestamp, end_timestamp, "
        "finish_reason, ingested_at) VALUES (generateUUIDv4(), 'finish-reasons', {t:String}, "
        "'0000000000000016', '2025-11-26 09:40:00', '2025-11-26 09:40:01', 'FinishReason.STOP', now64(3))",
        parameters={"t": trace})

    def listed(reason: str) -> list[str]:
        page = lst(gateway, project_id="finish-reasons", finish_reason=reason, limit=100)
        return sorted(i["finish_reason"] for i in page["items"])

    assert listed("stop") == ["FinishReason.STOP", "stop", "stop"]
    assert listed("END_TURN") == listed("stop")
    assert listed("length") == ["length"] and listed("MAX_TOKENS") == ["length"]
    assert listed("tool_calls") == ["tool_call"]
    assert listed("pause_turn") == ["pause_turn"] and listed("refusal") == []
    status, answer = api(gateway, "/api/v1/metrics/inferences/list",
                         {"from_date": FROM, "finish_reason": "x" * 65})
    assert status == 400 and "finish_reason" in answer["error"]["message"], answer
    # The export takes the same filter.
    status, _, data = _export(gateway, project_id="finish-reasons", finish_reason="stop", format="csv")
    assert status == 200 and len(list(csv.DictReader(io.StringIO(data.decode())))) == 3


def test_message_events_sent_one_record_a_request_keep_every_message_in_order(gateway) -> None:
    """An SDK's SimpleLogRecordProcessor sends each GenAI event in a request of its own (the OTel
    JS OpenAI instrumentation does, with one timestamp for every input event): each message is
    kept, in the order the events came; a retried export replaces its messages; a hostile choice
    index or thousands of events in one request cost no message."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    trace, span = "ef" * 16, "00000000000000a1"
    at = 1_764_150_000_000_000_000

    def event(name: str, body: dict[str, Any], offset_ns: int = 0) -> bytes:
        request = ExportLogsServiceRequest()
        record = request.resource_logs.add().scope_logs.add().log_records.add(
            time_unix_nano=at + offset_ns, trace_id=bytes.fromhex(trace), span_id=bytes.fromhex(span))
        record.attributes.add(key="event.name").value.string_value = name
        record.body.string_value = json.dumps(body)
        return request.SerializeToString()

    sent = [event("gen_ai.system.message", {"content": "Be brief."}),
            event("gen_ai.user.message", {"content": "Weather in Paris?"}),
            event("gen_ai.assistant.message", {"tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "weather", "arguments": "{}"}}]}),
            event("gen_ai.tool.message", {"id": "c1", "content": "sunny"}),
            event("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "Sunny."}}, 900_000_000)]
    for body in [sent[0], sent[1], sent[1], *sent[2:]]:  # the user's event sent twice: an export retried
        assert post_otlp(gateway.http_url, "logs", body, project="one-a-request").status == 200
    chat = _span(trace, span, "", "chat gpt-4o", 3, 0, 1000, {"gen_ai.operation.name": "chat",
                                                           "gen_ai.request.model": "gpt-4o"})
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [chat]}]}]})
    assert post_otlp(gateway.http_url, "traces", body.encode(), "json", project="one-a-request").status == 200
    gateway.settle()
    status, detail = get_json(f"{gateway.api_url}/api/v1/metrics/inferences/{derived_inference_id(trace, span)}")
    assert status == 200, detail
    assert [(m["direction"], m["index"], m["role"], m["content"]) for m in detail["messages"]] == [
        ("input", 0, "system", "Be brief."), ("input", 1, "user", "Weather in Paris?"),
        ("input", 2, "assistant", ""), ("input", 3, "tool", "sunny"), ("output", 0, "assistant", "Sunny.")]
    assert detail["messages"][2]["tool_calls"][0]["name"] == "weather"
    assert detail["overview"]["finish_reason"] == "stop"
    page = lst(gateway, project_id="one-a-request")
    assert (page["items"][0]["prompt_preview"], page["items"][0]["response_preview"]) == ("Weather in Paris?", "Sunny.")
    # Its finish reason is only in its messages: the filter finds it there, whatever the window.
    for to_date in (None, "9999-12-31T00:00:00Z", "2262-04-11T00:00:00Z"):
        window = {"to_date": to_date} if to_date else {}
        found = lst(gateway, project_id="one-a-request", finish_reason="end_turn", **window)["items"]
        assert [i["inference_id"] for i in found] == [derived_inference_id(trace, span)], to_date
    status, _, data = _export(gateway, project_id="one-a-request", format="json", include_messages=True)
    exported = json.loads(json.loads(data)["items"][0]["messages"])
    assert [(m[0], m[1], m[2]) for m in exported] == [("input", 0, "system"), ("input", 1, "user"),
                                                      ("input", 2, "assistant"), ("input", 3, "tool"),
                                                      ("output", 0, "assistant")]

    # One request: 5,000 input events of one call with one timestamp (two of them alike to the
    # byte: both kept), and choices with hostile indexes.
    trace = "fe" * 16
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for i in [*range(5000), 4999]:
        record = records.add(time_unix_nano=at, trace_id=bytes.fromhex(trace), span_id=bytes.fromhex(span))
        record.attributes.add(key="event.name").value.string_value = "gen_ai.user.message"
        record.body.string_value = json.dumps({"content": f"m{i}"})
    for index in (-2**62, 2**62):
        record = records.add(time_unix_nano=at, trace_id=bytes.fromhex(trace), span_id=bytes.fromhex(span))
        record.attributes.add(key="event.name").value.string_value = "gen_ai.choice"
        record.body.string_value = json.dumps({"index": index, "message": {"role": "assistant", "content": str(index)}})
    assert post_otlp(gateway.http_url, "logs", request.SerializeToString(), project="one-a-request").status == 200
    gateway.settle()
    stored = gateway.query("SELECT direction, content FROM messages FINAL WHERE inference_id = {i:UUID} "
                           "ORDER BY direction, arrival, `index`", i=derived_inference_id(trace, span))
    inputs = [m["content"] for m in stored if m["direction"] == "input"]
    assert inputs[:4095] == [f"m{i}" for i in range(4095)]
    assert sorted(inputs) == sorted([*(f"m{i}" for i in range(5000)), "m4999"])
    assert [m["content"] for m in stored if m["direction"] == "output"] == [str(-2**62), str(2**62)]


def test_a_listed_call_with_previews_takes_its_finish_reason_from_its_messages(gateway) -> None:
    """The span carries the prompt (so the row has previews) and the finish reason comes only with
    a later gen_ai.choice log record: the page shows it, as the detail and the filter do."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    trace, span = "d1" * 16, "00000000000000b1"
    chat = _span(trace, span, "", "chat gpt-4o", 3, 0, 1000, {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi?"}]}])})
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [chat]}]}]})
    assert post_otlp(gateway.http_url, "traces", body.encode(), "json", project="late-reason").status == 200
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(
        time_unix_nano=1_764_150_000_000_000_000, trace_id=bytes.fromhex(trace), span_id=bytes.fromhex(span))
    record.attributes.add(key="event.name").value.string_value = "gen_ai.choice"
    record.body.string_value = json.dumps({"index": 0, "finish_reason": "length",
                                           "message": {"role": "assistant", "content": "Hel"}})
    assert post_otlp(gateway.http_url, "logs", request.SerializeToString(), project="late-reason").status == 200
    gateway.settle()
    (item,) = lst(gateway, project_id="late-reason")["items"]
    assert (item["prompt_preview"], item["finish_reason"]) == ("Hi?", "length")
    assert [i["inference_id"] for i in lst(gateway, project_id="late-reason", finish_reason="max_tokens")["items"]] \
        == [item["inference_id"]]
