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
        # Not while the log still holds it: after a restart, the log's copy would be mapped too.
        status, answer = call_api(first.api_url, "POST", "/api/v1/dead-letter/replay", body={})
        assert status == 200 and answer == {"replayed": [], "failed": [], "pending": 1}
        status, answer = call_api(first.api_url, "POST", "/api/v1/dead-letter/replay",
                                  body={"files": [f"record-{wal_id}-2-logs.pb"]})
        assert answer["replayed"] == [] and "still holds it" in answer["failed"][0]["reason"]
        assert call_api(first.api_url, "GET", "/api/v1/dead-letter")[1]["files"][0]["pending"] is True
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
        assert "pending" not in entry and listed["total"] == 1 and listed["directory"].endswith("dead-letter")
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
        gateway.settle()  # the checkpoint passes them: they can be replayed
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
        # A project's admin sees that project's records only (and not where the directory is).
        status, listed = call_api(gateway.api_url, "GET", "/api/v1/dead-letter", scoped)
        assert [e["file"] for e in listed["files"]] == [f"record-{wal_id}-2-logs.pb"] and "directory" not in listed
        status, listed = call_api(gateway.api_url, "GET", "/api/v1/dead-letter?limit=1", admin)
        assert status == 200 and len(listed["files"]) == 1 and listed["total"] == 3
        assert call_api(gateway.api_url, "GET", "/api/v1/dead-letter?limit=0", admin)[0] == 400

        for body in ({"files": "x"}, {"nope": 1}, {"project": "bad\nname"}, {"files": ["x"] * 10_001}):
            status, answer = call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", admin, body)
            assert (status, answer["error"]["code"]) == (400, "invalid_request")
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
        # Names no record has: each is reported, none answers 500.
        (letters / "record-x-1-logs.pb").mkdir()
        odd = ["record-\u0000.pb", "record-" + "9" * 300 + "-1-logs.pb", "record-x-1-logs.pb", "record-x-1-spans.pb"]
        status, answer = call_api(gateway.api_url, "POST", "/api/v1/dead-letter/replay", admin, {"files": odd})
        assert status == 200 and answer["replayed"] == [] and [f["file"] for f in answer["failed"]] == odd
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


def test_a_replayed_record_is_still_known_as_dead_lettered(tmp_path: Path) -> None:
    """The log's own copy of a replayed record must not land beside its replay (a restart before
    the checkpoint passed it); a number handed out again after a power loss is another record."""
    from otelgw.pipeline.dead_letter import DeadLetters
    from otelgw.pipeline.request import Signal
    from otelgw.pipeline.wal import WalRecord

    letters = DeadLetters(tmp_path)
    record = WalRecord(7, Signal.TRACES, "p", 123, b"request")
    letters.write_record(record, "w1", "boom")
    assert letters.was_dead_lettered("w1", record, letters.names())
    letters.move(letters.record_path("w1", 7, Signal.TRACES).name, replayed=True)
    names = letters.names()
    assert letters.was_dead_lettered("w1", record, names) and not letters.record_path("w1", 7, Signal.TRACES).exists()
    assert not letters.was_dead_lettered("w1", WalRecord(7, Signal.TRACES, "p", 456, b"another"), names)
    assert not letters.was_dead_lettered("w2", record, names) and not letters.was_dead_lettered(
        "w1", WalRecord(8, Signal.TRACES, "p", 123, b"request"), names)
    assert letters.entries() == []  # replayed/ is not listed
