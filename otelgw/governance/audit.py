"""The audit log: who did what to which data, written to the `audit_log` table (docs/privacy.md).

API handlers call `audit(request, action, ...)`: a dict lookup and a deque append, nothing else
on the request's path. The Auditor batches the events and inserts them as one JSONEachRow block
per flush (every second, or sooner when `batch_events` are waiting) from its own worker thread,
so no ClickHouse call runs on the event loop. While the store is down the events stay queued,
at most `max_pending` of them; beyond that the oldest are dropped, counted and logged.

An event holds ids, names and outcomes only: never message content, never a key's secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from aiohttp import web

from otelgw.pipeline.rows import ts

log = logging.getLogger(__name__)

# Actions written today (docs/privacy.md lists them with their targets).
ACTIONS = (
    "inference.list", "inference.read", "inference.export", "feedback.read", "feedback.create", "session.read",
    "trace.read", "key.create", "key.revoke", "data.delete", "retention.set", "audit.read", "login.failed",
    "access.denied",
)
MAX_TARGET = 512
MAX_DETAIL = 1024
INSERT_SETTINGS = {"input_format_skip_unknown_fields": 1, "insert_deduplicate": 1}


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


class AuditRow(msgspec.Struct):
    """One `audit_log` row as JSONEachRow (DateTime64 as "sec.nanos" text, as the writer sends)."""
    time: str
    key_id: str
    role: str
    project: str
    action: str
    target: str
    client: str
    result: str
    detail: str


class AuditStats(msgspec.Struct):
    written: int = 0
    dropped: int = 0
    insert_errors: int = 0
    last_error: str = ""
    throttled: int = 0  # failure events folded into the next one from the same client


# Unauthenticated requests write `login.failed` rows: at most FAILURE_BURST per client address in
# FAILURE_WINDOW_S seconds; the rest are folded into the first row of the next window.
FAILURE_WINDOW_S = 10.0
FAILURE_BURST = 20
_FAILURES = frozenset({"login.failed"})

_encoder = msgspec.json.Encoder()


def encode_events(events: list[AuditEvent]) -> bytes:
    return b"\n".join(_encoder.encode(AuditRow(
        ts(e.time_ns), e.key_id, e.role, e.project, e.action, e.target, e.client, e.result, e.detail))
        for e in events) + b"\n"


class Auditor:
    """Buffers events and writes them in batches off the event loop. `record` is called on the
    event loop's thread (the API handlers); `flush` is awaitable (tests, the audit API, stop)."""

    def __init__(self, clients: Any = None, *, flush_interval_s: float = 1.0, batch_events: int = 5000,
                 max_pending: int = 100_000) -> None:
        self._clients = clients  # a store.client.ClientFactory; None: keep events in memory only
        self._interval = flush_interval_s
        self._batch = batch_events
        self._max_pending = max_pending
        self.pending: deque[AuditEvent] = deque()
        self.stats = AuditStats()
        self._lock = asyncio.Lock()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._failing = False
        # (client, action) -> (window start, events admitted in it, events folded)
        self._last_failure: dict[tuple[str, str], tuple[float, int, int]] = {}

    def record(self, event: AuditEvent) -> None:
        if event.action in _FAILURES and not self._admit_failure(event):
            return
        if len(self.pending) >= self._max_pending:
            self.pending.popleft()
            self._dropped(1)
        self.pending.append(event)
        if self._wake is not None and len(self.pending) >= self._batch:
            self._wake.set()

    def _admit_failure(self, event: AuditEvent) -> bool:
        """Throttle failures per client, so a flood of bad keys cannot push real events out."""
        key = (event.client, event.action)
        now = time.monotonic()
        start, seen, folded = self._last_failure.get(key, (0.0, 0, 0))
        if start and now - start < FAILURE_WINDOW_S:
            if seen >= FAILURE_BURST:
                self._last_failure[key] = (start, seen, folded + 1)
                self.stats.throttled += 1
                return False
            self._last_failure[key] = (start, seen + 1, folded)
            return True
        if len(self._last_failure) > 10_000:
            self._last_failure.clear()
        self._last_failure[key] = (now, 1, 0)
        if folded:
            event.detail = f"{event.detail} folded={folded}".strip()
        return True

    def _dropped(self, n: int) -> None:
        self.stats.dropped += n
        # Log the first drop and then every 10 000th, not every one.
        if self.stats.dropped == n or self.stats.dropped // 10_000 != (self.stats.dropped - n) // 10_000:
            log.warning("audit events dropped: the store has not taken them and the queue is full",
                        extra={"dropped_total": self.stats.dropped, "max_pending": self._max_pending})

    async def start(self) -> None:
        if self._clients is None or self._task is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-audit")
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="otelgw-audit")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # flush keeps the events on failure; never let the loop die
                log.exception("audit flush failed")

    def _insert(self, block: bytes) -> None:
        token = "audit-" + hashlib.sha256(block).hexdigest()
        try:
            self._clients.get().raw_insert("audit_log", insert_block=block, fmt="JSONEachRow",
                                           settings={**INSERT_SETTINGS, "insert_deduplication_token": token})
        except Exception:
            self._clients.discard()
            raise

    async def flush(self) -> bool:
        """Write every queued event; False if the store refused (the events stay queued)."""
        if self._clients is None:
            return False
        async with self._lock:
            loop = asyncio.get_running_loop()
            if self._pool is None:  # flushed before start (or after stop): a pool for this call
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-audit")
            remaining = len(self.pending)  # what was queued when called: events keep coming
            while remaining > 0 and self.pending:
                batch = [self.pending.popleft() for _ in range(min(self._batch, remaining, len(self.pending)))]
                remaining -= len(batch)
                block = encode_events(batch)
                try:
                    await loop.run_in_executor(self._pool, self._insert, block)
                except Exception as exc:  # store down or refusing: keep the events, bounded
                    self.pending.extendleft(reversed(batch))
                    excess = len(self.pending) - self._max_pending
                    for _ in range(max(excess, 0)):
                        self.pending.popleft()
                    if excess > 0:
                        self._dropped(excess)
                    self.stats.insert_errors += 1
                    self.stats.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                    if not self._failing:
                        log.warning("could not write audit events; they stay queued",
                                    extra={"pending": len(self.pending), "error": self.stats.last_error})
                    self._failing = True
                    return False
                if self._failing:
                    log.info("audit events are written again", extra={"pending": len(self.pending)})
                    self._failing = False
                self.stats.written += len(batch)
            return True

    def describe(self) -> dict[str, Any]:
        return {**msgspec.to_builtins(self.stats), "pending": len(self.pending)}

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.pending and self._clients is not None:
            try:
                await asyncio.wait_for(self.flush(), timeout_s)
            except TimeoutError:
                pass
            if self.pending:
                log.warning("audit events not written at shutdown", extra={"lost": len(self.pending)})
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


