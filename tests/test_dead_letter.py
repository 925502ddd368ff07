"""Dead letters: a record the mapper failed on is kept with its project and arrival time, stays
dead-lettered across a crash and replay, and lands once when replayed through the API
(GET /api/v1/dead-letter, POST /api/v1/dead-letter/replay)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import RunningGateway, start_gateway, wait_until
from otlp_client import call_api, post_otlp

from otelgw.store.keys import KeyStore


def _logs_body(tag: str, count: int) -> bytes:
    records = [{"timeUnixNano": str(1_764_150_000_000_000_000 + i), "body": {"stringValue": f"{tag} {i}"}}
               for i in range(count)]
    return json.dumps({"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "dead-letter-test"}}]},
        "scopeLogs": [{"logRecords": records}]}]}).encode()


def _fail_mapping(gateway: RunningGateway, seqs: set[int]) -> None:
    """The mapper fails on these records (as a mapper bug would)."""
    mapping = gateway.gateway.pipeline.mapping
    real = mapping.map

    async def fail(records, prefix, token_range, fold_across=True):
        chunk = await real(records, prefix, token_range, fold_across)
        for mapped in chunk.records:
            if mapped.seq in seqs:
                mapped.blocks, mapped.rows, mapped.error = {}, {}, "simulated mapper failure"
        return chunk

    mapping.map = fail


class _DownStore:
    """The writer's clients while ClickHouse is unreachable: nothing is inserted."""

    def get(self) -> Any:
        raise ConnectionError("store down (test)")

    def discard(self) -> None:
        pass


def _bodies(gateway: RunningGateway) -> list[str]:
    return [r["body"] for r in gateway.query("SELECT body FROM logs ORDER BY body")]


def test_a_dead_lettered_record_stays_so_across_a_crash_and_lands_once_when_replayed(
        chdb_path: Path, tmp_path: Path) -> None:
    first = start_gateway(chdb_path, "t_dead_letter", tmp_path, shutdown_timeout_s=2.0)
    try:
        _fail_mapping(first, {2})
        # Nothing reaches ClickHouse before the "crash": the replay builds every block afresh, so
        # a record that mapped now would land beside its dead-letter file.
        first.gateway.writer._clients = _DownStore()
        sent_ns = time.time_ns()
        for tag in ("a", "b", "c"):
            assert post_otlp(first.http_url, "logs", _logs_body(tag, 5), "json", project="proj-a").status == 200
        wait_until(lambda: first.gateway.pipeline.stats.map_errors == 1, timeout=30)
        wal_id = first.gateway.wal.id
    finally:
        assert not first.stop()  # the store is down: the records stay in the log
    dead = tmp_path / "dead-letter" / f"record-{wal_id}-2-logs.pb"
    meta = json.loads(dead.with_suffix(".json").read_bytes())
    assert (meta["project"], meta["signal"], meta["seq"], meta["wal_id"]) == ("proj-a", "logs", 2, wal_id)
    assert sent_ns <= meta["received_ns"] <= time.time_ns() and "simulated mapper failure" in meta["error"]

    second = start_gateway(chdb_path, "t_dead_letter", tmp_path)
    try:
        wait_until(lambda: second.gateway.pipeline.replayed, timeout=30)
        second.settle()
        # Record 2 maps now, but stays dead-lettered: its rows are not stored by the replay.
        assert _bodies(second) == [f"{t} {i}" for t in "ac" for i in range(5)]
        assert dead.exists() and second.gateway.pipeline.stats.map_errors == 0

        status, listed = call_api(second.api_url, "GET", "/api/v1/dead-letter")
        assert status == 200
        (entry,) = listed["files"]
        assert entry["file"] == dead.name and entry["kind"] == "record" and entry["replayable"]
        assert (entry["project"], entry["signal"]) == ("proj-a", "logs")
        assert entry["received"].endswith("Z") and "simulated" in entry["error"]

        status, answer = call_api(second.api_url, "POST", "/api/v1/dead-letter/replay", body={})
        assert status == 200, answer
        assert answer == {"replayed": [{"file": dead.name, "project": "proj-a", "signal": "logs"}], "failed": []}
        second.settle()
        assert _bodies(second) == [f"{t} {i}" for t in "abc" for i in range(5)]  # once: logs is a MergeTree
        assert {r["project_id"] for r in second.query("SELECT DISTINCT project_id FROM logs")} == {"proj-a"}
        assert not dead.exists() and (tmp_path / "dead-letter" / "replayed" / dead.name).exists()
        assert call_api(second.api_url, "GET", "/api/v1/dead-letter")[1]["files"] == []

        # Replayed again by name: it is gone, so nothing is taken twice.
        status, answer = call_api(second.api_url, "POST", "/api/v1/dead-letter/replay", body={"files": [dead.name]})
        assert status == 200 and answer["replayed"] == [] and "no dead-lettered record" in answer["failed"][0]["reason"]
        second.settle()
        assert len(_bodies(second)) == 15
        assert second._call(second.gateway.auditor.flush())
        assert second.query("SELECT project, target FROM audit_log WHERE action = 'dead_letter.replay'") == [
            {"project": "proj-a", "target": dead.name}]
    finally:
        assert second.stop()


