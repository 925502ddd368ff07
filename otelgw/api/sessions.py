"""Sessions: GET /api/v1/sessions (listing) and GET /api/v1/sessions/{session_id} (its
inferences in order, with their messages). Being built (issue 9)."""

from __future__ import annotations

from aiohttp import web

from otelgw.api.common import ApiError


async def list_sessions(request: web.Request) -> web.Response:
    raise ApiError(501, "not_implemented", "sessions listing is being built")


async def get_session(request: web.Request) -> web.Response:
    raise ApiError(501, "not_implemented", "session detail is being built")
