"""Sessions: GET /api/v1/sessions (inferences grouped by project and session id, with their
figures) and GET /api/v1/sessions/{session_id} (the session's inferences in order, with their
messages).

The listing reads `inferences FINAL` inside the time range first (the range prunes on the sort
key), so its figures cover the session's inferences in the range; the detail covers the whole
session. Projects are filtered in SQL: another project's session is a 404, as a missing one is.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from otelgw.api.common import READER_KEY, ApiError, json_response, parse_time_ns, principal, rfc3339_ns
from otelgw.api.inferences import FINAL_SETTINGS
from otelgw.api.schemas import (
    MAX_SESSION_INFERENCES,
    MAX_SESSION_LIMIT,
    MAX_SESSION_OFFSET,
    SessionDetail,
    SessionDetailQuery,
    SessionInference,
    SessionItem,
    SessionListQuery,
    SessionListResponse,
    SessionMessage,
)
from otelgw.governance.audit import audit
from otelgw.store.queries.listing import Filter, where

_decoder = msgspec.json.Decoder()
Q = TypeVar("Q")

_MODEL = "if(response_model != '', response_model, request_model)"
# One session's figures; the aliases differ from the column names so that no aggregate shadows
# the column another aggregate reads.
AGGREGATES = f"""arrayElement(topKIf(1)(user_id, user_id != ''), 1) AS top_user,
    toUnixTimestamp64Nano(min(timestamp)) AS first_ns, toUnixTimestamp64Nano(max(timestamp)) AS last_ns,
    count() AS n_inferences, sum(input_tokens) AS sum_input, sum(output_tokens) AS sum_output,
    sum(total_tokens) AS sum_total, sum(cost_usd) AS sum_cost, countIf(NOT is_success) AS n_errors,
    arraySort(groupUniqArrayIf(10)({_MODEL}, {_MODEL} != '')) AS model_list"""

SORT_COLUMNS: dict[str, str] = {
    "last_seen": "last_ns",
    "first_seen": "first_ns",
    "inferences": "n_inferences",
    "tokens": "sum_total",
    "cost": "sum_cost",
    "errors": "n_errors",
}

_HINTS: dict[str, str] = {
    "has_errors": "must be true or false",
    "sort_by": f"must be one of {', '.join(SORT_COLUMNS)}",
    "sort_order": "must be asc or desc",
    "limit": f"must be an integer from 1 to {MAX_SESSION_LIMIT}",
    "offset": f"must be an integer from 0 to {MAX_SESSION_OFFSET}",
    "from_date": "must be an ISO 8601 date or time, or unix seconds",
    "to_date": "must be an ISO 8601 date or time, or unix seconds",
}


def _query(request: web.Request, kind: type[Q]) -> Q:
    """The query string as `kind` (an empty value counts as absent); a 400 naming the parameter."""
    values = {name: value for name, value in request.query.items() if value != ""}
    try:
        return msgspec.convert(values, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = re.search(r"unknown field `(.+)`", text)
        if unknown:
            raise ApiError(400, "invalid_request", f"unknown query parameter {unknown.group(1)!r}") from exc
        missing = re.search(r"missing required field `(.+)`", text)
        if missing:
            raise ApiError(400, "invalid_request", f"{missing.group(1)} is required") from exc
        at = re.search(r" - at `\$\.(\w+)`", text)
        field = at.group(1) if at else ""
        detail = _HINTS.get(field) or text.split(" - at ")[0]
        got = f" (got {values[field]!r})" if field in values else ""
        raise ApiError(400, "invalid_request", f"{field}: {detail}{got}" if field else text) from exc


def _item(row: dict[str, Any]) -> SessionItem:
    return SessionItem(
        session_id=row["session_id"], project_id=row["project_id"], user_id=row["top_user"],
        first_seen=rfc3339_ns(row["first_ns"]), last_seen=rfc3339_ns(row["last_ns"]),
        inference_count=row["n_inferences"], input_tokens=row["sum_input"], output_tokens=row["sum_output"],
        total_tokens=row["sum_total"], cost_usd=row["sum_cost"], error_count=row["n_errors"],
        models=list(row["model_list"]),
    )


def list_query(q: SessionListQuery, from_ns: int, to_ns: int,
               projects: list[str] | None) -> tuple[str, str, dict[str, Any]]:
    """(page SQL, count SQL, parameters). Inference-level conditions (range, projects, session id
    text) are in WHERE; session-level ones (has a user, a model, errors) in HAVING, so a session's
    figures always cover all its inferences in the range."""
    clause, params = where(Filter(from_ns=from_ns, to_ns=to_ns, projects=projects, project_id=q.project_id))
    clause += " AND session_id != ''"
    if q.search:
        clause += " AND positionCaseInsensitiveUTF8(session_id, {search:String}) > 0"
        params["search"] = q.search
    having: list[str] = []
    if q.user_id:
        having.append("countIf(user_id = {user_id:String}) > 0")
        params["user_id"] = q.user_id
    if q.model:
        having.append("countIf(request_model = {model:String} OR response_model = {model:String}) > 0")
        params["model"] = q.model
    if q.has_errors is not None:
        having.append("n_errors > 0" if q.has_errors else "n_errors = 0")
    grouped = (f"SELECT project_id, session_id, {AGGREGATES} FROM inferences FINAL WHERE {clause} "
               "GROUP BY project_id, session_id" + (f" HAVING {' AND '.join(having)}" if having else ""))
    direction = "DESC" if q.sort_order == "desc" else "ASC"
    page = (f"SELECT *, count() OVER () AS total FROM ({grouped}) "
            f"ORDER BY {SORT_COLUMNS[q.sort_by]} {direction}, project_id {direction}, session_id {direction} "
            "LIMIT {limit:UInt32} OFFSET {offset:UInt64}")
    params["limit"] = q.limit
    params["offset"] = q.offset
    return page, f"SELECT count() AS total FROM ({grouped})", params


async def list_sessions(request: web.Request) -> web.Response:
    q = _query(request, SessionListQuery)
    from_ns = parse_time_ns(q.from_date, "from_date")
    to_ns = parse_time_ns(q.to_date, "to_date") if q.to_date else time.time_ns() + 60_000_000_000
    if from_ns >= to_ns:
        raise ApiError(400, "invalid_request", "from_date must be before to_date")
    page_sql, count_sql, params = list_query(q, from_ns, to_ns, principal(request).project_list())
    reader = request.app[READER_KEY]
    rows = await reader.sql(page_sql, params, FINAL_SETTINGS)
    if rows:
        total = rows[0]["total"]
    elif q.offset > 0:  # past the end: the window count came with no row
        total = (await reader.sql(count_sql, params, FINAL_SETTINGS))[0]["total"]
    else:
        total = 0
    return json_response(SessionListResponse(
        items=[_item(r) for r in rows], total_count=total, limit=q.limit, offset=q.offset,
        has_more=q.offset + len(rows) < total,
    ))


# -- detail ---------------------------------------------------------------------------------

_PROJECTS_SQL = """SELECT project_id, toUnixTimestamp64Nano(min(timestamp)) AS first_ns,
    toUnixTimestamp64Nano(max(timestamp)) AS last_ns
