"""The Tempo-compatible trace API, with requests shaped as Grafana's Tempo data source sends
them, against a gateway fed by a real OTel SDK exporter; protobuf answers parsed with the OTLP
types (tempopb.Trace is wire-compatible with OTLP TracesData)."""

from __future__ import annotations

import base64
import json

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from otlp_client import get_json, post

from otelgw.pipeline.mapper import derived_inference_id


def _send_trace(gateway) -> tuple[str, str, str]:
    provider = TracerProvider(resource=Resource.create({"service.name": "rag-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{gateway.http_url}/v1/traces")))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("POST /ask", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("retrieve") as retrieve:
            retrieve.set_attribute("db.system", "qdrant")
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as chat:
            chat.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                 "gen_ai.usage.output_tokens": 1200})
            chat.add_event("gen_ai.first_token")
    assert provider.force_flush(30_000)
    provider.shutdown()
    gateway.settle()
    ctx = root.get_span_context()
    return f"{ctx.trace_id:032x}", f"{chat.get_span_context().span_id:016x}", f"{ctx.span_id:016x}"


def test_trace_by_id_v1_v2_json_and_protobuf(gateway) -> None:
    trace_id, chat_span, root_span = _send_trace(gateway)
    # Grafana asks v2 first, JSON, with the Accept header it uses; ids may come unpadded.
    status, body = get_json(f"{gateway.api_url}/api/v2/traces/{trace_id}")
    assert status == 200 and body["status"] == "COMPLETE"
    spans = [s for rs in body["trace"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert {s["name"] for s in spans} == {"POST /ask", "retrieve", "chat gpt-4o"}
    chat = next(s for s in spans if s["name"] == "chat gpt-4o")
    assert base64.b64decode(chat["spanId"]).hex() == chat_span
    assert base64.b64decode(chat["parentSpanId"]).hex() == root_span
    assert chat["kind"] == "SPAN_KIND_CLIENT" and chat["events"][0]["name"] == "gen_ai.first_token"
    attrs = {a["key"]: a["value"]["stringValue"] for a in chat["attributes"]}
    assert attrs["otelgw.inference_id"] == derived_inference_id(trace_id, chat_span)
    resource_attrs = body["trace"]["resourceSpans"][0]["resource"]["attributes"]
    resource = {a["key"]: a["value"]["stringValue"] for a in resource_attrs}
    assert resource["service.name"] == "rag-app"

    status, v1 = get_json(f"{gateway.api_url}/api/traces/{trace_id}")
    assert status == 200 and len([s for b in v1["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]) == 3

    result = post(f"{gateway.api_url}/api/traces/{trace_id}", None, method="GET",
                  headers={"Accept": "application/protobuf"})
    assert result.status == 200 and result.headers["Content-Type"] == "application/protobuf"
    trace = TracesData.FromString(result.body)
    assert sum(len(ss.spans) for rs in trace.resource_spans for ss in rs.scope_spans) == 3

    # Tempo left-pads short ids; invalid ids are a 400; unknown ones a 404.
    short = trace_id.lstrip("0") or "0"
    assert get_json(f"{gateway.api_url}/api/v2/traces/{short}")[0] == 200
    assert get_json(f"{gateway.api_url}/api/v2/traces/xyz")[0] == 400
    assert get_json(f"{gateway.api_url}/api/v2/traces/{'1' * 33}")[0] == 400
    assert get_json(f"{gateway.api_url}/api/v2/traces/{'f' * 32}")[0] == 404
    # start/end (unix seconds) outside the trace: not found.
    assert get_json(f"{gateway.api_url}/api/v2/traces/{trace_id}?start=1&end=2")[0] == 404
    assert get_json(f"{gateway.api_url}/api/v2/traces/{trace_id}?start=x")[0] == 400


def test_inference_to_trace_and_tempo_probes(gateway) -> None:
    trace_id, chat_span, _ = _send_trace(gateway)
    inference_id = derived_inference_id(trace_id, chat_span)
    status, body = get_json(f"{gateway.api_url}/api/v1/metrics/inferences/{inference_id}/trace")
    assert status == 200 and body["trace_id"] == trace_id and body["inference_span_id"] == chat_span
    assert body["sampled_out"] is False
    echo = post(f"{gateway.api_url}/api/echo", None, method="GET")
    assert echo.status == 200 and echo.body == b"echo"
    status, info = get_json(f"{gateway.api_url}/api/status/buildinfo")
    assert status == 200 and info["version"].startswith("2.")


def test_trace_without_kept_spans_is_rebuilt_from_inferences(gateway) -> None:
    trace = "9a" * 16
    body = json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "00000000000000e1", "name": "chat m",
            "startTimeUnixNano": "1764150000000000000", "endTimeUnixNano": "1764150001000000000", "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]}]}]}]}).encode()
    from otlp_client import post_otlp

    assert post_otlp(gateway.http_url, "traces", body, "json").status == 200
    gateway.settle()
    # Drop the span row, as a sampler that dropped the trace would have never written it.
    gateway._clients.get().command(f"DELETE FROM spans WHERE trace_id = '{trace}'")
    status, answer = get_json(f"{gateway.api_url}/api/v2/traces/{trace}")
    assert status == 200 and "sampled out" in answer["message"]
    (span,) = [s for rs in answer["trace"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    attrs = {a["key"]: a["value"]["stringValue"] for a in span["attributes"]}
    assert span["name"] == "chat m" and attrs["otelgw.sampled_out"] == "true"


def _tempo(gateway, path: str, **params: str):
    import urllib.parse

    query = urllib.parse.urlencode(params)
    return get_json(f"{gateway.api_url}{path}{'?' + query if query else ''}")


def test_search_traceql_and_tags(gateway) -> None:
    import time as _time

    trace_id, chat_span, _ = _send_trace(gateway)
    now = int(_time.time())
    window = {"start": str(now - 600), "end": str(now + 60)}
    status, body = _tempo(gateway, "/api/search", q='{ span.gen_ai.request.model = "gpt-4o" }', **window)
    assert status == 200, body
    found = [t for t in body["traces"] if t["traceID"] == trace_id]
    assert found and found[0]["rootServiceName"] == "rag-app" and found[0]["rootTraceName"] == "POST /ask"
    spans = found[0]["spanSets"][0]["spans"]
    assert [s["spanID"] for s in spans] == [chat_span]
    assert {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}} in spans[0]["attributes"]
    for query, expected in [
        ('{ span.gen_ai.usage.output_tokens > 1000 && kind = client }', True),
        ('{ span.gen_ai.usage.output_tokens > 5000 }', False),
        ('{ .db.system = "qdrant" } && { name =~ "chat.*" }', True),
        ('{ .db.system = "qdrant" } && { name = "nope" }', False),
        ('{ .db.system = "qdrant" } || { name = "nope" }', True),
        ('{ resource.service.name = "rag-app" && status != error }', True),
        ('{ rootServiceName = "rag-app" && duration >= 0ms }', True),
        ('{ rootName = "GET /other" }', False),
        ('{ traceDuration < 1h }', True),
        ('{ (name = "retrieve" || name = "x") && span.db.system !~ "pg.*" }', True),
        ('{}', True),
    ]:
        status, body = _tempo(gateway, "/api/search", q=query, limit="200", **window)
        assert status == 200, (query, body)
        assert (trace_id in {t["traceID"] for t in body["traces"]}) is expected, query
    for bad in ['{ span.x = }', '{ foo = "x" }', 'span.x = "y"', '{ .a = "b" } | rate()', '{ .a =~ "(" }']:
        status, body = _tempo(gateway, "/api/search", q=bad, **window)
        assert status == 400 and "position" in body["error"]["message"], (bad, body)
    # Python's re takes these patterns, ClickHouse's RE2 does not; a string where a duration goes;
    # parentheses past the parser's depth: each was a 500.
    for bad, fragment in [('{ name =~ "(a)\\\\1" }', "regular expression"),
                          ('{ name =~ "(?=a)" }', "regular expression"),
                          ('{ name =~ "a{2000}" }', "regular expression"),
                          ('{ name =~ "a{99999999999}" }', "regular expression"),
                          ('{ name =~ "' + "(" * 490 + ")" * 490 + '" }', "regular expression"),
                          ('{ name =~ "' + "a" * 1001 + '" }', "regular expression"),
                          ('{ duration = "abc" }', "duration"),
                          ("(" * 200 + "{}" + ")" * 200, "nest"),
                          ("{ " + "(" * 200 + 'name = "a"' + ")" * 200 + " }", "nest"),
                          ("(" * 1200 + "{}" + ")" * 1200, "too long"),
                          (" || ".join(['{ name = "a" }'] * 600), "too long")]:
        status, body = _tempo(gateway, "/api/search", q=bad, **window)
        assert status == 400 and fragment in body["error"]["message"], (bad[:40], body)
    # Durations past Int64 nanoseconds are the largest; a window past 2262 ends there (both
    # overflowed: a 500, and a window that wrapped around to hold nothing).
    huge = "9" * 400
    assert _tempo(gateway, "/api/search", q="{ duration > " + huge + "s }", **window)[0] == 200
    assert _tempo(gateway, "/api/search", minDuration=huge + "s", **window)[0] == 200
    status, body = _tempo(gateway, "/api/search", q="{}", limit="1000", start=str(now - 600), end="10000000000")
    assert status == 200 and trace_id in {t["traceID"] for t in body["traces"]}
    assert _tempo(gateway, f"/api/traces/{trace_id}", end="10000000000")[0] == 200
    # The legacy tags parameter (logfmt) and duration bounds.
    status, body = _tempo(gateway, "/api/search", tags='service.name="rag-app" db.system=qdrant',
                          minDuration="0ms", maxDuration="1h", **window)
    assert status == 200 and trace_id in {t["traceID"] for t in body["traces"]}
    assert _tempo(gateway, "/api/search", minDuration="fast")[0] == 400
    assert _tempo(gateway, "/api/search", limit="0")[0] == 400

    status, body = _tempo(gateway, "/api/search/tags", **window)
    assert status == 200 and {"db.system", "gen_ai.request.model", "service.name"} <= set(body["tagNames"])
    status, body = _tempo(gateway, "/api/v2/search/tags", scope="span", **window)
    assert body["scopes"][0]["name"] == "span" and "db.system" in body["scopes"][0]["tags"]
    status, body = _tempo(gateway, "/api/v2/search/tags", **window)
    assert {s["name"] for s in body["scopes"]} == {"span", "resource", "intrinsic"}
    status, body = _tempo(gateway, "/api/search/tag/service.name/values", **window)
    assert "rag-app" in body["tagValues"]
    # Grafana double-encodes scoped tag names.
    status, body = _tempo(gateway, "/api/v2/search/tag/resource%252Eservice.name/values", **window)
    assert status == 200 and {"type": "string", "value": "rag-app"} in body["tagValues"]
    status, body = _tempo(gateway, "/api/v2/search/tag/span.gen_ai.usage.output_tokens/values", **window)
    assert {"type": "int", "value": "1200"} in body["tagValues"]
    status, body = _tempo(gateway, "/api/v2/search/tag/status/values", **window)
    assert {"type": "status", "value": "unset"} in body["tagValues"]
