"""The audit log: who did what to which data, written to the `audit_log` table.

Interface used by the API handlers (being completed in issue 10): `audit(request, action, ...)`
records one event without blocking the event loop."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web


class AuditEvent(msgspec.Struct, kw_only=True):
    time_ns: int
    key_id: str
    role: str
    project: str
    action: str
    target: str
    client: str
    result: str
    detail: str = ""


class Auditor:
    """Buffers events and writes them in batches off the event loop."""

    def __init__(self, clients: Any = None) -> None:
        self._clients = clients  # a store.client.ClientFactory
        self.pending: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.pending.append(event)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


AUDIT_KEY: web.AppKey[Auditor] = web.AppKey("auditor", Auditor)


def audit(request: web.Request, action: str, *, target: str = "", project: str = "", result: str = "ok",
          detail: str = "") -> None:
    """Record `action` on `target` by the request's caller. Never pass message content."""
    from otelgw.api.common import PRINCIPAL

    caller = request.get(PRINCIPAL)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    request.app[AUDIT_KEY].record(AuditEvent(
        time_ns=time.time_ns(), key_id=caller.key_id if caller else "", role=caller.role if caller else "",
        project=project, action=action, target=target, client=peer[0] if peer else "", result=result, detail=detail))
