"""Coding agents' telemetry (Claude Code, Gemini CLI, Codex CLI: captured for real, replayed
over OTLP/HTTP): calls said by log records are inferences the query API lists, details, groups
into sessions and counts, with no trace behind them; the records stay in `logs`."""

from __future__ import annotations

from conftest import wait_until
from fixtures_lib import all_fixtures
from otlp_client import call_api, post_otlp

FROM = "2000-01-01T00:00:00Z"


def _send(gateway, name: str, project: str) -> None:
    fixture = next(f for f in all_fixtures() if f.name == name)
    for signal, encoding, body in fixture.payloads():
        assert post_otlp(gateway.http_url, signal, body, encoding, project=project).status == 200


def test_claude_code_calls_are_listed_detailed_and_grouped_by_session(gateway) -> None:
    _send(gateway, "claudecode-tools", "agents")
    gateway.settle()
    status, page = call_api(gateway.api_url, "POST", "/api/v1/metrics/inferences/list",
                            body={"from_date": FROM, "project_id": "agents", "sort_by": "timestamp",
                                  "sort_order": "asc"})
    assert status == 200 and len(page["items"]) == 2
    first = page["items"][0]
    # Claude Code's own cost estimate (the pricing table does not know the model it asked for).
    assert first["cost_usd"] == 0.012218 and first["model"] == "claude-opus-5-5"
    assert (first["input_tokens"], first["cached_input_tokens"], first["output_tokens"]) == (13341, 11520, 41)
    status, detail = call_api(gateway.api_url, "GET", f"/api/v1/metrics/inferences/{first['inference_id']}")
    assert status == 200, detail
    overview = detail["overview"]
    assert (overview["span_name"], overview["family"], overview["trace_id"], overview["trace_url"]) == (
        "claude_code.api_request", "claude_code", "", "")
    assert overview["ttft_ms"] == 23.0 and overview["latency_ms"] == 219.0 and detail["raw"]["spans"] == []
    assert overview["response_id"] == "req_fx_000001" and overview["provider"] == "anthropic"
    session = overview["session_id"]
    status, sessions = call_api(gateway.api_url, "GET", f"/api/v1/sessions?from_date={FROM}&project_id=agents")
    assert status == 200 and [(s["session_id"], s["inference_count"]) for s in sessions["items"]] == [(session, 2)]
    # The records themselves are still there, every event of the run.
    assert gateway.scalar("SELECT countIf(event_name = 'api_request') FROM logs WHERE project_id = 'agents'") == 2
    assert gateway.scalar("SELECT count() FROM logs WHERE project_id = 'agents' AND attributes['session.id'] = "
                          "{s:String}", s=overview["session_id"]) > 2
    status, series = call_api(gateway.api_url, "POST", "/observability/analytics", body={
        "from_date": FROM, "frequency_unit": "day", "metrics": ["request_count", "cost"],
        "filters": {"project": "agents"}})
    assert status == 200, series
    counts = [m for bucket in series["items"] for m in bucket["items"]]
    assert sum(m["data"]["request_count"]["count"] for m in counts) == 2
    # No trace to show: a 404, not a trace made of every trace-less call.
    status, answer = call_api(gateway.api_url, "GET", f"/api/v1/metrics/inferences/{first['inference_id']}/trace")
    assert (status, answer["error"]["code"]) == (404, "no_trace")
    # Erasing the session takes the calls and the records they were read from.
    status, job = call_api(gateway.api_url, "POST", "/api/v1/data/delete",
                           body={"project_id": "agents", "session_id": session})
    assert status == 202, job
    wait_until(lambda: call_api(gateway.api_url, "GET", f"/api/v1/data/delete/{job['job_id']}")[1]["status"] == "done",
               timeout=60)
    assert gateway.scalar("SELECT count() FROM inferences FINAL WHERE project_id = 'agents'") == 0
    # Every record of the session (its tool events, its settings events) goes too, not only the
    # records the calls were read from.
    assert gateway.scalar("SELECT count() FROM logs WHERE project_id = 'agents' AND attributes['session.id'] = "
                          "{s:String}", s=session) == 0


def test_a_failed_gemini_cli_call_and_a_codex_retry_are_errors(gateway) -> None:
    _send(gateway, "geminicli-error", "agents-errors")
    _send(gateway, "codex-error-retry", "agents-errors")
    gateway.settle()
    status, page = call_api(gateway.api_url, "POST", "/api/v1/metrics/inferences/list",
                            body={"from_date": FROM, "project_id": "agents-errors", "sort_by": "timestamp",
                                  "sort_order": "asc"})
    assert status == 200
    rows = [(i["model"], i["is_success"]) for i in page["items"]]
    assert rows == [("gemini-2.5-flash", False)] * 2 + [("gpt-fx", False)] * 3
    # These records carry the failing request's trace context: the detail links the trace.
    status, detail = call_api(gateway.api_url, "GET", f"/api/v1/metrics/inferences/{page['items'][0]['inference_id']}")
    assert status == 200 and detail["overview"]["trace_url"].startswith("/api/v2/traces/")
    assert detail["overview"]["error_message"]
