"""The mapper as a pure function, for convention shapes the captured fixtures do not cover:
vLLM server spans, the Vercel AI SDK, older OpenLLMetry and OTel GenAI forms, malformed values."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from otelgw.config import Config
from otelgw.pipeline.rows import RowBatch
from otelgw.pipeline.workers import build_mapper
from otelgw.pricing import Pricing
from otelgw.semconv import Conventions, load_tables

START = 1_764_150_000_000_000_000


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    return AnyValue(string_value=value)


def map_span(name: str, attrs: dict[str, Any], events: list[tuple[str, int, dict[str, Any]]] = (),
             scope: str = "test", status: int = 0, duration_ms: int = 1000) -> RowBatch:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = scope
    span = scope_spans.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name=name,
                                 start_time_unix_nano=START, end_time_unix_nano=START + duration_ms * 1_000_000)
    span.status.code = status
    span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
    for event_name, offset_ms, event_attrs in events:
        event = span.events.add(name=event_name, time_unix_nano=START + offset_ms * 1_000_000)
        event.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in event_attrs.items())
    return build_mapper(Config()).map_traces(request, "", time.time_ns())


def messages(batch: RowBatch, direction: str) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in batch.messages if m.direction == direction]


def test_vllm_server_span() -> None:
    batch = map_span("llm_request", {
        "gen_ai.response.model": "meta-llama/Llama-3.1-8B-Instruct", "gen_ai.request.id": "cmpl-1",
        "gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 30,
        "gen_ai.latency.time_in_queue": 0.01, "gen_ai.latency.time_to_first_token": 0.085,
        "gen_ai.latency.e2e": 0.9,
    })
    (row,) = batch.inferences
    assert (row.family, row.provider, row.response_id) == ("vllm", "vllm", "cmpl-1")
    assert (row.input_tokens, row.output_tokens) == (120, 30)
    assert row.ttft_ms == pytest.approx(85.0) and row.ttft_source == "attribute:gen_ai.latency.time_to_first_token"
    # Model ids with an org prefix are priced by their own name.
    assert row.cost_source == "pricing" and row.cost_usd == pytest.approx((120 + 30) * 0.18 / 1e6)


def test_vercel_ai_sdk_do_stream() -> None:
    batch = map_span("ai.streamText.doStream", {
        "ai.operationId": "ai.streamText.doStream", "ai.model.id": "gpt-4o-mini", "ai.model.provider": "openai.chat",
        "ai.usage.inputTokens": 50, "ai.usage.outputTokens": 12, "ai.response.finishReason": "tool-calls",
        "ai.response.msToFirstChunk": 321.5, "ai.telemetry.metadata.sessionId": "sess-9",
        "ai.prompt.messages": json.dumps([
            {"role": "system", "content": "You help."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [{"type": "tool-call", "toolCallId": "c1", "toolName": "weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "tool", "content": [{"type": "tool-result", "toolCallId": "c1", "toolName": "weather",
                                          "output": {"temp": 3}}]},
        ]),
        "ai.response.text": "",
        "ai.response.toolCalls": json.dumps([{"toolCallId": "c2", "toolName": "forecast", "input": "{\"d\":2}"}]),
        "gen_ai.system": "openai.chat", "gen_ai.request.model": "gpt-4o-mini",
    })
    (row,) = batch.inferences
    assert (row.family, row.operation, row.is_streaming, row.provider) == ("vercel_ai", "chat", True, "openai")
    assert (row.ttft_ms, row.ttft_source) == (321.5, "attribute:ai.response.msToFirstChunk")
    assert (row.session_id, row.finish_reason) == ("sess-9", "tool_call")  # canonical: was "tool-calls"
    inputs = [m for m in batch.messages if m.direction == "input"]
    assert [m.role for m in inputs] == ["system", "user", "assistant", "tool"]
    assert inputs[1].content == "Weather?"
    assert json.loads(inputs[2].tool_calls)[0]["name"] == "weather"
    assert inputs[3].tool_call_id == "c1" and json.loads(inputs[3].content) == {"temp": 3}
    (out,) = [m for m in batch.messages if m.direction == "output"]
    assert json.loads(out.tool_calls) == [{"id": "c2", "name": "forecast", "arguments": "{\"d\":2}"}]


def test_vercel_outer_span_is_not_an_inference() -> None:
    batch = map_span("ai.streamText", {"ai.operationId": "ai.streamText", "ai.model.id": "gpt-4o-mini"})
    assert batch.inferences == [] and len(batch.spans) == 1


def test_openllmetry_indexed_prompts() -> None:
    batch = map_span("openai.chat", {
        "llm.request.type": "chat", "gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-3.5-turbo",
        "gen_ai.usage.prompt_tokens": 9, "gen_ai.usage.completion_tokens": 4, "llm.usage.total_tokens": 13,
        "traceloop.association.properties.user_id": "u-1",
        "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "Short answers.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": json.dumps([{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {}}]),
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.name": "lookup", "gen_ai.completion.0.tool_calls.0.id": "t1",
        "gen_ai.completion.0.tool_calls.0.arguments": "{\"q\": 1}",
    })
    (row,) = batch.inferences
    assert (row.family, row.provider, row.total_tokens, row.user_id) == ("openllmetry", "openai", 13, "u-1")
    assert messages(batch, "input") == [("system", "Short answers."), ("user", "Hi\n[image_url]")]
    (out,) = [m for m in batch.messages if m.direction == "output"]
    assert out.finish_reason == "tool_call" and json.loads(out.tool_calls)[0]["name"] == "lookup"
    assert row.finish_reason == "tool_call"
    # Indexed message keys are consumed into message rows, not repeated in attributes.
    assert not any(k.startswith("gen_ai.prompt.") for k in row.attributes)


def test_an_empty_message_source_gives_way_to_one_with_the_call() -> None:
    # LiteLLM's callback: the tool-call turn's output message has empty parts; the call itself
    # is only in the legacy function_call form under gen_ai.completion.0.
    hollow = json.dumps([{"role": "assistant", "parts": [], "finish_reason": "tool_calls"}])
    attrs = {
        "gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Paris?"}]}]),
        "gen_ai.output.messages": hollow,
        "gen_ai.completion.0.function_call.name": "get_weather",
        "gen_ai.completion.0.function_call.arguments": "{\"city\": \"Paris\"}",
    }
    batch = map_span("litellm_request", attrs)
    (out,) = [m for m in batch.messages if m.direction == "output"]
    assert json.loads(out.tool_calls) == [{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}]
    assert (out.role, out.finish_reason) == ("assistant", "tool_call")
    assert messages(batch, "input") == [("user", "Paris?")]
    # With nothing better, the empty message is still stored: its finish reason says something.
    del attrs["gen_ai.completion.0.function_call.name"], attrs["gen_ai.completion.0.function_call.arguments"]
    (out,) = [m for m in map_span("litellm_request", attrs).messages if m.direction == "output"]
    assert (out.content, out.tool_calls, out.finish_reason) == ("", "", "tool_call")
    # A source with content keeps winning over a later one.
    attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Sun"}]}])
    attrs["gen_ai.completion.0.function_call.name"] = "ignored"
    assert messages(map_span("litellm_request", attrs), "output") == [("assistant", "Sun")]
    # Two empty choices and one call: which choice it belongs to is unknown, so no reason is lent.
    attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": [], "finish_reason": "stop"},
                                                  {"role": "assistant", "parts": [], "finish_reason": "tool_calls"}])
    (out,) = [m for m in map_span("litellm_request", attrs).messages if m.direction == "output"]
    assert (json.loads(out.tool_calls)[0]["name"], out.finish_reason) == ("ignored", "")


def test_an_empty_answer_is_not_replaced_by_a_fallback_document() -> None:
    # OpenInference (LangChain): an answer with no text and no tool call (a length stop, a content
    # filter) stays empty; output.value, the whole LLMResult, is no message.
    batch = map_span("ChatOpenAI", {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
        "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Hi",
        "llm.output_messages.0.message.role": "assistant",
        "output.value": json.dumps({"generations": [[{"text": "", "generation_info": {"finish_reason": "length"}}]]}),
        "output.mime_type": "application/json",
    })
    (row,) = batch.inferences
    assert messages(batch, "output") == [("assistant", "")]
    assert row.output_preview == ""


def test_thinking_tokens_only_in_the_total_are_added_to_the_output() -> None:
    # OpenLLMetry's Gemini spans: output = candidates only, total = input + candidates + thoughts.
    attrs = {"gen_ai.provider.name": "gcp.gen_ai", "gen_ai.operation.name": "generate_content",
             "gen_ai.request.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 21,
             "gen_ai.usage.output_tokens": 7, "gen_ai.usage.total_tokens": 32}
    (row,) = map_span("generate_content gemini-2.5-flash", attrs,
                      scope="opentelemetry.instrumentation.google_generativeai").inferences
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (21, 11, 32)
    priced = Pricing.load().cost("gemini-2.5-flash", 21, 0, 11, 0)
    assert priced is not None and row.cost_usd == pytest.approx(priced)
    # Another library's Gemini span, or a total that adds up, is left as sent.
    (row,) = map_span("generate_content gemini-2.5-flash", attrs, scope="other").inferences
    assert row.output_tokens == 7
    (row,) = map_span("generate_content gemini-2.5-flash", {**attrs, "gen_ai.usage.total_tokens": 28},
                      scope="opentelemetry.instrumentation.google_generativeai").inferences
    assert (row.output_tokens, row.total_tokens) == (7, 28)
    (row,) = map_span("generate_content gemini-2.5-flash", attrs,
                      scope="opentelemetry.instrumentation.google_generativeai").inferences
    assert row.reasoning_tokens == 4
    # Without an input count the rest of the total is not known to be thinking: left as sent.
    (row,) = map_span("generate_content gemini-2.5-flash", {k: v for k, v in attrs.items()
                                                             if k != "gen_ai.usage.input_tokens"},
                      scope="opentelemetry.instrumentation.google_generativeai").inferences
    assert (row.input_tokens, row.output_tokens) == (0, 7)


def test_pydantic_ai_streams_and_tool_results() -> None:
    # A stream said only by its first-chunk time (seconds); a tool result sent as the user's turn.
    tool_result = {"role": "user", "parts": [{"type": "tool_call_response", "id": "call_1", "name": "get_weather",
                                              "result": "Sunny"}]}
    mixed = {"role": "user", "parts": [{"type": "tool_call_response", "id": "call_2", "result": "Rain"},
                                       {"type": "text", "content": "And tomorrow?"}]}
    batch = map_span("chat gpt-4o-mini", {
        "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.client.operation.time_to_first_chunk": 0.049, "gen_ai.usage.details.reasoning_tokens": 3,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Paris?"}]},
                                             tool_result, mixed]),
    }, scope="pydantic-ai")
    (row,) = batch.inferences
    assert row.is_streaming and row.ttft_ms == pytest.approx(49.0) and row.reasoning_tokens == 3
    (priced,) = map_span("chat gpt-4o-mini", {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
                                             "gen_ai.request.model": "gpt-4o-mini", "operation.cost": 7.275e-06,
                                             "gen_ai.usage.input_tokens": 23}, scope="pydantic-ai").inferences
    assert (priced.cost_usd, priced.cost_source) == (7.275e-06, "attribute:operation.cost")
    assert messages(batch, "input") == [("user", "Paris?"), ("tool", "Sunny"), ("user", "Rain\nAnd tomorrow?")]
    (plain,) = map_span("chat gpt-4o-mini", {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
                                            "gen_ai.request.model": "gpt-4o-mini"}).inferences
    assert not plain.is_streaming and plain.ttft_ms is None


def test_older_otel_prompt_events_and_legacy_span_events() -> None:
    batch = map_span("chat gpt-4", {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4"}, events=[
        ("gen_ai.content.prompt", 1, {"gen_ai.prompt": json.dumps([{"role": "user", "content": "2+2?"}])}),
        ("gen_ai.content.completion", 900, {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "4"}])}),
    ])
    assert messages(batch, "input") == [("user", "2+2?")]
    assert messages(batch, "output") == [("assistant", "4")]
    batch = map_span("chat gpt-4", {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4"}, events=[
        ("gen_ai.user.message", 1, {"gen_ai.system": "openai", "content": "Hello"}),
        ("gen_ai.choice", 800, {"index": 0, "finish_reason": "stop",
                                "message": json.dumps({"role": "assistant", "content": "Hey"})}),
    ])
    assert messages(batch, "input") == [("user", "Hello")]
    assert [m.finish_reason for m in batch.messages if m.direction == "output"] == ["stop"]


def test_operation_and_model_from_span_name_on_failure() -> None:
    batch = map_span("embeddings text-embedding-3-small", {}, scope="openlit.otel.tracing", status=2,
                     events=[("exception", 5, {"exception.type": "openai.APITimeoutError",
                                               "exception.message": "timed out"})])
    (row,) = batch.inferences
    assert (row.operation, row.request_model) == ("embeddings", "text-embedding-3-small")
    assert (row.is_success, row.error_type, row.error_message) == (False, "openai.APITimeoutError", "timed out")


def test_malformed_values_never_fail() -> None:
    batch = map_span("chat x", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "x",
        "gen_ai.usage.input_tokens": "lots", "gen_ai.usage.output_tokens": -3,
        "gen_ai.server.time_to_first_token": "NaN", "gen_ai.input.messages": "{not json",
        "gen_ai.output.messages": json.dumps({"unexpected": ["shape"]}), "gen_ai.usage.cost": "free",
        "gen_ai.response.finish_reasons": [],
    })
    (row,) = batch.inferences
    assert (row.input_tokens, row.output_tokens, row.ttft_ms) == (0, 0, None)
    # Unparseable message JSON is kept as text, not dropped.
    assert messages(batch, "input") == [("user", "{not json")]
    assert row.attributes["gen_ai.usage.input_tokens"] == "lots"


def test_langfuse_cost_attribute_preferred_and_zero_cost_repriced() -> None:
    batch = map_span("gen", {"langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
                             "langfuse.observation.cost_details": json.dumps({"total": 0.5})})
    assert (batch.inferences[0].cost_usd, batch.inferences[0].cost_source) == (
        0.5, "json:langfuse.observation.cost_details")
    batch = map_span("chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.cost": 0},
                     scope="openlit.otel.tracing")
    assert (batch.inferences[0].cost_usd, batch.inferences[0].cost_source) == (2.5, "pricing")


def test_implausible_waits_and_costs_are_not_reported() -> None:
    """A negative TTFT was stored as -5000 ms; a cost of ±1e308 turned every sum it joined into
    0 or inf. They are kept as not reported (a cost then comes from the pricing table)."""
    batch = map_span("chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.latency.time_to_first_token": -5,
                                     "gen_ai.latency.time_in_queue": -1, "gen_ai.usage.cost": -1e308})
    (row,) = batch.inferences
    assert (row.ttft_ms, row.ttft_source, row.queue_ms) == (None, "", None)
    assert (row.cost_usd, row.cost_source) == (2.5, "pricing")
    batch = map_span("gen", {"langfuse.observation.type": "generation", "langfuse.observation.model.name": "nope",
                             "langfuse.observation.cost_details": json.dumps({"total": 1e308})})
    assert (batch.inferences[0].cost_usd, batch.inferences[0].cost_source) == (0.0, "")


def test_unmapped_attributes_counted_per_key_and_scope() -> None:
    batch = map_span("chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                "gen_ai.brand_new": "v1", "llm.other": 3, "http.method": "GET"}, scope="lib-x")
    found = {(u.key, u.scope_name): (u.count, u.example) for u in batch.unmapped_attributes}
    assert found == {("gen_ai.brand_new", "lib-x"): (1, "v1"), ("llm.other", "lib-x"): (1, "3")}


def test_table_errors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\n[fields]\nmodel_name = ["a"]\n')
    with pytest.raises(ValueError, match="unknown field 'model_name'"):
        Conventions(load_tables(tmp_path))
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\nfields = 3\n')
    with pytest.raises(ValueError, match="10-x.toml"):
        load_tables(tmp_path)
    # The session's table options: a scope_name regex needs a group, usage_excludes a known field.
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\n[fields]\nprovider = [{ scope_name = "^lib" }]\n')
    with pytest.raises(ValueError, match="scope_name regex needs one group"):
        Conventions(load_tables(tmp_path))
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\n[[usage_excludes]]\nfield = "cost"\n'
                                         'providers = ["a"]\nadd = ["b"]\n')
    with pytest.raises(ValueError, match="10-x.toml"):
        load_tables(tmp_path)
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\n[[usage_excludes]]\nfield = "output_tokens"\n'
                                         'providers = ["a"]\nadd = ["b"]\nrest_of_total = true\n')
    with pytest.raises(ValueError, match=r"x.usage_excludes\[0\]: takes `add` attributes or `rest_of_total`"):
        Conventions(load_tables(tmp_path))
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\n[[usage_excludes]]\nfield = "output_tokens"\n'
                                         'providers = ["a"]\nadd = ["b"]\n[[usage_excludes]]\n'
                                         'field = "output_tokens"\nproviders = ["c"]\nrest_of_total = true\n')
    with pytest.raises(ValueError, match=r"x.usage_excludes\[1\]: a `rest_of_total` rule must be the only"):
        Conventions(load_tables(tmp_path))
    for spec, error in (('shape = "text"\nattribute = "a"\npath = "messages"', "`path` goes with the json shape"),
                        ('shape = "json"\nattribute = "a"\nfunction_name = "f"', "`function_name`"),
                        ('shape = "indexed"\nprefix = "p."\nfunction_arguments = "a"', "`function_name`"),
                        ('shape = "indexed"\nprefix = "p."\ncontent_part_type = "type"', "`content_part_type`"),
                        ('shape = "json"\nattribute = "a"\ncontent_part_type = "c.{j}.type"', "`content_part_type`")):
        (tmp_path / "10-x.toml").write_text(f'name = "x"\npriority = 1\n[[messages]]\ndirection = "output"\n{spec}\n')
        with pytest.raises(ValueError, match=error):
            Conventions(load_tables(tmp_path))
    for rule in ('scope_prefix = "lib"\nspan_name = "x"', 'scope_prefix = "lib"\nattribute = "a"\nin = ["b"]',
                 'attribute = "a"', 'scope_prefix = "lib"\nrequires_any = ["a"]'):
        (tmp_path / "10-x.toml").write_text(f'name = "x"\npriority = 1\n[[not_inference]]\n{rule}\n')
        with pytest.raises(ValueError, match=r"not_inference\[0\]: takes an attribute with `in`, a span_name or"):
            Conventions(load_tables(tmp_path))
    bad = tmp_path / "prices.toml"
    bad.write_text('[models]\n"m" = { input = 1.0, output = 2.0, cache_write = "dear" }\n')
    with pytest.raises(ValueError, match="pricing table"):
        Pricing.load(bad)


def test_alias_is_a_table_edit(tmp_path: Path) -> None:
    from otelgw.resources import semconv_dir

    for table in semconv_dir().glob("*.toml"):
        (tmp_path / table.name).write_text(table.read_text())
    (tmp_path / "05-acme.toml").write_text(
        'name = "acme"\npriority = 5\n[[detect]]\nattribute = "acme.llm.model"\n'
        '[fields]\nrequest_model = ["acme.llm.model"]\ninput_tokens = ["acme.tokens.in"]\n')
    conv = Conventions(load_tables(tmp_path))
    family = conv.detect({"acme.llm.model": "m1"}, "acme")
    assert family is not None and family.name == "acme"


def test_pricing_override(tmp_path: Path) -> None:
    override = tmp_path / "prices.toml"
    override.write_text('[models]\n"gpt-4o*" = { input = 1.0, output = 2.0 }\n'
                        '"in-house-7b" = { input = 0.01, output = 0.02 }\n'
                        '"amazon.nova-pro*" = { input = 0.8, output = 3.2 }\n'
                        '"us.anthropic.claude-sonnet-4-5*" = { input = 3.3, output = 16.5 }\n')
    pricing = Pricing.load(override)
    assert pricing.cost("gpt-4o-2024-08-06", 1_000_000, 0, 1_000_000) == pytest.approx(3.0)
    assert pricing.cost("in-house-7b", 1_000_000, 0, 0) == pytest.approx(0.01)
    assert pricing.cost("gpt-4o-mini", 1_000_000, 500_000, 0) == pytest.approx(0.5 * 0.15 + 0.5 * 0.075)
    assert pricing.cost("unknown-model", 10, 0, 10) is None
    # A file may price Bedrock ids as written (its regional surcharge, models the table lacks).
    assert pricing.lookup("amazon.nova-pro-v1:0").input == 0.8
    assert pricing.lookup("us.anthropic.claude-sonnet-4-5-20250929-v1:0").input == 3.3
    assert pricing.lookup("eu.anthropic.claude-sonnet-4-5-20250929-v1:0").input == 3.0
    with pytest.raises(ValueError, match="pricing table"):
        bad = tmp_path / "bad.toml"
        bad.write_text('[models]\n"x" = { input = "cheap" }\n')
        Pricing.load(bad)


def test_attribute_and_message_limits() -> None:
    from otelgw.pipeline.anyvalue import DROPPED_ATTRIBUTES, TRUNCATED
    from otelgw.pipeline.mapper import MapperOptions

    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                             "big": "x" * 5000, "gen_ai.input.messages": json.dumps([{"role": "user",
                                                                                      "content": "y" * 5000}])}
    attrs.update({f"extra.{i}": i for i in range(300)})
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat m", start_time_unix_nano=START, end_time_unix_nano=START)
    span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
    options = MapperOptions(max_attributes=50, max_attribute_chars=1000, max_message_chars=2000)
    mapper = build_mapper(Config())
    limited = type(mapper)(mapper.conventions, mapper.pricing, options)
    batch = limited.map_traces(request, "", 1)
    (row,) = batch.spans
    assert row.attributes[DROPPED_ATTRIBUTES] == str(len(attrs) - 50)
    assert len(row.attributes) == 50  # 49 kept (one carried messages) + the dropped count
    assert row.attributes["big"].endswith(TRUNCATED) and len(row.attributes["big"]) == 1000 + len(TRUNCATED)
    (message,) = batch.messages
    assert message.content == "y" * 2000 + TRUNCATED


def test_field_sources_cached_per_key_set_are_bounded_and_change_nothing() -> None:
    """extract_fields remembers, per attribute key set, which sources to read: a warm mapper maps
    exactly as a cold one, and hostile key sets (many, or long) do not grow the cache past its bound."""
    def request(spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
        out = ExportTraceServiceRequest()
        scope_spans = out.resource_spans.add().scope_spans.add()
        for n, attrs in enumerate(spans):
            span = scope_spans.spans.add(trace_id=b"\x01" * 16, span_id=(n + 1).to_bytes(8, "big"), name="chat m",
                                         start_time_unix_nano=START, end_time_unix_nano=START + 5_000_000)
            span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
        return out

    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 3}
    spans = [{**base, f"x.{n}": n} for n in range(1500)]  # 1,500 key sets
    spans += [{**base, "llm.token_count.prompt": 99, "k" * 5000: 1}, base, {**base, "gen_ai.usage.input_tokens": "7"}]
    mapper = build_mapper(Config())
    warm_up = mapper.map_traces(request(spans), "", 1)
    plan = mapper.conventions.plan(mapper.conventions.detect(base, "test"))
    assert 0 < len(plan.fields_cache) <= 1024
    assert not any(sum(map(len, keys)) > 4096 for keys, _ in plan.fields_cache)
    warm = mapper.map_traces(request(spans), "", 1)
    cold = build_mapper(Config()).map_traces(request(spans), "", 1)
    assert [r.input_tokens for r in warm.inferences[-3:]] == [10, 10, 7]
    for table in ("inferences", "messages", "spans"):
        assert getattr(warm, table) == getattr(cold, table) == getattr(warm_up, table), table


def test_tool_results_unwrapped_only_in_the_vercel_shape() -> None:
    """The AI SDK 5+ wraps a tool's output ({type: "json", value}); other libraries' tool results
    that happen to hold a "type" and a "value" keep every key."""
    batch = map_span("ai.generateText.doGenerate", {
        "ai.operationId": "ai.generateText.doGenerate", "ai.model.id": "m", "ai.prompt.messages": json.dumps([
            {"role": "tool", "content": [{"type": "tool-result", "toolCallId": "c1", "toolName": "w",
                                          "output": {"type": "json", "value": {"temp": 3}}}]},
            {"role": "tool", "content": [{"type": "tool-result", "toolCallId": "c2", "toolName": "w",
                                          "output": {"type": "error-text", "value": "city unknown"}}]},
            {"role": "tool", "content": [{"type": "tool_result", "id": "c3",
                                          "content": {"type": "json", "value": 21.5, "unit": "C"}}]}])})
    tools = [m for m in batch.messages if m.role == "tool"]
    assert [json.loads(tools[0].content), tools[1].content] == [{"temp": 3}, "[error] city unknown"]
    assert json.loads(tools[2].content) == {"type": "json", "value": 21.5, "unit": "C"}


def test_several_tool_results_in_one_turn_are_one_tool_message_each() -> None:
    """Parallel tool calls answered in one turn (OTel parts, Anthropic's user turn of tool_result
    blocks, a Gemini dump in a legacy event): one tool message per result, each with its call id,
    as OpenAI sends them. A turn mixing text and a result stays one user message."""
    otel = {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "Sunny"},
                                      {"type": "tool_call_response", "id": "c2", "response": {"temp": 3}}]}
    anthropic = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "4"},
                                             {"type": "tool_result", "tool_use_id": "t2",
                                              "content": [{"type": "text", "text": "5"}]}]}
    mixed = {"role": "user", "parts": [{"type": "tool_call_response", "id": "c3", "response": "Rain"},
                                       {"type": "text", "content": "And tomorrow?"}]}
    batch = map_span("chat gpt-4o", {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
                                     "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.input.messages": json.dumps([otel, anthropic, mixed])})
    inputs = [(m.role, m.content, m.tool_call_id) for m in batch.messages if m.direction == "input"]
    assert inputs == [("tool", "Sunny", "c1"), ("tool", '{"temp":3}', "c2"), ("tool", "4", "t1"),
                      ("tool", "5", "t2"), ("user", "Rain\nAnd tomorrow?", "c3")]
    gemini = {"content": {"role": "user", "parts": [
        {"function_response": {"id": "g1", "name": "a", "response": {"ok": 1}}},
        {"function_response": {"id": "g2", "name": "b", "response": {"ok": 2}}}]}}
    batch = map_span("call_llm", {"gen_ai.system": "gemini", "gen_ai.request.model": "gemini-2.5-flash"},
                     events=[("gen_ai.user.message", 1, {"gen_ai.event.content": json.dumps(gemini)})])
    assert [(m.role, m.tool_call_id) for m in batch.messages if m.direction == "input"] == [
        ("tool", "g1"), ("tool", "g2")]


def test_tool_results_without_ids_or_in_indexed_attributes() -> None:
    """Several results with no call ids (the Gemini API gives none) are one tool message each,
    named by their function; one result keeps its event's id; a Content of the old Gemini role
    `function` in a tool event is a tool message; OpenLLMetry's indexed prompts holding Anthropic
    tool_result blocks as JSON split too; each result keeps the tool name its part carries; a
    result sent twice (botocore's Bedrock events) and a call both in content and tool_calls once."""
    from otelgw.pipeline import messages as msgs

    gemini = {"content": {"role": "user", "parts": [
        {"function_response": {"name": "a", "response": {"x": 1}}},
        {"function_response": {"name": "b", "response": {"x": 2}}}]}}
    _, two, _ = msgs.legacy_event("gen_ai.user.message", gemini, {})
    assert [(m.role, m.tool_call_id, m.name, m.content) for m in two] == [
        ("tool", "", "a", '{"x":1}'), ("tool", "", "b", '{"x":2}')]
    _, (one,), _ = msgs.legacy_event("gen_ai.tool.message", {"id": "call_9", "content": {"role": "user", "parts": [
        {"function_response": {"name": "a", "response": {"x": 1}}}]}}, {})
    assert (one.role, one.tool_call_id, one.name) == ("tool", "call_9", "a")
    _, (both,), _ = msgs.legacy_event("gen_ai.assistant.message", {
        "content": [{"toolUse": {"toolUseId": "u1", "name": "w", "input": {}}}],
        "tool_calls": [{"id": "u1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}, {},
        converse=True)
    assert [c.id for c in both.tool_calls] == ["u1"]
    batch = map_span("chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, events=[
        ("gen_ai.tool.message", 1, {"id": "u1", "content": "sun"}),
        ("gen_ai.tool.message", 2, {"id": "u1", "content": "sun"}),
        ("gen_ai.tool.message", 3, {"id": "u2", "content": "sun"})])
    assert [(m.role, m.tool_call_id) for m in batch.messages if m.direction == "input"] == [
        ("tool", "u1"), ("tool", "u2")]
    old_role = {"content": {"role": "function", "parts": [{"function_response": {"id": "f1", "name": "a",
                                                                                "response": {"x": 1}}}]}}
    _, (fn,), _ = msgs.legacy_event("gen_ai.tool.message", old_role, {})
    assert (fn.role, fn.tool_call_id, fn.name) == ("tool", "f1", "a")
    named = msgs.normalize({"role": "tool", "content": [
        {"type": "tool-result", "toolCallId": "t1", "toolName": "w", "output": "sun"},
        {"type": "tool-result", "toolCallId": "t2", "toolName": "v", "output": "rain"}]}, "user")
    assert [(m.tool_call_id, m.name, m.content) for m in named] == [("t1", "w", "sun"), ("t2", "v", "rain")]
    batch = map_span("anthropic.chat", {
        "gen_ai.system": "Anthropic", "llm.request.type": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": json.dumps([
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "5"}])},
        scope="opentelemetry.instrumentation.anthropic")
    assert [(m.role, m.content, m.tool_call_id) for m in batch.messages if m.direction == "input"] == [
        ("tool", "4", "toolu_1"), ("tool", "5", "toolu_2")]


