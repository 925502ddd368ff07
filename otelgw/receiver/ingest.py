"""The one path both transports take: decode (off the event loop when large), validate,
submit to the pipeline, and build the OTLP answer."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from otelgw.pipeline.pipeline import Pipeline
from otelgw.pipeline.request import Signal
from otelgw.receiver.decode import Encoding, decode, partial_success

# Below this size a body decodes faster inline than the hop to a thread costs.
INLINE_DECODE_BYTES = 64 * 1024
MAX_PROJECT_LEN = 128


class BadProject(ValueError):
    pass


def clean_project(raw: str | None) -> str:
    """The project named by a header; empty when none. Rejects names a query could not use."""
    if not raw:
        return ""
    value = raw.strip()
    if len(value) > MAX_PROJECT_LEN or not value.isprintable():
        raise BadProject(f"x-otelgw-project must be at most {MAX_PROJECT_LEN} printable characters")
    return value


async def ingest(pipeline: Pipeline, executor: Executor | None, signal: Signal, body: bytes, encoding: Encoding,
                 project: str) -> Any:
    """Returns the Export*ServiceResponse. Raises DecodeError (client error) or Overloaded."""
    pipeline.check_open()
    if len(body) < INLINE_DECODE_BYTES:
        decoded = decode(signal, body, encoding)
    else:
        decoded = await asyncio.get_running_loop().run_in_executor(executor, decode, signal, body, encoding)
    pipeline.submit(decoded, project)
    return partial_success(decoded)
