"""OTLP/HTTP receiver: encodings, compression, chunked bodies and every kind of bad input, each
answered as the OTLP spec says, with the gateway still serving afterwards."""

from __future__ import annotations

import gzip
import http.client
import json
import zlib

import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from otlp_client import get_json, post, post_otlp

from otelgw.receiver.otlp_http import status_protobuf


def span_json(trace_id: str, span_id: str, name: str = "chat gpt-4o-mini", **extra) -> dict:
    return {
        "traceId": trace_id, "spanId": span_id, "name": name, "kind": 3,
        "startTimeUnixNano": "1764150000000000000", "endTimeUnixNano": "1764150000500000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 5}},
        ],
        **extra,
    }


def request_json(*spans: dict, service: str = "http-test") -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
    }]}).encode()


def request_protobuf(*spans: dict, service: str = "http-test") -> bytes:
    from otelgw.pipeline.request import Signal
    from otelgw.receiver.decode import Encoding, decode

    return decode(Signal.TRACES, request_json(*spans, service=service), Encoding.JSON).message.SerializeToString()


def stored_tokens(gateway, trace_id: str) -> list[tuple[int, int]]:
    gateway.settle()
    rows = gateway.query("SELECT input_tokens, output_tokens FROM inferences FINAL WHERE trace_id = {t:String}",
                         t=trace_id)
    return [(r["input_tokens"], r["output_tokens"]) for r in rows]


def test_json_hex_ids_and_string_int64(gateway) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    result = post_otlp(gateway.http_url, "traces", request_json(span_json(trace, "b7ad6b7169203331")), "json")
    assert result.status == 200 and result.headers["Content-Type"].startswith("application/json")
    assert json.loads(result.body) == {}
    assert stored_tokens(gateway, trace) == [(12, 5)]
    row = gateway.query("SELECT span_id, toUnixTimestamp64Nano(timestamp) AS ns, latency_ms FROM inferences FINAL "
                        "WHERE trace_id = {t:String}", t=trace)[0]
    assert row == {"span_id": "b7ad6b7169203331", "ns": 1764150000000000000, "latency_ms": 500.0}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "identity"])