def test_agent_and_tool_operations_are_not_inferences() -> None:
    """An agent run around one chat was counted as two requests (with the agent's latency and no
    tokens): agent, tool and retrieval operations stay span rows, even with a provider and model."""
    for operation in ("invoke_agent", "create_agent", "execute_tool", "retrieval", "execute_task"):
        batch = map_span(f"{operation} helper", {"gen_ai.operation.name": operation, "gen_ai.provider.name": "openai",
                                                 "gen_ai.request.model": "gpt-4o", "gen_ai.agent.name": "helper"})
        assert batch.inferences == [] and len(batch.spans) == 1, operation
    # Named only by the span, or the attribute as an array (read as its first item).
    for name, attrs in (("execute_tool get_weather", {}), ("agent", {"gen_ai.operation.name": ["invoke_agent"]})):
        batch = map_span(name, {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", **attrs})
        assert batch.inferences == [], name
    batch = map_span("chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                     "gen_ai.request.model": "gpt-4o"})
    assert len(batch.inferences) == 1


def _nested_request(spans: list[tuple[int, int, str, dict[str, Any]]]) -> ExportTraceServiceRequest:
    """(span number, parent number or 0, name, attributes), children listed first as exporters do."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for number, parent, name, attrs in spans:
        span = scope_spans.spans.add(trace_id=b"\x07" * 16, span_id=number.to_bytes(8, "big"), name=name,
                                     parent_span_id=parent.to_bytes(8, "big") if parent else b"",
                                     start_time_unix_nano=START, end_time_unix_nano=START + 1_000_000_000)
        span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
    return request


def test_a_call_traced_twice_one_span_inside_the_other_is_one_inference() -> None:
    sdk = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude",
           "gen_ai.response.id": "msg_1", "gen_ai.usage.input_tokens": 25, "gen_ai.usage.output_tokens": 7,
           "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])}
    outer = {"openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.model_name": "claude",
             "output.value": json.dumps({"id": "msg_1"}), "output.mime_type": "application/json",
             "llm.token_count.prompt": 25, "llm.token_count.completion": 7,
             "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "hi"}
    mapper = build_mapper(Config())
    # The SDK's span inside an HTTP client span inside the library's span; and a second call of
    # its own (another response id) inside the same library span is kept.
    request = _nested_request([
        (4, 3, "anthropic.messages.create", sdk),
        (3, 2, "POST", {"http.request.method": "POST"}),
        (5, 2, "chat claude", {**sdk, "gen_ai.response.id": "msg_2"}),
        (2, 1, "Messages", outer),
        (1, 0, "agent run", {}),
    ])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    evaluation = span.events.add(name="gen_ai.evaluation.result", time_unix_nano=START)
    evaluation.attributes.append(KeyValue(key="gen_ai.evaluation.name", value=AnyValue(string_value="ok")))
    batch = mapper.map_traces(request, "", time.time_ns())
    by_span = {row.span_id: row for row in batch.inferences}
    assert set(by_span) == {(2).to_bytes(8, "big").hex(), (5).to_bytes(8, "big").hex()}
    outer_row = by_span[(2).to_bytes(8, "big").hex()]
    assert outer_row.family == "openinference" and outer_row.input_tokens == 25
    ids = {row.inference_id for row in batch.inferences}
    assert {m.inference_id for m in batch.messages} == ids  # the inner span's messages went with it
    inner_span = next(s for s in batch.spans if s.span_id == (4).to_bytes(8, "big").hex())
    # Linked to the call it was part of (erasing that inference erases it), attributes whole.
    assert inner_span.inference_id == outer_row.inference_id and "gen_ai.input.messages" in inner_span.attributes
    assert [f.inference_id for f in batch.feedback] == [outer_row.inference_id]

    # Without the same response id, nesting alone is no duplicate.
    lone = mapper.map_traces(_nested_request([(4, 2, "chat", {**sdk, "gen_ai.response.id": "msg_9"}),
                                              (2, 0, "Messages", outer)]), "", time.time_ns())
    assert len(lone.inferences) == 2

    # What only the inner span measured (the SDK's TTFT) fills the outer row; and with the fast
    # path on, the HTTP span between them (left to ClickHouse) still links them.
    from otelgw.governance.masking import masker_from_config
    from otelgw.pipeline.fastpath import NativeCheck

    cfg = Config()
    check = NativeCheck(cfg.max_attributes_per_span, cfg.max_attribute_chars,
                        masker_from_config(cfg, mapper.conventions.content_attributes()))
    timed = {**sdk, "gen_ai.server.time_to_first_token": 0.25}
    batch = mapper.map_traces(_nested_request([(4, 3, "anthropic.messages.create", timed),
                                               (3, 2, "POST", {"http.request.method": "POST"}),
                                               (2, 0, "Messages", outer)]), "", time.time_ns(), check)
    assert len(batch.native) == 1 and len(batch.inferences) == 1
    assert (batch.inferences[0].ttft_ms, batch.inferences[0].family) == (250.0, "openinference")


def test_nested_duplicates_with_hostile_parent_links_terminate_and_keep_a_row() -> None:
    """A span that is its own parent, two spans each other's parent, two spans sharing one
    explicit inference id, or a call nested across projects: mapping ends, nothing is lost."""
    import signal

    call = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.response.id": "r1",
            "gen_ai.usage.input_tokens": 3}
    cases = {
        "own parent": ([(2, 2, "chat", call), (3, 0, "chat", {**call, "gen_ai.response.id": "r2"})], 2),
        "cycle": ([(2, 3, "chat", call), (3, 2, "chat", call)], 1),
        "one explicit id": ([(2, 3, "chat", {**call, "otelgw.inference_id": "5f0c6a53-8a2e-4d42-9f5b-3b1f7c0d9e11"}),
                             (3, 0, "chat", {**call, "otelgw.inference_id": "5f0c6a53-8a2e-4d42-9f5b-3b1f7c0d9e11"})],
                            2),
    }
    mapper = build_mapper(Config())
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("mapping hangs")))
    try:
        for name, (spans, inferences) in cases.items():
            signal.alarm(5)
            batch = mapper.map_traces(_nested_request(spans), "", time.time_ns())
            signal.alarm(0)
            assert len(batch.inferences) == inferences, name
    finally:
        signal.alarm(0)
    # Nested across projects (a client app's span around a model server's, each its own project):
    # each project keeps its own inference.
    request = _nested_request([(4, 2, "chat", call), (2, 0, "chat", call)])
    inner = request.resource_spans[0].scope_spans[0].spans[0]
    other = request.resource_spans.add()
    other.resource.attributes.append(KeyValue(key="project.id", value=AnyValue(string_value="server")))
    other.scope_spans.add().spans.append(inner)
    del request.resource_spans[0].scope_spans[0].spans[0]
    batch = mapper.map_traces(request, "", time.time_ns())
    assert sorted(r.project_id for r in batch.inferences) == ["default", "server"]
    # The same span id in two traces: each dropped span gets its own attributes back.
    twice = _nested_request([(4, 2, "chat", {**call, "gen_ai.input.messages": json.dumps([{"role": "user",
                             "content": "first"}])}), (2, 0, "chat", call)])
    second = _nested_request([(4, 2, "chat", {**call, "gen_ai.input.messages": json.dumps([{"role": "user",
                              "content": "second"}])}), (2, 0, "chat", call)])
    for span in second.resource_spans[0].scope_spans[0].spans:
        span.trace_id = b"\x08" * 16
    twice.resource_spans.extend(second.resource_spans)
    batch = mapper.map_traces(twice, "", time.time_ns())
    inner_rows = {s.trace_id: s.attributes["gen_ai.input.messages"] for s in batch.spans
                  if s.span_id == (4).to_bytes(8, "big").hex()}
    assert "first" in inner_rows["07" * 16] and "second" in inner_rows["08" * 16]


def test_prompt_cache_writes_are_counted_and_priced_apart() -> None:
    """Anthropic bills tokens written to the prompt cache at 1.25x the input rate: 25 input tokens
    of which 5 read from the cache and 3 written to it (as the Anthropic captures report)."""
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
             "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.usage.input_tokens": 25,
             "gen_ai.usage.output_tokens": 7, "gen_ai.usage.cache_read.input_tokens": 5}
    expected = (17 * 3.00 + 5 * 0.30 + 3 * 3.75 + 7 * 15.00) / 1e6
    for key in ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens"):
        (row,) = map_span("chat claude-sonnet-4-5", {**attrs, key: 3}).inferences
        assert (row.input_tokens, row.cached_input_tokens, row.cache_write_input_tokens) == (25, 5, 3)
        assert row.cost_usd == pytest.approx(expected) and row.cost_source == "pricing"
    (row,) = map_span("Messages", {"openinference.span.kind": "LLM", "llm.provider": "anthropic",
                                   "llm.model_name": "claude-sonnet-4-5", "llm.token_count.prompt": 25,
                                   "llm.token_count.completion": 7, "llm.token_count.prompt_details.cache_read": 5,
                                   "llm.token_count.prompt_details.cache_write": 3}).inferences
    assert row.cache_write_input_tokens == 3 and row.cost_usd == pytest.approx(expected)
    # OpenLIT passes Anthropic's own usage on: 17 input tokens without the cache's 5 + 3.
    (row,) = map_span("chat claude-sonnet-4-5", {**attrs, "gen_ai.usage.input_tokens": 17,
                                                 "gen_ai.usage.cache_creation.input_tokens": 3},
                      scope="openlit.instrumentation.anthropic").inferences
    assert row.family == "openlit" and (row.input_tokens, row.cache_write_input_tokens) == (25, 3)
    assert row.total_tokens == 32
    (row,) = map_span("chat claude-sonnet-4-5", {**attrs, "gen_ai.usage.input_tokens": 17,
                                                 "gen_ai.usage.cache_creation.input_tokens": 3,
                                                 "gen_ai.client.token.usage": 24},
                      scope="openlit.instrumentation.anthropic").inferences
    assert (row.input_tokens, row.total_tokens) == (25, 32)  # its total (17 + 7) left the cache out too
    assert row.cost_usd == pytest.approx(expected)
    # Never more written than the input holds beside what was read.
    (row,) = map_span("chat claude-sonnet-4-5", {**attrs, "gen_ai.usage.cache_write.input_tokens": 90}).inferences
    assert row.cache_write_input_tokens == 20
    pricing = Pricing.load()
    assert pricing.cost("gpt-4o", 100, 0, 0, cache_write_input_tokens=100) == pytest.approx(100 * 2.5 / 1e6)


def test_bedrock_ids_are_priced_and_bedrock_usage_counts_the_cache() -> None:
    """Bedrock names models `<region>.<vendor>.<model>-v1:0` (or by an inference-profile ARN);
    the official botocore instrumentation passes Bedrock's input tokens on without the cache's."""
    pricing = Pricing.load()
    sonnet = pricing.lookup("claude-sonnet-4-5")
    assert pricing.lookup("mistral.mistral-small-2402-v1:0") is None  # Bedrock's price is not the API's
    for model in ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0",
                  "arn:aws:bedrock:us-east-1:123:inference-profile/global.anthropic.claude-sonnet-4-5-20250929-v1:0"):
        assert pricing.lookup(model) == sonnet, model
    (row,) = map_span("chat us.anthropic.claude-sonnet-4-5-20250929-v1:0", {
        "gen_ai.operation.name": "chat", "gen_ai.system": "aws.bedrock", "rpc.method": "ConverseStream",
        "gen_ai.request.model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "gen_ai.usage.input_tokens": 17,
        "gen_ai.usage.output_tokens": 7, "gen_ai.usage.cache_read.input_tokens": 5,
        "gen_ai.usage.cache_creation.input_tokens": 3}, scope="opentelemetry.instrumentation.botocore.bedrock-runtime",
    ).inferences
    assert (row.provider, row.input_tokens, row.cached_input_tokens, row.cache_write_input_tokens) == (
        "aws.bedrock", 25, 5, 3)
    assert row.is_streaming and row.cost_source == "pricing"
    assert row.cost_usd == pytest.approx((17 * 3.00 + 5 * 0.30 + 3 * 3.75 + 7 * 15.00) / 1e6)
    # A reported cost of 0 that the table cannot price either is unknown, not "from the attribute".
    (row,) = map_span("chat in-house", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "in-house-llm",
                                        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.cost": 0.0},
                      scope="openlit.instrumentation.openai").inferences
    assert (row.cost_usd, row.cost_source) == (0.0, "")


def test_folding_a_call_merges_what_the_outer_span_lacks_and_stays_linear() -> None:
    """The inner span's output messages when the outer has only input ones; its output tokens with
    the total and the priced cost following them; and a hostile chain of one call across thousands
    of nested spans maps in linear time."""
    mapper = build_mapper(Config())
    outer = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.response.id": "r1", "gen_ai.usage.input_tokens": 25,
             "gen_ai.input.messages": json.dumps([{"role": "user", "content": "hi"}])}
    inner = {**outer, "gen_ai.usage.output_tokens": 700,
             "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "Hello there"}])}
    batch = mapper.map_traces(_nested_request([(4, 2, "chat", inner), (2, 0, "chat", outer)]), "", time.time_ns())
    (row,) = batch.inferences
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (25, 700, 725)
    assert row.cost_source == "pricing" and row.cost_usd == pytest.approx((25 * 2.5 + 700 * 10.0) / 1e6)
    assert sorted((m.direction, m.content) for m in batch.messages) == [("input", "hi"), ("output", "Hello there")]
    assert {m.inference_id for m in batch.messages} == {row.inference_id}

    n = 20_000
    chain = [(k, k + 1 if k < n else 0, "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                                  "gen_ai.response.id": "same"}) for k in range(1, n + 1)]
    started = time.perf_counter()
    batch = mapper.map_traces(_nested_request(chain), "", time.time_ns())
    assert len(batch.inferences) == 1 and time.perf_counter() - started < 20


def test_streams_said_only_by_the_span_name() -> None:
    """OpenInference's Google GenAI and Bedrock instrumentations mark a stream only by naming the
    span after the streaming call."""
    attrs = {"openinference.span.kind": "LLM", "llm.model_name": "m"}
    for name, streaming in (("GenerateContentStream", True), ("AsyncGenerateContentStream", True),
                            ("bedrock.converse_stream", True), ("bedrock.invoke_model_with_response_stream", True),
                            ("GenerateContent", False), ("bedrock.converse", False)):
        (row,) = map_span(name, attrs).inferences
        assert row.is_streaming is streaming, name


def _two_projects() -> tuple[ExportTraceServiceRequest, list[Any]]:
    """A request of two resources: the header's project and "other"."""
    request = ExportTraceServiceRequest()
    resources = [request.resource_spans.add() for _ in range(2)]
    resources[1].resource.attributes.append(KeyValue(key="project.id", value=AnyValue(string_value="other")))
    return request, resources


def _add_random_span(rnd: Any, resources: list[Any], number: int, n: int, attrs: dict[str, Any]) -> None:
    """Span `number` of `n` in a random graph: a random parent (0: a root; it may be the span
    itself or form cycles), a random resource, an evaluation event one time in five."""
    parent = rnd.randint(0, n)
    span = rnd.choice(resources).scope_spans.add().spans.add(
        trace_id=b"\x09" * 16, span_id=number.to_bytes(8, "big"), name="chat gpt-4o",
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        start_time_unix_nano=START, end_time_unix_nano=START + 1000)
    span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
    if rnd.random() < 0.2:
        span.events.add(name="gen_ai.evaluation.result", time_unix_nano=START)


@pytest.mark.parametrize("seed", range(3))
def test_folding_random_span_graphs_keeps_every_row_consistent(seed: int) -> None:
    """Random parent links (forests, self-parents, cycles, links across projects), random
    response ids, messages and evaluations: mapping ends, every call keeps exactly one row per
    (project, response id) group it folds, and no message, evaluation or span row points at a
    row that was folded away."""
    import random

    rnd = random.Random(seed)
    mapper = build_mapper(Config())
    for _ in range(40):
        n = rnd.randint(2, 40)
        request, resources = _two_projects()
        for number in range(1, n + 1):
            attrs = {"gen_ai.operation.name": rnd.choice(["chat", "chat", "invoke_agent"]),
                     "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": rnd.randint(0, 9)}
            if rnd.random() < 0.8:
                attrs["gen_ai.response.id"] = rnd.choice(["a", "b", "c"])
            if rnd.random() < 0.5:
                attrs["gen_ai.input.messages"] = json.dumps([{"role": "user", "content": f"m{number}"}])
            if rnd.random() < 0.3:
                attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "content": f"o{number}"}])
            _add_random_span(rnd, resources, number, n, attrs)
        batch = mapper.map_traces(request, "", time.time_ns())
        kept = {r.inference_id for r in batch.inferences}
        assert len(kept) == len(batch.inferences)
        assert {m.inference_id for m in batch.messages} <= kept
        spans = {s.span_id: s for s in batch.spans}
        for row in batch.inferences:
            assert spans[row.span_id].inference_id == row.inference_id
        for span in batch.spans:
            assert span.inference_id == "" or span.inference_id in kept
        inference_spans = {r.span_id for r in batch.inferences}
        for fb in batch.feedback:
            # Evaluations of kept or folded inferences point at kept rows; of non-inferences
            # (agent spans), at their own span's id.
            assert fb.inference_id in kept or fb.span_id not in inference_spans
        for row in batch.inferences:
            assert row.total_tokens >= row.input_tokens + row.output_tokens


