"""POST /observability/analytics: time series of request counts, outcomes, tokens, latency, TTFT,
queue time, throughput, concurrency, cache and cost, per bucket and group, in the Bud metrics
service's request and response shapes (docs/api.md has the differences).

Everything is read from the rollup tables (store/queries/analytics.py). Percentiles come from
merged log-bucketed histograms (2.5 % resolution). `concurrent_requests` is the average number
of requests in flight over the bucket (total request time / bucket length, Little's law): the
rollups keep sums, not timelines.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from otelgw.api.common import READER_KEY, ApiError, decode_body, json_response, parse_time_ns, principal
from otelgw.api.schemas import AnalyticsBucket, AnalyticsGroup, AnalyticsRequest, AnalyticsResponse
from otelgw.store.queries.analytics import (
    DAY,
    FILTER_COLUMNS,
    GROUP_COLUMNS,
    MINUTE,
    OTHER,
    Buckets,
    Scope,
    pieces,
    series_sql,
)

MAX_BUCKETS = 20_000
# The group fields of a response item, by grouped column.
_ID_FIELDS = {"model": "model_id", "project_id": "project_id", "service_name": "endpoint_id", "provider": "provider"}
# The value a metric's delta is computed on.
_PRIMARY = {"request_count": "count", "success_request": "count", "failure_request": "count", "input_token": "count",
            "output_token": "count", "cache": "hit_rate", "cost": "total_usd", "latency": "avg", "ttft": "avg",
            "queuing_time": "avg_time_ms", "throughput": "avg", "concurrent_requests": "avg"}


def _num(value: float | None, digits: int = 3) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


def _ratio(part: float, whole: float, scale: float = 1.0, digits: int = 3) -> float | None:
    return _num(part * scale / whole, digits) if whole else None


def _quantiles(values: list[float] | None) -> dict[str, float | None]:
    # Rounded by ClickHouse; NaN (no value in the bucket) is the only thing to fix here.
    p50, p95, p99 = values or (None, None, None)
    return {"p50": p50 if p50 == p50 else None, "p95": p95 if p95 == p95 else None,
            "p99": p99 if p99 == p99 else None}


def metric_values(metric: str, a: dict[str, Any] | None, duration_s: float) -> dict[str, Any]:
    """One metric's object for one bucket and group; `a` is its aggregate row (None: no data)."""
    a = a or {}
    n = a.get("a_requests", 0)
    if metric == "request_count":
        return {"count": n, "rate": None}
    if metric in ("success_request", "failure_request"):
        ok = a.get("a_successes", 0)
        count = ok if metric == "success_request" else n - ok
        return {"count": count, "rate": _ratio(count, n, 100)}
    if metric in ("input_token", "output_token"):
        return {"count": a.get("a_input" if metric == "input_token" else "a_output", 0), "rate": None}
    if metric == "cache":
        hits = a.get("a_cache_hits", 0)
        return {"hit_count": hits, "hit_rate": _ratio(hits, n, 100), "cached_tokens": a.get("a_cached", 0),
                "avg_latency_ms": None}
    if metric == "cost":
        total = a.get("a_cost", 0.0)
        return {"total_usd": _num(total, 6), "avg_usd": _num(total / n, 8) if n else None}
    if metric == "latency":
        return {"avg": _ratio(a.get("a_lat_sum", 0.0), n), **_quantiles(a.get("a_lat_q")),
                "max": _num(a.get("a_lat_max")) if n else None}
    if metric == "ttft":
        count = a.get("a_ttft_count", 0)
        return {"avg": _ratio(a.get("a_ttft_sum", 0.0), count), **_quantiles(a.get("a_ttft_q")), "count": count}
    if metric == "queuing_time":
        count = a.get("a_queue_count", 0)
        return {"avg_time_ms": _ratio(a.get("a_queue_sum", 0.0), count), **_quantiles(a.get("a_queue_q")),
                "count": count}
    if metric == "throughput":
        return {"avg": _ratio(a.get("a_tps_sum", 0.0), a.get("a_tps_count", 0)), **_quantiles(a.get("a_tps_q"))}
    # concurrent_requests
    return {"avg": _ratio(a.get("a_lat_sum", 0.0) / 1000, duration_s, digits=6) if duration_s > 0 else None,
            "p95": None, "p99": None}


