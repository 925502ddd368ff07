"""API keys, roles and project isolation: every route with every role against its own and
another project's data; ingest keys on OTLP/HTTP and gRPC; anonymous only on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import start_gateway
from otlp_client import call_api, post, post_otlp

from otelgw.auth import Authenticator
from otelgw.pipeline.mapper import derived_inference_id
from otelgw.store.keys import KeyStore

FROM = "2000-01-01T00:00:00Z"
TRACES = {"alpha": "a1" * 16, "beta": "b1" * 16}


def _span_body(trace: str, span: str) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": span, "name": "chat m", "startTimeUnixNano": "1764150000000000000",
        "endTimeUnixNano": "1764150001000000000", "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]}]}]}]}).encode()


@pytest.fixture(scope="module")
def secured(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory):
    gateway = start_gateway(chdb_path, "t_auth", tmp_path_factory.mktemp("auth"))
    # Data in two projects, sent before any key exists (ingest is open then).
    for project, trace in TRACES.items():
        assert post_otlp(gateway.http_url, "traces", _span_body(trace, "00000000000000a1"), "json",
                         project=project).status == 200
    gateway.settle()
    store = KeyStore(gateway._clients.get())
    keys: dict[str, str] = {}
    for role in ("viewer", "editor", "admin"):
        keys[role] = store.create(projects=["alpha"], role=role, ingest=False).key
    keys["ingest"] = store.create(projects=["alpha"], role="viewer", ingest=True).key
    keys["global-admin"] = store.create(projects=[], role="admin", ingest=True).key
    gateway.gateway.auth.reload()
    gateway.keys = keys
    # Feedback in beta too, so that beta's trace feedback being hidden from alpha's keys shows.
    status, _ = call_api(gateway.api_url, "POST",
                         f"/api/v1/metrics/inferences/{derived_inference_id('b1' * 16, '00000000000000a1')}/feedback",
                         keys["global-admin"], {"type": "boolean", "value": False})
    assert status == 201
    gateway.ids = {"alpha": derived_inference_id("a1" * 16, "00000000000000a1"),
                   "beta": derived_inference_id("b1" * 16, "00000000000000a1")}
    try:
        yield gateway
    finally:
        assert gateway.stop()


def call(gateway, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    return call_api(gateway.api_url, method, path, key, body)


def routes(ids: dict[str, str], project: str) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, role needed) for every data route, aimed at one project's data."""
    iid = ids[project]
    return [
        ("POST", "/api/v1/metrics/inferences/list", {"from_date": FROM, "project_id": project}, "viewer"),
        ("GET", f"/api/v1/metrics/inferences/{iid}", None, "viewer"),
        ("GET", f"/api/v1/metrics/inferences/{iid}/feedback", None, "viewer"),
        ("POST", f"/api/v1/metrics/inferences/{iid}/feedback", {"type": "rating", "value": 5}, "editor"),
        ("POST", "/api/v1/metrics/inferences/export", {"from_date": FROM, "project_id": project, "format": "jsonl"},
         "viewer"),
        ("GET", f"/api/v1/semconv/unmapped?project={project}", None, "viewer"),
        ("GET", f"/api/v1/traces/{TRACES[project]}/feedback", None, "viewer"),
    ]


RANK = {"viewer": 0, "editor": 1, "admin": 2}


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_every_route_every_role_own_and_other_project(secured, role: str) -> None:
    key = secured.keys[role]
    for method, path, body, needed in routes(secured.ids, "alpha"):
        status, answer = call(secured, method, path, key, body)
        if RANK[role] >= RANK[needed]:
            assert status in (200, 201), (role, path, answer)
        else:
            assert status == 403 and answer["error"]["code"] == "forbidden", (role, path, answer)
    for method, path, body, needed in routes(secured.ids, "beta"):
        status, answer = call(secured, method, path, key, body)
        if RANK[role] < RANK[needed]:
            assert status == 403, (role, path)
        elif "/list" in path:
            assert status == 200 and answer["total_count"] == 0 and answer["items"] == [], (role, path)
        elif "/export" in path:
            assert status == 200 and answer == b"", (role, path)
        elif "unmapped" in path:
            assert status == 200 and answer == {"unmapped": []}, (role, path)
        elif "/traces/" in path:
            # A trace id is no secret to guard: the route lists what the key may see, here nothing.
            assert status == 200 and answer["items"] == [] and answer["summary"]["total"] == 0, (role, path, answer)
        else:
            # Another project's inference is "not found", never "forbidden": no existence oracle.
            assert status == 404 and answer["error"]["code"] == "not_found", (role, path, answer)


