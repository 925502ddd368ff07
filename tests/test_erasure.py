"""Erasure (POST/GET /api/v1/data/delete, `otelgw data delete`) on a running gateway, with data
sent by the real OpenTelemetry SDK over OTLP/HTTP: two users' GenAI traces (messages on the
spans and as log-record events, log events, an evaluation event, API feedback, a trace shared by
both users), then one user or one session erased. Every table and every read route is checked
before and after: nothing of the erased data, everything of the rest. Also: validation, project
limits, a restart in the middle of a job, the CLI's dry run."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import RunningGateway, start_gateway, wait_until
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from otlp_client import call_api

from otelgw.cli import _parser
from otelgw.config import Config
from otelgw.governance import data_cmd, erasure
from otelgw.pipeline.mapper import derived_inference_id
from otelgw.store.keys import KeyStore

FROM = "2000-01-01T00:00:00Z"
USERS = ("alice", "bob")  # names; the user ids are "<name>@<tag>", one set per test
TABLES = ("inferences", "messages", "feedback", "spans", "logs", "inference_lookup")


class Fed:
    """What one user sent into one project: ids to look the rows up by, whatever is deleted."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.inference_ids: list[str] = []
        self.span_ids: list[str] = []  # every span the user's code made (logs are correlated to them)
        self.own_traces: list[str] = []  # traces of this user only
        self.sessions: list[str] = []
        self.shared = ("", "")  # the trace both users have a chat in, and its root span


def _text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def _chat(tracer, user: str, session: str, fed: Fed, n: int, legacy_logger=None) -> str:
    """One GenAI chat span; returns its inference id."""
    with tracer.start_as_current_span(f"chat gpt-4o {n}", kind=SpanKind.CLIENT) as span:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.id": f"resp-{user}-{session}-{n}-{uuid.uuid4().hex[:8]}",
            "gen_ai.usage.input_tokens": 100 + n, "gen_ai.usage.output_tokens": 10 + n,
            "gen_ai.conversation.id": session, "user.id": user,
        }
        if legacy_logger is None:
            attrs["gen_ai.input.messages"] = json.dumps([_text("user", f"{user} secret question {n}")])
            attrs["gen_ai.output.messages"] = json.dumps([_text("assistant", f"answer for {user} {n}")])
        span.set_attributes(attrs)
        if legacy_logger is not None:
            # Older semconv: the messages arrive as log-record events of the span.
            legacy_logger.emit(event_name="gen_ai.user.message", body={"content": f"{user} legacy question {n}"},
                               attributes={"gen_ai.system": "openai"})
        ctx = span.get_span_context()
    trace_hex, span_hex = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    fed.span_ids.append(span_hex)
    inference_id = derived_inference_id(trace_hex, span_hex)
    fed.inference_ids.append(inference_id)
    if session not in fed.sessions:
        fed.sessions.append(session)
    return inference_id


