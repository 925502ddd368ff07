"""Who is asking: API keys (`Authorization: Bearer otgw_…`, or the key as a Basic password, as
the Langfuse SDK sends it) resolved to a Principal with a role and a set of projects.

Keys live in ClickHouse and are cached here, refreshed every few seconds from a worker thread,
so a check on the hot path is a dict lookup and a hash. With no key at all, the API serves
anonymously (as admin of every project) only when allowed: bound to loopback, or
`OTELGW_ALLOW_ANONYMOUS=true`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from otelgw.store.keys import ROLES, ApiKey, check_projects, parse_key, verify

log = logging.getLogger(__name__)

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}


class Unauthorized(Exception):
    """No valid key (HTTP 401, gRPC UNAUTHENTICATED)."""


class Forbidden(Exception):
    """A valid key without the right (HTTP 403, gRPC PERMISSION_DENIED)."""


class Principal(msgspec.Struct, frozen=True):
    role: str
    projects: frozenset[str] | None  # None: every project
    key_id: str = ""
    ingest: bool = False

    def can(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def sees(self, project: str) -> bool:
        return self.projects is None or project in self.projects

    def project_list(self) -> list[str] | None:
        return None if self.projects is None else sorted(self.projects)


ANONYMOUS = Principal(role="admin", projects=None, key_id="", ingest=True)


def bearer_token(header: str | None) -> str | None:
    """The key in an Authorization header; None only when there is no header. A header that
    holds no readable key yields "" (checked, and refused), never anonymous access."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        return password or user
    return ""


class Authenticator:
    def __init__(self, load_keys: Callable[[], list[ApiKey]], *, allow_anonymous: bool,
                 refresh_s: float = 5.0) -> None:
        self._load = load_keys
        self._keys: dict[str, ApiKey] = {}
        self.allow_anonymous = allow_anonymous
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None

    @property
    def keys_configured(self) -> bool:
        return any(not k.revoked for k in self._keys.values())

    @property
    def ingest_keys_configured(self) -> bool:
        return any(k.ingest and not k.revoked for k in self._keys.values())

    def reload(self) -> None:
        self._keys = {k.key_id: k for k in self._load()}

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.reload)
        self._task = asyncio.create_task(self._refresh(), name="otelgw-keys")

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await loop.run_in_executor(None, self.reload)
            except Exception as exc:  # the store may be down: keep the last known keys
                log.warning("could not refresh API keys", extra={"error": str(exc)[:300]})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def principal(self, token: str | None) -> Principal:
        """The caller for an API request."""
        if token is None:
            if not self.keys_configured and self.allow_anonymous:
                return ANONYMOUS
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
        return self._verify(token)

    def _verify(self, token: str) -> Principal:
        parsed = parse_key(token)
        record = self._keys.get(parsed[0]) if parsed else None
        if parsed is None or record is None or record.revoked or not verify(record, parsed[1]):
            raise Unauthorized("invalid or revoked API key")
        try:
            if check_projects(list(record.projects)) != list(record.projects):
                raise ValueError("names with spaces around them")
        except ValueError as exc:
            # Made before names were checked: a key scoped to "" would act for any project.
            raise Unauthorized(f"this key's projects are not valid names ({exc}): create a new key") from exc
        projects = frozenset(record.projects) if record.projects else None
        return Principal(role=record.role, projects=projects, key_id=record.key_id, ingest=record.ingest)

    def ingest_project(self, token: str | None, header_project: str) -> str:
        """The project OTLP data is stored under. With ingest keys configured a key is required:
        it fixes the project; the header may only pick among the key's own projects."""
        if not self.ingest_keys_configured:
            # Open ingest, as a collector is: an Authorization header meant for another backend
            # (the Langfuse SDK always sends its own keys) is ignored.
            return header_project
        if not token:
            raise Unauthorized("an ingest key is required (Authorization: Bearer <key>)")
        principal = self._verify(token)
        if not principal.ingest:
            raise Forbidden("this key may not send telemetry (create it with --ingest)")
        if principal.projects is None:
            return header_project
        if header_project:
            if header_project not in principal.projects:
                raise Forbidden(f"this key may not send to project {header_project!r}")
            return header_project
        if len(principal.projects) == 1:
            return next(iter(principal.projects))
        raise Forbidden("this key has several projects: name one with x-otelgw-project")

    def describe(self) -> dict[str, Any]:
        return {"keys": len(self._keys), "anonymous_api": not self.keys_configured and self.allow_anonymous,
                "ingest_auth": self.ingest_keys_configured}
