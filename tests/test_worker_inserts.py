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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import clickhouse_connect
import pytest
from chserver import ChServer
from gateway_process import GatewayProcess
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_client import post
from test_overload import genai_request

from otelgw.config import Config, worker_inserts_on

PER_REQUEST = 100


def _gateway(workdir: Path, server: ChServer, database: str, **settings: str) -> GatewayProcess:
    # Every chunk inserted by its worker, however small (production: chunks of 4 MiB or more).
    return GatewayProcess(workdir, clickhouse_dsn=server.dsn(database), **{
        "workers": "2", "worker_inserts": "auto", "worker_insert_min_bytes": "1", **settings})


def _chunk_ranges(workdir: Path) -> list[tuple[int, int]]:
    text = (workdir / "data" / "wal" / "chunks.log").read_text()
    return [(int(a), int(b)) for a, b in (line.split() for line in text.splitlines() if line.strip())]


def _counts(server: ChServer, database: str) -> dict[str, int]:
    """Rows as stored, before any merge (no FINAL): a row inserted twice counts twice."""
    client = clickhouse_connect.get_client(dsn=server.dsn(database))
    one = client.query("SELECT (SELECT count() FROM inferences), (SELECT uniqExact(span_id) FROM inferences), "
                       "(SELECT count() FROM messages), (SELECT count() FROM spans), "
                       "(SELECT sum(requests) FROM inference_stats_1m)").result_rows[0]
    return dict(zip(("inferences", "unique", "messages", "spans", "rollup_requests"), map(int, one), strict=True))


def _once(spans: int) -> dict[str, int]:
    """`_counts` when each of `spans` GenAI spans is stored exactly once."""
    return dict.fromkeys(("inferences", "unique", "messages", "spans", "rollup_requests"), spans)


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
        # The checkpoint never stops inside a logged chunk (a replay rebuilds chunks whole).
        checkpoint = status["pipeline"]["wal"]["checkpoint_seq"]
        assert checkpoint > 0 and not [c for c in _chunk_ranges(tmp_path / "gw") if c[0] <= checkpoint < c[1]]
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
        assert _counts(server, "direct") == _once(spans)
    finally:
        gateway.kill()
        server.stop()


@pytest.mark.parametrize(("keep_chunk_log", "restart"), [
    (True, {}),
    # Restarted with worker inserts off and mapping on a thread: the logged chunks are rebuilt
    # all the same and the writer inserts them under the chunks' tokens (the path a chunk whose
    # worker died takes too).
    (True, {"worker_inserts": "off", "workers": "1"}),
    (False, {}),
], ids=["chunks.log", "chunks.log, restarted without worker inserts", "without chunks.log (control)"])
def test_kill_after_worker_inserts_replays_without_duplicates(tmp_path: Path, keep_chunk_log: bool,
                                                              restart: dict[str, str]) -> None:
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
        gateway = _gateway(tmp_path / "gw", server, database, **{"flush_interval_ms": "200", **restart})
        gateway.start()
        gateway.wait(lambda: _drained(gateway) and gateway.status()["pipeline"]["replayed"], 60, "replayed")
        assert gateway.terminate() == 0
        counts = _counts(server, database)
        assert counts["unique"] == spans
        if keep_chunk_log:
            assert counts == _once(spans)
        else:
            # Replayed as new chunks: other tokens, so ClickHouse stores them again (a merge of the
            # ReplacingMergeTree tables would fold them; the rollups would keep counting twice).
            assert counts["inferences"] > spans and counts["rollup_requests"] > spans
    finally:
        gateway.kill()
        server.stop()