def feed(gateway: RunningGateway, project: str, tag: str = "") -> dict[str, Fed]:
    """Per user: a session of two chats under an agent span with a tool span and a log event,
    a session with a legacy chat (messages as log events); plus one trace shared by both users
    (a batch span over one chat each), and feedback through the API on the first chat."""
    headers = {"x-otelgw-project": project}
    resource = Resource.create({"service.name": "erasure-app"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{gateway.http_url}/v1/traces", headers=headers)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=f"{gateway.http_url}/v1/logs", headers=headers)))
    tracer = tracer_provider.get_tracer("erasure.test", "1.0")
    logger = logger_provider.get_logger("erasure.test")
    fed = {name: Fed(f"{name}@{tag or project}") for name in USERS}
    for name in USERS:
        f = fed[name]
        user = f.user
        with tracer.start_as_current_span("agent run") as root:
            root.set_attributes({"user.id": user, "session.id": f"{user}-s1"})
            f.span_ids.append(f"{root.get_span_context().span_id:016x}")
            f.own_traces.append(f"{root.get_span_context().trace_id:032x}")
            with tracer.start_as_current_span("chat gpt-4o 1", kind=SpanKind.CLIENT) as span:
                span.set_attributes({
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100,
                    "gen_ai.usage.output_tokens": 10, "gen_ai.conversation.id": f"{user}-s1", "user.id": user,
                    "gen_ai.response.id": f"resp-{user}-{uuid.uuid4().hex[:8]}",
                    "gen_ai.input.messages": json.dumps([_text("user", f"{user} asks about the weather")]),
                    "gen_ai.output.messages": json.dumps([_text("assistant", f"sunny for {user}")])})
                span.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "relevance",
                                                            "gen_ai.evaluation.score.value": 0.8})
                logger.emit(body=f"{user} called the model", attributes={"app.user": user})
                ctx = span.get_span_context()
            f.span_ids.append(f"{ctx.span_id:016x}")
            f.inference_ids.append(derived_inference_id(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))
            f.sessions.append(f"{user}-s1")
            with tracer.start_as_current_span("execute_tool get_weather") as tool:
                tool.set_attributes({"gen_ai.tool.name": "get_weather", "user.id": user})
                logger.emit(body=f"weather looked up for {user}")
                f.span_ids.append(f"{tool.get_span_context().span_id:016x}")
            _chat(tracer, user, f"{user}-s1", f, 2)
        with tracer.start_as_current_span("agent run") as root:
            root.set_attributes({"user.id": user})
            f.span_ids.append(f"{root.get_span_context().span_id:016x}")
            f.own_traces.append(f"{root.get_span_context().trace_id:032x}")
            _chat(tracer, user, f"{user}-s2", f, 3, legacy_logger=logger)
    with tracer.start_as_current_span("nightly batch") as batch:
        shared_trace = f"{batch.get_span_context().trace_id:032x}"
        shared_root = f"{batch.get_span_context().span_id:016x}"
        logger.emit(body="nightly batch started")
        for name in USERS:
            _chat(tracer, fed[name].user, f"{fed[name].user}-s3", fed[name], 4)
    assert tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    gateway.settle()
    for name in USERS:
        status, answer = call(gateway, "POST", f"/api/v1/metrics/inferences/{fed[name].inference_ids[0]}/feedback",
                              {"type": "comment", "comment": f"{fed[name].user} was happy"})
        assert status == 201, answer
    for f in fed.values():
        f.shared = (shared_trace, shared_root)
    return fed


# API keys per store (they outlive a gateway restart): "admin" (every project), and a viewer per
# project for the read routes, so Tempo search and tag values see that project only.
KEYS: dict[str, dict[str, str]] = {}


def key_for(gateway: RunningGateway, name: str = "admin") -> str:
    keys = KEYS.setdefault(gateway.cfg.clickhouse_dsn, {})
    if name not in keys:
        store = KeyStore(gateway._clients.get())
        if name == "admin":
            keys[name] = store.create(projects=[], role="admin", ingest=False).key
        else:
            keys[name] = store.create(projects=[name], role="viewer", ingest=False).key
        gateway.gateway.auth.reload()
    return keys[name]


def call(gateway: RunningGateway, method: str, path: str, body: Any = None, key: str | None = None,
         ) -> tuple[int, Any]:
    key = key if key is not None else key_for(gateway)
    return call_api(gateway.api_url, method, path, key, body)


