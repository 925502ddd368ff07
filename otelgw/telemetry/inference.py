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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from otelgw.pipeline.rows import InferenceRow

if TYPE_CHECKING:
    from otelgw.pipeline.workers import InferenceDigest

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


_LATENCY_LE = (*(repr(b) for b in LATENCY_BUCKETS_S), "+Inf")
_TTFT_LE = (*(repr(b) for b in TTFT_BUCKETS_S), "+Inf")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _histogram(out: list[str], name: str, labels: str, bounds: tuple[str, ...], counts: list[int],
               total: float) -> None:
    cumulative = 0
    for le, count in zip(bounds, counts, strict=True):
        cumulative += count
        out.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}')
    out.append(f"{name}_sum{{{labels}}} {total!r}")
    out.append(f"{name}_count{{{labels}}} {cumulative}")


class InferenceSeries:
    def __init__(self, max_models: int = 200, max_projects: int = 100, max_providers: int = 50) -> None:
        self._lock = threading.Lock()
        self._label_text: dict[tuple[str, str, str], str] = {}
        self._series: dict[tuple[str, str, str], _Series] = {}
        self.models = LabelLimiter(max_models)
        self.projects = LabelLimiter(max_projects)
        self.providers = LabelLimiter(max_providers)

    def preadmit_models(self, models: Iterable[str]) -> None:
        with self._lock:
            self.models.preadmit(models)

    def observe(self, rows: Iterable[InferenceRow] | Iterable[InferenceDigest]) -> None:
        """Called in log order for every record's inference rows (or their digests, from a mapping
        worker)."""
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

    def render(self) -> str:
        """The series in the Prometheus text format (0.0.4). Written here rather than through
        prometheus-client's generic families: with 200 models x a few projects that is ~12k
        samples, which the generic path renders in ~130 ms and this one in a fraction of it
        (loadtest/bench_analytics.py)."""
        snapshot = self._snapshot()
        requests = ["# HELP inference_requests_total Inferences ingested, by outcome.",
                    "# TYPE inference_requests_total counter"]
        tokens = ["# HELP inference_tokens_total Tokens of ingested inferences, by type.",
                  "# TYPE inference_tokens_total counter"]
        cost = ["# HELP inference_cost_usd_total Cost of ingested inferences in US dollars.",
                "# TYPE inference_cost_usd_total counter"]
        latency = ["# HELP inference_latency_seconds Inference latency (span duration).",
                   "# TYPE inference_latency_seconds histogram"]
        ttft = ["# HELP inference_ttft_seconds Time to first token of streamed inferences.",
                "# TYPE inference_ttft_seconds histogram"]
        for key, s in snapshot:
            labels = self._labels(key)
            requests.append(f'inference_requests_total{{{labels},status="success"}} {s.ok}')
            requests.append(f'inference_requests_total{{{labels},status="error"}} {s.errors}')
            tokens.append(f'inference_tokens_total{{{labels},type="input"}} {s.input}')
            tokens.append(f'inference_tokens_total{{{labels},type="output"}} {s.output}')
            tokens.append(f'inference_tokens_total{{{labels},type="cached"}} {s.cached}')
            cost.append(f"inference_cost_usd_total{{{labels}}} {s.cost!r}")
            _histogram(latency, "inference_latency_seconds", labels, _LATENCY_LE, s.latency, s.latency_sum)
            if sum(s.ttft):
                _histogram(ttft, "inference_ttft_seconds", labels, _TTFT_LE, s.ttft, s.ttft_sum)
        return "\n".join([*requests, *tokens, *cost, *latency, *ttft, ""])

    def _labels(self, key: tuple[str, str, str]) -> str:
        text = self._label_text.get(key)
        if text is None:
            project, model, provider = (_escape(v) for v in key)
            text = self._label_text[key] = f'project="{project}",model="{model}",provider="{provider}"'
        return text

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"series": len(self._series), "models": len(self.models), "projects": len(self.projects),
                    "providers": len(self.providers), "folded_models": self.models.folded,
                    "folded_projects": self.projects.folded, "folded_providers": self.providers.folded}
