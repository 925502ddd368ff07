"""One Prometheus registry per gateway (no process-global state) for the gateway's internals and
the instruments the receivers and the writer update, followed on /metrics by the per-inference
series (rendered by InferenceSeries itself, for speed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

from otelgw.telemetry.gateway import ReceiverInstruments, StatusCollector, WriterInstruments
from otelgw.telemetry.inference import InferenceSeries

# The classic text format every Prometheus (and promtool, and the Grafana agent) reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Telemetry:
    def __init__(self, *, max_models: int = 200, max_projects: int = 100, max_providers: int = 50) -> None:
        # `_created` series double the output and no dashboard or rule reads them. (A process-wide
        # switch in prometheus-client; every registry here wants it off.)
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.inferences = InferenceSeries(max_models=max_models, max_projects=max_projects,
                                          max_providers=max_providers)
        self.receiver = ReceiverInstruments(self.registry)
        self.writer = WriterInstruments(self.registry)

    def watch_status(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(StatusCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry) + self.inferences.render().encode()
