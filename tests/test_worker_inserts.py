"""`worker_inserts`: with a ClickHouse server DSN and worker processes, each worker inserts the
rows it mapped, named by its chunk's log range (`chunks.log`), and the gateway process's writer
only inserts what is left (tail-sampled spans, rows a worker could not insert). Against the
ClickHouse-HTTP test double, through real `otelgw serve` processes:

- the rows land once, the workers inserted them, /api/v1/status and /metrics count them;
- `kill -9` after the workers inserted but before anything was checkpointed: the restart rebuilds
  the same chunks from `chunks.log`, ClickHouse drops the repeated inserts, not one row (or rollup
  count) twice — and without `chunks.log` the same crash does store rows twice (the control that
  shows the test can see it);
- the store down while workers insert: their chunks fall back to the writer, which inserts
  them under the same tokens once the store is back; nothing lost, nothing twice.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import clickhouse_connect
import pytest
from chserver import ChServer
from gateway_process import GatewayProcess
from otlp_client import post
from test_overload import genai_request

from otelgw.config import Config, worker_inserts_on

PER_REQUEST = 100


def _gateway(workdir: Path, server: ChServer, database: str, **settings: str) -> GatewayProcess:
    return GatewayProcess(workdir, clickhouse_dsn=server.dsn(database), workers="2", worker_inserts="auto",
                          **settings)


def _counts(server: ChServer, database: str) -> dict[str, int]:
    """Rows as stored, before any merge (no FINAL): a row inserted twice counts twice."""
    client = clickhouse_connect.get_client(dsn=server.dsn(database))
    one = client.query("SELECT (SELECT count() FROM inferences), (SELECT uniqExact(span_id) FROM inferences), "
                       "(SELECT count() FROM messages), (SELECT count() FROM spans), "
                       "(SELECT sum(requests) FROM inference_stats_1m)").result_rows[0]
    return dict(zip(("inferences", "unique", "messages", "spans", "rollup_requests"), map(int, one), strict=True))


def _send(gateway: GatewayProcess, requests: int) -> int:
    for r in range(requests):
        assert post(f"{gateway.http_url}/v1/traces", genai_request(1 + r * PER_REQUEST, PER_REQUEST, 200)).status == 200
    return requests * PER_REQUEST


def _drained(gateway: GatewayProcess) -> bool:
    return gateway.status()["pipeline"]["wal"]["pending_records"] == 0


def test_workers_insert_their_rows_once(tmp_path: Path) -> None:
    server = ChServer(tmp_path / "clickhouse").start()
    gateway = _gateway(tmp_path / "gw", server, "direct", flush_interval_ms="200")
    try:
        gateway.start()
        spans = _send(gateway, 8)
        gateway.wait(lambda: _drained(gateway), 60, "drained")
        status = gateway.status()
        assert status["pipeline"]["worker_inserted_chunks"] >= 1
        assert status["pipeline"]["worker_insert_fallbacks"] == 0
        # Counted as written although the gateway process's writer never saw them.
        assert status["writer"]["rows_written"]["inferences"] == spans
        assert status["writer"]["rows_written"]["messages"] == spans
        with urllib.request.urlopen(f"{gateway.api_url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert f'otelgw_writer_rows_written_total{{table="inferences"}} {float(spans)}' in metrics
        assert "otelgw_worker_insert_fallbacks_total 0.0" in metrics
        assert "otelgw_worker_inserted_chunks_total 0.0" not in metrics
        assert gateway.terminate() == 0
        assert (tmp_path / "gw" / "data" / "wal" / "chunks.log").exists()
        assert _counts(server, "direct") == {"inferences": spans, "unique": spans, "messages": spans,
                                             "spans": spans, "rollup_requests": spans}
    finally:
        gateway.kill()
        server.stop()


@pytest.mark.parametrize("keep_chunk_log", [True, False], ids=["chunks.log", "without chunks.log (control)"])
def test_kill_after_worker_inserts_replays_without_duplicates(tmp_path: Path, keep_chunk_log: bool) -> None:
    server = ChServer(tmp_path / "clickhouse").start()
    database = "crash"
    # The writer never flushes before the kill, so nothing is checkpointed: the restart replays
    # every record although the workers already inserted its rows.
    gateway = _gateway(tmp_path / "gw", server, database, flush_interval_ms="600000")
    try:
        gateway.start()
        spans = _send(gateway, 6)
        gateway.wait(lambda: _counts(server, database)["inferences"] == spans, 60, "worker inserts")
        assert gateway.status()["pipeline"]["wal"]["checkpoint_seq"] == 0
        gateway.kill()
        chunk_log = tmp_path / "gw" / "data" / "wal" / "chunks.log"
        assert chunk_log.read_text().strip()
        if not keep_chunk_log:
            chunk_log.unlink()
        restarted = _gateway(tmp_path / "gw", server, database, flush_interval_ms="200")
        gateway = restarted
        gateway.start()
        gateway.wait(lambda: _drained(gateway) and gateway.status()["pipeline"]["replayed"], 60, "replayed")
        assert gateway.terminate() == 0
        counts = _counts(server, database)
        assert counts["unique"] == spans
        if keep_chunk_log:
            assert counts == {"inferences": spans, "unique": spans, "messages": spans, "spans": spans,
                              "rollup_requests": spans}
        else:
            # Replayed as new chunks: other tokens, so ClickHouse stores them again (a merge of the
            # ReplacingMergeTree tables would fold them; the rollups would keep counting twice).
            assert counts["inferences"] > spans and counts["rollup_requests"] > spans
    finally:
        gateway.kill()
        server.stop()


def test_store_down_during_worker_inserts_falls_back_to_the_writer(tmp_path: Path) -> None:
    server = ChServer(tmp_path / "clickhouse").start()
    database = "outage"
    gateway = _gateway(tmp_path / "gw", server, database, flush_interval_ms="200")
    try:
        gateway.start()
        first = _send(gateway, 2)
        gateway.wait(lambda: _drained(gateway), 60, "drained")
        server.kill()
        for r in range(2, 6):
            assert post(f"{gateway.http_url}/v1/traces",
                        genai_request(1 + r * PER_REQUEST, PER_REQUEST, 200)).status == 200
        gateway.wait(lambda: gateway.status()["pipeline"]["worker_insert_fallbacks"] >= 1, 60, "a fallback")
        time.sleep(1)  # the writer retries meanwhile
        server.start()
        gateway.wait(lambda: _drained(gateway), 60, "drained after the outage")
        assert gateway.terminate() == 0
        spans = first + 4 * PER_REQUEST
        assert _counts(server, database) == {"inferences": spans, "unique": spans, "messages": spans,
                                             "spans": spans, "rollup_requests": spans}
    finally:
        gateway.kill()
        server.stop()


def test_worker_inserts_setting() -> None:
    server = "http://localhost:8123/otelgw"
    assert not worker_inserts_on(Config(clickhouse_dsn=server), workers=2)  # off by default
    assert worker_inserts_on(Config(clickhouse_dsn=server, worker_inserts="auto"), workers=2)
    assert not worker_inserts_on(Config(clickhouse_dsn=server, worker_inserts="auto"), workers=1)  # a thread
    # Embedded chDB: one process owns the directory.
    assert not worker_inserts_on(Config(worker_inserts="auto"), workers=2)
    assert Config(worker_inserts="sometimes").validate() == ["worker_inserts: 'sometimes' is not auto or off"]