def table_counts(gateway: RunningGateway, project: str, fed: Fed) -> dict[str, int]:
    """The user's rows in every table, found by the ids the test knows (not through inferences)."""
    ids, spans = fed.inference_ids, fed.span_ids
    p = {"p": project, "ids": ids, "spans": spans}
    return {
        "inferences": gateway.scalar("SELECT count() FROM inferences FINAL WHERE project_id = {p:String} AND "
                                     "inference_id IN {ids:Array(UUID)}", **p),
        "messages": gateway.scalar("SELECT count() FROM messages FINAL WHERE project_id = {p:String} AND "
                                   "inference_id IN {ids:Array(UUID)}", **p),
        "feedback": gateway.scalar("SELECT count() FROM feedback FINAL WHERE project_id = {p:String} AND "
                                   "inference_id IN {ids:Array(UUID)}", **p),
        "spans": gateway.scalar("SELECT count() FROM spans FINAL WHERE project_id = {p:String} AND "
                                "span_id IN {spans:Array(String)}", **p),
        "logs": gateway.scalar("SELECT count() FROM logs WHERE project_id = {p:String} AND "
                               "span_id IN {spans:Array(String)}", **p),
        "inference_lookup": gateway.scalar("SELECT count() FROM inference_lookup FINAL WHERE project_id = {p:String} "
                                           "AND inference_id IN {ids:Array(UUID)}", **p),
    }


