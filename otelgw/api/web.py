"""The web UI: the app shell for every page path (so a deep link survives a reload) and the
static files under `/assets/<content hash>/`, immutable, so a new release is a new URL.

Everything the UI shows comes from the public API with the user's key; these routes serve
files only and need no key. Data from spans is untrusted: the shell carries a strict
Content-Security-Policy (no inline script or style, no eval, same-origin connections only),
and the app renders text through Preact, never as HTML.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from pathlib import Path

import msgspec
from aiohttp import web

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_COMMON_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png",
          ".md": "text/plain", ".html": "text/html"}


class Asset(msgspec.Struct, frozen=True):
    body: bytes
    gzipped: bytes | None
    content_type: str


class WebAssets:
    """Every static file read once at start, with its gzip form; the version is a hash of all
    of them."""

    def __init__(self, root: Path = STATIC) -> None:
        digest = hashlib.sha256()
        self.files: dict[str, Asset] = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            body = path.read_bytes()
            digest.update(relative.encode() + b"\0" + body)
            kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            packed = gzip.compress(body, 9, mtime=0) if kind.startswith("text/") or kind.endswith("+xml") else None
            self.files[relative] = Asset(body, packed if packed and len(packed) < len(body) else None, kind)
        self.version = digest.hexdigest()[:16]
        shell = self.files["index.html"].body.decode().replace("{{ASSETS}}", f"/assets/{self.version}")
        self.shell = shell.encode()


WEB_ASSETS_KEY: web.AppKey[WebAssets] = web.AppKey("web_assets", WebAssets)


def _send(request: web.Request, asset: Asset, cache: str) -> web.Response:
    headers = {**_COMMON_HEADERS, "Cache-Control": cache, "Vary": "Accept-Encoding"}
    if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=asset.gzipped, headers=headers, content_type=asset.content_type)
    return web.Response(body=asset.body, headers=headers, content_type=asset.content_type)


async def shell(request: web.Request) -> web.Response:
    assets = request.app[WEB_ASSETS_KEY]
    page = Asset(assets.shell, gzip.compress(assets.shell, 9, mtime=0), "text/html")
    response = _send(request, page, "no-cache")
    response.charset = "utf-8"
    return response


async def asset(request: web.Request) -> web.Response:
    assets = request.app[WEB_ASSETS_KEY]
    found = assets.files.get(request.match_info["path"])
    if request.match_info["version"] != assets.version or found is None or \
            request.match_info["path"] == "index.html":
        # An asset of another release (or none): never cache the miss.
        raise web.HTTPNotFound(text="no such asset in this release", headers={"Cache-Control": "no-store"})
    return _send(request, found, "public, max-age=31536000, immutable")
