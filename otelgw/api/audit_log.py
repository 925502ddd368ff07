"""GET /api/v1/audit (admin): the audit log, newest first (docs/privacy.md).

Query parameters: `from_date`, `to_date` (ISO 8601 or unix seconds; to_date exclusive), `action`
(repeatable or comma-separated), `key_id`, `project`, `result`, `limit` (1..1000, default 100),
`offset` (0..100000). An admin limited to some projects sees the events of those projects and
the events of their own key; only an admin of every project sees events with no project (failed
logins, key changes spanning projects). Reading the log is itself recorded (`audit.read`).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from otelgw.api.common import READER_KEY, ApiError, json_response, parse_time_ns, principal, rfc3339_ns
from otelgw.governance.audit import AUDIT_KEY, AuditQuery, audit, query_sql

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
PARAMETERS = frozenset({"from_date", "to_date", "action", "key_id", "project", "result", "limit", "offset"})


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, "invalid_request", f"{name}: must be an integer from {low} to {high} (got {raw!r})")
    return value


def parse_query(request: web.Request) -> AuditQuery:
    unknown = sorted(set(request.query) - PARAMETERS)
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown query parameter {unknown[0]!r}")
    q = request.query
    from_ns = parse_time_ns(q["from_date"], "from_date") if q.get("from_date") else None
    to_ns = parse_time_ns(q["to_date"], "to_date") if q.get("to_date") else None
    if from_ns is not None and to_ns is not None and from_ns >= to_ns:
        raise ApiError(400, "invalid_request", "from_date must be before to_date")
    actions = sorted({a.strip() for value in q.getall("action", []) for a in value.split(",") if a.strip()})
    caller = principal(request)
    return AuditQuery(
        from_ns=from_ns, to_ns=to_ns, actions=actions, key_id=q.get("key_id", ""), project=q.get("project", ""),
        result=q.get("result", ""), limit=_int(request, "limit", 100, 1, MAX_LIMIT),
        offset=_int(request, "offset", 0, 0, MAX_OFFSET), scope_projects=caller.project_list(),
        scope_key_id=caller.key_id)


def item(row: dict) -> dict:
    return {"time": rfc3339_ns(row["time_ns"]), "key_id": row["key_id"], "role": row["role"],
            "project": row["project"], "action": row["action"], "target": row["target"], "client": row["client"],
            "result": row["result"], "detail": row["detail"]}


async def list_audit(request: web.Request) -> web.Response:
    query = parse_query(request)
    # Events of the last second are still queued: write them first, so the answer is current.
    await request.app[AUDIT_KEY].flush()
    page_sql, count_sql, params = query_sql(query)
    reader = request.app[READER_KEY]
    rows, counted = await asyncio.gather(reader.sql(page_sql, params), reader.sql(count_sql, params))
    total = counted[0]["total"]
    audit(request, "audit.read", detail=f"returned={len(rows)}")
    return json_response({"items": [item(r) for r in rows], "total_count": total, "limit": query.limit,
                          "offset": query.offset, "has_more": query.offset + len(rows) < total})
