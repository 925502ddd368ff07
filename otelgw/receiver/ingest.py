"""The one path both transports take once a body is in hand: decode (off the event loop when
large), validate, make durable in the pipeline, and build the OTLP answer."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from otelgw.pipeline.mapper import DEFAULT_PROJECT, PROJECT_RESOURCE_ATTRIBUTE
from otelgw.pipeline.pipeline import Pipeline
from otelgw.pipeline.request import Decoded, Signal
from otelgw.receiver.decode import Encoding, decode, partial_success
from otelgw.store.keys import MAX_PROJECT_LEN, is_project_name

# Below this size a body decodes faster inline than the hop to a thread costs.
INLINE_DECODE_BYTES = 64 * 1024
_RESOURCE_FIELDS = {Signal.TRACES: "resource_spans", Signal.LOGS: "resource_logs", Signal.METRICS: "resource_metrics"}


class BadProject(ValueError):
    pass


def clean_project(raw: str | None) -> str:
    """The project named by a header; empty when none. Rejects names a query could not use."""
    if not raw:
        return ""
    value = raw.strip()
    if value and not is_project_name(value):
        raise BadProject(f"x-otelgw-project must be at most {MAX_PROJECT_LEN} printable characters")
    return value


def http_connection(request: Any) -> str:
    """An HTTP request's peer address: the key of the per-connection in-flight limit."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


def admission_project(header_project: str, decoded: Decoded) -> str:
    """The project a request is charged to for rate limits and fair share: the header's, else
    the first resource's project.id (the mapper resolves each resource on its own)."""
    if header_project:
        return header_project
    resources = getattr(decoded.message, _RESOURCE_FIELDS[decoded.signal])
    for resource in resources[:1]:
        for kv in resource.resource.attributes:
            if kv.key == PROJECT_RESOURCE_ATTRIBUTE and kv.value.string_value:
                return kv.value.string_value
    return DEFAULT_PROJECT


def _payload(body: bytes, encoding: Encoding, decoded: Decoded) -> bytes:
    """What the log keeps: the protobuf request as validated. The body itself when nothing was
    removed from it (no re-encoding on the common path)."""
    if encoding is Encoding.PROTOBUF and not decoded.rejected:
        return body
    return decoded.message.SerializeToString()


async def ingest(pipeline: Pipeline, executor: Executor | None, signal: Signal, body: bytes, encoding: Encoding,
                 project: str, connection: str, received_ns: int | None = None) -> Any:
    """Returns the Export*ServiceResponse once the request is durable. Raises DecodeError (a
    client error) or Overloaded / RateLimited / ShuttingDown (retryable). `received_ns`: when it
    first arrived, for a request taken in again (a dead letter)."""
    if len(body) < INLINE_DECODE_BYTES:
        decoded = decode(signal, body, encoding)
    else:
        decoded = await asyncio.get_running_loop().run_in_executor(executor, decode, signal, body, encoding)
    await pipeline.accept(decoded, _payload(body, encoding, decoded), project,
                          admission_project(project, decoded), connection, received_ns=received_ns)
    return partial_success(decoded)