@pytest.mark.parametrize("seed", range(3))
def test_folding_across_requests_gives_what_one_request_gives(seed: int) -> None:
    """The same random span graphs (nested calls, Logfire-like streams aside) sent as one request
    and as one request a span, the requests folded together as one mapping chunk: the same
    inference rows, messages, span links and evaluation targets, field by field."""
    import random

    import msgspec

    rnd = random.Random(seed)
    mapper = build_mapper(Config())
    folded = crossed = 0

    def rows(batches: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"inferences": [], "messages": [], "links": [], "feedback": []}
        for batch in batches:
            out["inferences"] += [msgspec.to_builtins(r) for r in batch.inferences]
            out["messages"] += [msgspec.to_builtins(m) for m in batch.messages]
            out["links"] += [(s.span_id, s.inference_id, sorted(s.attributes)) for s in batch.spans]
            out["feedback"] += [(f.span_id, f.inference_id) for f in batch.feedback]
        return {k: sorted(v, key=repr) for k, v in out.items()}

    for _ in range(30):
        n = rnd.randint(2, 30)
        whole, resources = _two_projects()
        for number in range(1, n + 1):
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": rnd.choice(["gpt-4o", "gpt-4o-mini"]),
                     "gen_ai.usage.input_tokens": rnd.choice([0, 0, 5, 9])}
            if rnd.random() < 0.5:
                attrs["gen_ai.response.id"] = rnd.choice(["a", "b"])
            if rnd.random() < 0.5:
                attrs["gen_ai.input.messages"] = json.dumps([{"role": "user", "content": rnd.choice(["m", "n"])}])
            if rnd.random() < 0.3:
                attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "content": f"o{number}"}])
            if rnd.random() < 0.3:
                attrs["gen_ai.server.time_to_first_token"] = 0.1
            _add_random_span(rnd, resources, number, n, attrs)
        # One request a span, in the order the whole request lists them.
        parts = []
        for resource_spans in whole.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    part = ExportTraceServiceRequest()
                    single = part.resource_spans.add()
                    single.resource.CopyFrom(resource_spans.resource)
                    single.scope_spans.add().spans.append(span)
                    parts.append(part)
        received = time.time_ns()
        one = mapper.map_traces(whole, "", received)
        staged = [mapper.map_traces_unfolded(part, "", received) for part in parts]
        crossed += mapper.fold(staged)
        assert rows([batch for batch, _ in staged]) == rows([one])
        folded += n - len(one.inferences)
    assert folded > 10 and crossed > 5  # the graphs do fold, across requests


