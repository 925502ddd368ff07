"""Sessions over HTTP on a running gateway, from data sent by the real OpenTelemetry SDK:
the listing (figures, every sort key, filters, pagination, time range, validation), the detail
(inferences in order with their messages, ambiguity, 404, truncation), project scoping with a
limited API key, and GET /api/v1/whoami."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import start_gateway
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from otlp_client import post

from otelgw.store.keys import KeyStore

FROM = "2000-01-01T00:00:00Z"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S") + ".000000000Z"


def _text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


# (project, session, user, seconds after T0, model, input tokens, output tokens, failed,
#  input messages, output messages)
CALLS: list[tuple[str, str, str, int, str, int, int, bool, list[Any], list[Any]]] = [
    ("proj-a", "sess-1", "user-7", 0, "gpt-4o", 100, 20, False,
     [_text("user", "hi")], [_text("assistant", "hello")]),
    ("proj-a", "sess-1", "user-7", 60, "gpt-4o", 150, 30, False,
     [_text("user", "hi"), _text("assistant", "hello"), _text("user", "how are you?")],
     [_text("assistant", "fine, thanks")]),
    ("proj-a", "sess-1", "user-7", 120, "gpt-4o-mini", 200, 40, False,
     [_text("user", "hi"), _text("assistant", "hello"), _text("user", "how are you?"),
      _text("assistant", "fine, thanks"), _text("user", "bye")],
     [_text("assistant", "goodbye")]),
    ("proj-a", "sess-1", "user-7", 180, "gpt-4o", 10, 0, True, [_text("user", "are you there?")], []),
    ("proj-a", "sess-3", "user-8", 3600, "claude-sonnet-4", 1000, 500, False, [], []),
    ("proj-a", "sess-3", "user-8", 3630, "claude-sonnet-4", 2000, 800, False, [], []),
    ("proj-a", "sess-4", "user-7", -86400, "gpt-4o-mini", 50, 5, False, [], []),
    ("proj-a", "SESS-shared", "user-1", 5400, "gpt-4o", 5, 5, False, [], []),
    ("proj-a", "", "user-7", 30, "gpt-4o", 1, 1, False, [], []),  # no session: never listed
    ("proj-b", "sess-2", "user-9", 7200, "mistral-small", 300, 100, True, [], []),
    ("proj-b", "sess-2", "user-9", 7260, "mistral-small", 300, 100, False, [], []),
    ("proj-b", "SESS-shared", "user-2", 5500, "gpt-4o", 7, 7, False, [], []),
]
# Every session of CALLS: (project, session) -> (inferences, total tokens, errors)
SESSIONS = {("proj-a", "sess-1"): (4, 550, 1), ("proj-a", "sess-3"): (2, 4300, 0),
            ("proj-a", "sess-4"): (1, 55, 0), ("proj-a", "SESS-shared"): (1, 10, 0),
            ("proj-b", "sess-2"): (2, 800, 1), ("proj-b", "SESS-shared"): (1, 14, 0)}


def send_conversations(gateway) -> None:
    """CALLS as chat spans from the OpenTelemetry SDK, over OTLP/HTTP, one provider a project."""
    for project in ("proj-a", "proj-b"):
        provider = TracerProvider(resource=Resource.create({"service.name": "chat-app"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=f"{gateway.http_url}/v1/traces", headers={"x-otelgw-project": project})))
        tracer = provider.get_tracer("sessions.test", "1.0")
        for proj, session, user, offset, model, tokens_in, tokens_out, failed, inputs, outputs in CALLS:
            if proj != project:
                continue
            start = _ns(T0 + timedelta(seconds=offset))
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out,
                "user.id": user,
            }
            if session:
                attributes["session.id"] = session
            if inputs:
                attributes["gen_ai.input.messages"] = json.dumps(inputs)
            if outputs:
                attributes["gen_ai.output.messages"] = json.dumps(outputs)
            if failed:
                attributes["error.type"] = "RateLimitError"
            span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, start_time=start, attributes=attributes)
            if failed:
                span.set_status(Status(StatusCode.ERROR, "429 too many requests"))
            span.end(end_time=start + 800_000_000)
        assert provider.force_flush(30_000)
        provider.shutdown()
    gateway.settle()


def get(gateway, path: str, key: str | None = None, **query: Any) -> tuple[int, Any]:
    url = f"{gateway.api_url}{path}" + (f"?{urlencode(query)}" if query else "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    result = post(url, None, "application/json", headers, method="GET")
    return result.status, json.loads(result.body)


def sessions(gateway, key: str | None = None, **query: Any) -> dict[str, Any]:
    status, answer = get(gateway, "/api/v1/sessions", key, **{"from_date": FROM, **query})
    assert status == 200, answer
    return answer


def names(page: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["project_id"], i["session_id"]) for i in page["items"]}


@pytest.fixture(scope="module")
def sent(gateway):
    send_conversations(gateway)
    return gateway


def test_listing_totals_and_fields(sent) -> None:
    page = sessions(sent, limit=100)
    assert page["total_count"] == 6 and page["has_more"] is False
    assert (page["limit"], page["offset"]) == (100, 0)
    assert names(page) == set(SESSIONS)
    by_name = {(i["project_id"], i["session_id"]): i for i in page["items"]}
    for name, (count, tokens, errors) in SESSIONS.items():
        item = by_name[name]
        assert (item["inference_count"], item["total_tokens"], item["error_count"]) == (count, tokens, errors), name
        assert item["total_tokens"] == item["input_tokens"] + item["output_tokens"]
    one = by_name[("proj-a", "sess-1")]
    assert one == {
        "session_id": "sess-1", "project_id": "proj-a", "user_id": "user-7",
        "first_seen": _stamp(T0), "last_seen": _stamp(T0 + timedelta(seconds=180)),
        "inference_count": 4, "input_tokens": 460, "output_tokens": 90, "total_tokens": 550,
        "cost_usd": one["cost_usd"], "error_count": 1, "models": ["gpt-4o", "gpt-4o-mini"],
    }
    assert one["cost_usd"] > 0
    assert by_name[("proj-b", "sess-2")]["models"] == ["mistral-small"]
    # Default order: most recently active first.
    assert [i["session_id"] for i in page["items"]][:2] == ["sess-2", "SESS-shared"]


SORT_FIELDS = {"last_seen": "last_seen", "first_seen": "first_seen", "inferences": "inference_count",
               "tokens": "total_tokens", "cost": "cost_usd", "errors": "error_count"}


@pytest.mark.parametrize("sort_by", list(SORT_FIELDS))
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_keys(sent, sort_by: str, order: str) -> None:
    items = sessions(sent, sort_by=sort_by, sort_order=order)["items"]
    assert len(items) == 6
    values = [i[SORT_FIELDS[sort_by]] for i in items]
    assert values == sorted(values, reverse=order == "desc")


def test_sort_by_tokens_exact_order(sent) -> None:
    items = sessions(sent, sort_by="tokens")["items"]
    assert [i["total_tokens"] for i in items] == [4300, 800, 550, 55, 14, 10]
    items = sessions(sent, sort_by="first_seen", sort_order="asc")["items"]
    assert [i["session_id"] for i in items][:3] == ["sess-4", "sess-1", "sess-3"]


@pytest.mark.parametrize("query,expected", [
    ({"user_id": "user-7"}, {("proj-a", "sess-1"), ("proj-a", "sess-4")}),
    ({"user_id": "nobody"}, set()),
    ({"model": "gpt-4o-mini"}, {("proj-a", "sess-1"), ("proj-a", "sess-4")}),
    ({"model": "claude-sonnet-4"}, {("proj-a", "sess-3")}),
    ({"search": "sess-sh"}, {("proj-a", "SESS-shared"), ("proj-b", "SESS-shared")}),
    ({"search": "ss-2"}, {("proj-b", "sess-2")}),
    ({"has_errors": "true"}, {("proj-a", "sess-1"), ("proj-b", "sess-2")}),
    ({"has_errors": "false"}, set(SESSIONS) - {("proj-a", "sess-1"), ("proj-b", "sess-2")}),
    ({"project_id": "proj-b"}, {("proj-b", "sess-2"), ("proj-b", "SESS-shared")}),
    ({"project_id": "proj-b", "has_errors": "true", "model": "mistral-small"}, {("proj-b", "sess-2")}),
    ({"project_id": ""}, set(SESSIONS)),  # an empty value is no filter
])
def test_filters(sent, query: dict[str, str], expected: set[tuple[str, str]]) -> None:
    page = sessions(sent, **query)
    assert names(page) == expected
    assert page["total_count"] == len(expected)


def test_filters_keep_whole_session_figures(sent) -> None:
    # The model filter picks sessions; their figures still cover every inference in the range.
    item = sessions(sent, model="gpt-4o-mini", project_id="proj-a", search="sess-1")["items"][0]
    assert (item["inference_count"], item["total_tokens"]) == (4, 550)


def test_pagination(sent) -> None:
    seen: list[tuple[str, str]] = []
    for offset, more in ((0, True), (2, True), (4, False)):
        page = sessions(sent, limit=2, offset=offset)
        assert (page["total_count"], page["limit"], page["offset"], page["has_more"]) == (6, 2, offset, more)
        assert len(page["items"]) == 2
        seen += [(i["project_id"], i["session_id"]) for i in page["items"]]
    assert len(seen) == 6 and set(seen) == set(SESSIONS)
    assert seen == [(i["project_id"], i["session_id"]) for i in sessions(sent)["items"]]
    past = sessions(sent, limit=2, offset=10)
    assert (past["items"], past["total_count"], past["has_more"]) == ([], 6, False)
    page = sessions(sent, limit=5, offset=3)
    assert (len(page["items"]), page["has_more"]) == (3, False)


def test_time_range(sent) -> None:
    window = sessions(sent, from_date=_stamp(T0 - timedelta(hours=1)), to_date=_stamp(T0 + timedelta(hours=3)))
    assert names(window) == set(SESSIONS) - {("proj-a", "sess-4")}
    # A session is listed when any of its inferences is in the range; its figures are the range's.
    start = int((T0 + timedelta(seconds=90)).timestamp())
    narrow = sessions(sent, from_date=str(start), to_date=str(start + 60))
    assert names(narrow) == {("proj-a", "sess-1")}
    item = narrow["items"][0]
    assert (item["inference_count"], item["total_tokens"], item["models"]) == (1, 240, ["gpt-4o-mini"])
    assert item["first_seen"] == item["last_seen"] == _stamp(T0 + timedelta(seconds=120))
    assert sessions(sent, from_date="2030-01-01", to_date="2031-01-01")["items"] == []
    day_before = sessions(sent, from_date="2025-02-28", to_date="2025-03-01")
    assert names(day_before) == {("proj-a", "sess-4")}


@pytest.mark.parametrize("query,field", [
    ({"from_date": None}, "from_date"),
    ({"from_date": "yesterday"}, "from_date"),
    ({"from_date": "9" * 400}, "from_date"),
    ({"to_date": "2025-13-45"}, "to_date"),
    ({"from_date": "2025-03-02", "to_date": "2025-03-01"}, "from_date"),
    ({"sort_by": "name"}, "sort_by"),
    ({"sort_order": "up"}, "sort_order"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"has_errors": "maybe"}, "has_errors"),
    ({"bogus": "1"}, "bogus"),
])
def test_validation(sent, query: dict[str, Any], field: str) -> None:
    params = {k: v for k, v in {"from_date": FROM, **query}.items() if v is not None}
    status, answer = get(sent, "/api/v1/sessions", **params)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_request"
    assert field in answer["error"]["message"]


def test_detail_in_order_with_messages(sent) -> None:
    status, detail = get(sent, "/api/v1/sessions/sess-1")
    assert status == 200, detail
    assert {k: v for k, v in detail.items() if k not in ("inferences", "cost_usd")} == {
        "session_id": "sess-1", "project_id": "proj-a", "user_id": "user-7",
        "first_seen": _stamp(T0), "last_seen": _stamp(T0 + timedelta(seconds=180)),
        "inference_count": 4, "input_tokens": 460, "output_tokens": 90, "total_tokens": 550, "error_count": 1,
        "models": ["gpt-4o", "gpt-4o-mini"], "truncated": False,
    }
    listed = sessions(sent, project_id="proj-a", search="sess-1")["items"][0]
    assert detail["cost_usd"] == pytest.approx(listed["cost_usd"])
    calls = detail["inferences"]
    assert [c["timestamp"] for c in calls] == [_stamp(T0 + timedelta(seconds=s)) for s in (0, 60, 120, 180)]
    assert [c["model"] for c in calls] == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o"]
    assert [c["is_success"] for c in calls] == [True, True, True, False]
    assert [c["error_type"] for c in calls] == ["", "", "", "RateLimitError"]
    assert [(c["input_tokens"], c["output_tokens"]) for c in calls] == [(100, 20), (150, 30), (200, 40), (10, 0)]
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(detail["cost_usd"])
    first = calls[0]
    assert first["provider"] == "openai" and len(first["trace_id"]) == 32
    assert first["latency_ms"] == pytest.approx(800) and first["ttft_ms"] is None
    assert len({c["inference_id"] for c in calls}) == 4 and len({c["trace_id"] for c in calls}) == 4

    def said(call: dict[str, Any]) -> list[tuple[str, int, str, str]]:
        return [(m["direction"], m["index"], m["role"], m["content"]) for m in call["messages"]]

    assert said(calls[0]) == [("input", 0, "user", "hi"), ("output", 0, "assistant", "hello")]
    assert said(calls[1]) == [("input", 0, "user", "hi"), ("input", 1, "assistant", "hello"),
                              ("input", 2, "user", "how are you?"), ("output", 0, "assistant", "fine, thanks")]
    assert [m["role"] for m in calls[2]["messages"]] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert calls[2]["messages"][-1]["content"] == "goodbye"
    assert said(calls[3]) == [("input", 0, "user", "are you there?")]
    message = calls[0]["messages"][0]
    assert set(message) == {"direction", "index", "role", "content", "tool_calls", "tool_call_id", "name",
                            "finish_reason"}
    assert message["tool_calls"] == []


def test_detail_other_sessions_and_projects(sent) -> None:
    status, answer = get(sent, "/api/v1/sessions/SESS-shared")
    assert status == 400, answer
    message = answer["error"]["message"]
    assert "project_id" in message and "proj-a" in message and "proj-b" in message
    status, detail = get(sent, "/api/v1/sessions/SESS-shared", project_id="proj-b")
    assert status == 200, detail
    assert (detail["project_id"], detail["user_id"], detail["total_tokens"]) == ("proj-b", "user-2", 14)
    status, detail = get(sent, "/api/v1/sessions/sess-2")
    assert status == 200 and detail["project_id"] == "proj-b" and detail["inference_count"] == 2
    assert [c["messages"] for c in detail["inferences"]] == [[], []]
    # Out of the range of the listing, but a session is shown whole.
    status, detail = get(sent, "/api/v1/sessions/sess-4")
    assert status == 200 and detail["first_seen"] == _stamp(T0 - timedelta(days=1))


@pytest.mark.parametrize("path,query", [
    ("/api/v1/sessions/nope", {}),
    ("/api/v1/sessions/sess", {}),
    ("/api/v1/sessions/sess-1", {"project_id": "proj-b"}),
    ("/api/v1/sessions/" + quote("sess-1'; DROP TABLE inferences; --", safe=""), {}),
])
def test_detail_not_found(sent, path: str, query: dict[str, str]) -> None:
    status, answer = get(sent, path, **query)
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"


def test_detail_unknown_parameter(sent) -> None:
    status, answer = get(sent, "/api/v1/sessions/sess-1", projectid="proj-a")
    assert status == 400 and "projectid" in answer["error"]["message"]


def test_detail_truncated_after_1000_inferences(sent) -> None:
    # Bulk rows straight into the table (1999: outside every listing range above).
    sent._clients.get().command(
        "INSERT INTO inferences (inference_id, project_id, trace_id, timestamp, end_timestamp, request_model, "
        "input_tokens, output_tokens, total_tokens, is_success, session_id, user_id, ingested_at) "
        "SELECT generateUUIDv4(), 'proj-big', lower(hex(number)), "
        "toDateTime64('1999-06-01 00:00:00', 9, 'UTC') + toIntervalSecond(number), "
        "toDateTime64('1999-06-01 00:00:01', 9, 'UTC') + toIntervalSecond(number), 'm', 2, 1, 3, true, "
        "'sess-big', 'user-big', now64(3) FROM numbers(1001)")
    status, detail = get(sent, "/api/v1/sessions/sess-big")
    assert status == 200, detail
    assert (detail["inference_count"], detail["input_tokens"], detail["total_tokens"]) == (1001, 2002, 3003)
    assert detail["truncated"] is True and len(detail["inferences"]) == 1000
    assert detail["inferences"][0]["timestamp"] == "1999-06-01T00:00:00.000000000Z"
    assert detail["inferences"][-1]["timestamp"] == "1999-06-01T00:16:39.000000000Z"
    assert sessions(sent, from_date="1999-01-01", to_date="2000-01-01")["total_count"] == 1


def test_whoami_anonymous(gateway) -> None:
    status, answer = get(gateway, "/api/v1/whoami")
    assert status == 200
    assert (answer["role"], answer["projects"], answer["anonymous"]) == ("admin", None, True)


@pytest.fixture(scope="module")
def keyed(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory):
    running = start_gateway(chdb_path, "t_sessions_auth", tmp_path_factory.mktemp("sessions_auth"))
    try:
        send_conversations(running)  # before any key: ingest is open
        store = KeyStore(running._clients.get())
        running.keys = {"viewer-a": store.create(projects=["proj-a"], role="viewer", ingest=False).key,
                        "admin": store.create(projects=[], role="admin", ingest=False).key}
        running.gateway.auth.reload()
        yield running
    finally:
        assert running.stop()


def test_sessions_scoped_to_the_keys_projects(keyed) -> None:
    key = keyed.keys["viewer-a"]
    page = sessions(keyed, key, limit=100)
    assert names(page) == {name for name in SESSIONS if name[0] == "proj-a"}
    assert page["total_count"] == 4
    assert sessions(keyed, key, project_id="proj-b") == {"items": [], "total_count": 0, "limit": 50, "offset": 0,
                                                         "has_more": False}
    assert sessions(keyed, key, search="shared")["total_count"] == 1
    # Another project's session is the same 404 as a missing one; a shared id is not ambiguous.
    for path, query in (("/api/v1/sessions/sess-2", {}), ("/api/v1/sessions/SESS-shared", {"project_id": "proj-b"})):
        status, answer = get(keyed, path, key, **query)
        assert status == 404 and answer["error"]["code"] == "not_found", answer
    status, detail = get(keyed, "/api/v1/sessions/SESS-shared", key)
    assert status == 200 and detail["project_id"] == "proj-a"
    status, detail = get(keyed, "/api/v1/sessions/sess-1", key)
    assert status == 200 and len(detail["inferences"]) == 4
    assert sessions(keyed, keyed.keys["admin"], limit=100)["total_count"] == 6


def test_sessions_and_whoami_need_a_key_once_keys_exist(keyed) -> None:
    for path in ("/api/v1/sessions?from_date=2000-01-01", "/api/v1/sessions/sess-1", "/api/v1/whoami"):
        status, answer = get(keyed, path)
        assert status == 401 and answer["error"]["code"] == "unauthorized", path
    status, answer = get(keyed, "/api/v1/sessions", "otgw_nope_nope", from_date=FROM)
    assert status == 401


def test_whoami_with_a_limited_key(keyed) -> None:
    status, answer = get(keyed, "/api/v1/whoami", keyed.keys["viewer-a"])
    assert status == 200
    assert (answer["role"], answer["projects"], answer["anonymous"]) == ("viewer", ["proj-a"], False)
    assert answer["key_id"] and keyed.keys["viewer-a"].startswith(f"otgw_{answer['key_id']}_")
    status, answer = get(keyed, "/api/v1/whoami", keyed.keys["admin"])
    assert (status, answer["role"], answer["projects"]) == (200, "admin", None)