def test_a_chunk_the_log_kept_only_in_part_is_rebuilt_under_its_tokens(tmp_path: Path) -> None:
    """fsync off and a power loss after the workers inserted a chunk: the log comes back without
    the chunk's last record. The records left are rebuilt as that chunk, under its tokens, so
    ClickHouse drops them (they went in with the chunk), and new records get new numbers."""
    server = ChServer(tmp_path / "clickhouse").start()
    database = "torn"
    gateway = _gateway(tmp_path / "gw", server, database, flush_interval_ms="600000", wal_fsync_ms="off")
    try:
        gateway.start()
        spans = _send(gateway, 6)
        gateway.wait(lambda: _counts(server, database)["inferences"] == spans, 60, "worker inserts")
        gateway.kill()
        wal = tmp_path / "gw" / "data" / "wal"
        assert _chunk_ranges(tmp_path / "gw")[-1][1] == 6
        segment = sorted(wal.glob("*.seg"))[-1]
        with open(segment, "r+b") as fh:  # the last record torn: lost, as after a power loss
            fh.truncate(segment.stat().st_size - 100)
        gateway = _gateway(tmp_path / "gw", server, database, flush_interval_ms="200")
        gateway.start()
        gateway.wait(lambda: _drained(gateway) and gateway.status()["pipeline"]["replayed"], 60, "replayed")
        assert gateway.status()["pipeline"]["wal"]["durable_seq"] == 5
        more = genai_request(1 + 6 * PER_REQUEST, PER_REQUEST, 200)
        assert post(f"{gateway.http_url}/v1/traces", more).status == 200
        gateway.wait(lambda: _drained(gateway), 60, "drained")
        assert gateway.status()["pipeline"]["wal"]["durable_seq"] == 7  # 6 is named by chunks.log
        assert gateway.terminate() == 0
        total = spans + PER_REQUEST
        assert _counts(server, database) == {"inferences": total, "unique": total, "messages": total,
                                             "spans": total, "rollup_requests": total}
    finally:
        gateway.kill()
        server.stop()


def test_kill_under_load_with_tail_sampling_replays_without_duplicates(tmp_path: Path) -> None:
    """The default sampler holds the checkpoint back to the oldest record with an undecided trace,
    which may be in the middle of a chunk whose rows its worker inserted: the checkpoint stops at
    the chunk's start instead, so a replay rebuilds the chunk whole and its tokens repeat
    (without that, this test stores 100-600 rows twice). Tail-sampled spans are written without
    tokens and rely on their ReplacingMergeTree key: not counted here."""
    server = ChServer(tmp_path / "clickhouse").start()
    database = "sampled"
    policies = tmp_path / "sampling.toml"
    policies.write_text('decision_wait_s = 0.5\n\n[[policies]]\nname = "all"\ntype = "always_sample"\n')
    settings = {"flush_interval_ms": "100", "tail_sampling": "true", "sampling_file": str(policies)}
    gateway = _gateway(tmp_path / "gw", server, database, **settings)
    acked = 0
    try:
        gateway.start()
        def send(r: int) -> int:
            request = ExportTraceServiceRequest.FromString(genai_request(1 + r * PER_REQUEST, PER_REQUEST, 200))
            if r % 8 == 4:
                # One long trace with a span in the middle of every burst: undecided until the
                # end, it holds the sampler's floor (and the checkpoint) inside the first chunk.
                request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x7e" * 16
            body = request.SerializeToString()
            return PER_REQUEST if post(f"{gateway.http_url}/v1/traces", body).status == 200 else 0

        # Bursts of concurrent requests (chunks of several records), decided and committed while
        # later bursts arrive, so the checkpoint moves while chunks are in flight.
        with ThreadPoolExecutor(8) as senders:
            for burst in range(8):
                acked += sum(senders.map(send, range(burst * 8, burst * 8 + 8)))
                time.sleep(0.3)
        checkpoint = gateway.status()["pipeline"]["wal"]["checkpoint_seq"]
        gateway.kill()
        chunks = _chunk_ranges(tmp_path / "gw")
        # Held below the long trace's first span, and not inside its chunk: at its start.
        assert not [c for c in chunks if c[0] <= checkpoint < c[1]], (checkpoint, chunks)
        assert any(last > first for first, last in _chunk_ranges(tmp_path / "gw")), "no chunk of several records"
        gateway = _gateway(tmp_path / "gw", server, database, **settings)
        gateway.start()
        gateway.wait(lambda: _drained(gateway) and gateway.status()["pipeline"]["replayed"], 60, "replayed")
        assert gateway.terminate() == 0
        counts = _counts(server, database)
        assert counts["unique"] == acked
        assert (counts["inferences"], counts["messages"], counts["rollup_requests"]) == (acked, acked, acked)
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
        assert _counts(server, database) == _once(spans)
    finally:
        gateway.kill()
        server.stop()