def test_a_call_two_libraries_trace_side_by_side_is_one_inference() -> None:
    """LlamaIndex's OpenAI.astream_chat (measured nothing) and, after it, the OpenAI
    instrumentation's ChatCompletion (response id) under the same agent step, with the same
    messages: one call, on the library's span. Not when the prompts differ, the measured span
    started first, both come from one library, or two library spans would match it."""
    prompt = json.dumps([{"role": "user", "content": "Weather?"}])
    step = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.input.messages": prompt}
    call = {**step, "gen_ai.response.id": "chatcmpl-1", "gen_ai.usage.input_tokens": 12}
    mapper = build_mapper(Config())

    def mapped(spans: list[tuple[str, int, int, dict[str, Any]]]) -> list[Any]:
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        for scope, number, offset_ms, attrs in spans:
            scope_spans = resource.scope_spans.add()
            scope_spans.scope.name = scope
            span = scope_spans.spans.add(trace_id=b"\x05" * 16, span_id=number.to_bytes(8, "big"), name="chat",
                                         parent_span_id=(1).to_bytes(8, "big"),
                                         start_time_unix_nano=START + offset_ms * 1_000_000,
                                         end_time_unix_nano=START + (offset_ms + 50) * 1_000_000)
            span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
        return sorted((r.span_id[-1:], r.scope_name, r.input_tokens) for r in mapper.map_traces(
            request, "", time.time_ns()).inferences)

    assert mapped([("llama_index", 2, 0, step), ("openai", 3, 200, call)]) == [("2", "llama_index", 12)]
    other = {**call, "gen_ai.input.messages": json.dumps([{"role": "user", "content": "Time?"}])}
    assert len(mapped([("llama_index", 2, 0, step), ("openai", 3, 200, other)])) == 2
    assert len(mapped([("llama_index", 2, 300, step), ("openai", 3, 200, call)])) == 2
    assert len(mapped([("openai", 2, 0, step), ("openai", 3, 200, call)])) == 2
    assert len(mapped([("llama_index", 2, 0, step), ("llama_index", 4, 10, step), ("openai", 3, 200, call)])) == 3
    # A cache hit's framework span (its stored answer, no HTTP call) beside a fresh call: two.
    cached = {**step, "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "cached"}])}
    fresh = {**call, "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "fresh"}])}
    assert len(mapped([("langchain", 2, 0, cached), ("openai", 3, 200, fresh)])) == 2
    # No model named on the framework span: nothing to tell it is this call.
    assert len(mapped([("llama_index", 2, 0, {k: v for k, v in step.items() if k != "gen_ai.request.model"}),
                       ("openai", 3, 200, call)])) == 2
    # A framework span that already stands for the call nested in it takes no sibling as well
    # (that would undo the nested fold and leave three rows for two calls).
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    for scope, number, parent, offset_ms, attrs in (("langchain", 2, 1, 0, step),
                                                    ("openai", 4, 2, 10, {**call, "gen_ai.response.id": "chatcmpl-A"}),
                                                    ("openai", 3, 1, 600, call)):
        scope_spans = resource.scope_spans.add()
        scope_spans.scope.name = scope
        span = scope_spans.spans.add(trace_id=b"\x05" * 16, span_id=number.to_bytes(8, "big"), name="chat",
                                     parent_span_id=parent.to_bytes(8, "big"),
                                     start_time_unix_nano=START + offset_ms * 1_000_000,
                                     end_time_unix_nano=START + (offset_ms + 50) * 1_000_000)
        span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
    rows = mapper.map_traces(request, "", time.time_ns()).inferences
    assert sorted((r.scope_name, r.response_id) for r in rows) == [("langchain", "chatcmpl-A"),
                                                                  ("openai", "chatcmpl-1")]


def test_nested_calls_that_are_not_one_call_are_kept_apart() -> None:
    """Without a common response id: a failed attempt inside a call that then succeeded, and a
    step whose span would match two calls inside it, keep every call."""
    mapper = build_mapper(Config())
    step = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    ok = {**step, "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2}
    retry = _nested_request([(3, 2, "chat", step), (2, 0, "chat", ok)])
    retry.resource_spans[0].scope_spans[0].spans[0].status.code = 2  # the failed attempt
    assert len(mapper.map_traces(retry, "", time.time_ns()).inferences) == 2
    two = _nested_request([(3, 2, "chat", ok), (4, 2, "chat", {**ok, "gen_ai.usage.input_tokens": 20}),
                           (2, 0, "chat", step)])
    batch = mapper.map_traces(two, "", time.time_ns())
    assert sorted(r.input_tokens for r in batch.inferences) == [0, 10, 20]


def test_a_step_span_naming_its_own_library_gives_way_to_the_model_call_inside() -> None:
    """Google ADK's legacy call_llm (gen_ai.system = its scope, no operation: chat) around its
    generate_content span with the same usage: one call, stored on generate_content. A call_llm
    alone (older ADK) stays the inference; a chat span of another library around a
    generate_content span keeps the outer span, as any fold does."""
    mapper = build_mapper(Config())
    usage = {"gen_ai.request.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 21,
             "gen_ai.usage.output_tokens": 11}
    step = {**usage, "gen_ai.system": "gcp.vertex.agent"}
    call = {**usage, "gen_ai.system": "gemini", "gen_ai.operation.name": "generate_content"}

    def mapped(spans: list[tuple[int, int, str, dict[str, Any]]], scope: str) -> list[Any]:
        request = _nested_request(spans)
        request.resource_spans[0].scope_spans[0].scope.name = scope
        return mapper.map_traces(request, "", time.time_ns()).inferences

    (row,) = mapped([(3, 2, "generate_content gemini-2.5-flash", call), (2, 1, "call_llm", step),
                     (1, 0, "invocation", {})], "gcp.vertex.agent")
    assert (row.span_id, row.operation, row.provider) == ((3).to_bytes(8, "big").hex(), "generate_content",
                                                          "gcp.gemini")
    (alone,) = mapped([(2, 1, "call_llm", step), (1, 0, "invocation", {})], "gcp.vertex.agent")
    assert alone.span_id == (2).to_bytes(8, "big").hex()
    chat = {**usage, "gen_ai.operation.name": "chat", "gen_ai.provider.name": "gcp.gemini"}
    (outer,) = mapped([(3, 2, "generate_content gemini-2.5-flash", call), (2, 0, "chat", chat)], "some.framework")
    assert (outer.span_id, outer.operation) == ((2).to_bytes(8, "big").hex(), "chat")


def traced_twice_requests() -> list[ExportTraceServiceRequest]:
    """One call as a SimpleSpanProcessor exports it: the SDK's span (its TTFT only there), an
    HTTP span, then the library's span around them, a request each (span 2 is the call's)."""
    sdk = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude",
           "gen_ai.response.id": "msg_1", "gen_ai.usage.input_tokens": 25, "gen_ai.usage.output_tokens": 7,
           "gen_ai.server.time_to_first_token": 0.25}
    outer = {"openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.model_name": "claude",
             "output.value": json.dumps({"id": "msg_1"}), "output.mime_type": "application/json",
             "llm.token_count.prompt": 25, "llm.token_count.completion": 7}
    return [_nested_request([(4, 3, "anthropic.messages.create", sdk)]),
            _nested_request([(3, 2, "POST", {"http.request.method": "POST"})]),
            _nested_request([(2, 0, "Messages", outer)])]


def test_a_call_traced_twice_in_two_requests_of_one_chunk_is_one_inference() -> None:
    """A SimpleSpanProcessor exports each span in a request of its own (the inner span first, as
    it ends first): mapped in one chunk, they fold as in one request; mapped apart, both count.
    A record that fails to map is dead-lettered alone, the others still fold."""
    from otelgw.pipeline.request import Signal
    from otelgw.pipeline.wal import WalRecord
    from otelgw.pipeline.workers import RecordMapper

    records = [WalRecord(seq, Signal.TRACES, "", time.time_ns(), r.SerializeToString())
               for seq, r in enumerate(traced_twice_requests(), 1)]
    broken = WalRecord(4, Signal.TRACES, "", time.time_ns(), b"\xff\xff not protobuf")
    mapper = RecordMapper(build_mapper(Config()), None, None)
    chunk = mapper.map_chunk([records[0], broken, *records[1:]])
    assert [bool(r.error) for r in chunk.records] == [False, True, False, False]
    inferences = b"".join(r.blocks.get("inferences", b"") for r in chunk.records).splitlines()
    (row,) = [json.loads(line) for line in inferences]
    assert (row["span_id"], row["family"], row["ttft_ms"]) == ((2).to_bytes(8, "big").hex(), "openinference", 250.0)
    spans = [json.loads(line) for r in chunk.records for line in r.blocks.get("spans", b"").splitlines()]
    assert {s["span_id"]: s["inference_id"] for s in spans}[(4).to_bytes(8, "big").hex()] == row["inference_id"]
    apart = [mapper.map_chunk([r]) for r in records]
    assert sum(len(c.records[0].blocks.get("inferences", b"").splitlines()) for c in apart) == 2
    assert chunk.folded_across and not any(c.folded_across for c in apart)
    # A fold across requests that raises (a mapper bug) loses nothing: each record is mapped
    # again and folded alone.
    fold = mapper.mapper.fold

    def failing(batches: list[Any]) -> bool:
        if len(batches) > 1:
            raise RuntimeError("a bug")
        return fold(batches)

    mapper.mapper.fold = failing
    try:
        again = mapper.map_chunk(records)
    finally:
        mapper.mapper.fold = fold
    assert not any(r.error for r in again.records) and not again.folded_across
    assert sum(len(r.blocks.get("inferences", b"").splitlines()) for r in again.records) == 2
    # A fold declined because of another request's rows (two inner spans, one in each request,
    # would match one outer: none folds) also ties the requests: mapped apart, the first would
    # fold. The chunk says so, so that a replay maps them together again.
    prompt = json.dumps([{"role": "user", "content": "Weather?"}])
    outer_call = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                  "gen_ai.response.id": "resp_1", "gen_ai.usage.input_tokens": 23, "gen_ai.input.messages": prompt}
    inner_call = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                  "gen_ai.input.messages": prompt}
    declined = [WalRecord(seq, Signal.TRACES, "", time.time_ns(), r.SerializeToString()) for seq, r in enumerate(
        [_nested_request([(3, 2, "chat", inner_call), (2, 0, "chat", outer_call)]),
         _nested_request([(4, 2, "chat", inner_call)])], 1)]
    together = mapper.map_chunk(declined)
    assert together.folded_across
    assert sum(len(r.blocks.get("inferences", b"").splitlines()) for r in together.records) == 3
    assert len(mapper.map_chunk(declined[:1]).records[0].blocks["inferences"].splitlines()) == 1


