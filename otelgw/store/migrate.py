"""Numbered migrations from schema/NNN_name.sql, applied in order and recorded in
`schema_migrations`, so `otelgw migrate` and every start are idempotent."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import msgspec
from clickhouse_connect.driver.client import Client

from otelgw.resources import schema_dir

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql$")

_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        text = "\n".join(line for line in self.path.read_text().splitlines() if not line.lstrip().startswith("--"))
        return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def discover(folder: Path | None = None) -> list[Migration]:
    folder = folder or schema_dir()
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"two migrations share a number in {folder}")
    return found


def pending_migrations(client: Client, folder: Path | None = None) -> list[Migration]:
    """The migrations the store has not recorded (all of them when it has no schema yet)."""
    try:
        done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    except Exception as exc:  # no table yet reads as nothing applied; a store that is away is raised
        if "UNKNOWN_TABLE" not in str(exc) and "doesn't exist" not in str(exc) and "does not exist" not in str(exc):
            raise
        done = set()
    return [m for m in discover(folder) if m.version not in done]


def apply_migrations(client: Client, folder: Path | None = None) -> list[Migration]:
    """Apply every migration not yet recorded; returns the ones applied now."""
    client.command(_TRACKING)
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied: list[Migration] = []
    for migration in discover(folder):
        if migration.version in done:
            continue
        for statement in migration.statements():
            client.command(statement)
        client.insert("schema_migrations", [[migration.version, migration.name]], column_names=["version", "name"])
        log.info("applied migration", extra={"version": migration.version, "migration": migration.name})
        applied.append(migration)
    return applied
