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


@pytest.fixture(scope="module")
def schemas(chdb, chdb_path: Path) -> tuple[str, str, _Db]:
    """A database with the single-node schema, and one with the cluster schema taken back to one
    node (local tables, Memory in place of Distributed)."""
    single, cluster = f"single_{uuid.uuid4().hex[:8]}", f"cluster_{uuid.uuid4().hex[:8]}"
    for database in (single, cluster):
        chdb.run(f"CREATE DATABASE {database}")
    one_db, many_db = _Db(chdb_path, single), _Db(chdb_path, cluster)
    for migration in discover():
        for statement in migration.statements():
            one_db.run(statement)
    for statement in _statements():
        many_db.run(_single_node(statement))
    return single, cluster, many_db


def test_cluster_schema_has_the_single_node_columns(chdb, schemas: tuple[str, str, _Db]) -> None:
    single, cluster, _ = schemas
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


def test_skip_indexes_match_and_the_previews_have_none(chdb, schemas: tuple[str, str, _Db]) -> None:
    """The cluster's local tables get the single node's skip indexes, and neither keeps the
    preview ngram filters migration 012 dropped (no search used them; they cost every insert)."""
    single, cluster, _ = schemas

    def indexes(database: str) -> set[tuple[str, str, str]]:
        return {(t.removesuffix("_local"), n, e) for t, n, e in chdb.rows(
            f"SELECT table, name, expr FROM system.data_skipping_indices WHERE database = '{database}'")}

    one = indexes(single)
    assert ("inferences", "idx_inference_id", "inference_id") in one
    assert indexes(cluster) == one
    assert not [i for i in one if "preview" in i[1]]


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


def _parses(chdb, statement: str) -> str:
    literal = statement.replace("\\", "\\\\").replace("'", "\\'")
    return chdb.rows(f"SELECT formatQuery('{literal}')")[0][0]


def test_retention_and_erasure_go_to_the_local_tables_on_the_cluster(chdb, schemas: tuple[str, str, _Db]) -> None:
    from otelgw.governance.erasure import PREDICATES, TABLES, delete_statements
    from otelgw.governance.retention import BUILTIN_DEFAULTS, RetentionPolicy, ttl_statements

    _, _, local = schemas
    own = RetentionPolicy(project="short", content_days=3, numbers_days=30, spans_days=2)
    statements = ttl_statements(BUILTIN_DEFAULTS, [own], CLUSTER)
    assert set(statements) >= {"inferences", "messages", "spans", "inference_stats_1m", "inference_lookup"}
    for table, statement in statements.items():
        assert statement.startswith(f"ALTER TABLE {table}_local ON CLUSTER '{CLUSTER}' "), statement[:80]
        assert "ON CLUSTER" in _parses(chdb, statement)
        # The TTLs name columns the local tables have: they apply on one node.
        local.run(_single_node(statement))
    ttl = local.rows("SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                     "AND name = 'messages_local'")[0][0]
    assert "'short'" in ttl and "toIntervalDay" in ttl

    # ingested_at now: a row older than its TTL would be dropped as it is written.
    local.run("INSERT INTO messages_local (inference_id, project_id, timestamp, direction, index, role, content, "
              "ingested_at) VALUES ('11111111-1111-1111-1111-111111111111', 'p', now(), 'input', 0, 'user', "
              "'erase me', now64()), ('22222222-2222-2222-2222-222222222222', 'p', now(), 'input', 0, 'user', "
              "'keep me', now64())")
    assert len(local.rows("SELECT content FROM messages_local")) == 2
    local.run("INSERT INTO erasure_targets (job_id, kind, inference_id) "
              "VALUES ('job1', 'inference', '11111111-1111-1111-1111-111111111111')")
    for table in TABLES:
        lightweight, mutation = delete_statements(table, PREDICATES[table], CLUSTER)
        assert lightweight.startswith(f"DELETE FROM {table}_local ON CLUSTER '{CLUSTER}' WHERE ")
        assert mutation.startswith(f"ALTER TABLE {table}_local ON CLUSTER '{CLUSTER}' DELETE WHERE ")
    lightweight, _ = delete_statements("messages", PREDICATES["messages"], CLUSTER)
    local.factory.get().command(_single_node(lightweight), parameters={"job": "job1", "project": "p"})
    assert [r[0] for r in local.rows("SELECT content FROM messages_local")] == ["keep me"]
    from otelgw.governance.erasure import flush_distributed_statement, sync_targets_statement

    assert "SYSTEM SYNC REPLICA ON CLUSTER" in _parses(chdb, sync_targets_statement(CLUSTER))
    assert "SYSTEM FLUSH DISTRIBUTED ON CLUSTER" in _parses(chdb, flush_distributed_statement("spans", CLUSTER))
    # One server: the table itself.
    assert delete_statements("messages", "1", None)[0] == "DELETE FROM messages WHERE 1"


def test_cluster_setting_is_validated() -> None:
    from otelgw.config import Config

    assert any("cluster name" in e for e in Config(clickhouse_cluster="a b",
                                                   clickhouse_dsn="http://ch:8123").validate())
    assert any("needs a ClickHouse server" in e for e in Config(clickhouse_cluster="c1").validate())
    assert Config(clickhouse_cluster="c1", clickhouse_dsn="http://ch:8123").validate() == []
