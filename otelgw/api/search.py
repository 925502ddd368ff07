"""Tempo search and tag routes: GET /api/search (TraceQL subset or logfmt tags), tag names and
values (v1 and v2, scoped and typed), as Grafana's Tempo data source calls them."""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Any

from aiohttp import web

from otelgw.api.common import READER_KEY, ApiError, clamp_ns, json_response, principal
from otelgw.api.traceql import TraceQLError, compile_query, duration_ns, tags_to_query

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
DEFAULT_WINDOW_S = 3600
INTRINSIC_TAGS = ["duration", "kind", "name", "rootName", "rootServiceName", "status", "statusMessage",
                  "traceDuration"]


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise ApiError(400, "invalid_request", f"{name} must be between {low} and {high}")
    return value


def _duration_ns(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if not raw:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", raw.strip())
    if match is None:
        raise ApiError(400, "invalid_request", f"{name} must be a duration such as 100ms or 2s")
    return duration_ns(float(match.group(1)), match.group(2))


def _window(request: web.Request) -> tuple[int, int]:
    now = int(time.time())
    end = _int(request, "end", now, 0, 2**40)
    start = _int(request, "start", end - DEFAULT_WINDOW_S, 0, 2**40)
    if start > end:
        raise ApiError(400, "invalid_request", "start must not be after end")
    return clamp_ns(start * 1_000_000_000), clamp_ns(end * 1_000_000_000 + 999_999_999)


async def search(request: web.Request) -> web.Response:
    query = request.query.get("q", "")
    tags = request.query.get("tags", "")
    if query and tags:
        raise ApiError(400, "invalid_request", "give q (TraceQL) or tags (logfmt), not both")
    try:
        compiled = compile_query(query or tags_to_query(tags))
    except TraceQLError as exc:
        raise ApiError(400, "invalid_traceql", str(exc)) from exc
    limit = _int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    spss = _int(request, "spss", 3, 1, 100)
    min_ns, max_ns = _duration_ns(request, "minDuration"), _duration_ns(request, "maxDuration")
    start_ns, end_ns = _window(request)
    params: dict[str, Any] = {**compiled.params, "start_ns": start_ns, "end_ns": end_ns, "limit": limit}
    where = ["start_time >= fromUnixTimestamp64Nano({start_ns:Int64}, 'UTC')",
             "start_time <= fromUnixTimestamp64Nano({end_ns:Int64}, 'UTC')"]
    allowed = principal(request).project_list()
    if allowed is not None:
        where.append("project_id IN {projects:Array(String)}")
        params["projects"] = allowed
    having = [compiled.having]
    duration = "(toUnixTimestamp64Nano(max(end_time)) - toUnixTimestamp64Nano(min(start_time)))"
    if min_ns is not None:
        having.append(f"{duration} >= {{min_ns:Int64}}")
        params["min_ns"] = min_ns
    if max_ns is not None:
        having.append(f"{duration} <= {{max_ns:Int64}}")
        params["max_ns"] = max_ns
    attrs = ", ".join(f"{expr}" for _, expr in compiled.attributes)
    matched = (f"groupArrayIf({spss})(tuple(span_id, name, toUnixTimestamp64Nano(start_time), duration_ns"
               f"{', [' + attrs + ']' if attrs else ', []'}), {compiled.any_match})")
    source = "spans"
    if compiled.needs_trace:
        # Trace-level intrinsics: one row per trace, joined onto its spans.
        source = ("spans AS s INNER JOIN (SELECT trace_id, argMinIf(name, start_time, parent_span_id = '') AS "
                  "root_name, argMinIf(service_name, start_time, parent_span_id = '') AS root_service, "
                  "toUnixTimestamp64Nano(max(end_time)) - toUnixTimestamp64Nano(min(start_time)) AS "
                  f"trace_duration_ns FROM spans WHERE {' AND '.join(where)} GROUP BY trace_id) AS t USING trace_id")
    sql = f"""
        SELECT trace_id,
               argMinIf(service_name, start_time, parent_span_id = '') AS trace_root_service,
               argMinIf(name, start_time, parent_span_id = '') AS trace_root_name,
               toUnixTimestamp64Nano(min(start_time)) AS start_ns,
               {duration} AS trace_duration,
               {matched} AS spans,
               countIf({compiled.any_match}) AS matched
        FROM {source}
        WHERE {' AND '.join(where)}
        GROUP BY trace_id
        HAVING {' AND '.join(having)}
        ORDER BY start_ns DESC
        LIMIT {{limit:UInt32}}"""
    started = time.perf_counter()
    try:
        rows = await request.app[READER_KEY].sql(sql, params)
    except Exception as exc:
        # Python's re took the pattern, ClickHouse's RE2 does not (backreferences, lookaround,
        # repeats past 1000, \Z): the query's fault, not the server's.
        if "Code: 427." in str(exc):
            message = str(exc).split("Code: 427.", 1)[1].split("(CANNOT_COMPILE_REGEXP)")[0].strip()
            raise ApiError(400, "invalid_traceql", f"bad regular expression for RE2: {message[:300]}") from exc
        raise
    keys = [key for key, _ in compiled.attributes]
    traces = []
    for row in rows:
        span_sets = [{"spans": [
            {"spanID": span_id, "name": name, "startTimeUnixNano": str(start), "durationNanos": str(dur),
             "attributes": [{"key": k.split(".", 1)[-1] if k.startswith(("span.", "resource.")) else k.lstrip("."),
                             "value": {"stringValue": v}} for k, v in zip(keys, values, strict=False) if v != ""]}
            for span_id, name, start, dur, values in row["spans"]], "matched": row["matched"]}]
        root_service = row["trace_root_service"] or "<root span not yet received>"
        traces.append({"traceID": row["trace_id"], "rootServiceName": root_service,
                       "rootTraceName": row["trace_root_name"], "startTimeUnixNano": str(row["start_ns"]),
                       "durationMs": int(row["trace_duration"] / 1_000_000), "spanSets": span_sets,
                       "spanSet": span_sets[0]})
    return json_response({"traces": traces, "metrics": {"inspectedTraces": len(traces), "completedJobs": 1,
                                                        "totalJobs": 1, "elapsedMs": round((time.perf_counter() -
                                                                                            started) * 1000)}})


def _tag(request: web.Request) -> str:
    tag = request.match_info["tag"]
    # Grafana sends tag names URL-encoded, sometimes twice.
    for _ in range(2):
        if "%" in tag:
            tag = urllib.parse.unquote(tag)
    return tag


def _scope_filter(request: web.Request) -> tuple[str, dict[str, Any]]:
    start_ns, end_ns = _window(request)
    where = ("start_time >= fromUnixTimestamp64Nano({start_ns:Int64}, 'UTC') AND "
             "start_time <= fromUnixTimestamp64Nano({end_ns:Int64}, 'UTC')")
    params: dict[str, Any] = {"start_ns": start_ns, "end_ns": end_ns}
    allowed = principal(request).project_list()
    if allowed is not None:
        where += " AND project_id IN {projects:Array(String)}"
        params["projects"] = allowed
    return where, params


async def _tag_names(request: web.Request, column: str) -> list[str]:
    """From span_tag_names (kept per hour by a materialized view), not from the spans."""
    start_ns, end_ns = _window(request)
    where = ("scope = {scope:String} AND hour >= toStartOfHour(fromUnixTimestamp64Nano({start_ns:Int64}, 'UTC')) "
             "AND hour <= fromUnixTimestamp64Nano({end_ns:Int64}, 'UTC')")
    params: dict[str, Any] = {"scope": "span" if column == "attributes" else "resource", "start_ns": start_ns,
                              "end_ns": end_ns}
    allowed = principal(request).project_list()
    if allowed is not None:
        where += " AND project_id IN {projects:Array(String)}"
        params["projects"] = allowed
    rows = await request.app[READER_KEY].sql(
        f"SELECT DISTINCT key FROM span_tag_names WHERE {where} ORDER BY key LIMIT 1000", params)
    return [r["key"] for r in rows]


async def tags_v1(request: web.Request) -> web.Response:
    names = sorted(set(await _tag_names(request, "attributes")) | set(await _tag_names(request, "resource_attributes")))
    return json_response({"tagNames": names})


async def tags_v2(request: web.Request) -> web.Response:
    scope = request.query.get("scope", "all")
    if scope not in ("all", "span", "resource", "intrinsic"):
        raise ApiError(400, "invalid_request", "scope must be span, resource, intrinsic or all")
    scopes = []
    if scope in ("all", "span"):
        scopes.append({"name": "span", "tags": await _tag_names(request, "attributes")})
    if scope in ("all", "resource"):
        scopes.append({"name": "resource", "tags": await _tag_names(request, "resource_attributes")})
    if scope in ("all", "intrinsic"):
        scopes.append({"name": "intrinsic", "tags": INTRINSIC_TAGS})
    return json_response({"scopes": scopes})


async def _values(request: web.Request, tag: str) -> list[tuple[str, str]]:
    """(type, value) pairs for one tag, scoped (span./resource.), unscoped or intrinsic."""
    where, params = _scope_filter(request)
    if tag in ("status", "kind"):
        column = {"status": "status_code", "kind": "kind"}[tag]
        rows = await request.app[READER_KEY].sql(
            f"SELECT DISTINCT {column} AS v FROM spans WHERE {where} ORDER BY v LIMIT 1000", params)
        return [(tag, r["v"]) for r in rows]
    if tag in ("name", "rootName", "rootServiceName", "statusMessage"):
        column = {"name": "name", "rootName": "name", "rootServiceName": "service_name",
                  "statusMessage": "status_message"}[tag]
        extra = " AND parent_span_id = ''" if tag.startswith("root") else ""
        rows = await request.app[READER_KEY].sql(
            f"SELECT DISTINCT {column} AS v FROM spans WHERE {where}{extra} AND {column} != '' ORDER BY v "
            "LIMIT 1000", params)
        return [("string", r["v"]) for r in rows]
    key, columns = tag, ["attributes", "resource_attributes"]
    if tag.startswith("span."):
        key, columns = tag[5:], ["attributes"]
    elif tag.startswith("resource."):
        key, columns = tag[9:], ["resource_attributes"]
    elif tag.startswith("."):
        key = tag[1:]
    params["key"] = key
    union = " UNION ALL ".join(f"SELECT {c}[{{key:String}}] AS v FROM spans WHERE {where} AND mapContains({c}, "
                               "{key:String})" for c in columns)
    rows = await request.app[READER_KEY].sql(f"SELECT DISTINCT v FROM ({union}) ORDER BY v LIMIT 1000", params)
    return [("int" if re.fullmatch(r"-?\d+", r["v"]) else "string", r["v"]) for r in rows]


async def tag_values_v1(request: web.Request) -> web.Response:
    return json_response({"tagValues": [value for _, value in await _values(request, _tag(request))]})


async def tag_values_v2(request: web.Request) -> web.Response:
    return json_response({"tagValues": [{"type": kind, "value": value}
                                        for kind, value in await _values(request, _tag(request))]})