def test_compressed_protobuf(gateway, encoding: str) -> None:
    trace = {"gzip": "1" * 32, "deflate": "2" * 32, "zstd": "3" * 32, "identity": "4" * 32}[encoding]
    body = request_protobuf(span_json(trace, "00000000000000a1"))
    compressed = {"gzip": gzip.compress, "deflate": zlib.compress, "zstd": zstandard.compress,
                  "identity": lambda b: b}[encoding](body)
    result = post(f"{gateway.http_url}/v1/traces", compressed, headers={"Content-Encoding": encoding})
    assert result.status == 200
    assert result.headers["Content-Type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(result.body).HasField("partial_success")
    assert stored_tokens(gateway, trace) == [(12, 5)]


def test_bodies_that_end_early_are_refused(gateway) -> None:
    """A request of two resources, compressed, cut off in transit right after the first resource:
    aiohttp's own gzip decoder took that as a complete (smaller, valid) request, stored the first
    resource and answered 200 — the rest lost. Every stream must reach its end marker; bodies of
    several gzip members or zstd frames are whole requests (RFC 1952, RFC 8878)."""
    first_trace, second_trace = "c1" * 16, "c2" * 16
    first = request_protobuf(span_json(first_trace, "00000000000000c1"), service="first")
    second = request_protobuf(span_json(second_trace, "00000000000000c2"), service="second")
    whole = first + second  # protobuf: two requests back to back are one of both resources
    stored = gzip.compress(whole, compresslevel=0)  # one stored block: header 10 + 5, data, trailer 8
    assert stored[15:15 + len(whole)] == whole
    cut = {
        "gzip after the first resource": (stored[:15 + len(first)], "gzip"),
        "gzip without its trailer": (gzip.compress(whole)[:-8], "gzip"),
        "deflate cut": (zlib.compress(whole)[:-4], "deflate"),
        "zstd cut": (zstandard.compress(whole)[:-3], "zstd"),
    }
    for what, (body, encoding) in cut.items():
        result = post(f"{gateway.http_url}/v1/traces", body, headers={"Content-Encoding": encoding})
        assert result.status == 400 and b"truncated" in result.body, what
    for what, body, encoding in (("deflate with bytes after its end", zlib.compress(whole) + b"xx", "deflate"),
                                 ("gzip with garbage after its member", gzip.compress(whole) + b"junk", "gzip"),
                                 ("not gzip at all", b"hello, world", "gzip")):
        assert post(f"{gateway.http_url}/v1/traces", body, headers={"Content-Encoding": encoding}).status == 400, what
    assert stored_tokens(gateway, first_trace) == [] and stored_tokens(gateway, second_trace) == []
    # Whole bodies in several members / frames, and raw deflate (no zlib header), are taken.
    for body, encoding in ((gzip.compress(first) + gzip.compress(second), "gzip"),
                           (zstandard.compress(first) + zstandard.compress(second), "zstd"),
                           (_raw_deflate(whole), "deflate")):
        assert post(f"{gateway.http_url}/v1/traces", body, headers={"Content-Encoding": encoding}).status == 200
    assert stored_tokens(gateway, first_trace) == [(12, 5)] and stored_tokens(gateway, second_trace) == [(12, 5)]
    # A body of thousands of empty members (each member's end copied the rest of the input:
    # quadratic time) is refused past 1,000 members.
    for body, encoding in ((gzip.compress(b"") * 5000, "gzip"), (zstandard.compress(b"") * 5000, "zstd")):
        result = post(f"{gateway.http_url}/v1/traces", body, headers={"Content-Encoding": encoding})
        assert result.status == 400 and b"more than 1000" in result.body
    # An encoding the receiver does not speak: 415 in the request's encoding, before any decoding.
    result = post(f"{gateway.http_url}/v1/traces", b"x", headers={"Content-Encoding": "br"})
    assert result.status == 415 and b"unsupported Content-Encoding 'br'" in result.body


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


def test_chunked_body_without_content_length(gateway) -> None:
    trace = "5" * 32
    body = request_protobuf(span_json(trace, "00000000000000b2"))
    conn = http.client.HTTPConnection("127.0.0.1", gateway.ports.otlp_http, timeout=30)
    conn.putrequest("POST", "/v1/traces")
    conn.putheader("Content-Type", "application/x-protobuf")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for start in range(0, len(body), 50):
        chunk = body[start:start + 50]
        conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 200
    conn.close()
    assert stored_tokens(gateway, trace) == [(12, 5)]


def test_invalid_ids_partial_success(gateway) -> None:
    trace = "6" * 32
    body = request_json(
        span_json(trace, "00000000000000c1"),
        span_json("abc", "00000000000000c2"),  # trace id not 16 bytes
        span_json(trace, ""),  # no span id
        span_json("zz" * 16, "00000000000000c3"),  # not hex
    )
    result = post_otlp(gateway.http_url, "traces", body, "json")
    assert result.status == 200
    answer = json.loads(result.body)
    assert answer["partialSuccess"]["rejectedSpans"] == "3"
    assert "trace_id must be 16" in answer["partialSuccess"]["errorMessage"]
    assert "span_id must be 8" in answer["partialSuccess"]["errorMessage"]
    assert stored_tokens(gateway, trace) == [(12, 5)]

    # Same answer in protobuf for a protobuf request.
    proto = ExportTraceServiceRequest.FromString(request_protobuf(span_json("7" * 32, "00000000000000d1")))
    proto.resource_spans[0].scope_spans[0].spans.add(name="bad", trace_id=b"\x01" * 15, span_id=b"\x02" * 8)
    result = post_otlp(gateway.http_url, "traces", proto.SerializeToString())
    assert result.status == 200
    answer = ExportTraceServiceResponse.FromString(result.body)
    assert answer.partial_success.rejected_spans == 1
    assert stored_tokens(gateway, "7" * 32) == [(12, 5)]


BAD_INPUTS = [
    ("corrupt protobuf", b"\x0a\xff\xff\xff\xff\x0f garbage", "application/x-protobuf", {}, 400,
     "not a valid protobuf"),
    ("truncated protobuf", None, "application/x-protobuf", {}, 400, "not a valid protobuf"),
    ("invalid JSON", b'{"resourceSpans": [', "application/json", {}, 400, "not valid JSON"),
    ("JSON of the wrong shape", b'{"resourceSpans": {"scopeSpans": 5}}', "application/json", {}, 400,
     "not a valid OTLP/JSON"),
    ("JSON array body", b"[1, 2]", "application/json", {}, 400, "must be a JSON object"),
    ("wrong JSON types", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "kind": "x"}]}]}]}',
     "application/json", {}, 400, "not a valid OTLP/JSON"),
    ("wrong content type", b"hello", "text/plain", {}, 415, "unsupported Content-Type"),
    ("unknown content encoding", b"x", "application/x-protobuf", {"Content-Encoding": "br2"}, 415,
     "unsupported Content-Encoding"),
    ("gzip header that is not gzip", b"not gzip at all", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400,
     "body is not valid gzip"),
]


