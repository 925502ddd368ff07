"""The write-ahead log on its own (records, torn tails, cursor, checkpoints, cut log) and the
replay path with real ClickHouse: a crash between insert and checkpoint does not double rows."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from otelgw.pipeline.request import Signal
from otelgw.pipeline.wal import (
    CutLog,
    WalError,
    WalFull,
    WalRecord,
    WriteAheadLog,
    decode_record,
    encode_record,
    iter_segment,
)


def run(coro):
    return asyncio.run(coro)


def test_record_round_trip_and_checksum() -> None:
    record = WalRecord(42, Signal.LOGS, "team-ä", 1_764_150_000_000_000_001, b"\x0a\x00" * 100)
    data = encode_record(record)
    (start, end, back), = list(iter_segment(data))
    assert (start, end, back) == (0, len(data), record)
    corrupt = bytearray(data)
    corrupt[20] ^= 0xFF
    assert list(iter_segment(bytes(corrupt)))[0][2] is None
    with pytest.raises(ValueError):
        decode_record(data[2:-1])


async def _append(wal: WriteAheadLog, count: int, size: int = 100, signal: Signal = Signal.TRACES) -> list[int]:
    seqs, futures = [], []
    for _ in range(count):
        seq, future = wal.append(signal, "p", 1, os.urandom(size))
        seqs.append(seq)
        futures.append(future)
    await asyncio.gather(*futures)
    return seqs


@pytest.mark.parametrize("fsync_ms", [None, 0, 10])
def test_group_commit_modes(tmp_path: Path, fsync_ms: int | None) -> None:
    async def scenario() -> None:
        wal = WriteAheadLog(tmp_path, fsync_ms=fsync_ms, max_bytes=1 << 30)
        wal.recover()
        await wal.start()
        assert await _append(wal, 50) == list(range(1, 51))
        assert wal.durable_seq == 50
        # Concurrent appends share fsyncs (group commit), except with fsync off.
        assert wal.stats.fsyncs == (0 if fsync_ms is None else wal.stats.fsyncs)
        if fsync_ms is not None:
            assert 1 <= wal.stats.fsyncs < 50
        await wal.close()

    run(scenario())


def test_torn_tail_is_truncated_and_the_rest_replays(tmp_path: Path) -> None:
    async def write() -> None:
        wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30, segment_bytes=4096)
        wal.recover()
        await wal.start()
        await _append(wal, 100, size=300)  # several segments
        await wal.close()

    run(write())
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 3
    last = segments[-1]
    last.write_bytes(last.read_bytes()[:-7])  # a crash in the middle of the last write

    async def reopen() -> list[int]:
        wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30, segment_bytes=4096)
        wal.recover()
        await wal.start()
        assert wal.stats.truncated_tails == 1
        cursor = wal.cursor(0)
        seqs = [r.seq for r in cursor.read(wal.durable_seq, 1 << 30)]
        # Appending continues after the last good record.
        seq, future = wal.append(Signal.TRACES, "p", 1, b"next")
        await future
        assert seq == seqs[-1] + 1
        assert [r.seq for r in cursor.read(wal.durable_seq)] == [seq]
        cursor.close()
        await wal.close()
        return seqs

    assert run(reopen()) == list(range(1, 100))


def test_corrupt_record_in_the_middle_is_dropped_alone(tmp_path: Path) -> None:
    async def write() -> None:
        wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
        wal.recover()
        await wal.start()
        await _append(wal, 10, size=50)
        await wal.close()

    run(write())
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    record_size = len(data) // 10
    data[record_size * 6 + 30] ^= 0x01
    segment.write_bytes(bytes(data))
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
    wal.recover()
    # (It used to truncate the segment there: records 8-10, acknowledged and intact, were lost.)
    assert wal.durable_seq == 10 and wal.stats.truncated_tails == 0  # nothing truncated: dropped alone
    assert [r.seq for r in wal.cursor(0).read(10)] == [1, 2, 3, 4, 5, 6, 8, 9, 10]


def test_cursor_tails_checkpoint_deletes_and_full_refuses(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=20_000, segment_bytes=4096)
        wal.recover()
        await wal.start()
        cursor = wal.cursor(0)
        await _append(wal, 10, size=500)
        assert [r.seq for r in cursor.read(wal.durable_seq)] == list(range(1, 11))
        assert cursor.read(wal.durable_seq) == []
        await _append(wal, 5, size=500)
        assert [r.seq for r in cursor.read(wal.durable_seq, max_bytes=1000)] == [11, 12]
        assert [r.seq for r in cursor.read(wal.durable_seq)] == [13, 14, 15]
        before = len(list(tmp_path.glob("*.seg")))
        wal.checkpoint(12)
        assert len(list(tmp_path.glob("*.seg"))) < before
        assert (tmp_path / "checkpoint").read_text() == "12"
        with pytest.raises(WalFull):
            await _append(wal, 100, size=500)
        cursor.close()
        await wal.close()
        reopened = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
        reopened.recover()
        assert reopened.checkpoint_seq == 12
        assert [r.seq for r in reopened.cursor(12).read(reopened.durable_seq)][:3] == [13, 14, 15]

    run(scenario())


def test_cut_log(tmp_path: Path) -> None:
    cuts = CutLog(tmp_path)
    for first, last in [(1, 5), (6, 9), (10, 30)]:
        cuts.append(first, last)
    cuts.append(10, 30)  # the same cut again (a replay) is written once
    with open(cuts.path, "ab") as fh:
        fh.write(b"31 40")  # torn last line ("31 400" was being written): never fsynced, no cut
    assert cuts.pending(5) == [(6, 9), (10, 30)]
    assert cuts.pending(7) == [(6, 9), (10, 30)]  # the checkpoint stopped inside a cut: kept
    assert cuts.highest() == 30
    cuts.prune(9, every=1)
    assert cuts.path.read_text() == "10 30\n"
    cuts.close()


def test_cut_log_after_a_torn_line_and_a_failed_append(tmp_path: Path) -> None:
    """A crash tore the last line: the next run's first cut must not be glued to it ("1" + "2 30"
    would read as 12-30). A write the file system refuses half-way (here the file size limit:
    a short write, then EFBIG) is taken back out and reported as `CutNotLogged`."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "cuts.log").write_bytes(b"1 5\n6 9\n1")  # torn: "10 11" was being written
    script = textwrap.dedent(f"""
        import resource, signal
        from otelgw.pipeline.wal import CutLog, CutNotLogged
        cuts = CutLog({str(tmp_path)!r})
        cuts.append(2, 30)
        size = cuts.path.stat().st_size
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 3, hard))
        try:
            cuts.append(31, 4000)
        except CutNotLogged as exc:
            print("refused", exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        cuts.append(31, 4001)
        cuts.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused cuts.log:")
    assert (tmp_path / "cuts.log").read_bytes() == b"1 5\n6 9\n2 30\n31 4001\n"
    assert CutLog(tmp_path).highest() == 4001


def test_cut_log_overlapping_cuts(tmp_path: Path) -> None:
    """fsync off and a power loss: records 8-10 of cut 1-10 were lost and renumbered, and 6-13 was
    cut in the next run. The newest cut of those records is the one to rebuild, and every number
    either names stays taken; a shorter cut with the same start (a rebuilt block flushed early at
    a stop) does not replace the original range."""
    cuts = CutLog(tmp_path)
    for first, last in [(1, 10), (6, 13), (14, 20), (14, 17)]:
        cuts.append(first, last)
    assert cuts.pending(5) == [(6, 13), (14, 20)]
    assert cuts.pending(12) == [(6, 13), (14, 20)]
    assert cuts.highest() == 20
    cuts.prune(5, every=1)
    assert cuts.pending(0) == [(6, 13), (14, 20)]
    cuts.close()


def test_a_cut_logged_again_by_a_replay_keeps_the_later_cuts(tmp_path: Path) -> None:
    """A replay re-cuts (1, 10) and logs it again: as an overlap it wiped every later cut, a second
    crash then cut those records anew under new tokens, and their rows were stored twice."""
    cuts = CutLog(tmp_path)
    for first, last in [(1, 10), (11, 20), (21, 30), (31, 40), (1, 10)]:
        cuts.append(first, last)
    assert cuts.pending(0) == [(1, 10), (11, 20), (21, 30), (31, 40)]
    cuts.close()


def test_a_damaged_checkpoint_file_replays_instead_of_refusing_to_start(tmp_path: Path) -> None:
    async def fill() -> None:
        wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
        wal.recover()
        await wal.start()
        for i in range(3):
            _, durable = wal.append(Signal.LOGS, "p", i, b"record %d" % i)
            await durable
        await wal.close()

    asyncio.run(fill())
    old_id = (tmp_path / "id").read_text()
    (tmp_path / "checkpoint").write_text("12x")  # disk damage: every start exited with a ValueError
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
    wal.recover()
    assert [r.request for r in wal.cursor(wal.checkpoint_seq).read(wal.durable_seq)] == [
        b"record 0", b"record 1", b"record 2"]
    # A new token prefix: numbers handed out again must not match blocks ClickHouse already has.
    assert wal.id != old_id


def _logs_body(start: int, count: int) -> bytes:
    import json

    records = [{"timeUnixNano": str(1_764_150_000_000_000_000 + i), "body": {"stringValue": f"line {i}"},
                "attributes": [{"key": "n", "value": {"intValue": str(i)}}]} for i in range(start, start + count)]
    return json.dumps({"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "replay-test"}}]},
        "scopeLogs": [{"logRecords": records}]}]}).encode()


def test_replay_after_crash_between_insert_and_checkpoint_stores_once(chdb_path: Path, tmp_path: Path) -> None:
    """Rows reach ClickHouse but the checkpoint never moves (as if killed right after the
    insert): the next start replays the same records in the same blocks with the same tokens,
    and ClickHouse keeps one copy. `logs` is a plain MergeTree, so a double would show."""
    from conftest import start_gateway
    from otlp_client import post_otlp

    first = start_gateway(chdb_path, "t_replay", tmp_path, batch_rows=100)
    first.gateway.pipeline._checkpoint = lambda seq: None  # the crash window, held open
    for start in range(0, 1000, 250):
        assert post_otlp(first.http_url, "logs", _logs_body(start, 250), "json").status == 200
    first.settle()
    assert first.scalar("SELECT count() FROM logs") == 1000
    assert first.gateway.wal.checkpoint_seq == 0
    first.stop()

    second = start_gateway(chdb_path, "t_replay", tmp_path, batch_rows=100)
    try:
        from conftest import wait_until

        wait_until(lambda: second.gateway.pipeline.replayed, timeout=30)
        second.settle()
        # Replayed: every block was inserted again, and deduplicated by its token.
        assert second.gateway.writer.stats.rows_written["logs"] == 1000
        assert second.scalar("SELECT count() FROM logs") == 1000
        assert second.scalar("SELECT uniqExact(body) FROM logs") == 1000
        assert second.gateway.wal.checkpoint_seq == 4
        # New traffic after the replay lands once too.
        assert post_otlp(second.http_url, "logs", _logs_body(1000, 10), "json").status == 200
        second.settle()
        assert second.scalar("SELECT count() FROM logs") == 1010
    finally:
        assert second.stop()


def test_replay_rebuilds_the_tail_of_a_block_the_checkpoint_stopped_inside(chdb_path: Path, tmp_path: Path) -> None:
    """The tail sampler's floor (or a logged chunk's start) can leave the checkpoint inside a
    block that went in whole: the replay rebuilds the block's tail under the block's logged
    range, so ClickHouse drops it instead of storing those rows twice."""
    from conftest import start_gateway, wait_until
    from otlp_client import post_otlp

    first = start_gateway(chdb_path, "t_straddle", tmp_path, flush_interval_ms=60_000)
    pipeline = first.gateway.pipeline
    real_checkpoint = pipeline._checkpoint
    pipeline._checkpoint = lambda seq: real_checkpoint(min(seq, 2))  # stops inside the block
    for start in range(0, 1000, 250):
        assert post_otlp(first.http_url, "logs", _logs_body(start, 250), "json").status == 200
    wait_until(lambda: pipeline._applied_seq == 4, timeout=30)
    assert first.gateway.writer.flush(30)
    wait_until(lambda: first.gateway.wal.checkpoint_seq == 2, timeout=30)
    assert first.scalar("SELECT count() FROM logs") == 1000
    assert CutLog(first.gateway.wal.dir).pending(2) == [(1, 4)]
    first.stop()

    second = start_gateway(chdb_path, "t_straddle", tmp_path)
    try:
        wait_until(lambda: second.gateway.pipeline.replayed, timeout=30)
        second.settle()
        assert second.scalar("SELECT count() FROM logs") == 1000  # records 3-4 not stored again
        assert second.scalar("SELECT uniqExact(body) FROM logs") == 1000
        assert second.gateway.wal.checkpoint_seq == 4
    finally:
        assert second.stop()


def test_a_cut_log_the_disk_refuses_is_retried(chdb_path: Path, tmp_path: Path) -> None:
    """The cut goes to disk before its insert; a full disk used to end the writer thread (nothing
    written again until a restart). Now it is retried like a store that is down."""
    from conftest import start_gateway, wait_until
    from otlp_client import post_otlp

    running = start_gateway(chdb_path, "t_cutlog_full", tmp_path)
    try:
        cuts = running.gateway.writer._cuts
        real_append, refusals = cuts.append, []

        def append(first: int, last: int) -> None:
            if len(refusals) < 2:
                refusals.append((first, last))
                raise OSError(28, "No space left on device")
            real_append(first, last)

        cuts.append = append
        assert post_otlp(running.http_url, "logs", _logs_body(0, 50), "json").status == 200
        wait_until(lambda: running.scalar("SELECT count() FROM logs") == 50, timeout=30)
        assert len(refusals) == 2
        # (Healthy again once its insert returned: the rows show a moment before that.)
        wait_until(lambda: running.gateway.writer.stats.healthy, timeout=10)
        assert running.gateway.writer._thread.is_alive()
        assert post_otlp(running.http_url, "logs", _logs_body(50, 10), "json").status == 200
        running.settle()
        assert running.scalar("SELECT count() FROM logs") == 60
    finally:
        assert running.stop()


def test_lost_records_named_by_the_cut_log_are_never_renumbered(tmp_path: Path) -> None:
    """fsync off and a power loss: the cut log (fsynced) names records 1-8 but the log kept
    only 1-5. New records must not reuse 6-8, or their blocks would carry old tokens."""
    async def write() -> None:
        wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
        wal.recover()
        await wal.start()
        await _append(wal, 5)
        await wal.close()

    run(write())
    cuts = CutLog(tmp_path)
    cuts.append(1, 5)
    cuts.append(6, 8)
    cuts.close()
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
    wal.recover()
    wal.skip_to(CutLog(tmp_path).pending(0)[-1][1])

    async def append_one() -> int:
        await wal.start()
        seq, future = wal.append(Signal.TRACES, "p", 1, b"new")
        await future
        await wal.close()
        return seq

    assert run(append_one()) == 9


def test_a_caller_that_goes_away_before_the_fsync_is_still_counted(chdb_path: Path, tmp_path: Path) -> None:
    """A client that cancels after its record was appended still has it stored; the accepted
    counts and the writer-lag clock used to skip it (they ran after the await that was cancelled)."""
    from conftest import start_gateway, wait_until

    from otelgw.receiver.decode import Encoding, decode

    running = start_gateway(chdb_path, "t_cancelled", tmp_path, wal_fsync_ms="200")
    try:
        pipeline = running.gateway.pipeline
        decoded = decode(Signal.LOGS, _logs_body(0, 7), Encoding.JSON)
        body = decoded.message.SerializeToString()  # the log holds protobuf, as the receivers append it
        before = pipeline.stats.items_accepted[Signal.LOGS]

        async def cancelled_accept() -> None:
            task = asyncio.ensure_future(pipeline.accept(decoded, body, "", "", "test"))
            await asyncio.sleep(0.02)  # appended, not yet fsynced (group commit every 200 ms)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        running._call(cancelled_accept())
        wait_until(lambda: pipeline.stats.items_accepted[Signal.LOGS] == before + 7, timeout=10)
        running.settle()
        assert running.scalar("SELECT count() FROM logs") == 7
    finally:
        assert running.stop()


def test_a_record_damaged_mid_segment_loses_only_itself(tmp_path: Path) -> None:
    """A byte flipped inside one record (disk damage, its length intact): recovery truncated the
    segment there, losing every acknowledged record after it; now only that record goes."""
    async def fill() -> None:
        wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
        wal.recover()
        await wal.start()
        for i in range(5):
            _, durable = wal.append(Signal.LOGS, "p", i, b"record %d " % i + b"x" * 100)
            await durable
        await wal.close()

    asyncio.run(fill())
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    start, end, _ = list(iter_segment(bytes(data)))[2]
    data[(start + end) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
    wal.recover()
    kept = wal.cursor(0).read(wal.durable_seq)
    assert [r.request[:8] for r in kept] == [b"record 0", b"record 1", b"record 3", b"record 4"]
    assert [r.seq for r in kept] == [1, 2, 4, 5] and wal.durable_seq == 5
    # A damaged last record is still a torn tail: cut, nothing after it to keep.
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
    wal.recover()
    assert [r.seq for r in wal.cursor(0).read(wal.durable_seq)] == [1, 2, 4]


def test_salvage_keeps_only_the_records_that_follow_in_order(tmp_path: Path) -> None:
    """A damaged length that lands on a later record (skipping good ones), or bytes inside a
    request that happen to read as a record (another tenant's, a far seq): not successors of the
    damaged record, so the segment is truncated there as before instead of keeping them."""
    from otelgw.pipeline.wal import salvage_segment

    records = [encode_record(WalRecord(seq, Signal.LOGS, "p", 0, b"r%d" % seq + b"x" * 40)) for seq in range(1, 6)]
    forged = encode_record(WalRecord(1_000_000, Signal.LOGS, "other-tenant", 0, b"forged"))
    good = b"".join(records)
    # Record 2 damaged: 3 follows it, so only 2 goes.
    damaged = bytearray(good)
    damaged[len(records[0]) + 10] ^= 0xFF
    kept, dropped = salvage_segment(bytes(damaged), 1)
    assert dropped == 1 and kept == records[0] + b"".join(records[2:])
    # Record 2 damaged, followed by a record that is not 3 (a forged one): no salvage.
    tampered = records[0] + bytes(damaged[len(records[0]):len(records[0]) + len(records[1])]) + forged + records[2]
    assert salvage_segment(tampered, 1)[1] == 0


def test_dead_lettered_records_of_a_new_log_do_not_overwrite_an_older_logs(chdb_path: Path, tmp_path: Path) -> None:
    """A record the mapper fails on is kept as its request bytes, named by the log's id and its
    number: a log started afresh (its directory lost) numbers records from 1 again, and its
    dead-lettered record 1 must not replace the first log's."""
    import shutil

    from conftest import start_gateway
    from otlp_client import post_otlp

    def failing_first_record(gateway) -> None:
        mapping = gateway.gateway.pipeline.mapping
        real = mapping.map

        async def fail(records, prefix, token_range, fold_across=True):
            chunk = await real(records, prefix, token_range, fold_across)
            for mapped in chunk.records:
                if mapped.seq == 1:
                    mapped.blocks, mapped.rows, mapped.error = {}, {}, "simulated mapper failure"
            return chunk

        mapping.map = fail

    bodies, ids = [], []
    for run in range(2):
        gateway = start_gateway(chdb_path, "t_dead_letter_names", tmp_path)
        try:
            failing_first_record(gateway)
            bodies.append(_logs_body(run * 100, 5))
            assert post_otlp(gateway.http_url, "logs", bodies[-1], "json").status == 200
            gateway.settle()
            assert gateway.gateway.pipeline.stats.map_errors == 1
            ids.append(gateway.gateway.wal.id)
        finally:
            assert gateway.stop()
        shutil.rmtree(gateway.gateway.wal.dir)  # the log is lost; the next start begins a new one
    assert ids[0] != ids[1]
    dead = {p.name: p.read_bytes() for p in (tmp_path / "dead-letter").glob("record-*.pb")}
    assert set(dead) == {f"record-{ids[0]}-1-logs.pb", f"record-{ids[1]}-1-logs.pb"}
    from otelgw.pipeline.request import Signal
    from otelgw.receiver.decode import Encoding, decode

    for wal_id, body in zip(ids, bodies, strict=True):
        expected = decode(Signal.LOGS, body, Encoding.JSON).message.SerializeToString()
        assert dead[f"record-{wal_id}-1-logs.pb"] == expected


def test_one_process_a_log(tmp_path: Path) -> None:
    """A second process on a log another one holds is refused at once, naming the holder; the
    lock goes with its holder however that one ends (here SIGKILL)."""
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from otelgw.pipeline.wal import WriteAheadLog; "
        f"WriteAheadLog({str(tmp_path)!r}, fsync_ms=0, max_bytes=1 << 30).recover(); "
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(WalError, match=rf"in use by another process \(pid {holder.pid}\).*own data_dir"):
            WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30).recover()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30)
    wal.recover()
    run(wal.close())
