"""Tail sampling of trace detail (span rows). Inference, message and feedback rows never come
here: they are always stored.

Shaped like the OTel Collector's tail_sampling processor: spans wait, grouped by trace id, until
`decision_wait_s` after the trace's last span; then the policies decide for the whole trace,
keep if any policy says keep. One class a policy, built from a `type` string. Memory is bounded
by `num_traces` and `max_bytes`: past either, the oldest traces are decided early (counted).
Spans arriving after their trace's decision follow it (a bounded cache of recent decisions).

Durability: a buffered span's log record is not checkpointed until its trace is decided and, if
kept, written (`min_pending_seq`), so a crash replays it and the same deterministic policies
decide again; the probabilistic policy hashes the trace id, so every gateway and every replay
agrees.
"""

from __future__ import annotations

import collections
import hashlib
import time
import tomllib
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

from otelgw.pipeline.fastpath import NativeSource
from otelgw.pipeline.rows import SpanRow, ts

PolicyType = Literal["always_sample", "status_code", "latency", "probabilistic", "string_attribute",
                     "numeric_attribute", "rate_limiting", "evaluation", "and", "composite"]


class PolicySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    type: PolicyType
    status_codes: list[str] = msgspec.field(default_factory=lambda: ["ERROR"])
    threshold_ms: float = 0.0
    upper_threshold_ms: float = 0.0
    sampling_percentage: float = 0.0
    key: str = ""
    values: list[str] = []
    invert_match: bool = False
    min_value: float | None = None
    max_value: float | None = None
    spans_per_second: float = 0.0
    below: float | None = None
    labels: list[str] = []
    policies: list[PolicySpec] = []


class SamplingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    decision_wait_s: float = 10.0
    # A trace that keeps receiving spans is decided this long after its first span anyway, so it
    # cannot hold the write-ahead log's checkpoint (and its buffer) back for ever.
    max_trace_wait_s: float = 120.0
    num_traces: int = 50_000
    max_bytes: int = 256 * 1024 * 1024
    decision_cache: int = 100_000
    policies: list[PolicySpec] = []
    # Per project: a policy list that replaces the default one for that project.
    projects: dict[str, list[PolicySpec]] = {}


DEFAULT_POLICIES = [
    PolicySpec(name="errors", type="status_code", status_codes=["ERROR"]),
    PolicySpec(name="error-type", type="string_attribute", key="error.type", values=[], invert_match=False),
    PolicySpec(name="slow", type="latency", threshold_ms=2000),
    PolicySpec(name="negative-evaluation", type="evaluation", below=0.5, labels=["fail", "bad", "negative"]),
    PolicySpec(name="baseline", type="probabilistic", sampling_percentage=10),
]


class BufferedSpan:
    """A waiting span, kept compact: its JSONEachRow line (ready to write) and only what the
    policies read. Thousands of full row objects would make the garbage collector crawl. A span
    for the fast path has no line: its request's bytes (`source`, shared by its spans) and its
    position there."""

    __slots__ = ("trace_id", "span_id", "status_code", "attributes", "line", "source", "position")

    def __init__(self, trace_id: str, span_id: str, status_code: str, attributes: dict[str, str],
                 line: bytes, source: NativeSource | None = None, position: int = -1) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.status_code = status_code
        self.attributes = attributes
        self.line = line
        self.source = source
        self.position = position


class SpanDigest(msgspec.Struct, array_like=True, gc=False):
    """What the sampler needs of one span row, made where the row is mapped (a worker process
    may do it): the encoded line and the attributes policies read."""

    trace_id: str
    span_id: str
    project_id: str
    status_code: str
    attributes: dict[str, str]
    start_ns: int
    end_ns: int
    line: bytes
    # Fast path: no line, the span's position in its request (written by ClickHouse).
    position: int = -1


def digest_spans(rows: list[SpanRow], keys: frozenset[str], encoder: msgspec.json.Encoder) -> list[SpanDigest]:
    stamp = ts(time.time_ns())
    out: list[SpanDigest] = []
    for row in rows:
        row.ingested_at = stamp
        out.append(SpanDigest(row.trace_id, row.span_id, row.project_id, row.status_code,
                              {k: v for k, v in row.attributes.items() if k in keys} if keys else {},
                              _ns(row.start_time), _ns(row.end_time), encoder.encode(row) + b"\n"))
    return out