def test_a_span_that_measured_nothing_does_not_chain_two_calls_into_one() -> None:
    """A judge's call (its own response id and tokens) inside a framework span that measured
    nothing, inside the judged call: two calls, two rows; and a call that reported nothing inside
    one that measured itself stays apart."""
    mapper = build_mapper(Config())
    step = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    call = {**step, "gen_ai.response.id": "chatcmpl-1", "gen_ai.usage.input_tokens": 300,
            "gen_ai.usage.output_tokens": 40}
    judge = {**step, "gen_ai.response.id": "chatcmpl-2", "gen_ai.usage.input_tokens": 120,
             "gen_ai.usage.output_tokens": 5}
    batch = mapper.map_traces(_nested_request([(4, 3, "chat", judge), (3, 2, "chat", step), (2, 0, "chat", call)]),
                              "", time.time_ns())
    assert sorted(r.response_id for r in batch.inferences) == ["chatcmpl-1", "chatcmpl-2"]
    for a, b in (({k: v for k, v in call.items() if k != "gen_ai.response.id"}, step),):
        batch = mapper.map_traces(_nested_request([(3, 2, "chat", b), (2, 0, "chat", a)]), "", time.time_ns())
        assert len(batch.inferences) == 2


def test_a_call_whose_inner_span_lost_its_answer_is_folded_by_its_prompt_and_model() -> None:
    """The OpenAI instrumentation inside the Agents SDK's stream: the outer span measured the call
    (a dated model, tokens, an id), the inner one only its request (the alias, the prompt)."""
    mapper = build_mapper(Config())
    prompt = json.dumps([{"role": "user", "content": "Weather in Paris?"}])
    outer = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini-2024-07-18",
             "gen_ai.response.id": "resp_1", "gen_ai.usage.input_tokens": 23, "gen_ai.usage.output_tokens": 7,
             "gen_ai.input.messages": prompt}
    inner = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.request.stream": True,
             "gen_ai.input.messages": prompt}
    (row,) = mapper.map_traces(_nested_request([(3, 2, "chat", inner), (2, 0, "chat", outer)]), "",
                               time.time_ns()).inferences
    assert (row.response_id, row.input_tokens, row.request_model) == ("resp_1", 23, "gpt-4o-mini-2024-07-18")
    # Another prompt inside a measured call is a call of its own (a judge's); so is another model.
    judge = {**inner, "gen_ai.input.messages": json.dumps([{"role": "user", "content": "Rate this answer"}])}
    assert len(mapper.map_traces(_nested_request([(3, 2, "chat", judge), (2, 0, "chat", outer)]), "",
                                 time.time_ns()).inferences) == 2
    other = {**inner, "gen_ai.request.model": "gpt-4o"}
    assert len(mapper.map_traces(_nested_request([(3, 2, "chat", other), (2, 0, "chat", outer)]), "",
                                 time.time_ns()).inferences) == 2
    # The same question under another system prompt (a classifier's) is another call too.
    classifier = {**inner, "gen_ai.input.messages": json.dumps([{"role": "system", "content": "Say SAFE or UNSAFE"},
                                                                {"role": "user", "content": "Weather in Paris?"}])}
    assert len(mapper.map_traces(_nested_request([(3, 2, "chat", classifier), (2, 0, "chat", outer)]), "",
                                 time.time_ns()).inferences) == 2
    # Two snapshots of one model are two models.
    snapshot = {**inner, "gen_ai.request.model": "gpt-4o-mini-2024-01-01"}
    assert len(mapper.map_traces(_nested_request([(3, 2, "chat", snapshot), (2, 0, "chat", outer)]), "",
                                 time.time_ns()).inferences) == 2


