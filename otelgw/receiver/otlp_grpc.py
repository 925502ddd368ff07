"""OTLP/gRPC receiver (grpc.aio): TraceService, LogsService and MetricsService Export.

Handlers take the raw request bytes (no deserializer) so both transports share one decode and
one validation path; gzip-compressed requests are decompressed by gRPC itself, under
grpc.max_receive_message_length.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from typing import Any

import grpc

from otelgw import protowire
from otelgw.auth import Authenticator, Forbidden, Unauthorized, bearer_token
from otelgw.jsonlog import REQUEST_IDS, request_ids
from otelgw.pipeline.admission import Exhausted, Overloaded, RateLimited
from otelgw.pipeline.pipeline import Pipeline
from otelgw.pipeline.request import Signal
from otelgw.protowire import len_field, varint
from otelgw.receiver import ListenError
from otelgw.receiver.decode import DecodeError, Encoding
from otelgw.receiver.ingest import BadProject, clean_project, ingest
from otelgw.telemetry.gateway import ReceiverInstruments

log = logging.getLogger(__name__)

SERVICES: dict[str, Signal] = {
    "opentelemetry.proto.collector.trace.v1.TraceService": Signal.TRACES,
    "opentelemetry.proto.collector.logs.v1.LogsService": Signal.LOGS,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": Signal.METRICS,
}
PROJECT_METADATA = "x-otelgw-project"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata, read once (grpcio decodes, and logs an undecodable value, on every
    read), first value of each key."""
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key not in found:
            found[key] = value if isinstance(value, str) else value.decode(errors="replace")
    return found


def retry_metadata(code: grpc.StatusCode, message: str, delay_s: float) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying google.rpc.RetryInfo: as the OTel Python exporter reads it
    (`google.rpc.retryinfo-bin`) and as the Go exporters do (inside `grpc-status-details-bin`)."""
    seconds, nanos = int(delay_s), int((delay_s - int(delay_s)) * 1e9)
    duration = b"\x08" + varint(seconds) + (b"\x10" + varint(nanos) if nanos else b"")
    retry_info = len_field(1, duration)
    any_msg = len_field(1, b"type.googleapis.com/google.rpc.RetryInfo") + len_field(2, retry_info)
    details = protowire.status(code.value[0], message, len_field(3, any_msg))
    return (("google.rpc.retryinfo-bin", retry_info), ("grpc-status-details-bin", details))


def _export_handler(pipeline: Pipeline, auth: Authenticator, executor: Executor | None,
                    signal: Signal, instruments: ReceiverInstruments | None) -> grpc.RpcMethodHandler:
    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        connection = context.peer() or "unknown"
        started, outcome = time.monotonic(), "error"
        metadata = _metadata(context)
        token = REQUEST_IDS.set(request_ids(metadata.get("traceparent")))
        try:
            project = auth.ingest_project(bearer_token(metadata.get("authorization")),
                                          clean_project(metadata.get(PROJECT_METADATA)))
            with pipeline.admission.slot(connection):
                pipeline.check_open(project, connection)
                response: Any = await ingest(pipeline, executor, signal, body, Encoding.PROTOBUF, project, connection)
            outcome = "ok"
        except (DecodeError, BadProject) as exc:
            outcome = "invalid"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Unauthorized as exc:
            outcome = "unauthenticated"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except Forbidden as exc:
            outcome = "forbidden"
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except Overloaded as exc:
            # RESOURCE_EXHAUSTED is retryable for OTLP only with RetryInfo, so both carry it.
            exhausted = isinstance(exc, (RateLimited, Exhausted))
            outcome = "rate_limited" if isinstance(exc, RateLimited) else "unavailable"
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exhausted else grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(exc), trailing_metadata=retry_metadata(code, str(exc), exc.retry_after_s))
        finally:
            if outcome in ("invalid", "unauthenticated", "forbidden"):
                log.info("export refused", extra={"protocol": "grpc", "signal": signal.value, "outcome": outcome})
            REQUEST_IDS.reset(token)
            if instruments is not None:
                instruments.observe("grpc", signal.value, outcome, time.monotonic() - started)
        return response.SerializeToString()

    return grpc.unary_unary_rpc_method_handler(export)


def build_otlp_grpc_server(pipeline: Pipeline, auth: Authenticator, addr: str, max_request_bytes: int,
                           executor: Executor | None,
                           instruments: ReceiverInstruments | None = None,
                           reuse_port: bool = False) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        # gRPC sets SO_REUSEPORT unless told not to: a second gateway on this port would then
        # take half the connections silently instead of failing to start.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ])
    handlers = [
        grpc.method_handlers_generic_handler(
            service, {"Export": _export_handler(pipeline, auth, executor, signal, instruments)})
        for service, signal in SERVICES.items()
    ]
    server.add_generic_rpc_handlers(handlers)
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError:  # grpcio raises, or returns 0, by version; its message says no more
        port = 0
    if port == 0:
        raise ListenError(f"cannot listen for OTLP/gRPC on {addr}: in use, or not an address of this host")
    return server, port
