"""In-process cost of the mapping stages for one 512-span request of OTel GenAI chat spans
(no network, no ClickHouse): where the mapper's microseconds per span go.

    .venv/bin/python loadtest/bench_mapper.py [--reps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from otelgw.config import Config
from otelgw.governance.masking import Masker, MaskingFile
from otelgw.pipeline import genai
from otelgw.pipeline.anyvalue import attrs_to_dict, str_map
from otelgw.pipeline.genai import SpanView
from otelgw.pipeline.mapper import derived_inference_id
from otelgw.pipeline.request import Signal
from otelgw.pipeline.rows import RowBatch, encode_batch, ts
from otelgw.pipeline.workers import build_mapper
from otelgw.receiver.decode import Encoding, decode


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, list):
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v)
                                                                             for v in value])))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def build_request(spans: int = 512) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([_kv("service.name", "bench"), _kv("telemetry.sdk.language", "python")])
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai_v2"
    for i in range(spans):
        span = scope_spans.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat gpt-4o-mini", kind=3,
                                     start_time_unix_nano=1_764_150_000_000_000_000 + i,
                                     end_time_unix_nano=1_764_150_001_000_000_000 + i)
        span.attributes.extend([
            _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", "openai"),
            _kv("gen_ai.request.model", "gpt-4o-mini"), _kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            _kv("gen_ai.response.id", f"chatcmpl-{i}"), _kv("gen_ai.response.finish_reasons", ["stop"]),
            _kv("gen_ai.usage.input_tokens", 120), _kv("gen_ai.usage.output_tokens", 40),
            _kv("server.address", "api.openai.com"), _kv("server.port", 443),
            _kv("gen_ai.input.messages", json.dumps([
                {"role": "system", "parts": [{"type": "text", "content": "You are a helpful assistant. " * 4}]},
                {"role": "user", "parts": [{"type": "text", "content": f"Question {i} about something? " * 3}]}])),
            _kv("gen_ai.output.messages", json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": "An answer. " * 10}],
                 "finish_reason": "stop"}])),
        ])
    return request.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    body = build_request()
    mapper = build_mapper(Config())
    conv = mapper.conventions
    decoded = decode(Signal.TRACES, body, Encoding.PROTOBUF)
    spans = list(decoded.message.resource_spans[0].scope_spans[0].spans)
    count = len(spans)

    def stage(label: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        for _ in range(args.reps):
            out = fn()
        print(f"{label:30s} {(time.perf_counter() - start) / args.reps / count * 1e6:7.2f} µs/span")
        return out

    print(f"{count} spans a request, {len(body) / count:.0f} protobuf bytes a span, {args.reps} repetitions")
    stage("decode (protobuf + validate)", lambda: decode(Signal.TRACES, body, Encoding.PROTOBUF))
    attrs = stage("attrs_to_dict", lambda: [attrs_to_dict(s.attributes) for s in spans])
    stage("str_map", lambda: [str_map(a) for a in attrs])
    families = stage("detect", lambda: [conv.detect(a, "x", s.name) for a, s in zip(attrs, spans, strict=True)])
    views = [SpanView(s.name, "x", s.start_time_unix_nano, a, []) for a, s in zip(attrs, spans, strict=True)]
    stage("extract_fields", lambda: [genai.extract_fields(conv, f, v) for f, v in zip(families, views, strict=True)])
    stage("extract_messages", lambda: [genai.extract_messages(conv, f, v)
                                       for f, v in zip(families, views, strict=True)])
    stage("inference id (uuid5)", lambda: [derived_inference_id(s.trace_id.hex(), s.span_id.hex()) for s in spans])
    stage("timestamps (x4)", lambda: [(ts(s.start_time_unix_nano), ts(s.end_time_unix_nano),
                                       ts(s.start_time_unix_nano), ts(s.end_time_unix_nano)) for s in spans])
    batch = stage("map_traces (all of mapping)", lambda: mapper.map_traces(decoded.message, "", 1))
    encoded = stage("encode_batch (JSONEachRow)", lambda: encode_batch(batch, "1764150000.000000000"))
    # Masking works in place: each repetition gets a fresh batch (the copy is timed apart).
    for label, pii in (("mask, secrets only", False), ("mask, all detectors (PII on)", True)):
        masker = Masker(MaskingFile(), default_pii=pii, content_keys=conv.content_attributes()[0])
        copies = [msgspec.convert(msgspec.to_builtins(batch), RowBatch) for _ in range(args.reps + 1)]
        stage(label, lambda masker=masker, copies=copies: masker.apply(copies.pop()))
    print("rows a span:", {t: n / count for t, n in encoded.rows.items()})
    print("bytes a span:", {t: round(len(b) / count) for t, b in encoded.blocks.items()})


if __name__ == "__main__":
    main()