def test_a_logfire_stream_and_its_completion_log_are_one_call() -> None:
    """Logfire's request span (input only) and, after the stream was read, its zero-length log
    span (answer, id, usage), siblings: one streamed inference each, paired by prompt."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "logfire.openai"
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}

    def add(number: int, name: str, start_ms: int, end_ms: int, attrs: dict[str, Any]) -> None:
        span = scope_spans.spans.add(trace_id=b"\x07" * 16, span_id=number.to_bytes(8, "big"), name=name,
                                     parent_span_id=(99).to_bytes(8, "big"),
                                     start_time_unix_nano=START + start_ms * 1_000_000,
                                     end_time_unix_nano=START + end_ms * 1_000_000)
        span.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in {**base, **attrs}.items())

    def prompt(text: str) -> str:
        return json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])

    def answer(text: str) -> dict[str, Any]:
        return {"gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text",
                                                                                       "content": text}]}]),
                "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 3, "gen_ai.response.id": text}

    log_name = "streaming response from {request_data[model]!r} took {duration:.2f}s"
    add(1, "Chat Completion with {request_data[model]!r}", 0, 4, {"gen_ai.input.messages": prompt("one")})
    add(2, "Chat Completion with {request_data[model]!r}", 10, 14, {"gen_ai.input.messages": prompt("two")})
    add(3, log_name, 900, 900, {"gen_ai.input.messages": prompt("two"), **answer("answer two")})
    add(4, log_name, 950, 950, {"gen_ai.input.messages": prompt("one"), **answer("answer one")})
    batch = build_mapper(Config()).map_traces(request, "", time.time_ns())
    rows = sorted(batch.inferences, key=lambda r: r.span_id)
    assert [(r.span_id[-1], r.response_id, r.is_streaming) for r in rows] == [("1", "answer one", True),
                                                                              ("2", "answer two", True)]
    assert rows[0].latency_ms == pytest.approx(950.0) and rows[0].output_tokens == 3
    out = {m.inference_id: m.content for m in batch.messages if m.direction == "output"}
    assert [out[r.inference_id] for r in rows] == ["answer one", "answer two"]


def test_row_timestamps_read_back() -> None:
    from otelgw.pipeline.rows import ts, ts_ns

    for ns in (0, 1, 5_000_000_000, 999_999_999_999_999_999, 1_764_150_000_123_456_789):
        assert ts_ns(ts(ns)) == ns


def test_a_stream_sent_one_message_a_chunk_is_one_answer() -> None:
    # Google ADK: one output message per streamed chunk, the finish reason on the last only.
    def out(*messages: dict[str, Any], scope: str = "gcp.vertex.agent") -> list[tuple[str, str]]:
        return messages_of(map_span("generate_content gemini-2.5-flash", {
            "gen_ai.provider.name": "gcp.gemini", "gen_ai.operation.name": "generate_content",
            "gen_ai.request.model": "gemini-2.5-flash", "gen_ai.output.messages": json.dumps(list(messages))},
            scope=scope))

    def messages_of(batch: RowBatch) -> list[tuple[str, str]]:
        return [(m.content, m.finish_reason) for m in batch.messages if m.direction == "output"]

    def text(content: str, reason: str = "") -> dict[str, Any]:
        return {"role": "assistant", "parts": [{"type": "text", "content": content}], "finish_reason": reason}

    assert out(text("Hello! "), text("How can I "), text("help?", "stop")) == [("Hello! How can I help?", "stop")]
    # Two choices, each with its reason, stay two; so do other libraries' messages.
    assert out(text("One", "stop"), text("Two", "stop")) == [("One", "stop"), ("Two", "stop")]
    assert out(text("A "), text("B", "stop"), scope="other") == [("A ", ""), ("B", "stop")]


def test_a_document_read_through_a_path_stays_in_the_attributes() -> None:
    # Logfire's legacy request_data holds more than messages (the system prompt, tools) and its
    # stream logs' response_data holds no message at all: both are kept as sent.
    request = {"model": "claude-sonnet-4-5", "system": "You are a pirate.",
               "messages": [{"role": "user", "content": "Hi"}]}
    batch = map_span("Message with {request_data[model]!r}", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "request_data": json.dumps(request), "response_data": json.dumps({"combined_chunk_content": "Arr"}),
    }, scope="logfire.anthropic")
    (row,) = batch.inferences
    assert messages(batch, "input") == [("user", "Hi")]
    assert json.loads(row.attributes["request_data"])["system"] == "You are a pirate."
    assert json.loads(row.attributes["response_data"]) == {"combined_chunk_content": "Arr"}
    (span,) = batch.spans
    assert "response_data" in span.attributes


def test_strands_agents_converse_block_events_and_details_span_events() -> None:
    # Strands Agents 1.62 (scope strands.telemetry.tracer), default conventions: per-message span
    # events whose content is its Converse content blocks as JSON text; TTFT in milliseconds.
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "strands-agents", "gen_ai.request.model": "gpt-4o-mini",
             "gen_ai.server.time_to_first_token": 62}
    batch = map_span("chat", attrs, [
        ("gen_ai.user.message", 0, {"content": '[{"text": "What is the weather in Paris?"}]'}),
        ("gen_ai.assistant.message", 0, {"content": '[{"toolUse": {"toolUseId": "c1", "name": "get_weather", '
                                                    '"input": {"city": "Paris"}}}]'}),
        ("gen_ai.tool.message", 0, {"content": '[{"toolResult": {"toolUseId": "c1", "status": "success", '
                                               '"content": [{"text": "sunny, 22 C"}]}}]'}),
        ("gen_ai.choice", 100, {"finish_reason": "end_turn", "message": '[{"text": "It is sunny."}]'}),
    ], scope="strands.telemetry.tracer")
    assert messages(batch, "input") == [("user", "What is the weather in Paris?"), ("assistant", ""),
                                        ("tool", "sunny, 22 C")]
    assert messages(batch, "output") == [("assistant", "It is sunny.")]
    call = next(m for m in batch.messages if m.role == "assistant" and m.direction == "input")
    assert json.loads(call.tool_calls)[0]["name"] == "get_weather"
    assert next(m for m in batch.messages if m.role == "tool").tool_call_id == "c1"
    row = batch.inferences[0]
    assert row.ttft_ms == 62 and row.finish_reason == "stop"

    # OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental: the current attributes, on one
    # gen_ai.client.inference.operation.details span event each.
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "strands-agents",
             "gen_ai.request.model": "gpt-4o-mini"}
    details = "gen_ai.client.inference.operation.details"
    batch = map_span("chat", attrs, [
        (details, 0, {"gen_ai.system_instructions": '[{"type": "text", "content": "Be brief."}]'}),
        (details, 0, {"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "tool_call_response", '
                                               '"id": "c1", "response": [{"text": "sunny, 22 C"}]}]}]'}),
        (details, 100, {"gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", '
                                                  '"content": "It is sunny."}], "finish_reason": "end_turn"}]'}),
    ], scope="strands.telemetry.tracer")
    assert messages(batch, "input") == [("system", "Be brief."), ("tool", "sunny, 22 C")]
    assert messages(batch, "output") == [("assistant", "It is sunny.")]
    assert batch.inferences[0].finish_reason == "stop"


def test_converse_blocks_are_read_for_strands_only_and_whole() -> None:
    # A Bedrock answer with citations or a guardrail keeps its text.
    strands = {"gen_ai.operation.name": "chat", "gen_ai.system": "strands-agents", "gen_ai.request.model": "m"}
    cited = json.dumps([{"citationsContent": {"citations": [{"title": "t"}],
                                              "content": [{"text": "Paris is the capital [1]."}]}}])
    batch = map_span("chat", strands, [("gen_ai.choice", 1, {"finish_reason": "end_turn", "message": cited})],
                     scope="strands.telemetry.tracer")
    assert messages(batch, "output") == [("assistant", "Paris is the capital [1].")]
    # Another library's event whose text merely looks like blocks is stored as sent.
    literal = '[{"text": "row one"}, {"image": "https://x/1.png"}]'
    batch = map_span("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"},
                     [("gen_ai.tool.message", 0, {"content": literal, "id": "c1"})])
    assert messages(batch, "input") == [("tool", literal)]
    # An untyped part with text and another key is no Converse block: its text stays.
    parts = json.dumps([{"role": "user", "parts": [{"text": "Describe this", "image": {"url": "u"}}]}])
    batch = map_span("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                              "gen_ai.input.messages": parts})
    assert messages(batch, "input") == [("user", "Describe this")]


def test_finish_reasons_are_stored_in_their_canonical_spelling() -> None:
    """semconv/values.toml: one spelling per meaning (OTel's), whichever provider or library."""
    values = build_mapper(Config()).conventions.values
    for raw, canonical in (("stop", "stop"), ("end_turn", "stop"), ("STOP", "stop"), ("FinishReason.STOP", "stop"),
                           ("stop_sequence", "stop"), ("completed", "stop"), ("COMPLETE", "stop"),
                           ("length", "length"), ("max_tokens", "length"), ("MAX_TOKENS", "length"),
                           ("tool_calls", "tool_call"), ("tool-calls", "tool_call"), ("tool_use", "tool_call"),
                           ("function_call", "tool_call"), ("SAFETY", "content_filter"),
                           ("content-filter", "content_filter"), ("refusal", "content_filter"),
                           ("guardrail_intervened", "content_filter"), ("MALFORMED_FUNCTION_CALL", "error"),
                           # Listed nowhere: kept, lowercased (Gemini's enum names are upper case).
                           ("pause_turn", "pause_turn"), ("OTHER", "other"), ("FinishReason.LANGUAGE", "language"),
                           ("", "")):
        assert values.finish_reason(raw) == canonical, raw
    # On the inference row and on each message row alike.
    batch = map_span("chat claude", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-x",
        "gen_ai.response.finish_reasons": ["max_tokens"],
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Par"}],
                                               "finish_reason": "max_tokens"}])})
    assert batch.inferences[0].finish_reason == "length"
    assert [m.finish_reason for m in batch.messages if m.direction == "output"] == ["length"]