def read_routes(gateway: RunningGateway, project: str, fed: Fed) -> dict[str, Any]:
    """What every read route returns of one user's data (empty when nothing), to a viewer of the
    project."""
    seen: dict[str, Any] = {}
    viewer = key_for(gateway, project)

    def view(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return call(gateway, method, path, body, key=viewer)

    status, page = view("POST", "/api/v1/metrics/inferences/list",
                        {"from_date": FROM, "project_id": project, "limit": 1000})
    assert status == 200, page
    seen["listing"] = sorted(i["inference_id"] for i in page["items"] if i["inference_id"] in fed.inference_ids)
    status, page = view("POST", "/api/v1/metrics/inferences/list",
                        {"from_date": FROM, "project_id": project, "user_id": fed.user})
    seen["listing_by_user"] = page["total_count"]
    for route in ("", "/feedback", "/trace"):
        found = []
        for iid in fed.inference_ids:
            status, answer = view("GET", f"/api/v1/metrics/inferences/{iid}{route}")
            assert status in (200, 404), answer
            if status == 200:
                found.append(iid)
        seen[f"detail{route}"] = found
    status, body = view("POST", "/api/v1/metrics/inferences/export",
                        {"from_date": FROM, "project_id": project, "format": "jsonl", "include_messages": True})
    assert status == 200
    text = body.decode() if isinstance(body, bytes) else json.dumps(body)
    seen["export"] = [iid for iid in fed.inference_ids if iid in text] + (
        [f"mentions {fed.user}"] if fed.user in text else [])
    traces = []
    for trace_id in fed.own_traces:
        status, answer = view("GET", f"/api/v2/traces/{trace_id}")
        assert status in (200, 404), answer
        if status == 200:
            traces.append(trace_id)
    seen["tempo_traces"] = traces
    shared_trace, _ = fed.shared
    status, answer = view("GET", f"/api/v2/traces/{shared_trace}")
    text = json.dumps(answer)
    seen["tempo_shared_trace"] = [s for s in fed.span_ids if _b64(s) in text]
    status, answer = view("GET", "/api/search?" + urlencode({"tags": f"user.id={fed.user}", "limit": 100}))
    assert status == 200, answer
    seen["tempo_search"] = len(answer["traces"])
    status, answer = view("GET", "/api/v2/search/tag/span.user.id/values")
    assert status == 200, answer
    seen["tempo_tag_values"] = [v["value"] for v in answer["tagValues"] if v["value"] == fed.user]
    status, answer = view("GET", "/api/v1/sessions?" + urlencode({"from_date": FROM, "project_id": project,
                                                                  "limit": 200}))
    assert status == 200, answer
    seen["sessions"] = sorted(s["session_id"] for s in answer["items"] if s["session_id"] in fed.sessions)
    found = []
    for session in fed.sessions:
        status, answer = view("GET", f"/api/v1/sessions/{quote(session)}?project_id={project}")
        assert status in (200, 404), answer
        if status == 200:
            found.append(session)
    seen["session_detail"] = found
    return seen


def _b64(span_hex: str) -> str:
    import base64
    return base64.b64encode(bytes.fromhex(span_hex)).decode()


def run_job(gateway: RunningGateway, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    status, job = call(gateway, "POST", "/api/v1/data/delete", body)
    assert status == 202, job
    assert job["status"] == "pending" and job["job_id"]
    return wait_until(lambda: _finished(gateway, job["job_id"]), timeout)


def _finished(gateway: RunningGateway, job_id: str) -> dict[str, Any] | None:
    status, job = call(gateway, "GET", f"/api/v1/data/delete/{job_id}")
    assert status == 200, job
    assert job["status"] != "failed", job
    return job if job["status"] == "done" else None


@pytest.fixture(scope="module")
def gw(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory):
    gateway = start_gateway(chdb_path, "t_erasure", tmp_path_factory.mktemp("erasure"))
    try:
        yield gateway
    finally:
        assert gateway.stop()


def _everything_visible(seen: dict[str, Any], fed: Fed) -> None:
    ids = sorted(fed.inference_ids)
    assert seen["listing"] == ids and seen["listing_by_user"] == len(ids)
    assert seen["detail"] == fed.inference_ids and seen["detail/feedback"] == fed.inference_ids
    assert seen["detail/trace"] == fed.inference_ids
    assert sorted(seen["export"][:-1]) == ids and seen["export"][-1].startswith("mentions")
    assert seen["tempo_traces"] == fed.own_traces and len(seen["tempo_shared_trace"]) == 1
    assert seen["tempo_search"] >= 3 and seen["tempo_tag_values"] == [fed.user]
    assert seen["sessions"] == sorted(fed.sessions) and seen["session_detail"] == fed.sessions


NOTHING = {"listing": [], "listing_by_user": 0, "detail": [], "detail/feedback": [], "detail/trace": [], "export": [],
           "tempo_traces": [], "tempo_shared_trace": [], "tempo_search": 0, "tempo_tag_values": [], "sessions": [],
           "session_detail": []}


def test_erase_a_user(gw: RunningGateway) -> None:
    project = "erase-user"
    fed = feed(gw, project)
    other_project = feed(gw, "erase-user-elsewhere", tag=project)  # the same user ids in another project
    before = {user: table_counts(gw, project, fed[user]) for user in USERS}
    for user in USERS:
        # 4 inferences; 7 messages (2 per chat on the span, 1 legacy as a log event); feedback: an
        # evaluation event and a comment; spans: 2 agent runs, 4 chats, a tool; logs: the chat's and the
        # tool's (GenAI events become messages and feedback, not logs).
        assert before[user] == {"inferences": 4, "messages": 7, "feedback": 2, "spans": 7, "logs": 2,
                                "inference_lookup": 4}, (user, before[user])
        _everything_visible(read_routes(gw, project, fed[user]), fed[user])
    shared_trace, shared_root = fed["alice"].shared

    alice = fed["alice"].user
    dry = run_job(gw, {"project_id": project, "user_id": alice, "dry_run": True})
    assert dry["dry_run"] and dry["counts"] == before["alice"], dry
    assert table_counts(gw, project, fed["alice"]) == before["alice"]

    job = run_job(gw, {"project_id": project, "user_id": alice})
    assert job["counts"] == before["alice"], job
    assert job["steps_done"] == job["steps"] and job["error"] is None
    # A finished job keeps the user id as a hash only.
    assert job["selector"]["user_id"].startswith("sha256:") and alice not in json.dumps(job)

    assert table_counts(gw, project, fed["alice"]) == dict.fromkeys(TABLES, 0)
    assert table_counts(gw, project, fed["bob"]) == before["bob"]
    assert read_routes(gw, project, fed["alice"]) == NOTHING
    _everything_visible(read_routes(gw, project, fed["bob"]), fed["bob"])
    # The shared trace keeps bob's chat and the batch span; alice's chat span is gone.
    status, answer = call(gw, "GET", f"/api/v2/traces/{shared_trace}")
    assert status == 200 and _b64(shared_root) in json.dumps(answer)
    # Nothing of alice anywhere in the project's spans, logs or messages, by value.
    assert gw.scalar("SELECT count() FROM spans WHERE project_id = {p:String} AND "
                     "has(mapValues(attributes), {u:String})", p=project, u=alice) == 0
    assert gw.scalar("SELECT count() FROM logs WHERE project_id = {p:String} AND "
                     "(position(body, {u:String}) > 0 OR has(mapValues(attributes), {u:String}))", p=project,
                     u=alice) == 0
    assert gw.scalar("SELECT count() FROM messages WHERE project_id = {p:String} AND position(content, {u:String}) > 0",
                     p=project, u=alice) == 0
    # The other project is not touched.
    assert table_counts(gw, "erase-user-elsewhere", other_project["alice"]) == before["alice"]
    # Rollups keep their anonymous counts: 8 chats + 8 in the other project.
    assert gw.scalar("SELECT sum(requests) FROM inference_stats_1m WHERE project_id = {p:String}", p=project) == 8


def test_erase_a_session(gw: RunningGateway) -> None:
    project = "erase-session"
    fed = feed(gw, project)
    before = {user: table_counts(gw, project, fed[user]) for user in USERS}
    bob = fed["bob"]
    job = run_job(gw, {"project_id": project, "session_id": f"{bob.user}-s1"})
    # bob-s1: the two chats of bob's first trace, their messages, feedback, and the whole trace
    # (agent run, chats, tool span) with its log events.
    assert job["counts"] == {"inferences": 2, "messages": 4, "feedback": 2, "spans": 4, "logs": 2,
                             "inference_lookup": 2}, job
    after = table_counts(gw, project, bob)
    assert after == {t: before["bob"][t] - job["counts"][t] for t in TABLES}
    assert table_counts(gw, project, fed["alice"]) == before["alice"]
    seen = read_routes(gw, project, bob)
    kept = bob.inference_ids[2:]
    assert seen["listing"] == sorted(kept) and seen["listing_by_user"] == 2
    assert seen["detail"] == kept and seen["detail/feedback"] == kept and seen["detail/trace"] == kept
    assert sorted(seen["export"][:-1]) == sorted(kept)
    assert seen["tempo_traces"] == bob.own_traces[1:]
    assert seen["sessions"] == bob.sessions[1:] and seen["session_detail"] == bob.sessions[1:]
    _everything_visible(read_routes(gw, project, fed["alice"]), fed["alice"])


def test_erase_by_inference_ids_and_time_range(gw: RunningGateway) -> None:
    project = "erase-ids"
    fed = feed(gw, project)
    target = fed["alice"].inference_ids[3]  # alice's chat in the shared trace
    job = run_job(gw, {"project_id": project, "inference_ids": [target]})
    assert job["counts"]["inferences"] == 1 and job["counts"]["spans"] == 1, job
    status, _ = call(gw, "GET", f"/api/v1/metrics/inferences/{target}")
    assert status == 404
    # A time range that covers everything sent: the project is empty of inferences afterwards.
    # (To 9999-12-31: past what the tables hold is their end; it wrapped around and erased nothing.)
    job = run_job(gw, {"project_id": project, "from_date": FROM, "to_date": "9999-12-31"})
    assert job["counts"]["inferences"] == 7, job
    assert gw.scalar("SELECT count() FROM inferences WHERE project_id = {p:String}", p=project) == 0
    assert gw.scalar("SELECT count() FROM spans WHERE project_id = {p:String}", p=project) == 0


@pytest.mark.parametrize("body, fragment", [
    ({"user_id": "alice"}, "project_id is required"),
    ({"project_id": "p"}, "exactly one selector"),
    ({"project_id": "p", "user_id": "a", "session_id": "s"}, "got user_id, session_id"),
    ({"project_id": "p", "user_id": "a", "from_date": FROM, "to_date": FROM}, "got user_id, from_date/to_date"),
    ({"project_id": "p", "user_id": " "}, "user_id must not be empty"),
    ({"project_id": "p", "inference_ids": ["nope"]}, "inference_ids: 'nope' is not a UUID"),
    ({"project_id": "p", "inference_ids": []}, "inference_ids must hold"),
    ({"project_id": "p", "from_date": FROM}, "needs both from_date and to_date"),
    ({"project_id": "p", "from_date": "yesterday", "to_date": FROM}, "from_date: 'yesterday'"),
    ({"project_id": "p", "from_date": "2025-02-01", "to_date": "2025-01-01"}, "to_date must be after from_date"),
    ({"project_id": "p", "user": "alice"}, "unknown field `user`"),
    ({"project_id": "p", "user_id": 7}, "user_id"),
])
def test_validation(gw: RunningGateway, body: dict[str, Any], fragment: str) -> None:
    status, answer = call(gw, "POST", "/api/v1/data/delete", body)
    assert status == 400, answer
    assert fragment in answer["error"]["message"], answer


def test_unknown_job_is_404(gw: RunningGateway) -> None:
    status, answer = call(gw, "GET", f"/api/v1/data/delete/{uuid.uuid4()}")
    assert status == 404 and answer["error"]["code"] == "not_found"


def test_cli_dry_run_and_delete(gw: RunningGateway, capsys: pytest.CaptureFixture[str]) -> None:
    project = "erase-cli"
    fed = feed(gw, project)
    before = table_counts(gw, project, fed["bob"])
    cfg = Config(clickhouse_dsn=gw.cfg.clickhouse_dsn)

    def cli(*argv: str) -> tuple[int, str, str]:
        code = data_cmd.run(_parser().parse_args(["data", *argv]), cfg)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = cli("delete", "--project", project, "--user-id", fed["bob"].user, "--dry-run")
    assert code == 0 and "would delete" in err
    printed = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}
    assert printed == before
    assert table_counts(gw, project, fed["bob"]) == before  # a dry run deletes nothing
    code, out, err = cli("delete", "--project", project, "--session-id", f"{fed['bob'].user}-s2")
    assert code == 0 and {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}["inferences"] == 1
    assert table_counts(gw, project, fed["bob"])["inferences"] == 3
    job_id = err.split()[2].rstrip(":")
    code, out, _ = cli("status", job_id)
    assert code == 0 and json.loads(out)["status"] == "done" and json.loads(out)["created_by"] == "cli"
    code, _, err = cli("resume", job_id)
    assert code == 1 and "done already" in err
    with pytest.raises(SystemExit):
        _parser().parse_args(["data", "delete", "--project", project, "--user-id", "a", "--session-id", "b"])
    code, _, err = cli("delete", "--project", project, "--from", FROM)
    assert code == 2 and "needs both" in err


def test_failing_step_is_retried_then_the_job_fails(gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = gw.gateway.erasure
    monkeypatch.setattr(runner, "_retry_base_s", 0.01)
    real = erasure.Eraser._resolve
    failures = {"flaky": 2, "broken": 99}

    def resolve(self: erasure.Eraser, job: erasure.Job) -> None:
        if failures.get(job.project_id, 0) > 0:
            failures[job.project_id] -= 1
            raise RuntimeError("store went away")
        real(self, job)

    monkeypatch.setattr(erasure.Eraser, "_resolve", resolve)
    # Two failures, then the step goes through: the job ends done, the error cleared.
    job = run_job(gw, {"project_id": "flaky", "user_id": "u"})
    assert job["error"] is None and job["steps_done"] == job["steps"]
    status, job = call(gw, "POST", "/api/v1/data/delete", {"project_id": "broken", "user_id": "u"})
    assert status == 202

    def failed() -> dict[str, Any] | None:
        answer = call(gw, "GET", f"/api/v1/data/delete/{job['job_id']}")[1]
        return answer if answer["status"] == "failed" else None

    answer = wait_until(failed)
    assert answer["error"] == "resolve: RuntimeError: store went away" and answer["steps_done"] == []
    assert failures["broken"] == 99 - erasure.MAX_ATTEMPTS


def test_project_limited_admin(gw: RunningGateway) -> None:
    store = KeyStore(gw._clients.get())
    limited = store.create(projects=["mine"], role="admin", ingest=False).key
    editor = store.create(projects=[], role="editor", ingest=False).key
    gw.gateway.auth.reload()
    status, answer = call(gw, "POST", "/api/v1/data/delete", {"project_id": "theirs", "user_id": "u"}, key=limited)
    assert status == 403 and answer["error"]["code"] == "forbidden"
    status, _ = call(gw, "POST", "/api/v1/data/delete", {"project_id": "mine", "user_id": "u"}, key=editor)
    assert status == 403
    status, job = call(gw, "POST", "/api/v1/data/delete", {"project_id": "theirs", "user_id": "u"})
    assert status == 202
    # Another project's job is "not found" to a limited admin.
    status, _ = call(gw, "GET", f"/api/v1/data/delete/{job['job_id']}", key=limited)
    assert status == 404
    status, mine = call(gw, "POST", "/api/v1/data/delete", {"project_id": "mine", "user_id": "u"}, key=limited)
    assert status == 202
    done = wait_until(lambda: _finished(gw, mine["job_id"]))
    assert done["counts"] == dict.fromkeys(TABLES, 0) and done["created_by"] not in ("", "anonymous")


def test_restart_in_the_middle_finishes_the_job(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("erasure-restart")
    gateway = start_gateway(chdb_path, "t_erasure_restart", data_dir)
    project = "erase-restart"
    try:
        fed = feed(gateway, project)
        before = {user: table_counts(gateway, project, fed[user]) for user in USERS}
        # The runner stops after the messages step, as a process going away between steps would.
        gateway.gateway.erasure.hold_after = "messages"
        status, job = call(gateway, "POST", "/api/v1/data/delete",
                           {"project_id": project, "user_id": fed["alice"].user})
        assert status == 202
        job_id = job["job_id"]

        def held() -> bool:
            return "messages" in call(gateway, "GET", f"/api/v1/data/delete/{job_id}")[1]["steps_done"]

        wait_until(held)
        status, job = call(gateway, "GET", f"/api/v1/data/delete/{job_id}")
        assert job["status"] == "running" and job["counts"] == before["alice"]
        half = table_counts(gateway, project, fed["alice"])
        assert half["messages"] == 0 and half["inferences"] == 4 and half["spans"] == 7
    finally:
        assert gateway.stop()

    restarted = start_gateway(chdb_path, "t_erasure_restart", data_dir)
    try:
        done = wait_until(lambda: _finished(restarted, job_id), 60)
        assert done["counts"] == before["alice"] and done["steps_done"] == done["steps"]
        assert table_counts(restarted, project, fed["alice"]) == dict.fromkeys(TABLES, 0)
        assert table_counts(restarted, project, fed["bob"]) == before["bob"]
        assert read_routes(restarted, project, fed["alice"]) == NOTHING
        assert restarted.scalar("SELECT count() FROM erasure_targets WHERE job_id = {j:String}", j=job_id) == 0
    finally:
        assert restarted.stop()


def test_a_range_to_the_stores_end_takes_the_rows_stored_at_it() -> None:
    """Span times past 2262 are stored at the store's end (rows.MAX_NS); an exclusive end there
    would leave them behind. Dates before 1900 or after 2262 are the store's ends."""
    from otelgw.api.common import MAX_NS
    from otelgw.governance.erasure import _selector_sql, build_selector

    selector = build_selector(from_date="0001-01-01", to_date="9999-12-31")
    assert selector == {"from_date": "1900-01-01T00:00:00.000000Z", "to_date": "2262-04-11T23:47:16.000000Z"}
    assert _selector_sql(selector)[1]["end_ns"] == MAX_NS + 1
    day = build_selector(from_date="2026-01-01", to_date="2026-01-02")
    assert _selector_sql(day)[1]["end_ns"] == 1767312000 * 10**9


def test_erasing_a_call_traced_twice_takes_the_inner_span_and_its_log_records(gw: RunningGateway) -> None:
    """A library span around the provider SDK's own span (one call, one inference: the outer
    one's): erasing that inference erases the inner span's row, which holds the prompt, and the
    message its log record carried; the trace's other call stays."""
    project = "erase-nested"
    provider = TracerProvider(resource=Resource.create({"service.name": "nested", "project.id": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{gw.http_url}/v1/traces")))
    logs = LoggerProvider(resource=Resource.create({"service.name": "nested", "project.id": project}))
    logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{gw.http_url}/v1/logs")))
    tracer, logger = provider.get_tracer("openinference.instrumentation.anthropic"), logs.get_logger("sdk")
    call = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 2}
    with tracer.start_as_current_span("agent"):
        with tracer.start_as_current_span("Messages") as outer:
            outer.set_attributes({"openinference.span.kind": "LLM", "llm.provider": "anthropic",
                                  "llm.model_name": "claude-sonnet-4-5", "llm.token_count.prompt": 10,
                                  "output.value": json.dumps({"id": "msg_secret"}),
                                  "output.mime_type": "application/json"})
            with tracer.start_as_current_span("anthropic.messages.create", kind=SpanKind.CLIENT) as inner:
                inner.set_attributes({**call, "gen_ai.response.id": "msg_secret", "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "my card is 4111"}]}])})
                logger.emit(event_name="gen_ai.user.message", body={"content": "my card is 4111"})
                inner_ids = (f"{inner.get_span_context().trace_id:032x}", f"{inner.get_span_context().span_id:016x}")
            outer_id = derived_inference_id(inner_ids[0], f"{outer.get_span_context().span_id:016x}")
        with tracer.start_as_current_span("chat other", kind=SpanKind.CLIENT) as other:
            other.set_attributes({**call, "gen_ai.response.id": "msg_other"})
    assert provider.force_flush(30_000) and logs.force_flush(30_000)
    provider.shutdown()
    logs.shutdown()
    gw.settle()
    trace, inner_span = inner_ids
    assert gw.scalar("SELECT count() FROM inferences FINAL WHERE project_id = {p:String}", p=project) == 2
    assert gw.scalar("SELECT inference_id FROM spans FINAL WHERE trace_id = {t:String} AND span_id = {s:String}",
                     t=trace, s=inner_span) == outer_id
    # The SDK's log-record message names its own span: stored under that span's id, no inference's.
    assert gw.scalar("SELECT count() FROM messages FINAL WHERE inference_id = {i:UUID}",
                     i=derived_inference_id(trace, inner_span)) == 1

    job = run_job(gw, {"project_id": project, "inference_ids": [outer_id]})
    assert job["status"] == "done" and job["counts"]["inferences"] == 1, job
    assert gw.scalar("SELECT count() FROM spans WHERE trace_id = {t:String} AND span_id = {s:String}",
                     t=trace, s=inner_span) == 0
    assert gw.scalar("SELECT count() FROM messages WHERE inference_id = {i:UUID}",
                     i=derived_inference_id(trace, inner_span)) == 0
    assert gw.scalar("SELECT count() FROM messages WHERE project_id = {p:String} AND content LIKE '%4111%'",
                     p=project) == 0
    assert gw.scalar("SELECT count() FROM inferences FINAL WHERE project_id = {p:String}", p=project) == 1
    assert gw.scalar("SELECT count() FROM spans FINAL WHERE project_id = {p:String} AND name = 'chat other'",
                     p=project) == 1