@pytest.mark.parametrize(("case", "body", "content_type", "headers", "status", "message"), BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(gateway, case, body, content_type, headers, status, message) -> None:
    if body is None:
        body = request_protobuf(span_json("8" * 32, "00000000000000e1"))[:-7]
    result = post(f"{gateway.http_url}/v1/traces", body, content_type, headers)
    assert result.status == status, result.body
    if content_type == "application/x-protobuf":
        # A google.rpc.Status in the request's encoding.
        assert result.headers["Content-Type"] == "application/x-protobuf"
        assert message.encode() in result.body
    else:
        error = json.loads(result.body)
        assert message in error["message"] and isinstance(error["code"], int)
    assert get_json(f"{gateway.api_url}/healthz")[0] == 200


def test_method_not_allowed_and_unknown_path(gateway) -> None:
    assert post(f"{gateway.http_url}/v1/traces", None, method="GET").status == 405
    assert post(f"{gateway.http_url}/v1/nope", b"", method="POST").status == 404


def test_oversize_and_compression_bomb(chdb_path, tmp_path) -> None:
    from conftest import start_gateway

    small = start_gateway(chdb_path, "t_small_limit", tmp_path, max_request_bytes=64 * 1024)
    try:
        big = request_protobuf(*[span_json("9" * 32, f"{i + 1:016x}") for i in range(400)])
        assert len(big) > 64 * 1024
        result = post(f"{small.http_url}/v1/traces", big)
        assert result.status == 413 and b"exceeds 65536 bytes" in result.body
        # 64 MiB of zeros is 64 KiB gzipped: the limit applies while decompressing.
        bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
        result = post(f"{small.http_url}/v1/traces", bomb, headers={"Content-Encoding": "gzip"})
        assert result.status == 413
        zbomb = zstandard.compress(b"\0" * (64 * 1024 * 1024))
        result = post(f"{small.http_url}/v1/traces", zbomb, headers={"Content-Encoding": "zstd"})
        assert result.status == 413
        dbomb = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)
        result = post(f"{small.http_url}/v1/traces", dbomb, headers={"Content-Encoding": "deflate"})
        assert result.status == 413
        # Members each under the limit, together over it.
        members = gzip.compress(b"\0" * 40_000) * 2
        result = post(f"{small.http_url}/v1/traces", members, headers={"Content-Encoding": "gzip"})
        assert result.status == 413 and b"after decompression" in result.body
        # And the same gateway still takes a normal request.
        ok = post(f"{small.http_url}/v1/traces", request_protobuf(span_json("a" * 32, "00000000000000f1")))
        assert ok.status == 200
        assert status_protobuf(8, "x") == b"\x08\x08\x12\x01x"
    finally:
        assert small.stop()


def test_langfuse_path_and_project_header(gateway) -> None:
    trace = "b" * 32
    result = post_otlp(gateway.http_url, "traces", request_protobuf(span_json(trace, "00000000000000a2")),
                       project="team-a", gzip_body=True, path="/api/public/otel/v1/traces")
    assert result.status == 200
    gateway.settle()
    assert gateway.query("SELECT project_id FROM inferences FINAL WHERE trace_id = {t:String}", t=trace) == [
        {"project_id": "team-a"}]
    bad = post_otlp(gateway.http_url, "traces", request_protobuf(span_json(trace, "00000000000000a3")),
                    project="x" * 200)
    assert bad.status == 400