def test_a_router_or_no_provider_is_read_from_the_model_name() -> None:
    values = build_mapper(Config()).conventions.values
    for reported, model, provider in (
            ("openai", "claude-sonnet-4-5", "openai"),  # a provider said is kept, whatever the model
            ("litellm", "gpt-4o-mini", "openai"), ("litellm", "anthropic/claude-sonnet-4-5", "anthropic"),
            ("LiteLLM", "azure/my-deployment", "azure.ai.openai"), ("", "bedrock/anthropic.claude-3", "aws.bedrock"),
            ("strands-agents", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws.bedrock"),
            ("", "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-3", "aws.bedrock"),
            ("", "models/gemini-2.5-flash", "gcp.gen_ai"), ("", "openrouter/anthropic/claude-3.5", "anthropic"),
            ("", "mistral-large-latest", "mistral_ai"), ("", "mistral.mistral-large-2402-v1:0", "aws.bedrock"),
            ("", "text-embedding-3-small", "openai"), ("", "grok-4", "x_ai"),
            ("litellm", "my-own-model", "litellm"), ("", "my-own-model", ""), ("", "", "")):
        assert values.provider(reported, model) == provider, (reported, model)
    assert values.provider("", "", "gpt-4o-2024-08-06") == "openai"  # the response's model when the request named none
    # The OpenAI client's "openai" of another host: the host says who served it.
    for reported, host, provider in (("openai", "fx-res.openai.azure.com", "azure.ai.openai"),
                                     ("openai", "api.groq.com:443", "groq"), ("openai", "api.openai.com", "openai"),
                                     ("aws.bedrock", "x.openai.azure.com", "aws.bedrock"), ("", "api.x.ai", "x_ai"),
                                     ("anthropic", "bedrock-runtime.us-east-1.amazonaws.com", "aws.bedrock"),
                                     ("anthropic", "us-east5-aiplatform.googleapis.com", "gcp.vertex_ai"),
                                     ("openai", "localhost", "openai"), ("openai", "a" * 10_000, "openai")):
        assert values.provider(reported, "gpt-4o", host=host) == provider, (reported, host)
    # A hostile "model name" costs nothing (one full of slashes took minutes before a review).
    started = time.perf_counter()
    assert values.provider("", "/" * 1_000_000, "a/" * 500_000) == ""
    assert time.perf_counter() - started < 1


def test_a_routers_row_folded_with_the_sdk_span_inside_takes_the_sdks_provider() -> None:
    """LiteLLM's span (provider "litellm") around the OpenAI SDK's span of the same call on Azure:
    the call is one row, its provider the SDK's, not the one its model's name suggests."""
    common = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.response.id": "r9",
              "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 3}
    request = _nested_request([(2, 1, "chat gpt-4o", {**common, "gen_ai.provider.name": "azure.ai.openai"}),
                               (1, 0, "litellm_request", {**common, "gen_ai.provider.name": "litellm"})])
    (row,) = build_mapper(Config()).map_traces(request, "", time.time_ns()).inferences
    assert row.provider == "azure.ai.openai" and row.span_name == "litellm_request"
    # Alone, the router's row is read from its model.
    alone = _nested_request([(1, 0, "litellm_request", {**common, "gen_ai.provider.name": "litellm"})])
    assert build_mapper(Config()).map_traces(alone, "", time.time_ns()).inferences[0].provider == "openai"


def test_the_values_table_refuses_one_spelling_under_two_meanings(tmp_path: Path) -> None:
    from otelgw.canonical import CanonicalValues

    (tmp_path / "values.toml").write_text('[finish_reasons]\nstop = ["end_turn"]\nlength = ["END_TURN"]\n')
    with pytest.raises(ValueError, match="listed under both"):
        CanonicalValues.load(tmp_path)
    (tmp_path / "values.toml").write_text('[providers]\nrouter = ["litellm"]\n')
    with pytest.raises(ValueError, match="values.toml"):
        CanonicalValues.load(tmp_path)
    (tmp_path / "values.toml").unlink()
    assert CanonicalValues.load(tmp_path).finish_reason("END_TURN") == "end_turn"  # no table: lowercased only


def test_langfuse_additive_usage_types_are_added_back() -> None:
    """Langfuse's JS OpenAI wrapper sends `input` without its `input_*` details (the cache's
    reads) and `output` without `output_*` ones (reasoning): the conventions count them in."""
    usage = {"input": 18, "input_cached_tokens": 5, "input_audio_tokens": 0, "output": 3,
             "output_reasoning_tokens": 4, "total": 30, "input_note": "not a number", "input_x": -20,
             "output_y": 1e30, "input_flag": True}
    (row,) = map_span("gen", {"langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
                              "langfuse.observation.usage_details": json.dumps(usage)}).inferences
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens, row.reasoning_tokens,
            row.total_tokens) == (23, 5, 7, 4, 30)
    # A caller's own keys without details, and a provider's raw usage, are taken as they are.
    for usage, expected in (({"input": 100, "output": 20, "cache_read_input_tokens": 10}, (100, 20, 10)),
                            ({"prompt_tokens": 23, "completion_tokens": 7,
                              "prompt_tokens_details": {"cached_tokens": 5}}, (23, 7, 5))):
        (row,) = map_span("gen", {"langfuse.observation.type": "generation",
                                  "langfuse.observation.usage_details": json.dumps(usage)}).inferences
        assert (row.input_tokens, row.output_tokens, row.cached_input_tokens) == expected


def test_plus_details_needs_a_json_source_with_a_path(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text('name = "t"\npriority = 1\n[fields]\ninput_tokens = [{ attribute = "a", '
                                     'plus_details = true }]\n')
    with pytest.raises(ValueError, match="plus_details"):
        Conventions(load_tables(tmp_path))


def test_provider_aliases_and_roles_are_canonical() -> None:
    values = build_mapper(Config()).conventions.values
    assert [values.provider(p) for p in ("MistralAI", "openai.chat", "google.generative-ai", "anthropic")] == [
        "mistral_ai", "openai", "gcp.gemini", "anthropic"]
    assert [values.role(r) for r in ("model", "tool-call", "tool-response", "user", "")] == [
        "assistant", "assistant", "user", "user", ""]


def test_a_steps_answer_and_a_failed_call_inside_a_step_that_answered_nothing() -> None:
    """Mastra's shape, as synthetic spans: a model step (input messages, the answer with its tool
    call) around the model span (usage, an answer recorded as empty text): one call, the model
    span's, with the step's messages; and when the model span says only by its finish reason
    that it failed, the call failed, with no empty answer."""
    step = {"mastra.span.type": "model_step", "gen_ai.operation.name": "agent_step",
            "mastra.metadata.modelMetadata": json.dumps({"modelId": "gpt-4o-mini", "modelProvider": "openai.chat"}),
            "mastra.model_step.input": json.dumps([{"role": "user", "content": "Weather?"}]),
            "mastra.model_step.output": json.dumps({"text": "", "toolCalls": [
                {"toolCallId": "c1", "toolName": "weather", "args": {"city": "Paris"}}]})}
    model = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
             "gen_ai.provider.name": "openai.chat", "gen_ai.usage.input_tokens": 23, "gen_ai.usage.output_tokens": 12,
             "gen_ai.response.finish_reasons": json.dumps(["tool-calls"]),
             "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": ""}]}])}
    mapper = build_mapper(Config())
    batch = mapper.map_traces(_nested_request([(2, 1, "chat gpt-4o-mini", model), (1, 0, "agent_step", step)]),
                              "", time.time_ns())
    (row,) = batch.inferences
    assert (row.span_name, row.provider, row.finish_reason, row.is_success) == ("chat gpt-4o-mini", "openai",
                                                                                "tool_call", True)
    assert messages(batch, "input") == [("user", "Weather?")]
    (out,) = [m for m in batch.messages if m.direction == "output"]
    assert json.loads(out.tool_calls)[0]["name"] == "weather"
    failed = {**model, "gen_ai.response.finish_reasons": json.dumps(["error"]), "gen_ai.usage.input_tokens": 0,
              "gen_ai.usage.output_tokens": 0}
    answered_nothing = {**step, "mastra.model_step.output": json.dumps({"text": "", "toolCalls": []})}
    batch = mapper.map_traces(_nested_request([(2, 1, "chat gpt-4o-mini", failed),
                                               (1, 0, "agent_step", answered_nothing)]), "", time.time_ns())
    (row,) = batch.inferences
    assert (row.span_name, row.is_success, row.error_type) == ("chat gpt-4o-mini", False, "error")
    assert messages(batch, "input") == [("user", "Weather?")] and messages(batch, "output") == []
    # The fold compares what statuses say: inside a span that measured and answered nothing, an
    # attempt whose status failed and a retry that succeeded are two calls, the outer span the
    # second (it was three rows in a first version of this rule: a review's find).
    outer = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    attempt = {**outer, "gen_ai.usage.input_tokens": 5}
    retry = {**outer, "gen_ai.response.id": "r2", "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 3}
    request = _nested_request([(2, 1, "chat gpt-4o", attempt), (3, 1, "chat gpt-4o", retry),
                               (1, 0, "chat gpt-4o", outer)])
    request.resource_spans[0].scope_spans[0].spans[0].status.code = 2
    rows = build_mapper(Config()).map_traces(request, "", time.time_ns()).inferences
    assert sorted((r.is_success, r.response_id) for r in rows) == [(False, ""), (True, "r2")]


def test_a_tool_definition_in_the_input_is_no_message() -> None:
    """Langfuse's LangChain handler appends each bound tool to a generation's input as
    {"role": "tool", "content": {"type": "function", "function": {...}}}: not a turn."""
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    batch = map_span("ChatOpenAI", {
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o-mini",
        "langfuse.observation.input": json.dumps([{"role": "user", "content": "Weather?"},
                                                  {"role": "tool", "content": tool},
                                                  {"role": "tool", "content": "sunny", "tool_call_id": "c1"}])})
    assert messages(batch, "input") == [("user", "Weather?"), ("tool", "sunny")]


def _map_records(records: list[dict[str, Any]], scope: str = "com.anthropic.claude_code.events") -> RowBatch:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from otelgw.pipeline.map_logs import map_logs

    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    scope_logs.scope.name = scope
    for spec in records:
        record = scope_logs.log_records.add(time_unix_nano=spec.get("time", 0), trace_id=spec.get("trace", b""),
                                            span_id=spec.get("span", b""), flags=spec.get("flags", 1))
        if "body" in spec:
            record.body.string_value = spec["body"]
        record.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in spec["attrs"].items())
    return map_logs(build_mapper(Config()), request, "", START)


