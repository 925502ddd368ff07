"""What the receiver hands the pipeline: one decoded, validated OTLP request."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


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
