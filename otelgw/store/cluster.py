"""The schema for a ClickHouse cluster, generated from the single-node migrations in schema/.

`otelgw migrate --cluster NAME [--print]` turns each migration into `ON CLUSTER` DDL:
- data tables become `<table>_local` with the Replicated variant of their engine (ZooKeeper/Keeper
  path per shard) plus a `Distributed` table under the original name, sharded so that a trace
  and its inferences (and their spans and log events) live on one shard; the gateway writes to
  and reads from the Distributed tables, exactly as it does to single-node tables;
- small governance tables (keys, retention, erasure jobs, audit, migrations) are replicated to
  every node of the cluster, not sharded;
- materialized views are created on every node, reading the local source and writing the local
  target (the rollups aggregate per shard; the Distributed rollup tables merge shards at read);
- ALTERs go to the local tables (and ADD COLUMN to the Distributed ones too); TTLs and indexes
  stay on the local tables; `non_replicated_deduplication_window` is dropped (Replicated tables
  deduplicate inserts by default);
- backfill `INSERT ... SELECT` statements are left out: a new cluster has nothing to backfill.
"""

from __future__ import annotations

import re
from typing import Any

from otelgw.store.migrate import Migration, apply_migrations, discover, pending_migrations

# Sharding keys of the Distributed tables. A trace's spans, inferences and log events share one
# shard; messages, feedback and the lookup follow the inference id (they have no trace id).
SHARD_KEYS: dict[str, str] = {
    "inferences": "cityHash64(trace_id)",
    "spans": "cityHash64(trace_id)",
    "logs": "cityHash64(trace_id)",
    "messages": "cityHash64(inference_id)",
    "feedback": "cityHash64(inference_id)",
    "inference_lookup": "cityHash64(inference_id)",
    "metric_points": "cityHash64(project_id, metric_name)",
    "unmapped_attributes": "cityHash64(project_id, key)",
    "span_tag_names": "cityHash64(project_id)",
    "inference_stats_1m": "rand()",
    "inference_stats_1h": "rand()",
    "inference_stats_1d": "rand()",
}
# Replicated to every node (one Keeper path for the whole cluster), read locally.
GLOBAL_TABLES = frozenset({"api_keys", "project_retention", "erasure_jobs", "erasure_targets", "audit_log",
                           "schema_migrations", "migration_marks", "gateways"})
_CREATE_HEAD = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*(\(.*\)|AS (\w+))\s*$", re.S)
_ENGINE = re.compile(r"^(\w+)(\([^)]*\))?(.*)$", re.S)
_VIEW = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\s+TO\s+(\w+)\s+AS\s+(.*)$", re.S)
_ALTER = re.compile(r"^ALTER TABLE (\w+)\s+(.*)$", re.S)
_ENGINES = {"MergeTree", "ReplacingMergeTree", "AggregatingMergeTree", "SummingMergeTree", "CollapsingMergeTree"}


def _replicated(engine: str, args: str | None, path: str, replica: str) -> str:
    if engine not in _ENGINES:
        raise ValueError(f"no Replicated variant known for engine {engine}")
    inner = args[1:-1].strip() if args else ""
    return f"Replicated{engine}('{path}', '{replica}'{', ' + inner if inner else ''})"


def _local_names(sql: str) -> str:
    """Sharded table names in a view's SELECT, pointed at the local tables."""
    pattern = r"\b(" + "|".join(sorted(SHARD_KEYS, key=len, reverse=True)) + r")\b(?!\s*\()"
    return re.sub(pattern, r"\1_local", sql)