FROM inferences WHERE session_id = {session_id:String}"""
_PROJECTS_GROUP = " GROUP BY project_id ORDER BY project_id LIMIT 100"

# One project's session, bounded by its first and last timestamps so the sort key prunes.
_SESSION_WHERE = """project_id = {project_id:String} AND session_id = {session_id:String}
    AND timestamp >= fromUnixTimestamp64Nano({first_ns:Int64}, 'UTC')
    AND timestamp <= fromUnixTimestamp64Nano({last_ns:Int64}, 'UTC')"""

_SUMMARY_SQL = f"SELECT {AGGREGATES} FROM inferences FINAL WHERE {_SESSION_WHERE}"

_INFERENCES_SQL = f"""SELECT inference_id, toUnixTimestamp64Nano(timestamp) AS timestamp_ns, {_MODEL} AS model,
    provider, latency_ms, ttft_ms, input_tokens, output_tokens, cost_usd, is_success, error_type, trace_id
FROM inferences FINAL WHERE {_SESSION_WHERE}
ORDER BY timestamp, inference_id LIMIT {{limit:UInt32}}"""

_MESSAGES_SQL = """SELECT inference_id, direction, `index`, role, content, tool_calls, tool_call_id, name,
    finish_reason
FROM messages FINAL WHERE inference_id IN {ids:Array(UUID)} AND project_id = {project_id:String}
ORDER BY inference_id, multiIf(direction = 'system', 0, direction = 'input', 1, 2), arrival, `index`"""


def _tool_calls(text: str) -> list[Any]:
    if not text:
        return []
    try:
        decoded = _decoder.decode(text)
    except msgspec.DecodeError:
        return []
    return decoded if isinstance(decoded, list) else [decoded]


async def get_session(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    q = _query(request, SessionDetailQuery)
    not_found = ApiError(404, "not_found", f"no session {session_id!r}")
    if not session_id:
        raise not_found
    reader = request.app[READER_KEY]
    params: dict[str, Any] = {"session_id": session_id}
    scope = ""
    allowed = principal(request).project_list()
    if allowed is not None:
        scope += " AND project_id IN {projects:Array(String)}"
        params["projects"] = allowed
    if q.project_id:
        scope += " AND project_id = {project_id:String}"
        params["project_id"] = q.project_id
    found = await reader.sql(_PROJECTS_SQL + scope + _PROJECTS_GROUP, params)
    if not found:
        raise not_found
    if len(found) > 1:
        names = ", ".join(repr(r["project_id"]) for r in found)
        raise ApiError(400, "ambiguous_session",
                       f"session {session_id!r} exists in several projects ({names}): name one with project_id")
    key = {"project_id": found[0]["project_id"], "session_id": session_id,
           "first_ns": found[0]["first_ns"], "last_ns": found[0]["last_ns"]}
    summary_rows, rows = await asyncio.gather(
        reader.sql(_SUMMARY_SQL, key, FINAL_SETTINGS),
        reader.sql(_INFERENCES_SQL, {**key, "limit": MAX_SESSION_INFERENCES + 1}, FINAL_SETTINGS))
    if not rows or not summary_rows or not summary_rows[0]["n_inferences"]:
        raise not_found
    truncated = len(rows) > MAX_SESSION_INFERENCES
    rows = rows[:MAX_SESSION_INFERENCES]
    ids = [str(r["inference_id"]) for r in rows]
    messages: dict[str, list[SessionMessage]] = {}
    ordinals: dict[tuple[str, str], int] = {}
    for m in await reader.sql(_MESSAGES_SQL, {"ids": ids, "project_id": key["project_id"]}, FINAL_SETTINGS):
        # Numbered as read: a log record's message is stored under a key of its own.
        at = (str(m["inference_id"]), m["direction"])
        ordinals[at] = ordinals.get(at, -1) + 1
        messages.setdefault(str(m["inference_id"]), []).append(SessionMessage(
            direction=m["direction"], index=ordinals[at], role=m["role"], content=m["content"],
            tool_calls=_tool_calls(m["tool_calls"]), tool_call_id=m["tool_call_id"], name=m["name"],
            finish_reason=m["finish_reason"]))
    s = summary_rows[0]
    audit(request, "session.read", target=session_id, project=key["project_id"], detail=f"inferences={len(rows)}")
    return json_response(SessionDetail(
        session_id=session_id, project_id=key["project_id"], user_id=s["top_user"],
        first_seen=rfc3339_ns(s["first_ns"]), last_seen=rfc3339_ns(s["last_ns"]),
        inference_count=s["n_inferences"], input_tokens=s["sum_input"], output_tokens=s["sum_output"],
        total_tokens=s["sum_total"], cost_usd=s["sum_cost"], error_count=s["n_errors"],
        models=list(s["model_list"]), truncated=truncated,
        inferences=[SessionInference(
            inference_id=str(r["inference_id"]), timestamp=rfc3339_ns(r["timestamp_ns"]), model=r["model"],
            provider=r["provider"], latency_ms=r["latency_ms"], ttft_ms=r["ttft_ms"],
            input_tokens=r["input_tokens"], output_tokens=r["output_tokens"], cost_usd=r["cost_usd"],
            is_success=bool(r["is_success"]), error_type=r["error_type"], trace_id=r["trace_id"],
            messages=messages.get(str(r["inference_id"]), []),
        ) for r in rows],
    ))
