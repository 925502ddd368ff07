"""Retention: per-project TTLs for content, span detail and numbers. Rows older than their TTL
disappear after a forced merge, numbers outlive content, another project keeps the defaults;
the API (admin, project-scoped, validation, audit) and `otelgw retention` on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningGateway
from otlp_client import call_api, post_otlp

from otelgw.governance.retention import BUILTIN_DEFAULTS, TABLES, RetentionPolicy, RetentionStore, ttl_statements
from otelgw.store.keys import KeyStore
from otelgw.store.migrate import discover

# A project name that needs quoting in the TTL expressions.
SHORT = "short-lived 'q' \\ x"
OTHER = "other"


def call(gateway: RunningGateway, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    return call_api(gateway.api_url, method, path, key, body)


@pytest.fixture(scope="module")
def keys(gateway: RunningGateway) -> dict[str, str]:
    store = KeyStore(gateway._clients.get())
    made = {"admin": store.create(projects=[], role="admin", ingest=False).key,
            "alpha-admin": store.create(projects=["alpha", "alpha-2"], role="admin", ingest=False).key,
            "editor": store.create(projects=[], role="editor", ingest=False).key}
    gateway.gateway.auth.reload()
    return made


def command(gateway: RunningGateway, sql: str) -> None:
    gateway._clients.get().command(sql)


def force_merges(gateway: RunningGateway) -> None:
    """What ClickHouse does in the background, now: recompute the TTL bounds, merge, apply TTL."""
    for table in TABLES:
        command(gateway, f"ALTER TABLE {table} MATERIALIZE TTL SETTINGS mutations_sync = 2")
        command(gateway, f"OPTIMIZE TABLE {table} FINAL")


def table_ttl(gateway: RunningGateway, table: str) -> str:
    return gateway.scalar("SELECT create_table_query FROM system.tables WHERE database = currentDatabase() "
                          "AND name = {t:String}", t=table)


def test_migration_defaults_match_the_generator() -> None:
    migration = next(m for m in discover() if m.name == "retention")
    in_migration = {s for s in migration.statements() if "TTL" in s and "MODIFY SETTING" not in s}
    assert in_migration == set(ttl_statements(BUILTIN_DEFAULTS, []).values())


def test_defaults_without_any_policy(gateway: RunningGateway, keys: dict[str, str]) -> None:
    status, answer = call(gateway, "GET", "/api/v1/retention", keys["admin"])
    assert status == 200, answer
    assert answer == {"defaults": {"project_id": "*", "content_days": 30, "numbers_days": 400, "spans_days": 14},
                      "projects": []}
    assert "toIntervalDay(30)" in table_ttl(gateway, "messages")
    assert "toIntervalDay(14)" in table_ttl(gateway, "spans")


def _insert_aged(gateway: RunningGateway, project: str, age_days: int, tag: str) -> None:
    """One row per table, stored `age_days` ago (the clock retention counts from)."""
    p = project.replace("\\", "\\\\").replace("'", "\\'")
    stored = f"now64(3) - INTERVAL {age_days} DAY"
    command(gateway, f"""INSERT INTO inferences (inference_id, project_id, trace_id, timestamp, end_timestamp,
        request_model, input_tokens, input_preview, output_preview, attributes, ingested_at)
        VALUES (generateUUIDv4(), '{p}', '{tag}', now64(9), now64(9), 'm', 7, 'prompt {tag}', 'answer {tag}',
                map('k', 'v'), {stored})""")
    command(gateway, f"""INSERT INTO messages (inference_id, project_id, timestamp, direction, `index`, role,
        content, ingested_at) VALUES (generateUUIDv4(), '{p}', now64(9), 'input', 0, 'user', 'msg {tag}', {stored})""")
    command(gateway, f"""INSERT INTO spans (trace_id, span_id, project_id, name, start_time, end_time, attributes,
        events, ingested_at) VALUES ('{tag}', '{tag}', '{p}', 'span {tag}', now64(9), now64(9), map('k', 'v'),
        '[{{"name": "e"}}]', {stored})""")
    command(gateway, f"""INSERT INTO logs (project_id, timestamp, body, attributes, ingested_at)
        VALUES ('{p}', now64(9), 'log {tag}', map('k', 'v'), {stored})""")
    command(gateway, f"""INSERT INTO feedback (feedback_id, inference_id, project_id, timestamp, kind, name, value,
        comment, ingested_at) VALUES (generateUUIDv4(), generateUUIDv4(), '{p}', now64(9), 'rating', 'quality', 4,
        'comment {tag}', {stored})""")
    command(gateway, f"""INSERT INTO metric_points (project_id, metric_name, timestamp, value, ingested_at)
        VALUES ('{p}', 'metric {tag}', now64(9), 1, {stored})""")


def test_rows_past_their_ttl_disappear_and_numbers_outlive_content(gateway: RunningGateway,
                                                                    keys: dict[str, str]) -> None:
    for project, ages in ((SHORT, (0, 5, 20)), (OTHER, (5, 20, 40))):
        for age in ages:
            _insert_aged(gateway, project, age, f"{project[:5]}-{age}")
    # Sent today about a year-old span: retention counts from storage, so it stays.
    span = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "ab" * 16, "spanId": "00000000000000ab", "name": "chat m",
        "startTimeUnixNano": "1764150000000000000", "endTimeUnixNano": "1764150001000000000", "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
            {"key": "gen_ai.prompt", "value": {"stringValue": "hello"}}]}]}]}]}).encode()
    assert post_otlp(gateway.http_url, "traces", span, "json", project=OTHER).status == 200
    gateway.settle()

    status, stored = call(gateway, "PUT", "/api/v1/retention", keys["admin"],
                          {"project_id": SHORT, "content_days": 2, "numbers_days": 10, "spans_days": 1})
    assert status == 200, stored
    assert stored == {"project_id": SHORT, "content_days": 2, "numbers_days": 10, "spans_days": 1}
    force_merges(gateway)

    def rows(sql: str, project: str) -> list[tuple]:
        return [tuple(r.values()) for r in gateway.query(sql + " ORDER BY 1", p=project)]

    # Content: message rows go at content_days; the inference rows keep their numbers, blanked.
    assert rows("SELECT content FROM messages WHERE project_id = {p:String}", SHORT) == [("msg short-0",)]
    assert rows("SELECT trace_id, input_preview, output_preview, attributes, input_tokens FROM inferences FINAL "
                "WHERE project_id = {p:String}", SHORT) == [
        ("short-0", "prompt short-0", "answer short-0", {"k": "v"}, 7), ("short-5", "", "", {}, 7)]
    assert rows("SELECT comment FROM feedback WHERE project_id = {p:String}", SHORT) == [("",), ("comment short-0",)]
    # Numbers: kept 10 days (the 20-day-old rows are gone).
    assert rows("SELECT metric_name FROM metric_points WHERE project_id = {p:String}", SHORT) == [
        ("metric short-0",), ("metric short-5",)]
    # Span detail: 1 day.
    assert rows("SELECT name FROM spans WHERE project_id = {p:String}", SHORT) == [("span short-0",)]
    assert rows("SELECT body FROM logs WHERE project_id = {p:String}", SHORT) == [("log short-0",)]

    # The other project keeps the defaults: content 30, numbers 400, spans 14.
    # ('hello': the message of the year-old span sent today, below.)
    assert rows("SELECT content FROM messages WHERE project_id = {p:String}", OTHER) == [
        ("hello",), ("msg other-20",), ("msg other-5",)]
    assert rows("SELECT trace_id, input_preview FROM inferences FINAL WHERE project_id = {p:String} "
                "AND trace_id LIKE 'other-%'", OTHER) == [
        ("other-20", "prompt other-20"), ("other-40", ""), ("other-5", "prompt other-5")]
    assert rows("SELECT name, attributes, events FROM spans WHERE project_id = {p:String} AND name LIKE 'span %'",
                OTHER) == [("span other-5", {"k": "v"}, '[{"name": "e"}]')]
    assert rows("SELECT body FROM logs WHERE project_id = {p:String}", OTHER) == [("log other-5",)]
    assert len(rows("SELECT metric_name FROM metric_points WHERE project_id = {p:String}", OTHER)) == 3
    # Stored today: kept, whatever its own timestamp says.
    assert gateway.scalar("SELECT count() FROM spans WHERE trace_id = {t:String}", t="ab" * 16) == 1
    # The rollups and the lookup were filled today: they stay while within numbers_days.
    for table in ("inference_stats_1m", "inference_stats_1h", "inference_stats_1d"):
        assert gateway.scalar(f"SELECT sum(requests) FROM {table} WHERE project_id = {{p:String}}", p=SHORT) == 3
        assert "transform(project_id" in table_ttl(gateway, table)
    assert gateway.scalar("SELECT count() FROM inference_lookup WHERE project_id = {p:String}", p=SHORT) == 3


def test_ttl_expressions_name_only_projects_that_differ(gateway: RunningGateway) -> None:
    store = RetentionStore(gateway._clients.get())
    settings = store.get_all()
    assert [p.project for p in settings.projects] == [SHORT]
    spans = table_ttl(gateway, "spans")
    assert r"toIntervalDay(transform(project_id, ['short-lived \'q\' \\ x'], CAST([1], 'Array(UInt16)'), " \
           "toUInt16(14)))" in spans
    # Re-applying what is stored is a no-op in effect.
    assert store.apply() == list(TABLES)
    assert table_ttl(gateway, "spans") == spans


def test_put_keeps_omitted_kinds_and_audits(gateway: RunningGateway, keys: dict[str, str]) -> None:
    status, stored = call(gateway, "PUT", "/api/v1/retention", keys["admin"], {"project_id": "alpha", "spans_days": 3})
    assert status == 200, stored
    assert stored == {"project_id": "alpha", "content_days": 30, "numbers_days": 400, "spans_days": 3}
    status, stored = call(gateway, "PUT", "/api/v1/retention", keys["admin"], {"project_id": "alpha",
                                                                               "content_days": 9})
    assert stored == {"project_id": "alpha", "content_days": 9, "numbers_days": 400, "spans_days": 3}
    status, audit = call(gateway, "GET", "/api/v1/audit?action=retention.set&project=alpha", keys["admin"])
    assert status == 200, audit
    assert [(e["target"], e["project"], e["result"]) for e in audit["items"]] == [("alpha", "alpha", "ok")] * 2
    assert audit["items"][0]["detail"] == "content_days=9 numbers_days=400 spans_days=3"


@pytest.mark.parametrize(("body", "field"), [
    ({"project_id": "p", "content_days": 0}, "content_days"),
    ({"project_id": "p", "numbers_days": -1}, "numbers_days"),
    ({"project_id": "p", "spans_days": 40000}, "spans_days"),
    ({"project_id": "p", "content_days": "30"}, "content_days"),
    ({"project_id": "p", "content_days": 1.5}, "content_days"),
    ({"project_id": "p", "content_days": 500}, "content_days"),  # more than numbers_days (400)
    ({"project_id": "p", "numbers_days": 10}, "content_days"),  # now less than content_days (30)
    ({"project_id": "p", "content_days": 5, "numbers_days": 10, "spans_days": 11}, "spans_days"),
    ({"project_id": "", "content_days": 5}, "project_id"),
    ({"project_id": "x" * 129, "content_days": 5}, "project_id"),
    ({"content_days": 5}, "project_id"),
    ({"project_id": "p", "colour": "red"}, "colour"),
])
def test_put_validation(gateway: RunningGateway, keys: dict[str, str], body: dict, field: str) -> None:
    status, answer = call(gateway, "PUT", "/api/v1/retention", keys["admin"], body)
    assert status == 400, answer
    assert field in answer["error"]["message"]
    assert not RetentionStore(gateway._clients.get()).get_all().has_own("p")


def test_roles_and_projects(gateway: RunningGateway, keys: dict[str, str]) -> None:
    body = {"project_id": "alpha-2", "content_days": 7}
    assert call(gateway, "PUT", "/api/v1/retention", keys["editor"], body)[0] == 403
    assert call(gateway, "GET", "/api/v1/retention", keys["editor"])[0] == 403
    assert call(gateway, "PUT", "/api/v1/retention", None, body)[0] == 401
    # An admin of some projects: theirs only, never the defaults.
    status, answer = call(gateway, "PUT", "/api/v1/retention", keys["alpha-admin"], {**body, "project_id": SHORT})
    assert status == 403, answer
    status, answer = call(gateway, "PUT", "/api/v1/retention", keys["alpha-admin"], {**body, "project_id": "*"})
    assert status == 403 and "defaults" in answer["error"]["message"]
    status, answer = call(gateway, "PUT", "/api/v1/retention", keys["alpha-admin"], body)
    assert status == 200, answer
    status, answer = call(gateway, "GET", "/api/v1/retention", keys["alpha-admin"])
    assert status == 200
    assert answer["projects"] == [
        {"project_id": "alpha", "content_days": 9, "numbers_days": 400, "spans_days": 3, "source": "project"},
        {"project_id": "alpha-2", "content_days": 7, "numbers_days": 400, "spans_days": 14, "source": "project"}]
    status, answer = call(gateway, "GET", "/api/v1/retention", keys["admin"])
    assert [p["project_id"] for p in answer["projects"]] == ["alpha", "alpha-2", SHORT]


def test_defaults_apply_to_projects_without_their_own(gateway: RunningGateway, keys: dict[str, str]) -> None:
    status, answer = call(gateway, "PUT", "/api/v1/retention", keys["admin"],
                          {"project_id": "*", "content_days": 20, "numbers_days": 300, "spans_days": 10})
    assert status == 200, answer
    store = RetentionStore(gateway._clients.get())
    assert store.get("never-configured") == RetentionPolicy(project="never-configured", content_days=20,
                                                            numbers_days=300, spans_days=10)
    # 'alpha' keeps its own content days (9): it is named in the content expression, with 20 the default.
    ttl = table_ttl(gateway, "messages")
    assert "toUInt16(20)" in ttl and "'alpha'" in ttl
    # Unsetting a project's own policy: it follows the defaults again.
    assert store.unset("alpha-2") and not store.unset("alpha-2")
    assert store.get("alpha-2").content_days == 20
    # Unsetting the defaults: back to the built-in ones.
    assert store.unset("*")
    assert store.get_all().defaults == BUILTIN_DEFAULTS
    assert "toUInt16(30)" in table_ttl(gateway, "messages")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update({"OTELGW_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}", "OTELGW_DATA_DIR": str(tmp_path / "data")})
    return subprocess.run([sys.executable, "-m", "otelgw", "retention", *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)


def test_cli_round_trip(tmp_path: Path) -> None:
    out = _cli(tmp_path, "set", "--project", "p1", "--content-days", "5", "--spans-days", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "p1\t5\t400\t2"
    out = _cli(tmp_path, "set", "--project", "p1", "--numbers-days", "3")
    assert out.returncode == 2 and "content_days" in out.stderr
    out = _cli(tmp_path, "set", "--project", "*", "--numbers-days", "365")
    assert out.returncode == 0, out.stderr
    out = _cli(tmp_path, "show", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "defaults": {"project_id": "*", "content_days": 30, "numbers_days": 365, "spans_days": 14},
        "projects": [{"project_id": "p1", "content_days": 5, "numbers_days": 400, "spans_days": 2}]}
    out = _cli(tmp_path, "show")
    assert out.stdout.splitlines()[1:] == ["* (defaults)\t30\t365\t14", "p1\t5\t400\t2"]
    out = _cli(tmp_path, "apply")
    assert out.returncode == 0 and "messages" in out.stdout, out.stderr
    out = _cli(tmp_path, "unset", "--project", "p1")
    assert out.returncode == 0 and out.stdout.strip() == "p1\t30\t365\t14", out.stderr
    out = _cli(tmp_path, "unset", "--project", "p1")
    assert out.returncode == 1
    out = _cli(tmp_path, "set", "--project", "p1")
    assert out.returncode == 2
    out = _cli(tmp_path, "set", "--project", "p1", "--content-days", "soon")
    assert out.returncode == 2 and "soon" in out.stderr


def test_on_cluster_statements_parse(gateway: RunningGateway) -> None:
    policies = [RetentionPolicy(project="a", content_days=3, numbers_days=9, spans_days=2)]
    for statement in ttl_statements(BUILTIN_DEFAULTS, policies, cluster="{cluster}").values():
        assert " ON CLUSTER '{cluster}' " in statement
        gateway.query(f"EXPLAIN AST {statement}")


def test_hundreds_of_project_policies_still_apply(chdb_path: Path) -> None:
    """Each differing project's name is in each column's TTL: 600 policies with long names make a
    multi-MB ALTER of `inferences`, past ClickHouse's default max_query_size (256 KiB, counted in
    bytes: the names here are mostly 3-byte characters), and every change after that failed."""
    from datetime import UTC, datetime

    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.migrate import apply_migrations

    clients = ClientFactory(DSN(f"chdb://{chdb_path}?database=t_retention_many"))
    try:
        client = clients.get()
        apply_migrations(client)
        now = datetime.now(UTC)
        names = [f"project-{i:04d}-" + "数据" * 55 for i in range(600)]
        client.insert("project_retention", [[n, 7, 90, 3, False, "test", now] for n in names],
                      column_names=["project_id", "content_days", "numbers_days", "spans_days", "deleted",
                                    "updated_by", "updated_at"])
        store = RetentionStore(client)
        stored = store.get_all()
        assert max(len(s) for s in ttl_statements(stored.defaults, stored.projects).values()) > 262_144
        store.set(RetentionPolicy(project="one-more", content_days=5, numbers_days=60, spans_days=2))
        ttl = client.command("SHOW CREATE TABLE inferences")
        assert names[-1] in ttl and "one-more" in ttl
    finally:
        clients.close()