AUDIT_KEY: web.AppKey[Auditor] = web.AppKey("auditor", Auditor)


def presented_key_id(request: web.Request) -> str:
    """The key id part of the key a request presents (`otgw_<key_id>_<secret>`), "" if it has
    none that parses. The secret is never kept."""
    from otelgw.auth import bearer_token
    from otelgw.store.keys import parse_key

    token = bearer_token(request.headers.get("Authorization"))
    parsed = parse_key(token) if token else None
    return parsed[0] if parsed else ""


def audit(request: web.Request, action: str, *, target: str = "", project: str = "", result: str = "ok",
          detail: str = "", key_id: str | None = None) -> None:
    """Record `action` on `target` by the request's caller. Never pass message content.
    The key id is `key_id` if given, else the caller's, else (no caller: a failed login, a public
    route) the id part of the key the request presents."""
    from otelgw.api.common import PRINCIPAL

    auditor = request.app.get(AUDIT_KEY)
    if auditor is None:
        return
    caller = request.get(PRINCIPAL)
    if key_id is None:
        key_id = caller.key_id if caller is not None else presented_key_id(request)
    auditor.record(AuditEvent(
        time_ns=time.time_ns(), key_id=key_id,
        role=caller.role if caller else "", project=project, action=action, target=target[:MAX_TARGET],
        client=request.remote or "", result=result, detail=detail[:MAX_DETAIL]))


# -- reading ---------------------------------------------------------------------------------

class AuditQuery(msgspec.Struct, kw_only=True):
    from_ns: int | None = None
    to_ns: int | None = None
    actions: list[str] = []
    key_id: str = ""
    project: str = ""
    result: str = ""
    limit: int = 100
    offset: int = 0
    # Scope of an admin limited to some projects: their projects' events and their own key's.
    scope_projects: list[str] | None = None
    scope_key_id: str = ""


COLUMNS = ("toUnixTimestamp64Nano(time) AS time_ns, key_id, role, project, action, target, client, result, "
           "detail")


def query_sql(q: AuditQuery) -> tuple[str, str, dict[str, Any]]:
    """(page SQL, count SQL, parameters): newest first."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if q.from_ns is not None:
        conditions.append("time >= fromUnixTimestamp64Nano({from_ns:Int64}, 'UTC')")
        params["from_ns"] = q.from_ns
    if q.to_ns is not None:
        conditions.append("time < fromUnixTimestamp64Nano({to_ns:Int64}, 'UTC')")
        params["to_ns"] = q.to_ns
    if q.actions:
        conditions.append("action IN {actions:Array(String)}")
        params["actions"] = q.actions
    for name in ("key_id", "project", "result"):
        if getattr(q, name):
            conditions.append(f"{name} = {{{name}:String}}")
            params[name] = getattr(q, name)
    if q.scope_projects is not None:
        conditions.append("(project IN {scope_projects:Array(String)} "
                          "OR (key_id != '' AND key_id = {scope_key:String}))")
        params["scope_projects"] = q.scope_projects
        params["scope_key"] = q.scope_key_id
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    params["limit"] = q.limit
    params["offset"] = q.offset
    page = (f"SELECT {COLUMNS} FROM audit_log{where} ORDER BY time DESC, action, key_id, target "
            "LIMIT {limit:UInt32} OFFSET {offset:UInt64}")
    return page, f"SELECT count() AS total FROM audit_log{where}", params
