"""The write-ahead log encrypted at rest (OTELGW_WAL_ENCRYPTION_KEY): request bytes never on disk
in clear; replay needs the key; a missing or wrong key refuses to start and keeps the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gateway_process import GatewayProcess, chdb_query
from otlp_client import post_otlp

from otelgw.pipeline.request import Signal
from otelgw.pipeline.wal import WalError, WriteAheadLog
from otelgw.pipeline.wal_cipher import WalCipher

KEY = "correct horse battery staple"
MARKER = b"secret-prompt-7f3a9c"


def _fill(directory: Path, cipher: WalCipher | None, count: int = 5) -> None:
    async def run() -> None:
        wal = WriteAheadLog(directory, fsync_ms=0, max_bytes=1 << 30, cipher=cipher)
        wal.recover()
        await wal.start()
        for i in range(count):
            _, durable = wal.append(Signal.TRACES, "p", i, MARKER + bytes([i]))
            await durable
        await wal.close()
    asyncio.run(run())


def test_records_are_sealed_on_disk_and_read_back_in_clear(tmp_path: Path) -> None:
    _fill(tmp_path, WalCipher(KEY))
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("*.seg"))
    assert on_disk and MARKER not in on_disk
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30, cipher=WalCipher(KEY))
    wal.recover()
    records = wal.cursor(0).read(wal.durable_seq)
    assert [r.request for r in records] == [MARKER + bytes([i]) for i in range(5)]


def test_missing_or_wrong_key_refuses_and_keeps_the_log(tmp_path: Path) -> None:
    _fill(tmp_path, WalCipher(KEY))
    size = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    with pytest.raises(WalError, match="OTELGW_WAL_ENCRYPTION_KEY"):
        WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30).recover()
    with pytest.raises(WalError, match="does not decrypt"):
        WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30, cipher=WalCipher("another key, 16+ chars")).recover()
    assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) == size
    with pytest.raises(ValueError, match="16 characters"):
        WalCipher("short")


def test_a_plain_log_still_replays_when_a_key_is_set(tmp_path: Path) -> None:
    _fill(tmp_path, None, 3)
    wal = WriteAheadLog(tmp_path, fsync_ms=0, max_bytes=1 << 30, cipher=WalCipher(KEY))
    wal.recover()
    assert len(wal.cursor(0).read(wal.durable_seq)) == 3


def test_gateway_replays_an_encrypted_log_only_with_its_key(tmp_path: Path) -> None:
    # A request holding an inference (not every captured payload does: a chain's own spans).
    payload = (Path(__file__).parent / "fixtures" / "captured" / "openinference-error" / "traces-000.pb").read_bytes()
    # The writer holds rows for a minute: the kill leaves the request in the (encrypted) log only.
    slow = {"flush_interval_ms": "60000", "batch_rows": "1000000"}
    gw = GatewayProcess(tmp_path, wal_encryption_key=KEY, **slow)
    gw.start()
    assert post_otlp(gw.http_url, "traces", payload).status == 200
    gw.kill()
    segments = b"".join(p.read_bytes() for p in (tmp_path / "data" / "wal").glob("*.seg"))
    assert segments and b"gen_ai" not in segments  # attribute keys of the request: sealed

    keyless = GatewayProcess(tmp_path)
    keyless.start(wait_ready=False)
    assert keyless.proc is not None and keyless.proc.wait(60) == 2
    assert "OTELGW_WAL_ENCRYPTION_KEY" in keyless.log_tail()

    gw = GatewayProcess(tmp_path, wal_encryption_key=KEY)
    gw.start()
    assert gw.terminate() == 0
    assert chdb_query(tmp_path / "chdb", "SELECT count() AS n FROM inferences")[0]["n"] >= 1


def test_config_names_a_short_key_and_a_missing_masking_file(tmp_path: Path) -> None:
    from otelgw.config import Config
    errors = Config(wal_encryption_key="short", masking_file=str(tmp_path / "nope.toml")).validate()
    assert any(e.startswith("wal_encryption_key: must be at least 16 characters") for e in errors)
    assert any(e.startswith("masking_file:") and "does not exist" in e for e in errors)
