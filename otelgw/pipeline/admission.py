"""Admission control: who may add to the write-ahead log now. Every refusal is retryable and
says how long to wait; nothing is ever accepted and then dropped.

- In flight: at most `max_inflight_requests` requests being read, decoded or made durable,
  and at most `max_inflight_per_connection` from one connection, so one client cannot hold
  every slot.
- Rate: optionally `project_rate_limit` spans/s per project (token bucket, one second of burst),
  answered 429 / RESOURCE_EXHAUSTED.
- Fair share: once the log is more than half full, a project holding more than its share of
  the unflushed bytes (bytes / active projects) is refused first, so a flood from one project
  leaves room for the others.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import msgspec


class Overloaded(RuntimeError):
    """The gateway cannot take this now; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(Overloaded):
    pass


class RateLimited(Overloaded):
    """One project sends more than its configured rate (HTTP 429, gRPC RESOURCE_EXHAUSTED)."""


class Exhausted(Overloaded):
    """The write-ahead log is full (HTTP 503, gRPC RESOURCE_EXHAUSTED)."""


class _Log(Protocol):
    max_bytes: int

    @property
    def size_bytes(self) -> int: ...


class AdmissionStats(msgspec.Struct):
    refused_inflight: int = 0
    refused_connection: int = 0
    refused_full: int = 0
    refused_fair_share: int = 0
    refused_rate: int = 0


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Admission:
    MAX_TRACKED_PROJECTS = 10_000

    def __init__(self, *, max_inflight_requests: int, max_inflight_per_connection: int,
                 project_rate_limit: float = 0.0, fair_share_from: float = 0.5) -> None:
        self.max_inflight = max_inflight_requests
        self.max_per_connection = max_inflight_per_connection
        self.rate = project_rate_limit
        self.fair_share_from = fair_share_from
        self.inflight = 0
        self._per_connection: collections.Counter[str] = collections.Counter()
        self._buckets: dict[str, _Bucket] = {}
        # Unflushed bytes per project, released as checkpoints pass their records.
        self._pending: collections.Counter[str] = collections.Counter()
        self._records: collections.deque[tuple[int, str, int]] = collections.deque()
        self.stats = AdmissionStats()

    @contextmanager
    def slot(self, connection: str) -> Iterator[None]:
        """Hold one in-flight slot for the whole request (read, decode, append, fsync)."""
        if self.inflight >= self.max_inflight:
            self.stats.refused_inflight += 1
            raise Overloaded(f"too many requests in flight ({self.max_inflight})")
        if self._per_connection[connection] >= self.max_per_connection:
            self.stats.refused_connection += 1
            raise Overloaded(f"too many requests in flight on this connection ({self.max_per_connection})")
        self.inflight += 1
        self._per_connection[connection] += 1
        try:
            yield
        finally:
            self.inflight -= 1
            self._per_connection[connection] -= 1
            if not self._per_connection[connection]:
                del self._per_connection[connection]

    def check_capacity(self, wal: _Log, project: str, connection: str) -> None:
        if wal.size_bytes >= wal.max_bytes:
            self.stats.refused_full += 1
            raise Exhausted(f"write-ahead log is full ({wal.size_bytes} of {wal.max_bytes} bytes)", 5.0)

    def admit(self, wal: _Log, project: str, connection: str, items: int, size: int) -> None:
        self.check_capacity(wal, project, connection)
        used = wal.size_bytes
        if used > wal.max_bytes * self.fair_share_from:
            active = sum(1 for v in self._pending.values() if v > 0)
            if active > 1 and self._pending[project] > used / active:
                self.stats.refused_fair_share += 1
                raise Overloaded(f"project {project!r} holds more than its share of the write-ahead log", 2.0)
        if self.rate > 0:
            self._take(project, items)

    def _take(self, project: str, items: int) -> None:
        now = time.monotonic()
        bucket = self._buckets.get(project)
        if bucket is None:
            if len(self._buckets) >= self.MAX_TRACKED_PROJECTS:
                self._buckets.clear()
            bucket = self._buckets[project] = _Bucket(self.rate, now)
        bucket.tokens = min(self.rate, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        # A request larger than one second's budget may pass when the bucket is full, so a
        # big batch is never refused for ever; it then owes the time it used.
        if bucket.tokens < items and bucket.tokens < self.rate:
            self.stats.refused_rate += 1
            wait = (min(items, self.rate) - bucket.tokens) / self.rate
            raise RateLimited(f"project {project!r} is over its rate limit of {self.rate:g} spans/s",
                              retry_after_s=max(wait, 0.1))
        bucket.tokens -= items

    def track(self, seq: int, project: str, size: int) -> None:
        self._pending[project] += size
        self._records.append((seq, project, size))

    def release_through(self, seq: int) -> None:
        while self._records and self._records[0][0] <= seq:
            _, project, size = self._records.popleft()
            self._pending[project] -= size
            if self._pending[project] <= 0:
                del self._pending[project]

    def describe(self) -> dict[str, Any]:
        return {"inflight": self.inflight, "projects_pending": len(self._pending), **msgspec.to_builtins(self.stats)}