def cluster_statements(statement: str, cluster: str) -> list[str]:
    """The ON CLUSTER statements for one single-node statement (none for a backfill)."""
    on = f"ON CLUSTER '{cluster}'"
    text = statement.strip()
    if text.startswith("INSERT INTO"):
        return []
    head, _, engine_part = re.sub(r"ENGINE\s*=\s*", "ENGINE = ", text, count=1).partition("ENGINE = ")
    created = _CREATE_HEAD.match(head) if engine_part else None
    if created:
        name, body, source = created.groups()
        engine, args, rest = _ENGINE.match(engine_part).groups()  # type: ignore[union-attr]
        # Replicated tables deduplicate inserts by default (replicated_deduplication_window).
        rest = re.sub(r"\s*,?\s*non_replicated_deduplication_window\s*=\s*\d+", "", rest)
        rest = re.sub(r"\s*SETTINGS\s*,?\s*$", "", re.sub(r"SETTINGS\s*,\s*", "SETTINGS ", rest))
        if name in GLOBAL_TABLES:
            table_engine = _replicated(engine, args, f"/clickhouse/tables/{{database}}/{name}", "{shard}-{replica}")
            return [f"CREATE TABLE IF NOT EXISTS {name} {on} {body} ENGINE = {table_engine}{rest}"]
        if name not in SHARD_KEYS:
            raise ValueError(f"table {name}: say how it is sharded (SHARD_KEYS) or that it is global")
        columns = f"AS {source}_local" if source else body
        table_engine = _replicated(engine, args, f"/clickhouse/tables/{{shard}}/{{database}}/{name}_local",
                                   "{replica}")
        return [f"CREATE TABLE IF NOT EXISTS {name}_local {on} {columns} ENGINE = {table_engine}{rest}",
                f"CREATE TABLE IF NOT EXISTS {name} {on} AS {name}_local "
                f"ENGINE = Distributed('{cluster}', currentDatabase(), '{name}_local', {SHARD_KEYS[name]})"]
    view = _VIEW.match(text)
    if view:
        name, target, select = view.groups()
        target_local = target if target in GLOBAL_TABLES else f"{target}_local"
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {on} TO {target_local} AS {_local_names(select)}"]
    altered = _ALTER.match(text)
    if altered:
        name, action = altered.groups()
        if "non_replicated_deduplication_window" in action:
            return []
        if name in GLOBAL_TABLES:
            return [f"ALTER TABLE {name} {on} {action}"]
        out = [f"ALTER TABLE {name}_local {on} {action}"]
        if action.lstrip().startswith("ADD COLUMN"):
            out.append(f"ALTER TABLE {name} {on} {action}")
        return out
    raise ValueError(f"no cluster form for: {text[:80]}")


def cluster_migrations(cluster: str) -> list[tuple[Migration, list[str]]]:
    """Every migration with its ON CLUSTER statements, in order."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cluster):
        raise ValueError(f"cluster name {cluster!r}: letters, digits, '_', '.', '-' only")
    return [(m, [out for stmt in m.statements() for out in cluster_statements(stmt, cluster)]) for m in discover()]


def ddl_target(table: str, cluster: str | None) -> str:
    """Where an ALTER or a DELETE for `table` goes. On one node, the table. On a cluster, a
    sharded table's local table on every node (`ON CLUSTER`: a Distributed table takes neither);
    a table replicated everywhere replicates the statement itself."""
    if cluster and table in SHARD_KEYS:
        return f"{table}_local ON CLUSTER '{cluster}'"
    return table


def migrate_store(client: Any, cluster: str | None) -> list[Migration]:
    """Bring the store's schema up to date: the single-node migrations, or their cluster form
    when the gateway is configured for a cluster (`clickhouse_cluster`)."""
    if not cluster:
        return apply_migrations(client)
    # No ON CLUSTER DDL when nothing is pending: it waits for every node, so with one node down
    # every gateway start would block, then fail, although inserts could go on.
    return apply_cluster_migrations(client, cluster) if pending_migrations(client) else []


def apply_cluster_migrations(client: Any, cluster: str) -> list[Migration]:
    """Apply the cluster form of every migration not yet recorded (in a `schema_migrations`
    table replicated to every node). Run once, from one place, against any node."""
    tracking = cluster_statements(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now())"
        " ENGINE = ReplacingMergeTree ORDER BY version", cluster)
    for statement in tracking:
        client.command(statement)
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied: list[Migration] = []
    for migration, statements in cluster_migrations(cluster):
        if migration.version in done:
            continue
        for statement in statements:
            client.command(statement)
        client.insert("schema_migrations", [[migration.version, migration.name]], column_names=["version", "name"])
        applied.append(migration)
    return applied
