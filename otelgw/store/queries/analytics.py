"""SQL for analytics time series, read from the rollup tables (schema/006), never from raw rows.

A range is covered by pieces of the coarsest tier whose periods fit inside it and inside every
bucket: whole days from `inference_stats_1d`, the hours around them from `inference_stats_1h`,
the minutes at the edges from `inference_stats_1m`. A 30-day hourly query reads about 720 hour
rows per group; a one-year daily query about 365 day rows. The resolution is one minute: a range
is widened to whole minutes.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import msgspec

MINUTE, HOUR, DAY = 60, 3600, 86400
TIERS = ((DAY, "inference_stats_1d"), (HOUR, "inference_stats_1h"), (MINUTE, "inference_stats_1m"))
GROUP_COLUMNS = {"model": "model", "project": "project_id", "endpoint": "service_name", "provider": "provider"}
FILTER_COLUMNS = {"project": "project_id", "model": "model", "endpoint": "service_name",
                  "service_name": "service_name", "provider": "provider"}
UNIT_SECONDS = {"hour": HOUR, "day": DAY, "week": 7 * DAY, "month": 30 * DAY, "quarter": 90 * DAY, "year": 365 * DAY}
# Calendar buckets, the same in SQL (over a tier's `minute`) and in Python (`Buckets.start`).
_CALENDAR_SQL = {
    "hour": "toStartOfHour(minute)",
    "day": "toStartOfDay(minute)",
    "week": "toDateTime(toMonday(minute), 'UTC')",
    "month": "toDateTime(toStartOfMonth(minute), 'UTC')",
    "quarter": "toDateTime(toStartOfQuarter(minute), 'UTC')",
    "year": "toDateTime(toStartOfYear(minute), 'UTC')",
}
# The rollups' histograms: bucket k holds values v with round(ln(v * 1000) / ln(BASE)) = k
# (schema/006); a bucket reads back as BASE^k / 1000, within 2.5 %.
HIST_BASE = 1.05
QUANTILES = (0.5, 0.95, 0.99)


def _quantiles_sql(hist: str) -> str:
    """Nearest-rank p50, p95, p99 of a merged histogram map; NaN when it is empty."""
    total = f"arraySum(mapValues({hist}))"
    rank = f"arrayFirstIndex(c -> c >= q * {total}, arrayCumSum(mapValues({hist})))"
    quantiles = ", ".join(map(str, QUANTILES))
    return (f"if({total} = 0, [nan, nan, nan], "
            f"arrayMap(q -> round(pow({HIST_BASE}, mapKeys({hist})[{rank}]) / 1000, 3), [{quantiles}]))")


# What each metric needs from the tiers: the source columns and the aggregate expressions.
METRIC_AGGREGATES: dict[str, dict[str, str]] = {
    "request_count": {},
    "success_request": {"a_successes": "sum(successes)"},
    "failure_request": {"a_successes": "sum(successes)"},
    "input_token": {"a_input": "sum(input_tokens)"},
    "output_token": {"a_output": "sum(output_tokens)"},
    "cache": {"a_cache_hits": "sum(cache_hits)", "a_cached": "sum(cached_tokens)"},
    "cost": {"a_cost": "sum(cost_usd)"},
    "latency": {"a_lat_sum": "sum(latency_ms_sum)", "a_lat_max": "max(latency_ms_max)",
                "h_lat": "sumMap(latency_ms_h)"},
    "ttft": {"a_ttft_count": "sum(ttft_count)", "a_ttft_sum": "sum(ttft_ms_sum)", "h_ttft": "sumMap(ttft_ms_h)"},
    "queuing_time": {"a_queue_count": "sum(queue_count)", "a_queue_sum": "sum(queue_ms_sum)",
                     "h_queue": "sumMap(queue_ms_h)"},
    "throughput": {"a_tps_count": "sum(tps_count)", "a_tps_sum": "sum(tps_sum)", "h_tps": "sumMap(tps_h)"},
    "concurrent_requests": {"a_lat_sum": "sum(latency_ms_sum)"},
}
METRICS = tuple(METRIC_AGGREGATES)
# The value a group is ranked by for topk: its first metric over the whole range.
RANK_SQL = {
    "request_count": "sum(requests)",
    "success_request": "sum(successes)",
    "failure_request": "sum(requests) - sum(successes)",
    "input_token": "sum(input_tokens)",
    "output_token": "sum(output_tokens)",
    "cache": "sum(cache_hits)",
    "cost": "sum(cost_usd)",
    "latency": "sum(latency_ms_sum) / greatest(sum(requests), 1)",
    "ttft": "sum(ttft_ms_sum) / greatest(sum(ttft_count), 1)",
    "queuing_time": "sum(queue_ms_sum) / greatest(sum(queue_count), 1)",
    "throughput": "sum(tps_sum) / greatest(sum(tps_count), 1)",
    "concurrent_requests": "sum(latency_ms_sum)",
}
OTHER = "other"


class Buckets(msgspec.Struct, frozen=True):
    """Time buckets: calendar periods (UTC, weeks from Monday) when `interval` is None, else
    fixed steps of `interval` units aligned to `origin` (a month is 30 days, as in Bud)."""

    unit: str
    interval: int | None
    origin: int  # unix seconds, whole minute

    @property
    def step(self) -> int:
        return UNIT_SECONDS[self.unit] * (self.interval or 1)

    def start(self, t: int) -> int:
        if self.interval is not None:
            return self.origin + (t - self.origin) // self.step * self.step
        if self.unit in ("hour", "day"):
            return t - t % UNIT_SECONDS[self.unit]
        if self.unit == "week":
            days = t // DAY
            return (days - (days + 3) % 7) * DAY  # 1970-01-01 was a Thursday
        moment = datetime.fromtimestamp(t, UTC)
        month = {"month": moment.month, "quarter": (moment.month - 1) // 3 * 3 + 1, "year": 1}[self.unit]
        return calendar.timegm((moment.year, month, 1, 0, 0, 0))

    def next(self, b: int) -> int:
        if self.interval is not None or self.unit in ("hour", "day", "week"):
            return b + self.step
        moment = datetime.fromtimestamp(b, UTC)
        months = moment.year * 12 + moment.month - 1 + {"month": 1, "quarter": 3, "year": 12}[self.unit]
        return calendar.timegm((months // 12, months % 12 + 1, 1, 0, 0, 0))

    def sql(self) -> str:
        """The bucket of a tier row, as unix seconds."""
        if self.interval is None:
            return f"toInt64(toUnixTimestamp({_CALENDAR_SQL[self.unit]}))"
        return (f"({self.origin} + toInt64(floor((toInt64(toUnixTimestamp(minute)) - {self.origin}) / {self.step}))"
                f" * {self.step})")

    def coarsest_tier(self) -> int:
        """The largest tier period that never straddles a bucket boundary."""
        if self.interval is None:
            return HOUR if self.unit == "hour" else DAY
        return next(g for g, _ in TIERS if self.step % g == 0 and self.origin % g == 0)


def pieces(start: int, end: int, finest_allowed: int, splits: tuple[int, ...] = ()) -> list[tuple[str, int, int]]:
    """Cover [start, end) with (table, from, to) pieces, coarsest first. Tiers coarser than
    `finest_allowed` are not used; `splits` are points no piece may straddle."""
    out: list[tuple[str, int, int]] = []
    points = sorted({start, end, *(s for s in splits if start < s < end)})
    for a, b in zip(points, points[1:], strict=False):
        out.extend(_cover(a, b, [(g, t) for g, t in TIERS if g <= finest_allowed]))
    return out


def _cover(a: int, b: int, tiers: list[tuple[int, str]]) -> list[tuple[str, int, int]]:
    if a >= b or not tiers:
        return []
    grain, table = tiers[0]
    inner_a, inner_b = -(-a // grain) * grain, b // grain * grain
    if inner_a >= inner_b:
        return _cover(a, b, tiers[1:])
    return [(table, inner_a, inner_b), *_cover(a, inner_a, tiers[1:]), *_cover(inner_b, b, tiers[1:])]


class Scope(msgspec.Struct, frozen=True):
    """Which rows: the caller's projects (None: all) and the request's filters (column -> values)."""

    projects: list[str] | None
    filters: dict[str, list[str]]


def _where(scope: Scope, params: dict[str, object]) -> str:
    clauses = []
    if scope.projects is not None:
        clauses.append("project_id IN {scope_projects:Array(String)}")
        params["scope_projects"] = scope.projects
    for column, values in sorted(scope.filters.items()):
        clauses.append(f"{column} IN {{f_{column}:Array(String)}}")
        params[f"f_{column}"] = values
    return " AND ".join(clauses) or "1"


def _union(parts: list[tuple[str, int, int]], columns: list[str], where: str) -> str:
    selects = [f"SELECT {', '.join(columns)} FROM {table} WHERE minute >= toDateTime({a}, 'UTC') "
               f"AND minute < toDateTime({b}, 'UTC') AND {where}" for table, a, b in parts]
    return " UNION ALL ".join(selects) if selects else f"SELECT {', '.join(columns)} FROM inference_stats_1m WHERE 0"


def _source_columns(metrics: list[str], groups: list[str]) -> list[str]:
    needed = {"minute", "requests", *(GROUP_COLUMNS[g] for g in groups)}
    for metric in metrics:
        for expr in (*METRIC_AGGREGATES[metric].values(), RANK_SQL[metric]):
            needed.update(c for c in _ALL_SOURCE if c in expr)
    return sorted(needed)


_ALL_SOURCE = ("successes", "input_tokens", "output_tokens", "cached_tokens", "cache_hits", "cost_usd",
               "latency_ms_sum", "latency_ms_max", "latency_ms_h", "ttft_count", "ttft_ms_sum", "ttft_ms_h",
               "queue_count", "queue_ms_sum", "queue_ms_h", "tps_count", "tps_sum", "tps_h")


def series_sql(*, metrics: list[str], groups: list[str], bucket_sql: str, parts: list[tuple[str, int, int]],
               scope: Scope, topk: int | None, rank_parts: list[tuple[str, int, int]] | None = None,
               ) -> tuple[str, dict[str, object]]:
    """One row per (bucket, group) with the aggregates the metrics need. With topk, groups
    outside the k largest by the first metric (over `rank_parts`) are folded into `other`."""
    params: dict[str, object] = {}
    where = _where(scope, params)
    columns = _source_columns(metrics, groups)
    group_cols = [GROUP_COLUMNS[g] for g in groups]
    aggregates = {"a_requests": "sum(requests)"}
    for metric in metrics:
        aggregates.update(METRIC_AGGREGATES[metric])
    select_groups = [f"{c} AS g_{c}" for c in group_cols]
    prefix = ""
    if topk is not None and group_cols:
        key = f"tuple({', '.join(group_cols)})"
        ranked = _union(rank_parts or parts, columns, where)
        prefix = (f"WITH (SELECT groupArray(k) FROM (SELECT {key} AS k FROM ({ranked})"
                  f" GROUP BY k ORDER BY {RANK_SQL[metrics[0]]} DESC, k LIMIT {int(topk)})) AS top_groups ")
        select_groups = [f"if(has(top_groups, {key}), {c}, '{OTHER}') AS g_{c}" for c in group_cols]
    select = ", ".join([f"{bucket_sql} AS bucket", *select_groups, *(f"{e} AS {a}" for a, e in aggregates.items())])
    group_by = ", ".join(["bucket", *(f"g_{c}" for c in group_cols)])
    sql = f"{prefix}SELECT {select} FROM ({_union(parts, columns, where)}) GROUP BY {group_by}"
    hists = [a for a in aggregates if a.startswith("h_")]
    if hists:
        # Percentiles from the merged histograms; the maps themselves stay in ClickHouse.
        quantiles = ", ".join(f"{_quantiles_sql(h)} AS a_{h[2:]}_q" for h in hists)
        sql = f"SELECT * EXCEPT ({', '.join(hists)}), {quantiles} FROM ({sql})"
    return sql, params
