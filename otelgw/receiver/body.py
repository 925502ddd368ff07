"""OTLP/HTTP request bodies, decompressed here rather than by aiohttp.

aiohttp's gzip (and zstd) decoder takes a stream that ends early as complete: a request of
several resources cut off in transit decodes to the resources before the cut, which parse as a
valid, smaller OTLP request — acknowledged with 200 and the rest lost. Here every stream must
reach its end (gzip and zstd may hold several members/frames, as RFC 1952 and RFC 8878 allow),
and the output is bounded while it is produced, so a compression bomb stops at `max_bytes`.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from typing import Any

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdDecompressor, ZstdError
else:
    from backports.zstd import ZstdDecompressor, ZstdError

ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "zstd"})
# Members (gzip) or frames (zstd) in one body: an exporter writes one. Each ends with a copy of
# the input fed after it, so the input goes in slices and the members are capped: a body of a
# million empty members would otherwise cost quadratic time.
MAX_MEMBERS = 1000
_FEED_BYTES = 64 * 1024


class BodyError(Exception):
    """A body that cannot be used: `status` 400 (not valid in its encoding) or 413 (too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decompress(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """The body `raw` sent with Content-Encoding `encoding` (lower case, one of ENCODINGS)."""
    if encoding in ("", "identity"):
        out = raw
    elif encoding in ("gzip", "x-gzip"):
        out = _streams(raw, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), zlib.error, "gzip", max_bytes)
    elif encoding == "deflate":
        # RFC 9110's deflate is the zlib format; some clients send the raw deflate stream.
        wbits = zlib.MAX_WBITS if _zlib_header(raw) else -zlib.MAX_WBITS
        out = _streams(raw, lambda: zlib.decompressobj(wbits), zlib.error, "deflate", max_bytes, members=False)
    elif encoding == "zstd":
        out = _streams(raw, ZstdDecompressor, ZstdError, "zstd", max_bytes)
    else:
        raise BodyError(400, f"unsupported Content-Encoding {encoding!r}")
    if len(out) > max_bytes:
        raise _too_large(max_bytes)
    return out


def _too_large(max_bytes: int) -> BodyError:
    return BodyError(413, f"request body exceeds {max_bytes} bytes (after decompression)")


def _zlib_header(raw: bytes) -> bool:
    return len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0


def _streams(raw: bytes, new_stream: Callable[[], Any], errors: type[Exception], name: str, max_bytes: int,
             members: bool = True) -> bytes:
    """Decompress `raw`, one stream after another (gzip members, zstd frames; only one when
    `members` is False). zlib's decompressobj and zstd's decompressor share the interface used
    here: decompress(data, max_length), eof, unused_data."""
    parts: list[bytes] = []
    size = 0
    view = memoryview(raw)
    pos = 0
    for _ in range(MAX_MEMBERS):
        stream = new_stream()
        while not stream.eof:
            if pos >= len(view):
                raise BodyError(400, f"{name} body is truncated (a stream ends before its end marker)")
            piece = view[pos:pos + _FEED_BYTES]
            pos += len(piece)
            try:
                chunk = stream.decompress(piece, max_bytes - size + 1)
            except errors as exc:
                raise BodyError(400, f"body is not valid {name}: {exc}") from exc
            size += len(chunk)
            if size > max_bytes:  # (only then is input left unconsumed)
                raise _too_large(max_bytes)
            parts.append(chunk)
        pos -= len(stream.unused_data)
        if pos == len(view):
            return b"".join(parts)
        if not members:
            raise BodyError(400, f"{len(view) - pos} bytes after the end of the {name} stream")
    raise BodyError(400, f"more than {MAX_MEMBERS} {name} streams in one body")