def test_a_coding_agents_call_event_is_an_inference_and_stays_a_log_row() -> None:
    """A log-record family: Claude Code's api_request event says one whole call (it ends at the
    record's time); the record stays in `logs` too. The same record sent again is the same row;
    two calls under one trace are two; with its traces on (the record carries their context) the
    span says the call, not the record. A record with no time has its event.timestamp read."""
    call = {"event.name": "api_request", "model": "claude-sonnet-4-5-20250929", "input_tokens": "10",
            "output_tokens": "20", "cache_read_tokens": "100", "cache_creation_tokens": "5", "cost_usd": 0.25,
            "duration_ms": "1500", "ttft_ms": "300", "request_id": "req_1", "session.id": "s1", "user.id": "u1"}
    at = START + 5_000_000_000
    batch = _map_records([{"time": at, "body": "claude_code.api_request", "attrs": call}])
    (row,) = batch.inferences
    assert (row.span_name, row.family, row.provider, row.operation, row.request_model) == (
        "claude_code.api_request", "claude_code", "anthropic", "chat", "claude-sonnet-4-5-20250929")
    assert (row.input_tokens, row.output_tokens, row.cached_input_tokens, row.cache_write_input_tokens) == (
        115, 20, 100, 5)
    assert (row.cost_usd, row.cost_source, row.ttft_ms, row.latency_ms, row.response_id) == (
        0.25, "attribute:cost_usd", 300.0, 1500.0, "req_1")
    assert (row.session_id, row.user_id, row.is_success, row.is_streaming, row.trace_id) == ("s1", "u1", True, True, "")
    assert row.timestamp == ts_of(at - 1_500_000_000) and row.end_timestamp == ts_of(at)
    assert len(batch.logs) == 1 and batch.logs[0].event_name == "api_request"
    again = _map_records([{"time": at, "body": "claude_code.api_request", "attrs": call}]).inferences[0]
    assert again.inference_id == row.inference_id
    linked = {"time": at, "attrs": call, "trace": b"\x01" * 16, "span": b"\x02" * 8}
    two = _map_records([linked, {"time": at + 1, "attrs": call}, {"time": at + 2, "attrs": call}])
    # The linked one: its span says it. The other two are two calls.
    assert len(two.inferences) == 2 and not any(r.trace_id for r in two.inferences)
    assert len({r.inference_id for r in two.inferences}) == 2
    failed = _map_records([{"attrs": {"event.name": "api_error", "model": "claude-x", "error": "overloaded",
                                      "status_code": "529", "event.timestamp": "2025-11-26T10:00:00.250Z"}}])
    (row,) = failed.inferences
    assert (row.is_success, row.error_message, row.error_type) == (False, "overloaded", "http_529")
    assert row.end_timestamp == ts_of(1_764_151_200_250_000_000)
    # Another library's event of the same name is not Claude Code's.
    assert _map_records([{"time": at, "attrs": call}], scope="another.library").inferences == []
    # A trace that was not sampled sends no span: the record says the call. A record with no time
    # of any kind says none (keyed by when it came, each delivery would be another row).
    unsampled = _map_records([{**linked, "flags": 0}, {"attrs": call}])
    assert len(unsampled.inferences) == 1 and unsampled.inferences[0].trace_id == "01" * 16
    # The call's record names it (erasing the call erases it).
    assert unsampled.logs[0].attributes["otelgw.inference_id"] == unsampled.inferences[0].inference_id
    assert "otelgw.inference_id" not in unsampled.logs[1].attributes


def ts_of(ns: int) -> str:
    from otelgw.pipeline.rows import ts

    return ts(ns)


def test_log_record_family_tables_are_checked(tmp_path: Path) -> None:
    for table, error in (
            ('signal = "logs"\n[[detect]]\nattribute = "a"', "detects by `event_name`"),
            ('[[detect]]\nevent_name = ["e"]', "`event_name` goes with signal"),
            ('unlinked_only = true\n[[detect]]\nattribute = "a"', "`unlinked_only` goes with signal"),
            ('signal = "logs"\n[[detect]]\nevent_name = ["e"]\n[[not_inference]]\nattribute = "a"\nin = ["b"]',
             "`not_inference` is for span families"),
            ('signal = "spans"', "10-x.toml")):
        (tmp_path / "10-x.toml").write_text(f'name = "x"\npriority = 1\n{table}\n')
        with pytest.raises(ValueError, match=error):
            Conventions(load_tables(tmp_path))
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\nsignal = "logs"\n[[detect]]\nevent_name = ["e"]\n'
                                         'attribute = "kind"\nin = ["done"]\nrequires_any = ["n"]\n')
    conv = Conventions(load_tables(tmp_path))
    assert conv.families == [] and [f.name for f in conv.log_families] == ["x"]
    assert conv.detect_record("e", {"kind": "DONE", "n": 1}, "s") is conv.log_families[0]
    assert conv.detect_record("e", {"kind": "done"}, "s") is None and conv.detect_record("f", {"kind": "done", "n": 1},
                                                                                          "s") is None


def test_a_log_record_familys_content_attributes_go_with_metadata_capture() -> None:
    """What a table lists as `content` (Gemini CLI's logged answer) is content: dropped from the
    rows under capture = "metadata", as message attributes are."""
    from otelgw.governance.masking import Masker, MaskingFile, ProjectPolicy

    conventions = build_mapper(Config()).conventions
    keys, _ = conventions.content_attributes()
    assert {"response_text", "request_text", "prompt"} <= set(keys)
    batch = _map_records([{"time": START, "attrs": {
        "event.name": "gemini_cli.api_response", "model": "gemini-2.5-flash", "input_token_count": 10,
        "output_token_count": 2, "thoughts_token_count": 3, "total_token_count": 15,
        "response_text": '[{"responseId": "r1", "candidates": []}]'}}], scope="gemini-cli")
    (row,) = batch.inferences
    assert (row.output_tokens, row.reasoning_tokens, row.total_tokens, row.response_id) == (5, 3, 15, "r1")
    masker = Masker(MaskingFile(defaults=ProjectPolicy(capture="metadata")), content_keys=keys)
    masker.apply(batch)
    assert "response_text" not in batch.inferences[0].attributes and "response_text" not in batch.logs[0].attributes


def test_a_calls_content_on_companion_records_of_its_request() -> None:
    """Claude Code's content switches put a call's prompt and answer on other records: joined
    to the call within the request by prompt.id / request_id ("<REDACTED>" is not logged), and
    those records name the call (erasing it erases them)."""
    call = {"event.name": "api_request", "model": "claude-x", "input_tokens": "1", "output_tokens": "2",
            "request_id": "req_9", "prompt.id": "p1"}
    prompt = {"event.name": "user_prompt", "prompt": "Fix the bug.", "prompt.id": "p1"}
    answer = {"event.name": "assistant_response", "response": "Done.", "request_id": "req_9"}
    other = {"event.name": "assistant_response", "response": "Not this one.", "request_id": "req_8"}
    batch = _map_records([{"time": START, "attrs": prompt}, {"time": START + 1, "attrs": call},
                          {"time": START + 2, "attrs": other}, {"time": START + 3, "attrs": answer}])
    (row,) = batch.inferences
    assert messages(batch, "input") == [("user", "Fix the bug.")]
    assert messages(batch, "output") == [("assistant", "Done.")]
    assert row.output_preview == "Done." and "assistant_response.response" not in row.attributes
    named = [r.attributes.get("otelgw.inference_id") for r in batch.logs]
    assert named == [row.inference_id, row.inference_id, None, row.inference_id]
    redacted = _map_records([{"time": START, "attrs": {**prompt, "prompt": "<REDACTED>"}},
                             {"time": START + 1, "attrs": call}])
    assert redacted.messages == [] and len(redacted.inferences) == 1


def test_companions_go_with_log_record_families(tmp_path: Path) -> None:
    (tmp_path / "10-x.toml").write_text('name = "x"\npriority = 1\n[[detect]]\nattribute = "a"\n'
                                         '[[companions]]\nevent_name = "e"\nkey = "k"\n')
    with pytest.raises(ValueError, match="`companions` go with signal"):
        Conventions(load_tables(tmp_path))


def test_companion_joins_are_bounded_and_stay_in_their_resource() -> None:
    """One prompt record joined to thousands of calls would make gigabytes of message rows: the
    content joined stays within a few times the request's size. A resource's records never give
    content to another resource's calls (another project's, perhaps)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from otelgw.pipeline.map_logs import JOIN_BUDGET_FACTOR, map_logs

    prompt = {"event.name": "user_prompt", "prompt": "x" * 100_000, "prompt.id": "p1"}
    calls = [{"event.name": "api_request", "model": "claude-x", "request_id": f"r{i}", "prompt.id": "p1"}
             for i in range(500)]
    batch = _map_records([{"time": START, "attrs": prompt}] + [{"time": START + 1 + i, "attrs": c}
                                                                for i, c in enumerate(calls)])
    assert len(batch.inferences) == 500
    joined = sum(len(m.content) for m in batch.messages)
    assert 0 < joined <= JOIN_BUDGET_FACTOR * 160_000

    request = ExportLogsServiceRequest()
    for attrs in ({"event.name": "user_prompt", "prompt": "secret of A", "prompt.id": "p1"}, calls[0]):
        scope_logs = request.resource_logs.add().scope_logs.add()
        scope_logs.scope.name = "com.anthropic.claude_code.events"
        record = scope_logs.log_records.add(time_unix_nano=START)
        record.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())
    apart = map_logs(build_mapper(Config()), request, "", START)
    assert len(apart.inferences) == 1 and apart.messages == []


def test_a_cut_off_response_body_gives_way_to_the_answers_text() -> None:
    call = {"event.name": "api_request", "model": "claude-x", "request_id": "req_1"}
    body = {"event.name": "api_response_body", "request_id": "req_1",
            "body": '{"id":"msg_1","role":"assistant","content":[{"type":"text","text":"Long ans'}
    text = {"event.name": "assistant_response", "request_id": "req_1", "response": "Long answer."}
    batch = _map_records([{"time": START, "attrs": call}, {"time": START, "attrs": body},
                          {"time": START, "attrs": text}])
    assert messages(batch, "output") == [("assistant", "Long answer.")]
    whole = {**body, "body": '{"id":"msg_1","role":"assistant","content":[{"type":"text","text":"Long answer."},'
                             '{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}'}
    batch = _map_records([{"time": START, "attrs": call}, {"time": START, "attrs": whole}])
    (msg,) = [m for m in batch.messages if m.direction == "output"]
    assert msg.content == "Long answer." and "Bash" in msg.tool_calls
