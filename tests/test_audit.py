"""The audit log: every listed action through the API writes exactly one row with the caller's key
id, role, project, target and result and no message content; GET /api/v1/audit is for admins
(scoped to their projects), with filters and pagination; the Auditor keeps events while the
store is down; `otelgw audit` prints the rows."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import start_gateway
from otlp_client import call_api, post_otlp

from otelgw.governance.audit import AuditEvent, Auditor, encode_events
from otelgw.pipeline.mapper import derived_inference_id
from otelgw.store.keys import KeyStore

FROM = "2000-01-01T00:00:00Z"
# Planted in a message and in a feedback comment: it must never reach the audit log.
PLANTED = "quokka-lantern-5521"
SESSION = "sess-audit-1"
TRACES = {"alpha": "a7" * 16, "beta": "b7" * 16}
SPAN = "00000000000000a7"


def _span_body(trace: str, session: str) -> bytes:
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"tell me about {PLANTED}"}]}])
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": SPAN, "name": "chat m", "kind": 3, "startTimeUnixNano": "1764150000000000000",
        "endTimeUnixNano": "1764150001000000000", "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
            {"key": "session.id", "value": {"stringValue": session}},
            {"key": "gen_ai.input.messages", "value": {"stringValue": messages}}]}]}]}]}).encode()


@pytest.fixture(scope="module")
def gw(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory):
    gateway = start_gateway(chdb_path, "t_audit", tmp_path_factory.mktemp("audit"))
    for project, trace in TRACES.items():
        assert post_otlp(gateway.http_url, "traces", _span_body(trace, SESSION), "json",
                         project=project).status == 200
    gateway.settle()
    store = KeyStore(gateway._clients.get())
    keys: dict[str, str] = {}
    for role in ("viewer", "editor", "admin"):
        keys[role] = store.create(projects=["alpha"], role=role, ingest=False).key
    keys["global-admin"] = store.create(projects=[], role="admin", ingest=False).key
    gateway.gateway.auth.reload()
    gateway.keys = keys
    gateway.key_ids = {name: key.split("_")[1] for name, key in keys.items()}
    gateway.ids = {p: derived_inference_id(t, SPAN) for p, t in TRACES.items()}
    try:
        yield gateway
    finally:
        assert gateway.stop()


def call(gateway, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    return call_api(gateway.api_url, method, path, key, body)


def flush(gateway) -> None:
    assert gateway._call(gateway.gateway.auditor.flush())


def rows_since(gateway, since_ns: int) -> list[dict[str, Any]]:
    flush(gateway)
    return gateway.query("SELECT toUnixTimestamp64Nano(time) AS time_ns, * FROM audit_log "
                         "WHERE time >= fromUnixTimestamp64Nano({t:Int64}, 'UTC') ORDER BY time", t=since_ns)


def audit_api(gateway, key: str, **query: Any) -> tuple[int, Any]:
    return call(gateway, "GET", "/api/v1/audit" + (f"?{urlencode(query, doseq=True)}" if query else ""), key)


def test_each_action_writes_exactly_one_row(gw) -> None:
    since = time.time_ns()
    k, ids, iid = gw.keys, gw.key_ids, gw.ids["alpha"]
    # Content reads (the detail holds the planted message, so content was really read).
    status, detail = call(gw, "GET", f"/api/v1/metrics/inferences/{iid}", k["viewer"])
    assert status == 200 and PLANTED in json.dumps(detail)
    assert call(gw, "POST", "/api/v1/metrics/inferences/list", k["viewer"],
                {"from_date": FROM, "project_id": "alpha"})[0] == 200
    # An empty page (the UI's live poll, mostly) shows no content: no row.
    assert call(gw, "POST", "/api/v1/metrics/inferences/list", k["viewer"],
                {"from_date": FROM, "project_id": "nowhere"})[0] == 200
    status, exported = call(gw, "POST", "/api/v1/metrics/inferences/export", k["viewer"],
                            {"from_date": FROM, "project_id": "alpha", "format": "jsonl", "include_messages": True,
                             "search": PLANTED})
    assert status == 200 and PLANTED in json.dumps(exported)
    status, session = call(gw, "GET", f"/api/v1/sessions/{SESSION}", k["viewer"])
    assert status == 200 and PLANTED in json.dumps(session)
    assert call(gw, "GET", f"/api/v2/traces/{TRACES['alpha']}", k["viewer"])[0] == 200
    # Writes.
    assert call(gw, "POST", f"/api/v1/metrics/inferences/{iid}/feedback", k["editor"],
                {"type": "comment", "comment": f"the answer about {PLANTED} was wrong"})[0] == 201
    assert call(gw, "GET", f"/api/v1/metrics/inferences/{iid}/feedback", k["viewer"])[0] == 200
    status, created = call(gw, "POST", "/api/v1/keys", k["admin"], {"projects": ["alpha"], "role": "viewer"})
    assert status == 201
    assert call(gw, "DELETE", f"/api/v1/keys/{created['key_id']}", k["admin"])[0] == 200
    # Auth failures: a key that does not exist, and a viewer asking for an admin route.
    assert call(gw, "GET", "/api/v1/sessions?from_date=2000-01-01", "otgw_0123456789ab_not-the-secret")[0] == 401
    assert call(gw, "GET", "/api/v1/keys", k["viewer"])[0] == 403
    # Reads of nothing are not content reads: a 404 writes no row.
    assert call(gw, "GET", "/api/v1/metrics/inferences/00000000-0000-0000-0000-000000000000", k["viewer"])[0] == 404

    rows = rows_since(gw, since)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_action.setdefault(row["action"], []).append(row)
    expected = {
        "inference.read": (ids["viewer"], "viewer", "alpha", iid, "ok"),
        "inference.list": (ids["viewer"], "viewer", "alpha", "", "ok"),
        "inference.export": (ids["viewer"], "viewer", "alpha", "", "ok"),
        "session.read": (ids["viewer"], "viewer", "alpha", SESSION, "ok"),
        "trace.read": (ids["viewer"], "viewer", "alpha", TRACES["alpha"], "ok"),
        "feedback.create": (ids["editor"], "editor", "alpha", iid, "ok"),
        "feedback.read": (ids["viewer"], "viewer", "alpha", iid, "ok"),
        "key.create": (ids["admin"], "admin", "alpha", created["key_id"], "ok"),
        "key.revoke": (ids["admin"], "admin", "alpha", created["key_id"], "ok"),
        "login.failed": ("0123456789ab", "", "", "GET /api/v1/sessions", "unauthorized"),
        "access.denied": (ids["viewer"], "viewer", "", "GET /api/v1/keys", "forbidden"),
    }
    assert sorted(by_action) == sorted(expected), sorted(by_action)
    for action, (key_id, role, project, target, result) in expected.items():
        assert len(by_action[action]) == 1, (action, by_action[action])
        row = by_action[action][0]
        assert (row["key_id"], row["role"], row["project"], row["target"], row["result"]) == \
            (key_id, role, project, target, result), row
        assert row["client"] == "127.0.0.1", row
    assert "format=jsonl" in by_action["inference.export"][0]["detail"]
    assert "type=comment" in by_action["feedback.create"][0]["detail"]
    # No message content, no feedback text, no search text, no key secret anywhere in the log.
    secrets = [key.split("_", 2)[2] for key in [*gw.keys.values(), created["key"]]] + ["not-the-secret"]
    for needle in [PLANTED, *secrets]:
        found = gw.scalar("SELECT count() FROM audit_log WHERE position(concat(key_id, role, project, action, target, "
                          "client, result, detail), {s:String}) > 0", s=needle)
        assert found == 0, needle


def test_viewer_and_editor_cannot_read_the_audit_log(gw) -> None:
    since = time.time_ns()
    for role in ("viewer", "editor"):
        status, answer = audit_api(gw, gw.keys[role])
        assert status == 403 and answer["error"]["code"] == "forbidden", (role, answer)
    assert audit_api(gw, "")[0] == 401
    denied = [r for r in rows_since(gw, since) if r["action"] == "access.denied"]
    assert sorted(r["role"] for r in denied) == ["editor", "viewer"]
    assert all(r["target"] == "GET /api/v1/audit" for r in denied)


def test_audit_api_filters_pagination_and_scope(gw) -> None:
    admin, scoped = gw.keys["global-admin"], gw.keys["admin"]
    since = time.time_ns()
    start = since / 1e9
    for _ in range(3):
        assert call(gw, "GET", f"/api/v1/metrics/inferences/{gw.ids['alpha']}", gw.keys["viewer"])[0] == 200
    assert call(gw, "GET", f"/api/v1/metrics/inferences/{gw.ids['beta']}", admin)[0] == 200
    assert call(gw, "GET", "/api/v1/whoami", "otgw_bad")[0] == 401
    # Action and time filters, newest first; the API flushes queued events before it reads.
    status, page = audit_api(gw, admin, action="inference.read", from_date=f"{start:.6f}")
    assert status == 200 and page["total_count"] == 4 and len(page["items"]) == 4
    # Past what the store holds: its end (it wrapped around and matched nothing), or a clear 400.
    far_status, far = audit_api(gw, admin, action="inference.read", from_date=f"{start:.6f}", to_date="9999-12-31")
    assert far_status == 200 and far["total_count"] == 4
    far_status, far = audit_api(gw, admin, from_date="9" * 400)
    assert far_status == 400 and "from_date" in far["error"]["message"]
    times = [item["time"] for item in page["items"]]
    assert times == sorted(times, reverse=True)
    assert page["items"][0]["project"] == "beta" and page["items"][0]["key_id"] == gw.key_ids["global-admin"]
    # Key filter; several actions at once.
    status, page = audit_api(gw, admin, key_id=gw.key_ids["viewer"], action="inference.read",
                             from_date=f"{start:.6f}")
    assert page["total_count"] == 3 and {i["key_id"] for i in page["items"]} == {gw.key_ids["viewer"]}
    status, page = audit_api(gw, admin, action=["inference.read", "login.failed"], from_date=f"{start:.6f}")
    assert page["total_count"] == 5
    # Pagination.
    seen = []
    for offset in (0, 2, 4):
        status, page = audit_api(gw, admin, action="inference.read,login.failed", from_date=f"{start:.6f}",
                                 limit=2, offset=offset)
        assert status == 200 and page["limit"] == 2 and page["offset"] == offset
        assert page["has_more"] == (offset + 2 < 5)
        seen += [(i["time"], i["action"], i["key_id"]) for i in page["items"]]
    assert len(seen) == 5 and len(set(seen)) == 5
    # A time range that ends before the events: nothing.
    status, page = audit_api(gw, admin, action="inference.read", to_date=f"{start - 60:.6f}",
                             from_date=f"{start - 3600:.6f}")
    assert status == 200 and page["total_count"] == 0 and page["items"] == []
    # An admin of alpha sees alpha's events and their own key's, not beta's, nor failed logins.
    status, page = audit_api(gw, scoped, from_date=f"{start:.6f}", limit=1000)
    assert status == 200
    assert {i["project"] for i in page["items"] if i["key_id"] != gw.key_ids["admin"]} == {"alpha"}
    assert not [i for i in page["items"] if i["action"] == "login.failed" or i["project"] == "beta"]
    # Reading the log is itself recorded.
    status, page = audit_api(gw, admin, action="audit.read", key_id=gw.key_ids["admin"], from_date=f"{start:.6f}")
    assert page["total_count"] >= 1 and page["items"][0]["role"] == "admin"
    # Validation.
    for query in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}, {"nope": 1},
                  {"from_date": "2026-01-02", "to_date": "2026-01-01"}, {"from_date": "yesterday"}):
        status, answer = audit_api(gw, admin, **query)
        assert status == 400 and answer["error"]["code"] == "invalid_request", (query, answer)


def test_cli_prints_rows(gw, capsys: pytest.CaptureFixture[str]) -> None:
    from otelgw.cli import _parser
    from otelgw.governance import audit_cmd

    since = time.time_ns()
    for _ in range(2):
        assert call(gw, "GET", f"/api/v1/sessions/{quote(SESSION)}", gw.keys["viewer"])[0] == 200
    flush(gw)
    args = _parser().parse_args(["audit", "--action", "session.read", "--from", f"{since / 1e9:.6f}",
                                 "--key-id", gw.key_ids["viewer"], "--limit", "1"])
    assert audit_cmd.run(args, gw.cfg) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    cells = lines[0].split("\t")
    assert cells[1:8] == ["session.read", "ok", gw.key_ids["viewer"], "viewer", "alpha", SESSION, "127.0.0.1"]
    assert cells[8] == "inferences=1"
    args = _parser().parse_args(["audit", "--json", "--action", "session.read", "--from", f"{since / 1e9:.6f}"])
    assert audit_cmd.run(args, gw.cfg) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and all(r["action"] == "session.read" for r in records)
    assert records[0]["time"] >= records[1]["time"] and records[0]["time"] == cells[0]
    args = _parser().parse_args(["audit", "--from", "not a time"])
    assert audit_cmd.run(args, gw.cfg) == 2


def test_auditor_keeps_events_while_the_store_is_down_bounded() -> None:
    class Down:
        def __init__(self) -> None:
            self.up = False
            self.blocks: list[bytes] = []

        def get(self) -> Any:
            return self

        def discard(self) -> None:
            pass

        def raw_insert(self, table: str, insert_block: bytes, fmt: str, settings: dict[str, Any]) -> None:
            if not self.up:
                raise ConnectionError("store down")
            self.blocks.append(insert_block)

    store = Down()
    auditor = Auditor(store, max_pending=5, batch_events=2)

    def event(i: int) -> AuditEvent:
        return AuditEvent(time_ns=1_764_150_000_000_000_000 + i, key_id="k", role="admin", project="p",
                          action="inference.read", target=str(i), client="", result="ok")

    async def scenario() -> None:
        for i in range(4):
            auditor.record(event(i))
        assert not await auditor.flush()
        assert len(auditor.pending) == 4
        for i in range(4, 8):
            auditor.record(event(i))
        assert len(auditor.pending) == 5 and auditor.stats.dropped == 3
        store.up = True
        assert await auditor.flush()
        await auditor.stop()

    asyncio.run(scenario())
    written = [json.loads(line) for block in store.blocks for line in block.splitlines()]
    assert [r["target"] for r in written] == ["3", "4", "5", "6", "7"]
    assert written[0]["time"] == "1764150000.000000003"
    assert encode_events([event(0)]).endswith(b"\n")


def test_a_flood_of_bad_keys_is_folded() -> None:
    from otelgw.governance.audit import FAILURE_BURST, AuditEvent, Auditor
    auditor = Auditor()

    def failed() -> AuditEvent:
        return AuditEvent(time_ns=time.time_ns(), key_id="", role="", project="", action="login.failed",
                          target="GET /api/v1/keys", client="198.51.100.7", result="unauthorized")

    for _ in range(FAILURE_BURST + 500):
        auditor.record(failed())
    assert len(auditor.pending) == FAILURE_BURST and auditor.stats.throttled == 500
    auditor.record(AuditEvent(time_ns=time.time_ns(), key_id="k", role="admin", project="p", action="inference.read",
                              target="i", client="198.51.100.7", result="ok"))
    assert len(auditor.pending) == FAILURE_BURST + 1  # real events are never folded
