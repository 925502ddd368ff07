"""Every captured fixture replayed to a running gateway over OTLP/HTTP and OTLP/gRPC; the rows
read back from ClickHouse are compared field by field with its expected.json."""

from __future__ import annotations

import json

import pytest
from fixtures_lib import CAPTURED, Fixture, all_fixtures, compare_inference
from otlp_client import grpc_export, post_otlp

from otelgw.pipeline.mapper import derived_inference_id
from otelgw.pipeline.request import Signal
from otelgw.receiver.decode import Encoding, decode

FIXTURES = all_fixtures()
LANGFUSE_PATH = "/api/public/otel/v1/traces"


def _protobuf_body(signal: str, encoding: str, body: bytes) -> bytes:
    if encoding == "protobuf":
        return body
    # An OTLP/JSON payload (the Node fixture) sent over gRPC: same request, protobuf wire form.
    return decode(Signal(signal), body, Encoding.JSON).message.SerializeToString()


def _send(gateway, fixture: Fixture, transport: str, project: str) -> None:
    for signal, encoding, body in fixture.payloads():
        if transport == "http":
            langfuse = fixture.name.startswith("langfuse")
            result = post_otlp(gateway.http_url, signal, body, encoding, project=project, gzip_body=langfuse,
                               path=LANGFUSE_PATH if langfuse else None)
            assert result.status == 200, result.body
        else:
            grpc_export(gateway.grpc_target, signal, _protobuf_body(signal, encoding, body), project=project)


def _stored(gateway, project: str, exp: dict, nth: int) -> tuple[dict, list[dict], list[dict]]:
    """The row of one expected call: by its span, or (a call a log record says: coding agents'
    events) the nth of its event's rows in time order."""
    if exp.get("event"):
        rows = gateway.query("SELECT * FROM inferences FINAL WHERE project_id = {p:String} AND span_name = {e:String} "
                             "ORDER BY timestamp", p=project, e=exp["event"])
        assert len(rows) > nth, f"expected a {nth + 1}. inference said by {exp['event']}, found {len(rows)}"
        row = rows[nth]
    else:
        rows = gateway.query("SELECT * FROM inferences FINAL WHERE project_id = {p:String} AND span_id = {s:String}",
                             p=project, s=exp["span_id"])
        assert len(rows) == 1, f"expected one inference for span {exp['span_id']}, found {len(rows)}"
        row = rows[0]
    messages = gateway.query(
        "SELECT direction, `index`, role, content, tool_calls, tool_call_id FROM messages FINAL "
        "WHERE inference_id = {i:UUID} ORDER BY direction, arrival, `index`", i=str(row["inference_id"]))
    for msg in messages:
        msg["tool_calls"] = json.loads(msg["tool_calls"]) if msg["tool_calls"] else []
    return (row, [m for m in messages if m["direction"] == "input"],
            [m for m in messages if m["direction"] == "output"])


# A capture whose expected.json names a gap otelgw knows it has: expected to fail, strictly, so
# the day it passes the marker must go.
def _case(fixture: Fixture, transport: str) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=fixture.expected["known_gap"])] if fixture.expected.get(
        "known_gap") else []
    return pytest.param(fixture, transport, id=f"{fixture.name}-{transport}", marks=marks)


# Every capture over OTLP/HTTP; over gRPC (the same request, another receiver) the shared
# fixtures and each kit's chat and tools scenarios, which keeps the suite within its time.
CASES = [_case(f, "http") for f in FIXTURES] + [
    _case(f, "grpc") for f in FIXTURES
    if not f.path.is_relative_to(CAPTURED) or f.name.endswith(("-chat", "-tools", "-error"))]


@pytest.mark.parametrize(("fixture", "transport"), CASES)
def test_fixture_replay(gateway, fixture: Fixture, transport: str) -> None:
    project = f"{transport}-{fixture.name}"
    _send(gateway, fixture, transport, project)
    gateway.settle()
    expected = fixture.expected["inferences"]
    count = gateway.scalar("SELECT count() FROM inferences FINAL WHERE project_id = {p:String}", p=project)
    assert count == len(expected), f"{fixture.name}: {count} inferences stored, expected {len(expected)}"
    problems: list[str] = []
    seen: dict[str, int] = {}
    for exp in expected:
        nth = seen[exp.get("event") or ""] = seen.get(exp.get("event") or "", -1) + 1
        row, inputs, outputs = _stored(gateway, project, exp, nth)
        name = exp.get("span_name") or exp.get("event")
        problems += [f"{name}: {p}" for p in compare_inference(exp, row, inputs, outputs)]
    assert not problems, "\n".join(problems)


