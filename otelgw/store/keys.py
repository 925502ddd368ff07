"""API keys, stored in ClickHouse (`api_keys`) as the SHA-256 of their secret. A key reads
`otgw_<key_id>_<secret>`; it is shown once, when it is created, and never stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime

import msgspec
from clickhouse_connect.driver.client import Client

ROLES = ("viewer", "editor", "admin")
PREFIX = "otgw_"
# Project names as the receivers and retention take them (an empty name is no project: a key
# scoped to "" looked like an every-project key, and an ingest key for "" wrote to any project).
MAX_PROJECT_LEN = 128
MAX_KEY_PROJECTS = 1000
MAX_NAME_LEN = 256


def is_project_name(name: str) -> bool:
    """What every place that takes a project name takes (receivers, keys, retention)."""
    return 0 < len(name) <= MAX_PROJECT_LEN and name.isprintable()


def check_projects(projects: list[str]) -> list[str]:
    """The key's project names, stripped; a ValueError naming the problem otherwise."""
    if len(projects) > MAX_KEY_PROJECTS:
        raise ValueError(f"projects: at most {MAX_KEY_PROJECTS} per key")
    cleaned = [p.strip() for p in projects]
    for project in cleaned:
        if not is_project_name(project):
            raise ValueError(f"projects: {project[:40]!r} must be 1 to {MAX_PROJECT_LEN} printable characters "
                             "(no projects at all: every project)")
    return cleaned


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    name: str
    projects: tuple[str, ...]  # empty: every project
    role: str
    ingest: bool
    revoked: bool
    created_at: str
    secret_hash: str = ""


class CreatedKey(msgspec.Struct, frozen=True):
    key: str  # the whole key, shown once
    record: ApiKey


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key[len(PREFIX):].partition("_")
    if not sep or len(key_id) != 12 or not secret:
        return None
    return key_id, secret


def verify(record: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(record.secret_hash, _hash(secret))


def _now() -> datetime:
    return datetime.now(UTC)


class KeyStore:
    """Blocking: call from a worker thread."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, *, projects: list[str], role: str, ingest: bool, name: str = "") -> CreatedKey:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        projects = check_projects(projects)
        if len(name) > MAX_NAME_LEN or not name.isprintable():
            raise ValueError(f"name: at most {MAX_NAME_LEN} printable characters")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        now = _now()
        self._client.insert(
            "api_keys",
            [[key_id, _hash(secret), name, sorted(set(projects)), role, ingest, False, now, now]],
            column_names=["key_id", "secret_hash", "name", "projects", "role", "ingest", "revoked", "created_at",
                          "updated_at"],
        )
        record = ApiKey(key_id=key_id, name=name, projects=tuple(sorted(set(projects))), role=role, ingest=ingest,
                        revoked=False, created_at=now.isoformat())
        return CreatedKey(f"{PREFIX}{key_id}_{secret}", record)

    def all(self) -> list[ApiKey]:
        rows = self._client.query(
            "SELECT key_id, secret_hash, name, projects, role, ingest, revoked, created_at "
            "FROM api_keys FINAL ORDER BY created_at").result_rows
        return [ApiKey(key_id=r[0], secret_hash=r[1], name=r[2], projects=tuple(r[3]), role=r[4], ingest=bool(r[5]),
                       revoked=bool(r[6]), created_at=r[7].isoformat()) for r in rows]

    def revoke(self, key_id: str) -> bool:
        current = [k for k in self.all() if k.key_id == key_id]
        if not current:
            return False
        key = current[0]
        # A newer version of the row wins in ReplacingMergeTree(updated_at); make sure it is newer.
        time.sleep(0.002)
        self._client.insert(
            "api_keys",
            [[key.key_id, key.secret_hash, key.name, list(key.projects), key.role, key.ingest, True,
              datetime.fromisoformat(key.created_at), _now()]],
            column_names=["key_id", "secret_hash", "name", "projects", "role", "ingest", "revoked", "created_at",
                          "updated_at"],
        )
        return True