def test_logs_and_metrics_are_stored(gateway) -> None:
    logs = json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "log-svc"}}]},
        "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [
            {"timeUnixNano": "1764150000000000000", "severityNumber": 9, "severityText": "INFO",
             "body": {"stringValue": "user logged in"},
             "attributes": [{"key": "user", "value": {"stringValue": "bob"}}],
             "traceId": "c" * 32, "spanId": "00000000000000a4"},
            {"timeUnixNano": "1764150000000000001", "body": {"kvlistValue": {"values": [
                {"key": "k", "value": {"intValue": "3"}}]}}},
            {"body": {"stringValue": "bad ids"}, "traceId": "abcd"},
        ]}],
    }]}).encode()
    result = post_otlp(gateway.http_url, "logs", logs, "json")
    assert result.status == 200
    assert json.loads(result.body)["partialSuccess"]["rejectedLogRecords"] == "1"
    metrics = json.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "metric-svc"}}]},
        "scopeMetrics": [{"scope": {"name": "m"}, "metrics": [
            {"name": "gen_ai.client.token.usage", "unit": "{token}", "histogram": {
                "aggregationTemporality": 2, "dataPoints": [{
                    "timeUnixNano": "1764150000000000000", "count": "2", "sum": 30, "min": 10, "max": 20,
                    "bucketCounts": ["0", "2"], "explicitBounds": [5],
                    "attributes": [{"key": "gen_ai.token.type", "value": {"stringValue": "input"}}]}]}},
            {"name": "requests", "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [
                {"timeUnixNano": "1764150000000000000", "asInt": "7"}]}},
            {"name": "temperature", "gauge": {"dataPoints": [{"timeUnixNano": "1764150000000000000",
                                                              "asDouble": 21.5}]}},
        ]}],
    }]}).encode()
    result = post_otlp(gateway.http_url, "metrics", metrics, "json")
    assert result.status == 200
    gateway.settle()
    stored_logs = gateway.query("SELECT body, severity_text, trace_id, attributes FROM logs "
                                "WHERE service_name = 'log-svc' ORDER BY timestamp")
    assert stored_logs[0] == {"body": "user logged in", "severity_text": "INFO", "trace_id": "c" * 32,
                              "attributes": {"user": "bob"}}
    assert json.loads(stored_logs[1]["body"]) == {"k": 3}
    points = gateway.query("SELECT metric_name, type, value, count, sum, min, max, bucket_counts, explicit_bounds, "
                           "is_monotonic FROM metric_points WHERE service_name = 'metric-svc' ORDER BY metric_name")
    by_name = {p["metric_name"]: p for p in points}
    assert by_name["gen_ai.client.token.usage"]["count"] == 2
    assert by_name["gen_ai.client.token.usage"]["bucket_counts"] == [0, 2]
    assert by_name["gen_ai.client.token.usage"]["max"] == 20.0
    assert by_name["requests"]["value"] == 7.0 and by_name["requests"]["is_monotonic"] is True
    assert by_name["temperature"]["value"] == 21.5


def test_non_finite_metric_values_are_kept(gateway) -> None:
    """NaN and ±Inf are valid OTLP doubles; JSON rows have no such numbers, the encoder wrote
    null and ClickHouse stored 0 (or NULL): a gauge at +Inf read back as 0."""
    import math

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="service.name").value.string_value = "non-finite"
    scope = resource_metrics.scope_metrics.add()
    for name, value in (("g_nan", math.nan), ("g_inf", math.inf), ("g_ninf", -math.inf), ("g_one", 1.5)):
        scope.metrics.add(name=name).gauge.data_points.add(as_double=value, time_unix_nano=1764150000000000000)
    histogram = scope.metrics.add(name="h").histogram.data_points.add(
        count=2, sum=math.nan, min=-math.inf, max=math.inf, time_unix_nano=1764150000000000000)
    histogram.bucket_counts.extend([1, 1])
    histogram.explicit_bounds.extend([math.inf])
    assert post(f"{gateway.http_url}/v1/metrics", request.SerializeToString()).status == 200
    gateway.settle()
    rows = {r["metric_name"]: r for r in gateway.query(
        "SELECT metric_name, toString(value) AS value, toString(sum) AS sum, toString(min) AS min, "
        "toString(max) AS max, arrayMap(b -> toString(b), explicit_bounds) AS bounds FROM metric_points "
        "WHERE service_name = 'non-finite'")}
    assert {n: rows[n]["value"] for n in ("g_nan", "g_inf", "g_ninf", "g_one")} == {
        "g_nan": "nan", "g_inf": "inf", "g_ninf": "-inf", "g_one": "1.5"}
    h = rows["h"]
    assert (h["sum"], h["min"], h["max"], h["bounds"]) == ("nan", "-inf", "inf", ["inf"])