def test_listing_without_project_filter_sees_only_own_projects(secured) -> None:
    status, page = call(secured, "POST", "/api/v1/metrics/inferences/list", secured.keys["viewer"],
                        {"from_date": FROM})
    assert status == 200 and {i["project_id"] for i in page["items"]} == {"alpha"}
    status, page = call(secured, "POST", "/api/v1/metrics/inferences/list", secured.keys["global-admin"],
                        {"from_date": FROM})
    assert {i["project_id"] for i in page["items"]} >= {"alpha", "beta"}
    status, listed = call(secured, "GET", f"/api/v1/traces/{TRACES['beta']}/feedback", secured.keys["global-admin"])
    assert status == 200 and [(i["kind"], i["inference_id"]) for i in listed["items"]] == [
        ("boolean", secured.ids["beta"])]


def test_missing_bad_and_revoked_keys(secured) -> None:
    path = "/api/v1/metrics/inferences/list"
    body = {"from_date": FROM}
    assert call(secured, "POST", path, None, body)[0] == 401  # keys exist: no anonymous access
    assert call(secured, "POST", path, "otgw_000000000000_nope", body)[0] == 401
    assert call(secured, "POST", path, "Basic-junk", body)[0] == 401
    status, created = call(secured, "POST", "/api/v1/keys", secured.keys["admin"],
                           {"projects": ["alpha"], "role": "viewer"})
    assert status == 201 and created["key"].startswith("otgw_") and "secret_hash" not in created
    assert call(secured, "POST", path, created["key"], body)[0] == 200
    status, listed = call(secured, "GET", "/api/v1/keys", secured.keys["admin"])
    assert created["key_id"] in {k["key_id"] for k in listed["keys"]}
    assert all("secret_hash" not in k for k in listed["keys"])
    assert call(secured, "DELETE", f"/api/v1/keys/{created['key_id']}", secured.keys["admin"])[0] == 200
    assert call(secured, "POST", path, created["key"], body)[0] == 401
    # An admin of project alpha cannot mint keys for beta, nor see the global admin key.
    status, _ = call(secured, "POST", "/api/v1/keys", secured.keys["admin"], {"projects": ["beta"], "role": "admin"})
    assert status == 403
    status, answer = call(secured, "POST", "/api/v1/keys", secured.keys["admin"], {"projects": ["alpha"],
                                                                                   "role": "owner"})
    assert status == 400 and "role" in answer["error"]["message"]
    assert call(secured, "GET", "/api/v1/keys", secured.keys["editor"])[0] == 403
    # ... nor revoke it: an every-project key was an empty project set, a subset of anything, so an
    # admin of alpha could revoke the global admin's key (it stays 404 to them, as in the list).
    global_id = secured.keys["global-admin"].split("_")[1]
    assert call(secured, "DELETE", f"/api/v1/keys/{global_id}", secured.keys["admin"])[0] == 404
    assert call(secured, "GET", "/api/v1/whoami", secured.keys["global-admin"])[0] == 200
    # A key stored before names were checked, scoped to "": refused (it acted for any project).
    old = KeyStore(secured._clients.get()).create(projects=["alpha"], role="viewer", ingest=True)
    secured._clients.get().command(
        "INSERT INTO api_keys (key_id, secret_hash, name, projects, role, ingest, revoked, created_at, updated_at) "
        f"SELECT key_id, secret_hash, name, [''], role, ingest, revoked, created_at, now64(3) + 1 FROM api_keys FINAL "
        f"WHERE key_id = '{old.record.key_id}'")
    secured.gateway.auth.reload()
    status, answer = call(secured, "GET", "/api/v1/whoami", old.key)
    assert status == 401 and "not valid names" in answer["error"]["message"]
    assert post(f"{secured.http_url}/v1/traces", _span_body("c1" * 16, "00000000000000c1"), "application/json",
                headers={"Authorization": f"Bearer {old.key}"}).status == 401
    # Project names as the receivers take them: "" looked like "every project" (and an ingest key
    # for "" wrote to any project), NULs, 100k characters, 50k projects.
    for projects in ([""], [" "], ["a\x00b"], ["x" * 129], ["p"] * 1001):
        status, answer = call(secured, "POST", "/api/v1/keys", secured.keys["global-admin"],
                              {"projects": projects, "role": "viewer", "ingest": True})
        assert status == 400 and "projects" in answer["error"]["message"], (projects[:1], answer)
    # Health, readiness and metrics stay public.
    assert call(secured, "GET", "/healthz", None)[0] == 200
    assert call(secured, "GET", "/metrics", None)[0] == 200