class Trace:
    """A trace waiting for its decision."""

    __slots__ = ("trace_id", "project", "spans", "first_seen", "last_seen", "min_seq", "size", "start_ns",
                 "end_ns", "evaluations")

    def __init__(self, trace_id: str, project: str, now: float) -> None:
        self.trace_id = trace_id
        self.project = project
        self.spans: list[BufferedSpan] = []
        self.first_seen = now
        self.last_seen = now
        self.min_seq = 0
        self.size = 0
        self.start_ns = 2**63
        self.end_ns = 0
        self.evaluations: list[tuple[float | None, str]] = []


class Policy(Protocol):
    name: str

    def keep(self, trace: Trace) -> bool: ...


def trace_hash_percent(trace_id: str) -> float:
    """A stable 0-100 position for a trace id (same on every gateway and every replay)."""
    digest = hashlib.blake2b(trace_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


class AlwaysSample:
    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name

    def keep(self, trace: Trace) -> bool:
        return True


class StatusCode:
    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.codes = {c.lower() for c in spec.status_codes}

    def keep(self, trace: Trace) -> bool:
        return any(span.status_code in self.codes for span in trace.spans)


class Latency:
    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.low = spec.threshold_ms * 1e6
        self.high = spec.upper_threshold_ms * 1e6 if spec.upper_threshold_ms else None

    def keep(self, trace: Trace) -> bool:
        duration = trace.end_ns - trace.start_ns
        return duration >= self.low and (self.high is None or duration <= self.high)


class Probabilistic:
    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.percent = spec.sampling_percentage

    def keep(self, trace: Trace) -> bool:
        return trace_hash_percent(trace.trace_id) < self.percent


class StringAttribute:
    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.key = spec.key
        self.values = set(spec.values)
        self.invert = spec.invert_match

    def _matches(self, trace: Trace) -> bool:
        for span in trace.spans:
            value = span.attributes.get(self.key)
            if value is not None and (not self.values or value in self.values):
                return True
        return False

    def keep(self, trace: Trace) -> bool:
        return self._matches(trace) != self.invert


class NumericAttribute:
    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.key = spec.key
        self.low = spec.min_value
        self.high = spec.max_value

    def keep(self, trace: Trace) -> bool:
        for span in trace.spans:
            raw = span.attributes.get(self.key)
            if raw is None:
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            if (self.low is None or value >= self.low) and (self.high is None or value <= self.high):
                return True
        return False


class RateLimiting:
    """Keeps whole traces while their project stays under `spans_per_second`."""

    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.rate = spec.spans_per_second
        self._window: dict[str, tuple[int, int]] = {}

    def keep(self, trace: Trace) -> bool:
        second = int(time.monotonic())
        start, used = self._window.get(trace.project, (second, 0))
        if start != second:
            start, used = second, 0
        if used + len(trace.spans) > self.rate:
            self._window[trace.project] = (start, used)
            return False
        self._window[trace.project] = (start, used + len(trace.spans))
        return True


class Evaluation:
    """Keeps a trace whose GenAI span got an evaluation below a score, or with a bad label,
    while the trace was waiting."""

    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.below = spec.below
        self.labels = {label.lower() for label in spec.labels}

    def keep(self, trace: Trace) -> bool:
        for score, label in trace.evaluations:
            if self.below is not None and score is not None and score < self.below:
                return True
            if label.lower() in self.labels:
                return True
        return False


class And:
    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.children = [build_policy(p) for p in spec.policies]

    def keep(self, trace: Trace) -> bool:
        return bool(self.children) and all(child.keep(trace) for child in self.children)


class Composite:
    """Any of its sub-policies, evaluated in order (the first that keeps decides)."""

    def __init__(self, spec: PolicySpec) -> None:
        self.name = spec.name
        self.children = [build_policy(p) for p in spec.policies]

    def keep(self, trace: Trace) -> bool:
        return any(child.keep(trace) for child in self.children)


_POLICIES: dict[str, type] = {
    "always_sample": AlwaysSample, "status_code": StatusCode, "latency": Latency, "probabilistic": Probabilistic,
    "string_attribute": StringAttribute, "numeric_attribute": NumericAttribute, "rate_limiting": RateLimiting,
    "evaluation": Evaluation, "and": And, "composite": Composite,
}


def build_policy(spec: PolicySpec) -> Policy:
    if spec.type in ("string_attribute", "numeric_attribute") and not spec.key:
        raise ValueError(f"policy {spec.name!r}: {spec.type} needs a key")
    if spec.type in ("and", "composite") and not spec.policies:
        raise ValueError(f"policy {spec.name!r}: {spec.type} needs sub-policies")
    if spec.type == "probabilistic" and not 0 <= spec.sampling_percentage <= 100:
        raise ValueError(f"policy {spec.name!r}: sampling_percentage must be 0-100")
    return _POLICIES[spec.type](spec)


def load_sampling(path: str | None, enabled: bool) -> SamplingConfig:
    if not path:
        return SamplingConfig(enabled=enabled, policies=list(DEFAULT_POLICIES))
    try:
        with open(Path(path), "rb") as fh:
            config = msgspec.convert(tomllib.load(fh), SamplingConfig)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"sampling policies {path}: {exc}") from exc
    if not config.policies:
        config.policies = list(DEFAULT_POLICIES)
    config.enabled = config.enabled and enabled
    return config


