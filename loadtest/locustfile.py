"""Mixed load for a running gateway: OTLP/HTTP exporters sending GenAI spans, and people listing
and opening inferences. Headless:

    make loadtest                      # 60 s, 20 users, against a gateway it starts
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s \\
        --host http://127.0.0.1:3200 --otlp http://127.0.0.1:4318
"""

from __future__ import annotations

import json
import os
import random
import time

from locust import HttpUser, between, events, task
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "gemini-2.5-flash"]


@events.init_command_line_parser.add_listener
def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--otlp", default="http://127.0.0.1:4318", help="OTLP/HTTP base URL")


def genai_request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add()
    scope.resource.attributes.add(key="service.name", value=AnyValue(string_value="locust-app"))
    spans_out = scope.scope_spans.add()
    now = time.time_ns()
    for _ in range(spans):
        model = random.choice(MODELS)
        span = spans_out.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=f"chat {model}", kind=3,
                                   start_time_unix_nano=now - 900_000_000, end_time_unix_nano=now)
        span.attributes.extend([
            KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
            KeyValue(key="gen_ai.request.model", value=AnyValue(string_value=model)),
            KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=random.randint(20, 2000))),
            KeyValue(key="gen_ai.usage.output_tokens", value=AnyValue(int_value=random.randint(5, 500))),
            KeyValue(key="gen_ai.input.messages", value=AnyValue(string_value=json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "How do I reset my password?"}]}]))),
        ])
    return request.SerializeToString()


class Exporter(HttpUser):
    """An app's OTLP exporter: a batch of spans every second or so."""

    weight = 3
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.otlp = self.environment.parsed_options.otlp

    @task
    def export(self) -> None:
        self.client.post(f"{self.otlp}/v1/traces", data=genai_request(64), name="OTLP /v1/traces",
                         headers={"Content-Type": "application/x-protobuf"})


class Person(HttpUser):
    """Someone in the UI: lists the last hour, opens an inference, sometimes leaves feedback."""

    weight = 1
    wait_time = between(1, 3)

    def _window(self) -> dict[str, str]:
        now = time.time()
        return {"from_date": str(now - 3600), "to_date": str(now + 60)}

    @task(3)
    def browse(self) -> None:
        sort_by = random.choice(["timestamp", "latency", "cost", "tokens"])
        with self.client.post("/api/v1/metrics/inferences/list", json={**self._window(), "sort_by": sort_by},
                              name="list", catch_response=True) as response:
            items = response.json().get("items", []) if response.ok else []
        if items:
            inference = random.choice(items)["inference_id"]
            self.client.get(f"/api/v1/metrics/inferences/{inference}", name="detail")
            if random.random() < 0.2:
                self.client.post(f"/api/v1/metrics/inferences/{inference}/feedback", name="feedback",
                                 json={"type": "rating", "value": random.randint(1, 5)})
