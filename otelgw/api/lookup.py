"""Finding one inference for a route: a valid id, a row the caller may see, or 404 (the same
404 for "does not exist" and "not your project": no existence oracle)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from otelgw.api import routes
from otelgw.api.common import READER_KEY, ApiError, principal


def parse_inference_id(request: web.Request) -> str:
    raw = request.match_info["inference_id"]
    if request.path in (routes.PATH_INFERENCES_LIST, routes.PATH_INFERENCES_EXPORT):
        # GET on a POST route lands here (the id route matches the path too): say so.
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise ApiError(400, "invalid_inference_id", f"inference id {raw!r} is not a UUID") from exc


async def load_inference(request: web.Request, inference_id: str) -> dict[str, Any]:
    """Two point reads: the id's (project, timestamp) from the narrow lookup table, then the row by
    the inferences table's own sort key."""
    reader = request.app[READER_KEY]
    keys = await reader.rows("inferences", "inference_key", inference_id=inference_id)
    if not keys or not principal(request).sees(keys[0]["project_id"]):
        raise ApiError(404, "not_found", f"no inference {inference_id}")
    rows = await reader.rows("inferences", "inference_by_id", inference_id=inference_id,
                             project_id=keys[0]["project_id"], timestamp_ns=keys[0]["timestamp_ns"])
    if not rows:
        raise ApiError(404, "not_found", f"no inference {inference_id}")
    return rows[0]
