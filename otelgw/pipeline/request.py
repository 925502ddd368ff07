"""What the receiver hands the pipeline: one decoded, validated OTLP request."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Signal(StrEnum):
    TRACES = "traces"
    LOGS = "logs"
    METRICS = "metrics"


class Decoded(msgspec.Struct):
    signal: Signal
    message: Any  # the Export*ServiceRequest protobuf message
    accepted: int  # spans / log records / data points kept
    rejected: int
    error_message: str = ""
    rejected_by: dict[str, int] = {}  # reason code -> items, for the metrics


REQUEST_TYPES: dict[Signal, type] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}
RESPONSE_TYPES: dict[Signal, type] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
}
