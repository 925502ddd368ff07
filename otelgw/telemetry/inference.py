"""Per-inference Prometheus series, derived from the inference rows the mapper produces:
requests by status, latency and TTFT histograms, tokens by type and cost, labelled by project,
model and provider.

Label values come from user data, so each label admits a bounded number of values; later values
are folded into `other`. Admission is sticky for the life of the process: a value never moves
between its own series and `other`, so every counter stays monotonic and `rate()` stays right.
The gateway pre-admits the busiest models of the last week from the analytics rollup at start,
so "the first N seen" is close to "the top N".
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from otelgw.pipeline.rows import InferenceRow

OTHER = "other"
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class LabelLimiter:
    """Admits up to `limit` distinct values of one label; the rest read as `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()
        self.folded = 0  # observations counted under `other`

    def admit(self, value: str) -> str:
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit:
            self._admitted.add(value)
            return value
        self.folded += 1
        return OTHER

    def preadmit(self, values: Iterable[str]) -> None:
        for value in values:
            if len(self._admitted) >= self.limit:
                return
            self._admitted.add(value)

    def __len__(self) -> int:
        return len(self._admitted)


class _Series:
    __slots__ = ("cached", "cost", "errors", "input", "latency", "latency_sum", "ok", "output", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.ok = self.errors = self.input = self.output = self.cached = 0
        self.cost = self.latency_sum = self.ttft_sum = 0.0
        # Per-bucket (not cumulative) counts; the last slot is +Inf.
        self.latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.ttft = [0] * (len(TTFT_BUCKETS_S) + 1)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*map(str, bounds), "+Inf"), counts, strict=True):
        total += count
        out.append((bound, total))
    return out


class InferenceSeries(Collector):
    def __init__(self, max_models: int = 200, max_projects: int = 100, max_providers: int = 50) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], _Series] = {}
        self.models = LabelLimiter(max_models)
        self.projects = LabelLimiter(max_projects)
        self.providers = LabelLimiter(max_providers)

    def preadmit_models(self, models: Iterable[str]) -> None:
        with self._lock:
            self.models.preadmit(models)

    def observe(self, rows: Iterable[InferenceRow]) -> None:
        """Called by the mapping thread for every batch of inference rows."""
        with self._lock:
            for row in rows:
                key = (self.projects.admit(row.project_id),
                       self.models.admit(row.response_model or row.request_model or "unknown"),
                       self.providers.admit(row.provider or "unknown"))
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = _Series()
                if row.is_success:
                    series.ok += 1
                else:
                    series.errors += 1
                series.input += row.input_tokens
                series.output += row.output_tokens
                series.cached += row.cached_input_tokens
                series.cost += row.cost_usd
                latency = max(row.latency_ms, 0.0) / 1000
                series.latency[bisect.bisect_left(LATENCY_BUCKETS_S, latency)] += 1
                series.latency_sum += latency
                if row.ttft_ms is not None:
                    ttft = max(row.ttft_ms, 0.0) / 1000
                    series.ttft[bisect.bisect_left(TTFT_BUCKETS_S, ttft)] += 1
                    series.ttft_sum += ttft

    def _snapshot(self) -> list[tuple[tuple[str, str, str], _Series]]:
        with self._lock:
            out = []
            for key, s in self._series.items():
                copy = _Series()
                for name in _Series.__slots__:
                    value = getattr(s, name)
                    setattr(copy, name, list(value) if isinstance(value, list) else value)
                out.append((key, copy))
            return out

    def describe(self) -> Iterator[Metric]:
        # Declared up front so the registry knows the names without a collect at registration.
        yield from self._families([])

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._snapshot())

    def _families(self, snapshot: list[tuple[tuple[str, str, str], _Series]]) -> Iterator[Metric]:
        labels = ["project", "model", "provider"]
        requests = CounterMetricFamily("inference_requests", "Inferences ingested, by outcome.",
                                       labels=[*labels, "status"])
        tokens = CounterMetricFamily("inference_tokens", "Tokens of ingested inferences, by type.",
                                     labels=[*labels, "type"])
        cost = CounterMetricFamily("inference_cost_usd", "Cost of ingested inferences in US dollars.", labels=labels)
        latency = HistogramMetricFamily("inference_latency_seconds", "Inference latency (span duration).",
                                        labels=labels)
        ttft = HistogramMetricFamily("inference_ttft_seconds", "Time to first token of streamed inferences.",
                                     labels=labels)
        for key, s in snapshot:
            values = list(key)
            requests.add_metric([*values, "success"], s.ok)
            requests.add_metric([*values, "error"], s.errors)
            tokens.add_metric([*values, "input"], s.input)
            tokens.add_metric([*values, "output"], s.output)
            tokens.add_metric([*values, "cached"], s.cached)
            cost.add_metric(values, s.cost)
            latency.add_metric(values, _cumulative(LATENCY_BUCKETS_S, s.latency), s.latency_sum)
            if sum(s.ttft):
                ttft.add_metric(values, _cumulative(TTFT_BUCKETS_S, s.ttft), s.ttft_sum)
        yield from (requests, tokens, cost, latency, ttft)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"series": len(self._series), "models": len(self.models), "projects": len(self.projects),
                    "providers": len(self.providers), "folded_models": self.models.folded,
                    "folded_projects": self.projects.folded, "folded_providers": self.providers.folded}
