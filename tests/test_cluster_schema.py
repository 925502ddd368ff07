"""The ClickHouse cluster schema (`otelgw migrate --cluster NAME`): every generated statement
parses, and once taken back to a single node it has exactly the single-node schema's columns
(the local tables and the Distributed tables alike). No cluster runs here."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from otelgw.store.client import DSN, ClientFactory
from otelgw.store.cluster import GLOBAL_TABLES, SHARD_KEYS, cluster_migrations, cluster_statements
from otelgw.store.migrate import discover

CLUSTER = "otelgw_cluster"


class _Db:
    """SQL on one database of the test session's chDB directory (one directory per process)."""

    def __init__(self, path: Path, database: str) -> None:
        self.factory = ClientFactory(DSN(f"chdb://{path}?database={database}"))

    def run(self, sql: str) -> None:
        self.factory.get().command(sql)

    def rows(self, sql: str) -> list[tuple]:
        return self.factory.get().query(sql).result_rows


@pytest.fixture(scope="module")
def chdb(chdb_path: Path) -> _Db:
    return _Db(chdb_path, "default")


def _statements() -> list[str]:
    return [s for _, statements in cluster_migrations(CLUSTER) for s in statements]


def test_every_statement_parses(chdb) -> None:
    statements = _statements()
    assert len(statements) > 60
    for statement in statements:
        literal = statement.replace("\\", "\\\\").replace("'", "\\'")
        formatted = chdb.rows(f"SELECT formatQuery('{literal}')")[0][0]
        assert "ON CLUSTER" in formatted, statement[:80]


def test_engines_sharding_and_views() -> None:
    text = "\n".join(_statements())
    for table, key in SHARD_KEYS.items():
        assert f"CREATE TABLE IF NOT EXISTS {table}_local ON CLUSTER '{CLUSTER}'" in text
        assert f"ENGINE = Distributed('{CLUSTER}', currentDatabase(), '{table}_local', {key})" in text
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/inferences_local', '{replica}', " \
           "ingested_at)" in text
    assert "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/inference_stats_1h_local'" in text
    for table in GLOBAL_TABLES - {"schema_migrations"}:
        assert re.search(rf"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER '{CLUSTER}' .*? ENGINE = Replicated\w+\("
                         rf"'/clickhouse/tables/{{database}}/{table}', '{{shard}}-{{replica}}'", text, re.S), table
    # Views read and write local tables; a trace's inferences and spans share a shard.
    assert "TO inference_stats_1m_local AS SELECT" in text and "FROM inferences_local" in text
    assert "inferences_local.output_tokens" in text
    assert SHARD_KEYS["inferences"] == SHARD_KEYS["spans"] == SHARD_KEYS["logs"] == "cityHash64(trace_id)"
    assert "non_replicated_deduplication_window" not in text and "INSERT INTO" not in text


def _single_node(statement: str) -> str:
    """A cluster statement back on one node: no ON CLUSTER, no Keeper, Distributed as Memory."""
    out = statement.replace(f" ON CLUSTER '{CLUSTER}'", "")
    out = re.sub(r"Replicated(\w+)\('[^']*', '[^']*'(?:, )?", r"\1(", out)
    return re.sub(r"ENGINE = Distributed\(.*\)\s*$", "ENGINE = Memory", out, flags=re.S)


def _columns(chdb, database: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for table, name, kind in chdb.rows(f"SELECT table, name, type FROM system.columns WHERE database = '{database}' "
                                       "ORDER BY table, position"):
        out.setdefault(table, []).append((name, kind))
    return out


def test_cluster_schema_has_the_single_node_columns(chdb, chdb_path: Path) -> None:
    single, cluster = f"single_{uuid.uuid4().hex[:8]}", f"cluster_{uuid.uuid4().hex[:8]}"
    for database in (single, cluster):
        chdb.run(f"CREATE DATABASE {database}")
    one_db, many_db = _Db(chdb_path, single), _Db(chdb_path, cluster)
    for migration in discover():
        for statement in migration.statements():
            one_db.run(statement)
    for statement in _statements():
        many_db.run(_single_node(statement))
    one, many = _columns(chdb, single), _columns(chdb, cluster)
    tables = {t for t in one if not t.endswith("_mv")}
    assert tables
    for table in tables:
        assert many.get(table) == one[table], table  # the Distributed (or global) table
        if table in SHARD_KEYS:
            assert many.get(f"{table}_local") == one[table], f"{table}_local"
    views = [r[0] for r in chdb.rows(f"SELECT name FROM system.tables WHERE database = '{cluster}' "
                                     "AND engine = 'MaterializedView'")]
    single_views = [r[0] for r in chdb.rows(f"SELECT name FROM system.tables WHERE database = '{single}' "
                                            "AND engine = 'MaterializedView'")]
    assert sorted(views) == sorted(single_views) and len(views) == 5


def test_unknown_statements_and_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="sharded"):
        cluster_statements("CREATE TABLE IF NOT EXISTS mystery (a UInt8) ENGINE = MergeTree ORDER BY a", CLUSTER)
    with pytest.raises(ValueError, match="no cluster form"):
        cluster_statements("DROP TABLE inferences", CLUSTER)
    with pytest.raises(ValueError, match="cluster name"):
        cluster_migrations("bad name; DROP")


def test_cli_prints_the_cluster_schema(tmp_path: Path) -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "otelgw"), "migrate", "--cluster", CLUSTER, "--print"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "OTELGW_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'c'}"})
    assert out.returncode == 0, out.stderr
    assert "-- 001_core_tables" in out.stdout and f"ON CLUSTER '{CLUSTER}'" in out.stdout
    failed = subprocess.run([str(Path(sys.executable).parent / "otelgw"), "migrate", "--cluster", CLUSTER],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "OTELGW_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'c'}"})
    assert failed.returncode == 1 and "cluster migration failed" in failed.stderr  # no cluster in chDB
