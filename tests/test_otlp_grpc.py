"""OTLP/gRPC receiver: gzip requests, partial success, project metadata, bad bodies."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_client import grpc_export


def _request(trace: bytes, spans: int = 1) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(spans):
        span = scope.spans.add(trace_id=trace, span_id=(i + 1).to_bytes(8, "big"), name="chat llama-3.1-8b",
                               start_time_unix_nano=1_764_150_000_000_000_000,
                               end_time_unix_nano=1_764_150_000_250_000_000)
        span.attributes.extend([
            KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
            KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="llama-3.1-8b")),
            KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(string_value="40")),  # a string: still read
            KeyValue(key="gen_ai.usage.output_tokens", value=AnyValue(double_value=8.0)),
        ])
    return request


def test_gzip_request_and_project_metadata(gateway) -> None:
    trace = b"\x11" * 16
    answer = grpc_export(gateway.grpc_target, "traces", _request(trace, spans=3).SerializeToString(),
                         project="grpc-team", compression=grpc.Compression.Gzip)
    assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")
    gateway.settle()
    rows = gateway.query("SELECT project_id, input_tokens, output_tokens, latency_ms FROM inferences FINAL "
                         "WHERE trace_id = {t:String}", t=trace.hex())
    assert rows == [{"project_id": "grpc-team", "input_tokens": 40, "output_tokens": 8, "latency_ms": 250.0}] * 3


def test_partial_success(gateway) -> None:
    request = _request(b"\x12" * 16)
    request.resource_spans[0].scope_spans[0].spans.add(name="no ids")
    answer = ExportTraceServiceResponse.FromString(grpc_export(gateway.grpc_target, "traces",
                                                               request.SerializeToString()))
    assert answer.partial_success.rejected_spans == 1
    assert "trace_id" in answer.partial_success.error_message


def test_corrupt_body_is_invalid_argument(gateway) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(gateway.grpc_target, "traces", b"\x0a\xff\xff\xff\xff\x0f broken")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf" in caught.value.details()
    # The server keeps serving.
    assert ExportLogsServiceResponse.FromString(grpc_export(gateway.grpc_target, "logs", b"")) is not None


def test_oversize_is_resource_exhausted(chdb_path, tmp_path) -> None:
    from conftest import start_gateway

    small = start_gateway(chdb_path, "t_grpc_small", tmp_path, max_request_bytes=4096)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            grpc_export(small.grpc_target, "traces", _request(b"\x13" * 16, spans=100).SerializeToString())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        assert small.stop()