def test_fixture_count() -> None:
    # The shared fixtures and the captured extra scenarios are both present and read.
    names = {f.name for f in FIXTURES}
    assert {"otelv2-chat", "openinference-stream", "langfuse-manual", "node-chat"} <= names
    assert any(n.endswith("-tools") for n in names) and any(n.endswith("-error") for n in names)


LOG_RECORD_FIXTURES = [f for f in FIXTURES if any(i.get("where_messages_live") == "log records"
                                                   for i in f.expected["inferences"])]


@pytest.mark.parametrize("fixture", LOG_RECORD_FIXTURES, ids=[f.name for f in LOG_RECORD_FIXTURES])
def test_messages_sent_as_log_records_still_give_previews_and_finish_reason(gateway, fixture: Fixture) -> None:
    """The official OpenAI instrumentation's default mode sends messages as log records after
    the span: the inference row is written without previews or (streamed) a finish reason, so
    the listing and the detail take them from the stored messages."""
    from otlp_client import call_api

    project = f"previews-{fixture.name}"
    # Trace ids of their own: the other tests store this fixture's calls already (in other
    # projects), and message rows are one per inference id, whichever project sent it.
    for signal, encoding, body in fixture.payloads():
        message = decode(Signal(signal), body, Encoding(encoding)).message
        for resource in getattr(message, f"resource_{signal if signal != 'traces' else 'spans'}"):
            for scope in getattr(resource, "scope_logs" if signal == "logs" else "scope_spans"):
                for item in scope.log_records if signal == "logs" else scope.spans:
                    item.trace_id = bytes(b ^ 0x5A for b in item.trace_id)
        assert post_otlp(gateway.http_url, signal, message.SerializeToString(), project=project).status == 200
    gateway.settle()
    status, page = call_api(gateway.api_url, "POST", "/api/v1/metrics/inferences/list",
                            body={"from_date": "2000-01-01T00:00:00Z", "project_id": project})
    assert status == 200 and len(page["items"]) == len(fixture.expected["inferences"])
    # The page is newest first: each item is paired with its call by id.
    by_id = {item["inference_id"]: item for item in page["items"]}
    for exp in fixture.expected["inferences"]:
        trace = bytes(b ^ 0x5A for b in bytes.fromhex(exp["trace_id"])).hex()
        item = by_id[derived_inference_id(trace, exp["span_id"])]
        inputs = exp.get("input_messages") or []
        users = [m for m in inputs if m["role"] == "user"] or inputs
        assert item["prompt_preview"] == (users[-1].get("content") or "" if users else "")
        outputs = exp.get("output_messages") or []
        if outputs and outputs[0].get("content"):
            assert item["response_preview"] == outputs[0]["content"]
        elif outputs and outputs[0].get("tool_calls"):
            assert item["response_preview"].startswith(outputs[0]["tool_calls"][0]["name"] + "(")
        status, detail = call_api(gateway.api_url, "GET", f"/api/v1/metrics/inferences/{item['inference_id']}")
        stored = gateway.scalar("SELECT finish_reason FROM inferences FINAL WHERE inference_id = {i:UUID}",
                                i=item["inference_id"])
        finish = next((m["finish_reason"] for m in detail["messages"]
                       if m["direction"] == "output" and m["finish_reason"]), "")
        assert status == 200 and detail["overview"]["finish_reason"] == (stored or finish)
        # The page says it too, and a filter on it finds the call (from its messages when the
        # row has none of its own).
        assert item["finish_reason"] == (stored or finish)
        if item["finish_reason"]:
            status, by_reason = call_api(gateway.api_url, "POST", "/api/v1/metrics/inferences/list", body={
                "from_date": "2000-01-01T00:00:00Z", "project_id": project, "finish_reason": item["finish_reason"]})
            assert status == 200 and item["inference_id"] in {i["inference_id"] for i in by_reason["items"]}