def _delta(current: Any, previous: Any) -> dict[str, float | None]:
    if current is None or previous is None:
        return {"delta": None, "delta_percent": None}
    delta = current - previous
    return {"delta": delta, "delta_percent": round(delta / previous * 100, 2) if previous else None}


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _values(value: str | list[str] | None) -> list[str] | None:
    return None if value is None else ([value] if isinstance(value, str) else list(dict.fromkeys(value)))


def _scope(body: AnalyticsRequest, caller_projects: list[str] | None) -> Scope:
    filters: dict[str, list[str]] = {}
    if body.filters is not None:
        if body.filters.endpoint is not None and body.filters.service_name is not None:
            raise ApiError(400, "invalid_request", "filters.endpoint and filters.service_name name the same "
                                                   "column: give one")
        for name, column in FILTER_COLUMNS.items():
            values = _values(getattr(body.filters, name))
            if values is not None:
                filters[column] = values
    return Scope(projects=caller_projects, filters=filters)


class _Plan:
    """The request, validated and resolved to buckets and ranges (unix seconds, whole minutes)."""

    def __init__(self, body: AnalyticsRequest, now_s: int) -> None:
        from_ns = parse_time_ns(body.from_date, "from_date")
        to_ns = parse_time_ns(body.to_date, "to_date") if body.to_date else now_s * 1_000_000_000
        self.start = from_ns // 1_000_000_000 // MINUTE * MINUTE
        self.end = -(-to_ns // (MINUTE * 1_000_000_000)) * MINUTE
        if self.end <= self.start:
            raise ApiError(400, "invalid_request", "to_date must be after from_date (the range is whole minutes)")
        if body.topk is not None and not body.group_by:
            raise ApiError(400, "invalid_request", "topk needs group_by: it keeps the k largest groups")
        self.metrics = list(dict.fromkeys(body.metrics))
        self.groups = list(dict.fromkeys(body.group_by or []))
        self.buckets = Buckets(unit=body.frequency_unit, interval=body.frequency_interval, origin=self.start)
        self.first = self.buckets.start(self.start)
        count = (self.end - self.first) // self.buckets.step + 1 if body.frequency_unit in ("hour", "day", "week") \
            or body.frequency_interval else (self.end - self.first) // (28 * DAY) + 1
        if count > MAX_BUCKETS:
            raise ApiError(400, "invalid_request", f"frequency_unit {body.frequency_unit!r} with frequency_interval "
                                                   f"{body.frequency_interval} makes more than {MAX_BUCKETS} "
                                                   "buckets: use a larger unit or interval, or a shorter range")
        self.starts: list[int] = []
        b = self.first
        while b < self.end:
            self.starts.append(b)
            b = self.buckets.next(b)
        # The bucket before the first one, so the first bucket has a delta too.
        self.previous = self.buckets.start(self.first - 1) if body.return_delta else None
        self.now_s = now_s

    def duration(self, b: int) -> float:
        """Seconds of the bucket inside the range (and not in the future), for concurrency."""
        end = self.buckets.next(b)
        start = max(b, self.start) if b >= self.first else b
        return max(min(end, self.end, self.now_s) - start, 0)


def _group_fields(groups: list[str], key: tuple[str, ...], scope: Scope) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    columns = [GROUP_COLUMNS[g] for g in groups]
    for column, value in zip(columns, key, strict=True):
        fields[_ID_FIELDS[column]] = value
    # Bud's behaviour: a filter naming one value is echoed on ungrouped items.
    for column, values in scope.filters.items():
        if column not in columns and len(values) == 1:
            fields[_ID_FIELDS[column]] = values[0]
    return fields


def _data(plan: _Plan, row: dict[str, Any] | None, duration_s: float,
          before: dict[str, Any] | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The metric objects of one bucket and group, with deltas against `before` (the previous
    bucket's primary values; None: no deltas), and this bucket's primary values."""
    data: dict[str, dict[str, Any]] = {}
    primary: dict[str, Any] = {}
    for metric in plan.metrics:
        values = metric_values(metric, row, duration_s)
        primary[metric] = values[_PRIMARY[metric]]
        values.update(_delta(primary[metric], before[metric]) if before is not None else _NO_DELTA)
        data[metric] = values
    return data, primary


_NO_DELTA: dict[str, None] = {"delta": None, "delta_percent": None}


def _primary(plan: _Plan, row: dict[str, Any] | None, duration_s: float) -> dict[str, Any]:
    return {m: metric_values(m, row, duration_s)[_PRIMARY[m]] for m in plan.metrics}


def _sort_key(key: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    return (OTHER in key, key)


def build_response(plan: _Plan, body: AnalyticsRequest, scope: Scope, rows: list[dict[str, Any]],
                   summary_rows: list[dict[str, Any]] | None) -> AnalyticsResponse:
    columns = [GROUP_COLUMNS[g] for g in plan.groups]
    by_bucket: dict[int, dict[tuple[str, ...], dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row[f"g_{c}"] for c in columns)
        by_bucket.setdefault(row["bucket"], {})[key] = row
    groups = sorted({k for b, keyed in by_bucket.items() if b >= plan.first for k in keyed}, key=_sort_key)
    if not columns:
        groups = [()]
    fields = {key: _group_fields(plan.groups, key, scope) for key in groups}
    last: dict[tuple[str, ...], dict[str, Any] | None] = dict.fromkeys(groups)
    if body.return_delta and plan.previous is not None:
        before_rows = by_bucket.get(plan.previous, {})
        duration = plan.buckets.next(plan.previous) - plan.previous
        last = {key: _primary(plan, before_rows.get(key), duration) for key in groups}
    items: list[AnalyticsBucket] = []
    for b in plan.starts:
        keyed = by_bucket.get(b, {})
        duration = plan.duration(b)
        entries = []
        for key in groups:
            row = keyed.get(key)
            if row is None and not body.fill_time_gaps:
                continue
            data, primary = _data(plan, row, duration, last[key] if body.return_delta else None)
            last[key] = primary
            entries.append(AnalyticsGroup(**fields[key], data=data))
        if entries or body.fill_time_gaps:
            items.append(AnalyticsBucket(time_period=_iso(b), items=entries))
    items.reverse()  # newest first, as Bud answers
    summary = None
    if summary_rows is not None:
        periods: dict[int, dict[tuple[str, ...], dict[str, Any]]] = {}
        for row in summary_rows:
            periods.setdefault(row["bucket"], {})[tuple(row[f"g_{c}"] for c in columns)] = row
        length = min(plan.end, plan.now_s) - plan.start
        keys = sorted(set(periods.get(1, {})) | set(groups if columns else [()]), key=_sort_key)
        summary = [AnalyticsGroup(**_group_fields(plan.groups, key, scope),
                                  data=_data(plan, periods.get(1, {}).get(key), length,
                                             _primary(plan, periods.get(0, {}).get(key), plan.end - plan.start))[0])
                   for key in keys]
    return AnalyticsResponse(items=items, summary=summary)


async def analytics(request: web.Request) -> web.Response:
    body = await decode_body(request, AnalyticsRequest)
    plan = _Plan(body, int(time.time()))
    scope = _scope(body, principal(request).project_list())
    finest = plan.buckets.coarsest_tier()
    parts = pieces(plan.start, plan.end, finest)
    if plan.previous is not None:
        parts = pieces(plan.previous, plan.first, finest) + parts
    rank_parts = pieces(plan.start, plan.end, DAY)
    sql, params = series_sql(metrics=plan.metrics, groups=plan.groups, bucket_sql=plan.buckets.sql(), parts=parts,
                             scope=scope, topk=body.topk, rank_parts=rank_parts)
    reader = request.app[READER_KEY]
    queries = [reader.sql(sql, params)]
    if body.return_delta:
        length = plan.end - plan.start
        summary_parts = pieces(plan.start - length, plan.end, DAY, splits=(plan.start,))
        summary_sql, summary_params = series_sql(
            metrics=plan.metrics, groups=plan.groups, bucket_sql=f"toInt64(minute >= toDateTime({plan.start}, 'UTC'))",
            parts=summary_parts, scope=scope, topk=body.topk, rank_parts=rank_parts)
        queries.append(reader.sql(summary_sql, summary_params))
    results = await asyncio.gather(*queries)
    response = build_response(plan, body, scope, results[0], results[1] if len(results) > 1 else None)
    return json_response(response)