def test_replay_refusals_and_project_scoped_admins(chdb_path: Path, tmp_path: Path) -> None:
    gateway = start_gateway(chdb_path, "t_dead_letter_scoped", tmp_path)
    try:
        _fail_mapping(gateway, {1, 2})
        assert post_otlp(gateway.http_url, "logs", _logs_body("alpha", 2), "json", project="alpha").status == 200
        assert post_otlp(gateway.http_url, "logs", _logs_body("beta", 2), "json", project="beta").status == 200
        wait_until(lambda: gateway.gateway.pipeline.stats.map_errors == 2, timeout=30)
        wal_id = gateway.gateway.wal.id
        letters = tmp_path / "dead-letter"
        # One written by an older version: the request alone, no project on file.
        legacy = letters / f"record-{wal_id}-1-logs.pb"
        legacy.with_suffix(".json").unlink()
        (letters / "spans-x-1.jsonl").write_bytes(b'{"bad": 1}\n')  # rows ClickHouse refused
        del gateway.gateway.pipeline.mapping.map  # the cause is fixed

        store = KeyStore(gateway._clients.get())
        scoped = store.create(projects=["beta"], role="admin", ingest=False).key
        viewer = store.create(projects=[], role="viewer", ingest=False).key
        admin = store.create(projects=[], role="admin", ingest=False).key
        gateway.gateway.auth.reload()

        assert call_api(gateway.api_url, "GET", "/api/v1/dead-letter", viewer)[0] == 403
        assert call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", viewer, {})[0] == 403
        status, listed = call_api(gateway.api_url, "GET", "/api/v1/dead-letter", admin)
        assert status == 200
        assert {(e["file"], e["kind"], e.get("project")) for e in listed["files"]} == {
            (legacy.name, "record", None), (f"record-{wal_id}-2-logs.pb", "record", "beta"),
            ("spans-x-1.jsonl", "rows", None)}
        # A project's admin sees that project's records only.
        status, listed = call_api(gateway.api_url, "GET", "/api/v1/dead-letter", scoped)
        assert [e["file"] for e in listed["files"]] == [f"record-{wal_id}-2-logs.pb"]

        for body, code in (({"files": "x"}, "invalid_request"), ({"nope": 1}, "invalid_request")):
            status, answer = call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", admin, body)
            assert (status, answer["error"]["code"]) == (400, code)
        assert call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", scoped,
                        {"project": "beta"})[0] == 403
        # A gateway that cannot take it now (here: shutting down) leaves it where it was.
        gateway.gateway.pipeline._closing = True
        try:
            status, answer = call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", scoped, {})
        finally:
            gateway.gateway.pipeline._closing = False
        assert status == 200 and answer["replayed"] == [] and "retry later" in answer["failed"][0]["reason"]
        assert (letters / f"record-{wal_id}-2-logs.pb").exists() and (letters / f"record-{wal_id}-2-logs.json").exists()
        # The scoped admin names every file: only theirs is taken.
        status, answer = call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", scoped,
                                  {"files": [legacy.name, "spans-x-1.jsonl", "../etc/passwd",
                                             f"record-{wal_id}-2-logs.pb"]})
        assert status == 200
        assert [r["file"] for r in answer["replayed"]] == [f"record-{wal_id}-2-logs.pb"]
        assert [f["file"] for f in answer["failed"]] == [legacy.name, "spans-x-1.jsonl", "../etc/passwd"]
        # Without its project on file, a record waits for an admin of every project to name one.
        status, answer = call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", admin, {})
        assert answer["replayed"] == [] and "name it with 'project'" in answer["failed"][0]["reason"]
        status, answer = call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", admin, {"project": "alpha"})
        assert [r["project"] for r in answer["replayed"]] == ["alpha"]
        gateway.settle()
        assert {(r["project_id"], r["body"]) for r in gateway.query("SELECT project_id, body FROM logs")} == {
            ("alpha", "alpha 0"), ("alpha", "alpha 1"), ("beta", "beta 0"), ("beta", "beta 1")}
    finally:
        assert gateway.stop()
