"""Real OpenTelemetry SDK apps export GenAI spans and log-record events to the running gateway
over OTLP/gRPC, OTLP/HTTP protobuf and OTLP/HTTP JSON; the rows are read back from ClickHouse."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import start_gateway
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogExporter
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from otlp_client import call_api

from otelgw.pipeline.mapper import derived_inference_id


def _exporters(gateway, transport: str, project: str):
    headers = {"x-otelgw-project": project}
    if transport == "grpc":
        return (GrpcSpanExporter(endpoint=gateway.grpc_target, insecure=True, headers=headers),
                GrpcLogExporter(endpoint=gateway.grpc_target, insecure=True, headers=headers))
    if transport == "http-protobuf":
        return (HttpSpanExporter(endpoint=f"{gateway.http_url}/v1/traces", headers=headers),
                HttpLogExporter(endpoint=f"{gateway.http_url}/v1/logs", headers=headers))
    return (JsonSpanExporter(endpoint=f"{gateway.http_url}/v1/traces", headers=headers),
            JsonLogExporter(endpoint=f"{gateway.http_url}/v1/logs", headers=headers))


TRANSPORTS = ["grpc", "http-protobuf", "http-json"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_genai_spans_and_events(gateway, transport: str) -> None:
    project = f"sdk-{transport}"
    span_exporter, log_exporter = _exporters(gateway, transport, project)
    resource = Resource.create({"service.name": "chat-app"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    tracer = tracer_provider.get_tracer("my.genai.instrumentation", "1.0")
    logger = logger_provider.get_logger("my.genai.instrumentation")

    # 1. A current-semconv chat span, messages as span attributes, with an evaluation event.
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
        span.set_attributes({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.response.id": f"resp-{transport}",
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "gen_ai.usage.cache_read.input_tokens": 400,
            "gen_ai.conversation.id": "conv-1",
            "user.id": "alice",
            "gen_ai.input.messages": json.dumps([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
            ]),
            "gen_ai.output.messages": json.dumps([
                {"role": "assistant", "finish_reason": "tool_calls",
                 "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather",
                            "arguments": {"city": "Paris"}}]},
            ]),
        })
        span.add_event("gen_ai.evaluation.result", {
            "gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.9,
            "gen_ai.evaluation.score.label": "relevant", "gen_ai.evaluation.explanation": "on topic",
        })
        chat_ctx = span.get_span_context()

    # 2. An older-semconv span whose messages arrive as log-record events, and a failure.
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                             "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 10,
                             "gen_ai.usage.completion_tokens": 0, "error.type": "RateLimitError"})
        span.set_status(Status(StatusCode.ERROR, "429 too many requests"))
        logger.emit(event_name="gen_ai.user.message", body={"content": "Tell me a joke"},
                    attributes={"gen_ai.system": "openai"})
        legacy_ctx = span.get_span_context()

    # 3. A plain, non-GenAI span: stored in spans only.
    with tracer.start_as_current_span("GET /health"):
        pass

    assert tracer_provider.force_flush(30_000)
    assert logger_provider.force_flush(30_000)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    gateway.settle()

    rows = gateway.query("SELECT * FROM inferences FINAL WHERE project_id = {p:String} ORDER BY timestamp", p=project)
    assert [r["span_name"] for r in rows] == ["chat gpt-4o", "chat gpt-4o-mini"]
    chat, legacy = rows
    trace_hex, span_hex = f"{chat_ctx.trace_id:032x}", f"{chat_ctx.span_id:016x}"
    assert (chat["trace_id"], chat["span_id"]) == (trace_hex, span_hex)
    assert str(chat["inference_id"]) == derived_inference_id(trace_hex, span_hex)
    assert chat["service_name"] == "chat-app"
    assert chat["scope_name"] == "my.genai.instrumentation"
    assert (chat["operation"], chat["provider"]) == ("chat", "openai")
    assert (chat["request_model"], chat["response_model"]) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert (chat["input_tokens"], chat["output_tokens"], chat["cached_input_tokens"]) == (1000, 200, 400)
    assert chat["total_tokens"] == 1200
    # gpt-4o: 600 uncached x 2.50 + 400 cached x 1.25 + 200 output x 10.00, per million
    assert chat["cost_usd"] == pytest.approx((600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1e6)
    assert chat["cost_source"] == "pricing"
    assert chat["is_success"] is True and chat["finish_reason"] == "stop"
    assert (chat["session_id"], chat["user_id"]) == ("conv-1", "alice")
    assert chat["response_id"] == f"resp-{transport}"
    assert chat["input_preview"] == "Weather in Paris?"
    assert chat["latency_ms"] >= 0 and chat["ttft_ms"] is None
    assert "gen_ai.input.messages" not in chat["attributes"]
    assert chat["attributes"]["gen_ai.request.model"] == "gpt-4o"

    messages = gateway.query("SELECT direction, `index`, role, content, tool_calls FROM messages FINAL "
                             "WHERE inference_id = {i:UUID} ORDER BY direction, `index`", i=str(chat["inference_id"]))
    assert [(m["direction"], m["role"], m["content"]) for m in messages] == [
        ("input", "system", "Be brief."), ("input", "user", "Weather in Paris?"), ("output", "assistant", "")]
    calls = json.loads(messages[2]["tool_calls"])
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}

    feedback = gateway.query("SELECT * FROM feedback FINAL WHERE inference_id = {i:UUID}", i=str(chat["inference_id"]))
    assert len(feedback) == 1
    assert (feedback[0]["kind"], feedback[0]["name"], feedback[0]["value"], feedback[0]["label"],
            feedback[0]["comment"], feedback[0]["source"]) == ("evaluation", "relevance", 0.9, "relevant", "on topic",
                                                               "span_event")

    assert legacy["is_success"] is False
    assert (legacy["error_type"], legacy["error_message"]) == ("RateLimitError", "429 too many requests")
    assert (legacy["provider"], legacy["input_tokens"]) == ("openai", 10)
    legacy_id = derived_inference_id(f"{legacy_ctx.trace_id:032x}", f"{legacy_ctx.span_id:016x}")
    assert str(legacy["inference_id"]) == legacy_id
    log_messages = gateway.query("SELECT role, content, source FROM messages FINAL WHERE inference_id = {i:UUID}",
                                 i=legacy_id)
    assert log_messages == [{"role": "user", "content": "Tell me a joke", "source": "log"}]

    spans = gateway.query("SELECT name, kind, status_code, inference_id, attributes FROM spans FINAL "
                          "WHERE project_id = {p:String} ORDER BY start_time", p=project)
    assert [(s["name"], s["kind"], s["status_code"]) for s in spans] == [
        ("chat gpt-4o", "client", "unset"), ("chat gpt-4o-mini", "client", "error"),
        ("GET /health", "internal", "unset")]
    assert spans[0]["inference_id"] == str(chat["inference_id"]) and spans[2]["inference_id"] == ""
    # Message content is stored once, in `messages`; the span row keeps everything else.
    assert "gen_ai.input.messages" not in spans[0]["attributes"]
    assert spans[0]["attributes"]["gen_ai.response.id"] == f"resp-{transport}"


def test_a_call_traced_twice_by_a_simple_span_processor_is_one_inference(chdb_path, tmp_path) -> None:
    """Phoenix's register() default: a SimpleSpanProcessor exports each span in a request of its
    own as it ends. A library's LLM span around the provider SDK's own span of the same call (an
    HTTP client span between them) arrives as three requests, the SDK's first: one inference,
    on the library's span, with what only the SDK's span measured. (A fold wait of 1 s, not the
    default 0.1: a loaded test machine may take longer between the requests.)"""
    gateway = start_gateway(chdb_path, "t_simple_processor", tmp_path, fold_wait_ms=1000)
    try:
        _simple_processor_calls(gateway)
    finally:
        assert gateway.stop()


def _simple_processor_calls(gateway) -> None:
    project = "simple-processor"
    provider = TracerProvider(resource=Resource.create({"service.name": "phoenix-app"}))
    provider.add_span_processor(SimpleSpanProcessor(HttpSpanExporter(endpoint=f"{gateway.http_url}/v1/traces",
                                                                     headers={"x-otelgw-project": project})))
    library = provider.get_tracer("openinference.instrumentation.anthropic")
    sdk = provider.get_tracer("com.anthropic.sdk.python")
    for call in range(3):
        with library.start_as_current_span("Messages") as outer:
            outer.set_attributes({
                "openinference.span.kind": "LLM", "llm.provider": "anthropic",
                "llm.model_name": "claude-sonnet-4-5", "llm.token_count.prompt": 25,
                "llm.token_count.completion": 7, "output.mime_type": "application/json",
                "output.value": json.dumps({"id": f"msg_{call}", "content": [{"type": "text", "text": "Hi"}]}),
                "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Hello"})
            with sdk.start_as_current_span("POST", kind=SpanKind.CLIENT) as http:
                http.set_attribute("http.request.method", "POST")
                with sdk.start_as_current_span("chat claude-sonnet-4-5", kind=SpanKind.CLIENT) as inner:
                    inner.set_attributes({
                        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                        "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.id": f"msg_{call}",
                        "gen_ai.usage.input_tokens": 25, "gen_ai.usage.output_tokens": 7,
                        "gen_ai.server.time_to_first_token": 0.12})
    provider.shutdown()
    gateway.settle()
    rows = gateway.query("SELECT scope_name, response_id, ttft_ms, input_tokens FROM inferences FINAL "
                         "WHERE project_id = {p:String} ORDER BY response_id", p=project)
    assert rows == [{"scope_name": "openinference.instrumentation.anthropic", "response_id": f"msg_{call}",
                     "ttft_ms": 120.0, "input_tokens": 25} for call in range(3)]
    assert gateway.scalar("SELECT count() FROM spans FINAL WHERE project_id = {p:String}", p=project) == 9


def test_explicit_inference_id_wins(gateway) -> None:
    explicit = str(uuid.uuid4())
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "project.id": "from-resource"}))
    provider.add_span_processor(BatchSpanProcessor(HttpSpanExporter(endpoint=f"{gateway.http_url}/v1/traces")))
    with provider.get_tracer("t").start_as_current_span("chat m") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                             "otelgw.inference_id": explicit})
    assert provider.force_flush(30_000)
    provider.shutdown()
    gateway.settle()
    rows = gateway.query("SELECT project_id FROM inferences FINAL WHERE inference_id = {i:UUID}", i=explicit)
    # No x-otelgw-project header: the resource attribute project.id names the project.
    assert rows == [{"project_id": "from-resource"}]


def test_trace_feedback_reaches_evaluations_of_agent_and_tool_spans(gateway) -> None:
    """An agent run: its invoke_agent and execute_tool spans are no inference, so their evaluation
    events reach the API only through the trace's feedback; an evaluator's log record naming the
    chat's response id and an API rating belong to the chat's inference."""
    project = "trace-feedback"
    span_exporter, log_exporter = _exporters(gateway, "http-protobuf", project)
    resource = Resource.create({"service.name": "agent-app"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    tracer = tracer_provider.get_tracer("agent.framework")
    logger = logger_provider.get_logger("evaluator")
    with tracer.start_as_current_span("invoke_agent planner") as agent:
        agent.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
                              "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"})
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as chat:
            chat.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                 "gen_ai.request.model": "gpt-4o", "gen_ai.response.id": "resp-agent-1",
                                 "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2})
            chat_ctx = chat.get_span_context()
        with tracer.start_as_current_span("execute_tool get_weather") as tool:
            tool.set_attributes({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"})
            tool.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "tool_correctness",
                                                        "gen_ai.evaluation.score.value": 1.0})
            tool_ctx = tool.get_span_context()
        agent.add_event("gen_ai.evaluation.result", {
            "gen_ai.evaluation.name": "task_success", "gen_ai.evaluation.score.value": 0.2,
            "gen_ai.evaluation.score.label": "fail", "gen_ai.evaluation.explanation": "wrong city"})
        agent_ctx = agent.get_span_context()
        # An evaluator scoring the chat from a span of its own, by the provider's response id.
        with tracer.start_as_current_span("evaluate"):
            logger.emit(event_name="gen_ai.evaluation.result", attributes={
                "gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.7,
                "gen_ai.response.id": "resp-agent-1"})
    assert tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    gateway.settle()
    trace_hex = f"{agent_ctx.trace_id:032x}"
    chat_id = derived_inference_id(trace_hex, f"{chat_ctx.span_id:016x}")
    assert gateway.scalar("SELECT count() FROM inferences FINAL WHERE project_id = {p:String}", p=project) == 1
    status, _ = call_api(gateway.api_url, "POST", f"/api/v1/metrics/inferences/{chat_id}/feedback", None,
                         {"type": "rating", "value": 4})
    assert status == 201

    status, listed = call_api(gateway.api_url, "GET", f"/api/v1/traces/{trace_hex}/feedback")
    assert status == 200 and listed["trace_id"] == trace_hex and listed["has_more"] is False
    found = {item["name"]: item for item in listed["items"]}
    assert set(found) == {"task_success", "tool_correctness", "relevance", "rating"}
    assert (found["task_success"]["inference_id"], found["task_success"]["span_id"]) == (
        None, f"{agent_ctx.span_id:016x}")
    assert (found["task_success"]["value"], found["task_success"]["label"], found["task_success"]["comment"]) == (
        0.2, "fail", "wrong city")
    assert (found["tool_correctness"]["inference_id"], found["tool_correctness"]["span_id"]) == (
        None, f"{tool_ctx.span_id:016x}")
    assert found["relevance"]["inference_id"] == chat_id and found["relevance"]["source"] == "log"
    assert (found["rating"]["inference_id"], found["rating"]["span_id"], found["rating"]["source"]) == (
        chat_id, f"{chat_ctx.span_id:016x}", "api")
    assert all(item["trace_id"] == trace_hex for item in listed["items"])
    assert listed["summary"]["total"] == 4 and listed["summary"]["by_kind"] == {"evaluation": 3, "rating": 1}
    # Newest first: the API rating was given last.
    assert listed["items"][0]["name"] == "rating"

    # The inference's own feedback lists the rating and the response-id evaluation, not the others.
    status, own = call_api(gateway.api_url, "GET", f"/api/v1/metrics/inferences/{chat_id}/feedback")
    assert status == 200 and {i["name"] for i in own["items"]} == {"relevance", "rating"}
    assert all(i["trace_id"] == trace_hex for i in own["items"])

    status, page = call_api(gateway.api_url, "GET", f"/api/v1/traces/{trace_hex}/feedback?limit=1")
    assert status == 200 and page["has_more"] is True and [i["name"] for i in page["items"]] == ["rating"]
    # Tempo's short ids (leading zeros dropped) name the same trace; an unknown trace has none.
    status, short = call_api(gateway.api_url, "GET", f"/api/v1/traces/{trace_hex.lstrip('0')}/feedback")
    assert status == 200 and short["summary"]["total"] == 4
    status, empty = call_api(gateway.api_url, "GET", f"/api/v1/traces/{'e' * 32}/feedback")
    assert status == 200 and empty["items"] == [] and empty["summary"]["total"] == 0
    for bad in (f"{trace_hex}/feedback?limit=0", f"{trace_hex}/feedback?limit=x", "not-hex/feedback",
                f"{trace_hex}/feedback?limit=10001"):
        status, answer = call_api(gateway.api_url, "GET", f"/api/v1/traces/{bad}")
        assert status == 400 and answer["error"]["code"] in ("invalid_request", "invalid_trace_id"), (bad, answer)
