"""Issue 10: being built."""

from __future__ import annotations

from aiohttp import web

from otelgw.api.common import ApiError


async def list_audit(request: web.Request) -> web.Response:
    raise ApiError(501, "not_implemented", "being built")
