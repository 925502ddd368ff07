"""Issue 10: being built."""

from __future__ import annotations

from aiohttp import web

from otelgw.api.common import ApiError


async def get_retention(request: web.Request) -> web.Response:
    raise ApiError(501, "not_implemented", "being built")


async def set_retention(request: web.Request) -> web.Response:
    raise ApiError(501, "not_implemented", "being built")
