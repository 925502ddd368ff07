"""GET /api/v1/semconv/unmapped: GenAI-looking attributes that no convention table maps, so a
user sees at once what their instrumentation sends that otelgw does not understand yet."""

from __future__ import annotations

from aiohttp import web

from otelgw.api.common import READER_KEY, error, json_response, principal, rfc3339_ns

MAX_LIMIT = 10_000


async def unmapped(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        return error(400, "invalid_limit", "limit must be an integer")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, "invalid_limit", f"limit must be between 1 and {MAX_LIMIT}")
    project = request.query.get("project", "")
    reader = request.app[READER_KEY]
    allowed = principal(request).project_list()
    if project:
        rows = [] if allowed is not None and project not in allowed else \
            await reader.rows("semconv", "unmapped_by_project", project=project, limit=limit)
    elif allowed is not None:
        rows = await reader.rows("semconv", "unmapped_by_projects", projects=allowed, limit=limit)
    else:
        rows = await reader.rows("semconv", "unmapped_all", limit=limit)
    for row in rows:
        row["last_seen"] = rfc3339_ns(row.pop("last_seen_ns"))
    return json_response({"unmapped": rows})
