"""A gateway started from a copy of another's data directory (the same write-ahead-log id) would
have its inserts dropped as the other's duplicates; it refuses to start instead. A restart on its
own directory, or a fresh directory, is fine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import start_gateway, wait_until

from otelgw.config import ConfigError


def test_a_copied_data_directory_refuses_to_start(chdb_path: Path, tmp_path: Path) -> None:
    first = start_gateway(chdb_path, "t_gateway_registry", tmp_path / "a")
    try:
        wal_id = first.gateway.wal.id
        wait_until(lambda: first.scalar("SELECT count() FROM gateways WHERE wal_id = {w:String}", w=wal_id) >= 1)
        (tmp_path / "copy" / "wal").mkdir(parents=True)
        shutil.copy(tmp_path / "a" / "wal" / "id", tmp_path / "copy" / "wal" / "id")
        with pytest.raises(ConfigError, match="copy of another gateway"):
            start_gateway(chdb_path, "t_gateway_registry", tmp_path / "copy")
        second = start_gateway(chdb_path, "t_gateway_registry", tmp_path / "b")  # its own directory: fine
        assert second.gateway.wal.id != wal_id
        assert second.stop()
    finally:
        assert first.stop()
    again = start_gateway(chdb_path, "t_gateway_registry", tmp_path / "a")  # a restart on its own directory
    assert again.gateway.wal.id == wal_id
    assert again.stop()