class SamplerStats(msgspec.Struct):
    traces_kept: int = 0
    traces_dropped: int = 0
    kept_by_policy: dict[str, int] = {}
    late_spans_kept: int = 0
    late_spans_dropped: int = 0
    early_decisions: int = 0
    buffered_traces: int = 0
    buffered_spans: int = 0
    buffered_bytes: int = 0


class TailSampler:
    """Single-threaded: the apply thread (results in log order) adds spans and asks for decisions."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        self._default = [build_policy(p) for p in config.policies]
        self._by_project = {project: [build_policy(p) for p in specs] for project, specs in config.projects.items()}
        self._pending: collections.OrderedDict[str, Trace] = collections.OrderedDict()
        self._decided: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self._size = 0
        # Fast-path requests pinned by waiting spans: id -> [source, waiting spans]. A request's
        # bytes count once against max_bytes while any of its spans waits.
        self._sources: dict[int, list[Any]] = {}
        self._span_count = 0
        # How many waiting traces each log record started: the oldest key is the floor. Few
        # keys (records within one decision wait), so min() over them is cheap.
        self._seq_refs: collections.Counter[int] = collections.Counter()
        self._last_sweep = 0.0
        self.stats = SamplerStats()
        self._encoder = msgspec.json.Encoder()
        self.keys = policy_keys(config)
        # Plain ints, read from the event loop while the apply thread works: the oldest log
        # record with a waiting span, and the oldest one whose spans the last tick released.
        self.floor_seq = 0
        self.released_floor = 0

    def add(self, rows: list[SpanRow], seq: int, now: float | None = None) -> list[BufferedSpan]:
        """Buffer spans; returns the late ones whose trace was already kept (write them now)."""
        return self.add_digests(digest_spans(rows, self.keys, self._encoder), seq, now)

    def add_digests(self, digests: list[SpanDigest], seq: int, now: float | None = None,
                    source: NativeSource | None = None) -> list[BufferedSpan]:
        """`add` for spans already digested (in a mapping worker, see digest_spans). `source`: the
        request of the digests that have a position (the fast path's)."""
        now = time.monotonic() if now is None else now
        late: list[BufferedSpan] = []
        for digest in digests:
            native = digest.position >= 0 and source is not None
            span = BufferedSpan(digest.trace_id, digest.span_id, digest.status_code, digest.attributes, digest.line,
                                source if native else None, digest.position)
            decision = self._decided.get(span.trace_id)
            if decision is not None:
                if decision:
                    late.append(span)
                    self.released_floor = seq
                    self.stats.late_spans_kept += 1
                else:
                    self.stats.late_spans_dropped += 1
                continue
            trace = self._pending.get(span.trace_id)
            if trace is None:
                trace = self._pending[span.trace_id] = Trace(span.trace_id, digest.project_id, now)
                trace.min_seq = seq
                self._seq_refs[seq] += 1
            else:
                self._pending.move_to_end(span.trace_id)
            trace.last_seen = now
            trace.spans.append(span)
            size = 120 + len(digest.line)
            if span.source is not None:
                pinned = self._sources.get(id(span.source))
                if pinned is None:
                    pinned = self._sources[id(span.source)] = [span.source, 0]
                    self._size += len(span.source.payload)
                pinned[1] += 1
            trace.size += size
            self._size += size
            self._span_count += 1
            trace.start_ns = min(trace.start_ns, digest.start_ns)
            trace.end_ns = max(trace.end_ns, digest.end_ns)
        self._update_stats()
        return late

    def note_evaluation(self, trace_id: str, score: float | None, label: str) -> None:
        trace = self._pending.get(trace_id)
        if trace is not None:
            trace.evaluations.append((score, label))

    def tick(self, now: float | None = None, flush_all: bool = False) -> list[BufferedSpan]:
        """Decide every trace whose wait is over (or every one, at shutdown, or the oldest past
        the memory bounds); returns the spans of the kept ones."""
        now = time.monotonic() if now is None else now
        kept: list[BufferedSpan] = []
        released_floor = 0
        wait = self.config.decision_wait_s
        overdue: list[Trace] = []
        if now - self._last_sweep >= 5.0:
            # The buffer is ordered by last arrival; a long-lived trace needs a scan to be found.
            self._last_sweep = now
            overdue = [t for t in self._pending.values() if now - t.first_seen >= self.config.max_trace_wait_s]
        for trace in overdue:
            self._remove(trace)
            if self._decide(trace):
                kept.extend(trace.spans)
                released_floor = min(released_floor, trace.min_seq) if released_floor else trace.min_seq
        while self._pending:
            trace_id, trace = next(iter(self._pending.items()))
            over_bounds = (len(self._pending) > self.config.num_traces or self._size > self.config.max_bytes)
            if not flush_all and not over_bounds and now - trace.last_seen < wait:
                # The order is by last arrival, so nothing after this one is due either.
                break
            if over_bounds and not flush_all and now - trace.last_seen < wait:
                self.stats.early_decisions += 1
            self._remove(trace)
            if self._decide(trace):
                kept.extend(trace.spans)
                released_floor = min(released_floor, trace.min_seq) if released_floor else trace.min_seq
        self.released_floor = released_floor
        self._update_stats()
        return kept

    def _remove(self, trace: Trace) -> None:
        del self._pending[trace.trace_id]
        self._seq_refs[trace.min_seq] -= 1
        if not self._seq_refs[trace.min_seq]:
            del self._seq_refs[trace.min_seq]
        self._size -= trace.size
        self._span_count -= len(trace.spans)
        for span in trace.spans:
            if span.source is not None:
                pinned = self._sources[id(span.source)]
                pinned[1] -= 1
                if not pinned[1]:
                    del self._sources[id(span.source)]
                    self._size -= len(span.source.payload)

    def _decide(self, trace: Trace) -> bool:
        policies = self._by_project.get(trace.project, self._default)
        keep_by = next((p.name for p in policies if p.keep(trace)), None)
        self._decided[trace.trace_id] = keep_by is not None
        if len(self._decided) > self.config.decision_cache:
            self._decided.popitem(last=False)
        if keep_by is None:
            self.stats.traces_dropped += 1
            return False
        self.stats.traces_kept += 1
        self.stats.kept_by_policy[keep_by] = self.stats.kept_by_policy.get(keep_by, 0) + 1
        return True

    def min_pending_seq(self) -> int:
        """The oldest log record with a span still waiting (0: none)."""
        return min(self._seq_refs, default=0)

    def _update_stats(self) -> None:
        self.floor_seq = self.min_pending_seq()
        self.stats.buffered_traces = len(self._pending)
        self.stats.buffered_spans = self._span_count
        self.stats.buffered_bytes = self._size


def policy_keys(config: SamplingConfig) -> frozenset[str]:
    """Attribute keys some policy reads: the only attributes a waiting span keeps in memory."""
    return frozenset(_policy_keys(config.policies) | {k for specs in config.projects.values()
                                                      for k in _policy_keys(specs)})


def _policy_keys(specs: list[PolicySpec]) -> set[str]:
    keys: set[str] = set()
    for spec in specs:
        if spec.key:
            keys.add(spec.key)
        keys |= _policy_keys(spec.policies)
    return keys


def _ns(stamp: str) -> int:
    """A rows.ts string back to ns ("sec.nanos", or the date form for times before 2001)."""
    seconds, _, frac = stamp.partition(".")
    if seconds.isdigit():
        return int(seconds) * 1_000_000_000 + int(frac or 0)
    return 0