def test_ingest_keys(secured) -> None:
    body = _span_body("c1" * 16, "00000000000000c1")
    # Ingest keys exist now: OTLP without a key is refused.
    assert post_otlp(secured.http_url, "traces", body, "json").status == 401
    # A key without --ingest cannot send.
    result = post(f"{secured.http_url}/v1/traces", body, "application/json",
                  {"Authorization": f"Bearer {secured.keys['viewer']}"})
    assert result.status == 403
    # An ingest key fixes the project; a header naming another project is refused.
    ok = post(f"{secured.http_url}/v1/traces", body, "application/json",
              {"Authorization": f"Bearer {secured.keys['ingest']}"})
    assert ok.status == 200
    wrong = post(f"{secured.http_url}/v1/traces", body, "application/json",
                 {"Authorization": f"Bearer {secured.keys['ingest']}", "x-otelgw-project": "beta"})
    assert wrong.status == 403
    # The Langfuse SDK sends the key as a Basic password.
    import base64

    basic = base64.b64encode(f"pk:{secured.keys['ingest']}".encode()).decode()
    assert post(f"{secured.http_url}/api/public/otel/v1/traces", _span_body("c2" * 16, "00000000000000c2"),
                "application/json", {"Authorization": f"Basic {basic}"}).status == 200
    secured.settle()
    rows = secured.query("SELECT project_id FROM inferences FINAL WHERE trace_id IN ({a:String}, {b:String})",
                         a="c1" * 16, b="c2" * 16)
    assert [r["project_id"] for r in rows] == ["alpha", "alpha"]
    # gRPC: same rules, as UNAUTHENTICATED / PERMISSION_DENIED.
    from otelgw.pipeline.request import Signal
    from otelgw.receiver.decode import Encoding, decode

    proto = decode(Signal.TRACES, body, Encoding.JSON).message.SerializeToString()
    with grpc.insecure_channel(secured.grpc_target) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as caught:
            export(proto, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            export(proto, timeout=10, metadata=(("authorization", f"Bearer {secured.keys['viewer']}"),))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        export(proto, timeout=10, metadata=(("authorization", f"Bearer {secured.keys['ingest']}"),))


def test_anonymous_only_on_loopback(chdb_path: Path, tmp_path: Path) -> None:
    from otelgw.app import _loopback
    from otelgw.config import ConfigError

    assert _loopback("127.0.0.1:3200") and _loopback("[::1]:3200") and _loopback("localhost:3200")
    assert not _loopback("0.0.0.0:3200")
    auth = Authenticator(list, allow_anonymous=False)
    auth.reload()
    from otelgw.auth import Unauthorized

    with pytest.raises(Unauthorized):
        auth.principal(None)
    with pytest.raises(ConfigError, match="ALLOW_ANONYMOUS"):
        start_gateway(chdb_path, "t_public", tmp_path, api_addr="0.0.0.0:0")
    public = start_gateway(chdb_path, "t_public2", tmp_path / "b", api_addr="0.0.0.0:0", allow_anonymous=True)
    assert public.stop()


def test_analytics_sees_only_the_keys_projects_and_add_needs_an_ingest_key(secured) -> None:
    body = {"metrics": ["request_count"], "from_date": "2000-01-01T00:00:00Z", "frequency_unit": "year",
            "group_by": ["project"], "fill_time_gaps": False, "return_delta": False}
    status, answer = call(secured, "POST", "/observability/analytics", secured.keys["viewer"], body)
    assert status == 200
    assert {i["project_id"] for b in answer["items"] for i in b["items"]} == {"alpha"}
    status, answer = call(secured, "POST", "/observability/analytics", secured.keys["viewer"],
                          {**body, "filters": {"project": "beta"}})
    assert status == 200 and answer["items"] == []
    status, answer = call(secured, "POST", "/observability/analytics", secured.keys["global-admin"], body)
    assert {i["project_id"] for b in answer["items"] for i in b["items"]} >= {"alpha", "beta"}
    assert call(secured, "POST", "/observability/analytics", None, body)[0] == 401

    record = {"inference_id": "550e8400-e29b-41d4-a716-44665544aaaa", "project_id": "beta", "endpoint_id": "e",
              "model_id": "m", "is_success": True, "request_arrival_time": "2026-03-10T10:30:00Z",
              "request_forward_time": "2026-03-10T10:30:01Z"}
    envelope = {"entries": [{"event": {"data": record}}]}
    assert call(secured, "POST", "/observability/add", None, envelope)[0] == 401
    assert call(secured, "POST", "/observability/add", secured.keys["viewer"], envelope)[0] == 403  # not ingest
    status, answer = call(secured, "POST", "/observability/add", secured.keys["ingest"], envelope)
    assert status == 200 and answer["param"]["summary"]["successfully_inserted"] == 1
    secured.settle()
    # The key's project wins over the record's project_id.
    assert secured.scalar("SELECT project_id FROM inferences WHERE inference_id = {i:UUID}",
                          i=record["inference_id"]) == "alpha"


def test_trace_feedback_of_other_projects_neither_crowds_out_nor_shows(secured) -> None:
    """One trace crossing two projects: an alpha key's page of the trace's feedback holds alpha's
    rows whatever the limit, however many newer rows beta has."""
    trace = "d1" * 16
    ids = {}
    for project, span in (("alpha", "00000000000000d1"), ("beta", "00000000000000d2")):
        assert post(f"{secured.http_url}/v1/traces", _span_body(trace, span), "application/json",
                    {"Authorization": f"Bearer {secured.keys['global-admin']}",
                     "x-otelgw-project": project}).status == 200
        ids[project] = derived_inference_id(trace, span)
    secured.settle()
    admin = secured.keys["global-admin"]
    for project, count in (("alpha", 1), ("beta", 2)):
        for _ in range(count):
            status, _ = call(secured, "POST", f"/api/v1/metrics/inferences/{ids[project]}/feedback", admin,
                             {"type": "rating", "value": 3})
            assert status == 201
    for limit in (1, 2, 3):
        status, page = call(secured, "GET", f"/api/v1/traces/{trace}/feedback?limit={limit}", secured.keys["viewer"])
        assert status == 200 and [i["inference_id"] for i in page["items"]] == [ids["alpha"]], (limit, page)
        assert page["has_more"] is False and page["summary"]["total"] == 1
    status, page = call(secured, "GET", f"/api/v1/traces/{trace}/feedback", admin)
    assert status == 200 and page["summary"]["total"] == 3
