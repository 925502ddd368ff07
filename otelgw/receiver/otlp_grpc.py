"""OTLP/gRPC receiver (grpc.aio): TraceService, LogsService and MetricsService Export.

Handlers take the raw request bytes (no deserializer) so both transports share one decode and
one validation path; gzip-compressed requests are decompressed by gRPC itself, under
grpc.max_receive_message_length.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from typing import Any

import grpc

from otelgw.pipeline.pipeline import Overloaded, Pipeline
from otelgw.pipeline.request import Signal
from otelgw.receiver.decode import DecodeError, Encoding
from otelgw.receiver.ingest import BadProject, clean_project, ingest

log = logging.getLogger(__name__)

SERVICES: dict[str, Signal] = {
    "opentelemetry.proto.collector.trace.v1.TraceService": Signal.TRACES,
    "opentelemetry.proto.collector.logs.v1.LogsService": Signal.LOGS,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": Signal.METRICS,
}
PROJECT_METADATA = "x-otelgw-project"


def _project(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == PROJECT_METADATA:
            return clean_project(value if isinstance(value, str) else value.decode(errors="replace"))
    return ""


def _export_handler(pipeline: Pipeline, executor: Executor | None, signal: Signal) -> grpc.RpcMethodHandler:
    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            project = _project(context)
            response: Any = await ingest(pipeline, executor, signal, body, Encoding.PROTOBUF, project)
        except (DecodeError, BadProject) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Overloaded as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return response.SerializeToString()

    return grpc.unary_unary_rpc_method_handler(export)


def build_otlp_grpc_server(pipeline: Pipeline, addr: str, max_request_bytes: int,
                           executor: Executor | None) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ])
    handlers = [
        grpc.method_handlers_generic_handler(service, {"Export": _export_handler(pipeline, executor, signal)})
        for service, signal in SERVICES.items()
    ]
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {addr}")
    return server, port