def test_a_chunk_the_log_cannot_name_goes_to_the_writer(tmp_path: Path) -> None:
    """chunks.log refuses a line (and took it back out): that chunk is inserted by the writer
    under its own block tokens instead of stalling the consumer; a failure that may have left the
    line in the file is retried (the chunk keeps its tokens). Rows land once either way."""
    from conftest import start_gateway, wait_until

    from otelgw.pipeline.wal import CutNotLogged

    server = ChServer(tmp_path / "clickhouse").start()
    running = start_gateway(tmp_path, "refused", tmp_path / "gw", clickhouse_dsn=server.dsn("refused"),
                            workers=2, worker_inserts="auto", worker_insert_min_bytes=1, flush_interval_ms=200)
    try:
        chunk_log = running.gateway.pipeline._chunk_log
        real_append, refused = chunk_log.append, []

        def append(first: int, last: int) -> None:
            if len(refused) < 2:
                refused.append((first, last))
                if len(refused) == 2:
                    raise OSError(5, "Input/output error")  # unknown whether it is on disk: retried
                raise CutNotLogged("chunks.log: [Errno 28] No space left on device")
            real_append(first, last)

        chunk_log.append = append
        spans = 0
        for r in range(4):
            body = genai_request(1 + r * PER_REQUEST, PER_REQUEST, 200)
            assert post(f"{running.http_url}/v1/traces", body).status == 200
            spans += PER_REQUEST
            running.settle()
        stats = running.gateway.pipeline.stats
        assert len(refused) == 2 and stats.chunk_log_failures == 2
        # The retried range was logged and inserted by its worker; the one taken back was not.
        logged = [tuple(map(int, line.split())) for line in chunk_log.path.read_text().splitlines()]
        assert refused[1] in logged
        assert refused[0] not in logged and refused[0][0] not in {first for first, _ in logged}
        # One chunk a request: the first went to the writer, the other three to their workers.
        wait_until(lambda: stats.worker_inserted_chunks >= 3, timeout=30)
        assert stats.worker_inserted_chunks == 3
        metrics = urllib.request.urlopen(f"{running.api_url}/metrics", timeout=10).read().decode()
        assert "otelgw_chunk_log_failures_total 2.0" in metrics
    finally:
        stopped = running.stop()
    try:
        assert stopped
        assert _counts(server, "refused") == _once(spans)
    finally:
        server.stop()


def test_worker_inserts_setting() -> None:
    server = "http://localhost:8123/otelgw"
    assert not worker_inserts_on(Config(clickhouse_dsn=server), workers=2)  # off by default
    assert worker_inserts_on(Config(clickhouse_dsn=server, worker_inserts="auto"), workers=2)
    assert not worker_inserts_on(Config(clickhouse_dsn=server, worker_inserts="auto"), workers=1)  # a thread
    # Embedded chDB: one process owns the directory.
    assert not worker_inserts_on(Config(worker_inserts="auto"), workers=2)
    assert Config(worker_inserts="sometimes").validate() == ["worker_inserts: 'sometimes' is not auto or off"]
    assert Config(worker_insert_min_bytes=0).validate() == ["worker_insert_min_bytes: must be greater than 0"]
    # A chunk is at most 8 MiB: a larger minimum would silently turn worker inserts off.
    assert Config(worker_insert_min_bytes=16 * 1024 * 1024).validate() == [
        "worker_insert_min_bytes: at most 8388608 (the largest mapping chunk)"]
