"""Map decoded OTLP requests to rows: a pure function of (request, project, receive time).

No I/O and no state beyond bounded caches, so the same code can run in the event loop, a
thread or a worker process, and is tested straight from the captured fixtures.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter, deque
from typing import Any

import msgspec

from otelgw.pipeline import genai
from otelgw.pipeline.anyvalue import attrs_to_dict, clip, str_map, to_json, to_str
from otelgw.pipeline.fastpath import MAX_INDEX, NativeCheck, position_key
from otelgw.pipeline.genai import SpanEvent, SpanView
from otelgw.pipeline.messages import Message, parse_json_text, tool_calls_json, without_repeated_results
from otelgw.pipeline.rows import (
    MAX_NS,
    FeedbackRow,
    InferenceRow,
    MessageRow,
    NativeSpan,
    RowBatch,
    SpanRow,
    UnmappedRow,
    ts,
    ts_ns,
)
from otelgw.pricing import Pricing
from otelgw.semconv import Conventions

DEFAULT_PROJECT = "default"
PROJECT_RESOURCE_ATTRIBUTE = "project.id"
EVALUATION_EVENT = "gen_ai.evaluation.result"
NIL_UUID = "00000000-0000-0000-0000-000000000000"

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")


class MapperOptions(msgspec.Struct, frozen=True):
    preview_chars: int = 512
    # Longest value in an inference row's attributes (the span row keeps up to max_attribute_chars).
    attribute_value_max_chars: int = 16_384
    # Hostile-input limits (truncation carries a marker; dropped attributes are counted).
    max_attributes: int = 256
    max_attribute_chars: int = 65_536
    max_message_chars: int = 1_048_576


_NAMESPACE_URL = uuid.NAMESPACE_URL.bytes


# A reported cost or wait outside these is not a measurement (a negative TTFT, a cost of 1e308
# that would turn every sum it joins into inf or 0): kept as not reported.
_MAX_COST_USD = 1e6
MAX_WAIT_MS = 1e9


def _plausible(value: float | None, largest: float) -> float | None:
    return value if value is not None and 0 <= value <= largest else None


def derived_inference_id(trace_hex: str, span_hex: str) -> str:
    """uuid5(NAMESPACE_URL, "otelgw:<trace>:<span>"), computed without building UUID objects
    (this runs once per span)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_URL + f"otelgw:{trace_hex}:{span_hex}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_inference_id_sql(trace_expr: str, span_expr: str) -> str:
    """derived_inference_id() as a ClickHouse expression over two String columns (hex ids)."""
    digest = f"SHA1(unhex('{_NAMESPACE_URL.hex()}') || 'otelgw:' || {trace_expr} || ':' || {span_expr})"
    # The first 16 bytes of the SHA1, version 5 in byte 7, the RFC 4122 variant in byte 9.
    return (f"toUUID(UUIDNumToString(toFixedString(substring({digest}, 1, 6) "
            f"|| char(bitOr(bitAnd(reinterpretAsUInt8(substring({digest}, 7, 1)), 15), 80)) "
            f"|| substring({digest}, 8, 1) "
            f"|| char(bitOr(bitAnd(reinterpretAsUInt8(substring({digest}, 9, 1)), 63), 128)) "
            f"|| substring({digest}, 10, 7), 16)))")


def explicit_uuid(value: Any) -> str | None:
    if isinstance(value, str) and value:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return None
    return None


def project_for(header_project: str, resource_attrs: dict[str, Any]) -> str:
    if header_project:
        return header_project
    value = resource_attrs.get(PROJECT_RESOURCE_ATTRIBUTE)
    return value if isinstance(value, str) and value else DEFAULT_PROJECT


class ResourceContext(msgspec.Struct):
    """What every row from one OTLP resource shares."""

    attributes: dict[str, str]
    project: str
    service: str


def resource_context(resource: Any, project_header: str, options: MapperOptions) -> ResourceContext:
    attrs = attrs_to_dict(resource.attributes, options.max_attributes)
    service = clip(to_str(attrs.get("service.name", "")), 256) or "unknown_service"
    return ResourceContext(str_map(attrs, options.max_attribute_chars), project_for(project_header, attrs), service)


def _preview(messages: list[Message], limit: int, prefer_role: str | None) -> str:
    if not messages:
        return ""
    chosen = messages[-1]
    if prefer_role:
        for msg in reversed(messages):
            if msg.role == prefer_role:
                chosen = msg
                break
    else:
        chosen = messages[0]
    text = chosen.content
    if not text and chosen.tool_calls:
        text = "; ".join(f"{c.name}({c.arguments})" for c in chosen.tool_calls)
    return clip(text, limit)


class UnmappedCounter:
    """Per-batch tally of GenAI-looking attributes no table maps."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], list[Any]] = {}

    def add(self, project: str, key: str, scope: str, at_ns: int, value: Any) -> None:
        slot = self._seen.get((project, key, scope))
        if slot is None:
            self._seen[(project, key, scope)] = [1, at_ns, value]
        else:
            slot[0] += 1
            if at_ns >= slot[1]:
                slot[1] = at_ns
                slot[2] = value

    def rows(self) -> list[UnmappedRow]:
        return [
            UnmappedRow(project_id=p, key=k, scope_name=s, count=c, last_seen=ts(at), example=clip(to_str(v), 200))
            for (p, k, s), (c, at, v) in self._seen.items()
        ]


class CallFacts(msgspec.Struct, gc=False):
    """What an inference row takes from the span, or the log record, that says the call."""

    name: str
    kind: str
    parent_span_id: str
    failed: bool
    status_message: str


class FoldContext(msgspec.Struct):
    """What folding a call traced twice needs besides a batch's rows: the parents of spans left to
    ClickHouse (the others' are in their rows), and span rows' attributes before their message
    content moved to `messages` (for spans that turn out to be no inference of their own)."""

    native_parents: dict[tuple[str, str], str]
    full_maps: dict[tuple[str, str], dict[str, str]]


class Mapper:
    def __init__(self, conventions: Conventions, pricing: Pricing, options: MapperOptions | None = None) -> None:
        self.conventions = conventions
        self.pricing = pricing
        self.options = options or MapperOptions()

    # -- traces -------------------------------------------------------------------------------

    def map_traces(self, request: Any, project_header: str, received_ns: int,
                   native: NativeCheck | None = None) -> RowBatch:
        """`native`: leave the spans it allows to ClickHouse (the fast path)."""
        batch, context = self.map_traces_unfolded(request, project_header, received_ns, native)
        self.fold([(batch, context)])
        return batch

    def fold(self, mapped: list[tuple[RowBatch, FoldContext]]) -> bool:
        """One call traced twice is one inference: a Logfire stream's two spans, and nested spans
        of one call (`_drop_nested_duplicates`), found across every batch given (the requests of
        one mapping chunk: a SimpleSpanProcessor exports each span in a request of its own).
        Batches lose the rows that gave way; the rest are changed in place. True when rows of two
        batches could be one call, folded or not (the batches' rows then depend on each other: a
        replay must map them together again)."""
        # A router's name (LiteLLM's) is no provider: its row, folded with the provider SDK's span
        # inside it, takes the provider that SDK reported, as a row with none does; only what is
        # left is read from the model's name, after the fold.
        canonical = self.conventions.values
        routers: dict[int, tuple[InferenceRow, str]] = {}  # (the row held: its id stays its own)
        for batch, _ in mapped:
            for row in batch.inferences:
                if row.provider and canonical.is_router(row.provider):
                    routers[id(row)] = (row, row.provider)
                    row.provider = ""
        crossed = self._fold(mapped)
        for batch, _ in mapped:
            self.settle_values(batch, routers)
        return crossed

    def settle_values(self, batch: RowBatch, routers: dict[int, tuple[InferenceRow, str]] | None = None) -> None:
        """What is read of a row once it is final (after the fold, for spans): its provider in
        the conventions' spelling (`routers`: rows whose router name was set aside for the
        fold), its model's name, failure said by a finish reason."""
        canonical = self.conventions.values
        failed: set[str] = set()
        for row in batch.inferences:
            router = routers.get(id(row)) if routers else None
            row.provider = canonical.provider(row.provider or (router[1] if router else ""), row.request_model,
                                              row.response_model, host=row.attributes.get("server.address", ""))
            # A Vertex AI resource path names the model by its last part (read after the
            # provider, which the path tells).
            row.request_model, row.response_model = _model_name(row.request_model), _model_name(row.response_model)
            # A call that says it failed only by its finish reason failed (read after the
            # fold, which compares what the spans' statuses say).
            if row.is_success and row.finish_reason == "error":
                row.is_success, row.error_type = False, row.error_type or "error"
            if not row.is_success:
                failed.add(row.inference_id)
        if failed:
            # A failed call's empty "answer" is none.
            batch.messages = [m for m in batch.messages if m.inference_id not in failed or m.direction != "output"
                              or _said(m)]

    def _fold(self, mapped: list[tuple[RowBatch, FoldContext]]) -> bool:
        if len(mapped) > 1:
            ids = [row.inference_id for batch, _ in mapped for row in batch.inferences]
            if len(ids) < 2:
                return False
            if len(set(ids)) == len(ids):
                return self._fold_together(mapped)
            # One span sent twice (a retried request, or the same traces to two projects): its
            # rows would stand for each other; each request folds alone, as it did when sent.
        for batch, context in mapped:
            if len(batch.inferences) > 1:
                _join_logfire_streams(batch, context.full_maps, self.pricing)
                _drop_nested_duplicates(batch, context.native_parents, context.full_maps, self.pricing)
        return False

    def _fold_together(self, mapped: list[tuple[RowBatch, FoldContext]]) -> bool:
        # Which request each span came in (the fold walks parent links through them).
        span_owner = {(span.trace_id, span.span_id): i for i, (batch, _) in enumerate(mapped) for span in batch.spans}
        for i, (_, context) in enumerate(mapped):
            span_owner.update(dict.fromkeys(context.native_parents, i))
        together = RowBatch(inferences=[row for batch, _ in mapped for row in batch.inferences],
                            messages=[m for batch, _ in mapped for m in batch.messages],
                            feedback=[f for batch, _ in mapped for f in batch.feedback],
                            spans=[span for batch, _ in mapped for span in batch.spans])
        native_parents: dict[tuple[str, str], str] = {}
        full_maps: dict[tuple[str, str], dict[str, str]] = {}
        for _, context in mapped:
            native_parents.update(context.native_parents)
            full_maps.update(context.full_maps)
        inferences, messages = len(together.inferences), len(together.messages)
        # Rows of two requests that could be one call, folded or declined (any fold across
        # requests is one of these): mapped apart, as a replay would map them without the chunk
        # logged, they could come out otherwise.
        across = _join_logfire_streams(together, full_maps, self.pricing, span_owner)
        across = _drop_nested_duplicates(together, native_parents, full_maps, self.pricing, span_owner) or across
        if len(together.inferences) == inferences and len(together.messages) == messages:
            return across
        kept_rows = {id(row) for row in together.inferences}
        kept_messages = {id(m) for m in together.messages}
        for batch, _ in mapped:
            batch.inferences = [row for row in batch.inferences if id(row) in kept_rows]
            batch.messages = [m for m in batch.messages if id(m) in kept_messages]
        return across

    def map_traces_unfolded(self, request: Any, project_header: str, received_ns: int,
                            native: NativeCheck | None = None) -> tuple[RowBatch, FoldContext]:
        """The request's rows before `fold`, and what `fold` needs to read with them."""
        batch = RowBatch(inferences=[], messages=[], feedback=[], spans=[], native=[], native_resources=[])
        unmapped = UnmappedCounter()
        native_parents: dict[tuple[str, str], str] = {}
        full_maps: dict[tuple[str, str], dict[str, str]] = {}
        conv = self.conventions
        opts = self.options
        max_attrs, max_chars = opts.max_attributes, opts.max_attribute_chars
        for r_index, resource_spans in enumerate(request.resource_spans):
            resource = resource_context(resource_spans.resource, project_header, opts)
            resource_map, project, service = resource.attributes, resource.project, resource.service
            # Positions must fit their key (a hostile request can hold millions of empty scopes).
            scopes = resource_spans.scope_spans
            resource_native = (native is not None and r_index < MAX_INDEX and len(scopes) < MAX_INDEX
                               and all(len(ss.spans) < MAX_INDEX for ss in scopes)
                               and native.project_ok(project) and native.resource_ok(
                                   resource_spans.resource, attrs_to_dict(resource_spans.resource.attributes), project))
            batch.native_resources.append((project, service))
            for s_index, scope_spans in enumerate(resource_spans.scope_spans):
                scope_name = scope_spans.scope.name
                scope_version = scope_spans.scope.version
                for p_index, span in enumerate(scope_spans.spans):
                    attrs = attrs_to_dict(span.attributes, max_attrs)
                    trace_hex = span.trace_id.hex()
                    span_hex = span.span_id.hex()
                    # Clamped first, so durations agree with the stored (clamped) times.
                    start_ns = min(span.start_time_unix_nano, MAX_NS)
                    end_ns = max(min(span.end_time_unix_nano, MAX_NS), start_ns)
                    events = [SpanEvent(e.name, e.time_unix_nano, attrs_to_dict(e.attributes, max_attrs))
                              for e in span.events]
                    for key, value in attrs.items():
                        if conv.is_unmapped(key):
                            unmapped.add(project, key, scope_name, start_ns, value)
                    family = conv.detect(attrs, scope_name, span.name)
                    if (resource_native and family is None and native is not None
                            and not any(e.name == EVALUATION_EVENT for e in events)
                            and native.span_ok(span, attrs, events, project)):
                        batch.native.append(NativeSpan(
                            position_key(r_index, s_index, p_index), trace_hex, span_hex, project,
                            STATUS_CODES[span.status.code] if 0 <= span.status.code < 3 else "unset",
                            start_ns, end_ns, attrs))
                        native_parents[(trace_hex, span_hex)] = span.parent_span_id.hex()
                        continue
                    attr_map = str_map(attrs, max_chars)
                    inference_id = ""
                    if family is not None:
                        view = SpanView(span.name, scope_name, start_ns, attrs, events)
                        # Message content is stored once, in `messages`: the span row keeps the
                        # rest of its attributes and links to the inference by id.
                        consumed = _message_keys(conv, family, attrs)
                        full = attr_map
                        if consumed:
                            full_maps[(trace_hex, span_hex)] = full
                            attr_map = {k: v for k, v in attr_map.items() if k not in consumed}
                        call = CallFacts(span.name, SPAN_KINDS[span.kind] if 0 <= span.kind < len(SPAN_KINDS)
                                         else str(span.kind), span.parent_span_id.hex(), span.status.code == 2,
                                         span.status.message)
                        inference_id = self._inference(batch, view, family, call, project, service, trace_hex,
                                                       span_hex, end_ns, attr_map)
                        if consumed and batch.inferences and batch.inferences[-1].operation == "embeddings":
                            # Its response (vectors) is no message: the span row keeps it as sent.
                            attr_map = full
                    for index, event in enumerate(events):
                        if event.name == EVALUATION_EVENT:
                            target = inference_id or derived_inference_id(trace_hex, span_hex)
                            at_ns = event.time_ns or end_ns
                            batch.feedback.append(self.evaluation(event.attrs, target, project, trace_hex, span_hex,
                                                                  at_ns, "span_event", index, service))
                    batch.spans.append(SpanRow(
                        trace_id=trace_hex,
                        span_id=span_hex,
                        parent_span_id=span.parent_span_id.hex(),
                        trace_state=span.trace_state,
                        project_id=project,
                        service_name=service,
                        name=span.name,
                        kind=SPAN_KINDS[span.kind] if 0 <= span.kind < len(SPAN_KINDS) else str(span.kind),
                        start_time=ts(start_ns),
                        end_time=ts(end_ns),
                        duration_ns=end_ns - start_ns,
                        status_code=STATUS_CODES[span.status.code] if 0 <= span.status.code < 3 else "unset",
                        status_message=span.status.message,
                        attributes=attr_map,
                        resource_attributes=resource_map,
                        scope_name=scope_name,
                        scope_version=scope_version,
                        events=to_json([{"name": e.name, "time_unix_nano": e.time_ns,
                                         "attributes": str_map(e.attrs, max_chars)}
                                        for e in events]) if events else "[]",
                        links=to_json([{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                                        "trace_state": link.trace_state,
                                        "attributes": str_map(attrs_to_dict(link.attributes, max_attrs), max_chars)}
                                       for link in span.links]) if span.links else "[]",
                        inference_id=inference_id,
                    ))
        batch.unmapped_attributes = unmapped.rows()
        return batch, FoldContext(native_parents, full_maps)

    def _inference(self, batch: RowBatch, view: SpanView, family: Any, call: CallFacts, project: str, service: str,
                   trace_hex: str, span_hex: str, end_ns: int, attr_map: dict[str, str],
                   record_id: str = "") -> str:
        """`record_id`: the id of a call a log record says (a span's is derived from its ids)."""
        conv = self.conventions
        ext = genai.extract_fields(conv, family, view)
        values = ext.values
        inputs, outputs = genai.extract_messages(conv, family, view)
        embeddings = values.get("operation") == "embeddings"
        if embeddings:
            # An embedding call answers vectors, not a message (OpenInference's `output.value` is the
            # whole response, every vector in it); and it streams no tokens, so a "time to first
            # token" (OpenLIT sends one) is no TTFT.
            outputs = []
            values.pop("ttft_ms", None)
        inference_id = (explicit_uuid(values.get("inference_id")) or record_id
                        or derived_inference_id(trace_hex, span_hex))
        start_ns = view.start_ns
        duration = _plausible(values.get("duration_ms"), MAX_WAIT_MS)
        if duration is not None:
            # A log record saying a whole call is written at its end.
            start_ns = max(end_ns - int(duration * 1e6), 0)

        http_status = values.get("http_status", 0)
        failed = (call.failed or str(values.get("level", "")).upper() == "ERROR" or http_status >= 400
                  or (bool(record_id) and bool(values.get("error_type") or values.get("error_message"))))
        error_type = values.get("error_type", "")
        error_message = call.status_message or values.get("error_message", "")
        for event in view.events:
            if event.name == "exception":
                error_type = error_type or to_str(event.attrs.get("exception.type", ""))
                error_message = error_message or to_str(event.attrs.get("exception.message", ""))
                break
        if failed and not error_type:
            error_type = f"http_{http_status}" if http_status >= 400 else "error"

        input_tokens = values.get("input_tokens", 0)
        output_tokens = values.get("output_tokens", 0)
        cached = values.get("cached_input_tokens", 0)
        total_tokens = values.get("total_tokens", None)
        reasoning_tokens = values.get("reasoning_tokens", 0)
        for rule in family.usage_excludes:
            if (str(values.get("provider", "")).lower() in rule.providers
                    and (not rule.scopes or view.scope_name.startswith(tuple(rule.scopes)))):
                if rule.rest_of_total:
                    # Only a complete split says what the rest is (without the input count, the
                    # whole prompt would be billed as output).
                    added = 0
                    if total_tokens is not None and "input_tokens" in values and "output_tokens" in values:
                        added = max(total_tokens - input_tokens - output_tokens, 0)
                    if rule.field == "output_tokens" and not reasoning_tokens:
                        reasoning_tokens = added
                else:
                    added = sum(max(genai._coerce(view.attrs.get(key), int) or 0, 0) for key in rule.add)
                if rule.field == "input_tokens":
                    input_tokens += added
                else:
                    output_tokens += added
                if total_tokens is not None and not rule.rest_of_total:  # the total left them out too
                    total_tokens += added
        # Part of the input tokens, as cached ones are; never more than what is left of them.
        cache_write = min(max(values.get("cache_write_input_tokens", 0), 0), max(input_tokens - cached, 0))
        request_model = values.get("request_model", "")
        response_model = values.get("response_model", "")
        cost = _plausible(values.get("cost_usd"), _MAX_COST_USD)
        cost_source = ext.sources.get("cost_usd", "")
        # A reported cost of 0 for a call that used tokens means "not computed" (OpenLIT without
        # its price list): the pricing table knows better.
        if cost is None or (cost == 0 and (input_tokens or output_tokens)):
            priced = self.pricing.cost(response_model or request_model, input_tokens, cached, output_tokens,
                                       cache_write)
            if priced is not None:
                cost, cost_source = priced, "pricing"
            elif cost == 0:
                # A reported 0 for a call that used tokens was never computed: the cost is unknown.
                cost_source = ""
        finish_reason = values.get("finish_reason", "")
        if finish_reason[:1] == "[":
            # A JSON array in a string (LiteLLM's callback: '["stop"]'): its first reason.
            parsed = parse_json_text(finish_reason)
            if isinstance(parsed, list):
                finish_reason = to_str(parsed[0]) if parsed else ""
        if not finish_reason:
            finish_reason = next((m.finish_reason for m in outputs if m.finish_reason), "")
        canonical = self.conventions.values
        finish_reason = canonical.finish_reason(finish_reason)

        ttft = _plausible(values.get("ttft_ms"), MAX_WAIT_MS)
        queue_ms = _plausible(values.get("queue_ms"), MAX_WAIT_MS)
        limit = self.options.attribute_value_max_chars
        attributes = {k: clip(v, limit) for k, v in attr_map.items()}
        batch.inferences.append(InferenceRow(
            inference_id=inference_id,
            project_id=project,
            trace_id=trace_hex,
            span_id=span_hex,
            parent_span_id=call.parent_span_id,
            timestamp=ts(start_ns),
            end_timestamp=ts(end_ns),
            service_name=service,
            span_name=call.name,
            span_kind=call.kind,
            scope_name=view.scope_name,
            family=family.name,
            operation=values.get("operation", ""),
            provider=values.get("provider", ""),
            request_model=request_model,
            response_model=response_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            cache_write_input_tokens=cache_write,
            reasoning_tokens=reasoning_tokens,
            total_tokens=input_tokens + output_tokens if total_tokens is None else total_tokens,
            cost_usd=cost or 0.0,
            cost_source=cost_source if cost is not None else "",
            latency_ms=(end_ns - start_ns) / 1e6,
            ttft_ms=ttft,
            ttft_source=ext.sources.get("ttft_ms", "") if ttft is not None else "",
            queue_ms=queue_ms,
            is_streaming=bool(values.get("is_streaming", False)),
            is_success=not failed,
            error_type=error_type,
            error_message=error_message,
            finish_reason=finish_reason,
            response_id=values.get("response_id", ""),
            session_id=values.get("session_id", ""),
            user_id=values.get("user_id", ""),
            input_preview=_preview(inputs, self.options.preview_chars, "user"),
            output_preview=_preview(outputs, self.options.preview_chars, None),
            attributes=attributes,
        ))
        self.add_messages(batch, inference_id, project, start_ns, inputs, outputs, "log" if record_id else "span")
        return inference_id

    def record_inference(self, batch: RowBatch, family: Any, event_name: str, scope_name: str, at_ns: int,
                         attrs: dict[str, Any], project: str, service: str, trace_hex: str, span_hex: str,
                         record_id: str, attr_map: dict[str, str]) -> str:
        """The call a log record says (a log-record family's: a coding agent's `api_request`
        event); `at_ns` is the record's time, the call's end."""
        view = SpanView(event_name, scope_name, at_ns, attrs)
        call = CallFacts(event_name, "", "", False, "")
        return self._inference(batch, view, family, call, project, service, trace_hex, span_hex, at_ns, attr_map,
                               record_id=record_id)

    def add_messages(self, batch: RowBatch, inference_id: str, project: str, at_ns: int, inputs: list[Message],
                     outputs: list[Message], source: str) -> None:
        stamp = ts(at_ns)
        if len(inputs) > 1:
            inputs = without_repeated_results(inputs)
        for direction, items in (("input", inputs), ("output", outputs)):
            for index, msg in enumerate(items):
                batch.messages.append(self.message_row(inference_id, project, stamp, direction, index, msg, source))

    def message_row(self, inference_id: str, project: str, stamp: str, direction: str, index: int, msg: Message,
                    source: str, arrival: int = 0) -> MessageRow:
        return MessageRow(
            inference_id=inference_id,
            project_id=project,
            timestamp=stamp,
            direction=direction,
            index=index,
            arrival=arrival,
            # Gemini answers as "model", smolagents' tool turns are "tool-call": stored as every
            # other provider's and library's are (semconv/values.toml).
            role=self.conventions.values.role(msg.role),
            content=clip(msg.content, self.options.max_message_chars),
            tool_calls=tool_calls_json(msg.tool_calls),
            tool_call_id=msg.tool_call_id,
            name=msg.name,
            finish_reason=self.conventions.values.finish_reason(msg.finish_reason),
            source=source,
        )

    @staticmethod
    def evaluation(attrs: dict[str, Any], inference_id: str, project: str, trace_hex: str, span_hex: str,
                   at_ns: int, source: str, index: int, created_by: str) -> FeedbackRow:
        name = to_str(attrs.get("gen_ai.evaluation.name", ""))
        score = attrs.get("gen_ai.evaluation.score.value")
        value = genai._coerce(score, float) if score is not None else None
        response_id = to_str(attrs.get("gen_ai.response.id", ""))
        # Deterministic: the same event re-sent is the same feedback row.
        feedback_id = uuid.uuid5(uuid.NAMESPACE_URL,
                                 f"otelgw:feedback:{trace_hex}:{span_hex}:{response_id}:{name}:{at_ns}:{index}")
        return FeedbackRow(
            feedback_id=str(feedback_id),
            inference_id=inference_id,
            project_id=project,
            timestamp=ts(at_ns),
            kind="evaluation",
            name=name,
            value=value,
            label=to_str(attrs.get("gen_ai.evaluation.score.label", "")),
            comment=to_str(attrs.get("gen_ai.evaluation.explanation", "")),
            source=source,
            created_by=created_by,
            response_id=response_id,
            trace_id=trace_hex,
            span_id=span_hex,
        )


_MAX_NESTING = 16
# Filled on the surviving (outer) row from the inner one where the outer has none: a provider
# SDK's own span often measures what the library's span around it does not (its TTFT, a server's
# queue time).
_MERGED = ("provider", "request_model", "response_model", "response_id", "input_tokens", "output_tokens",
           "cached_input_tokens", "cache_write_input_tokens", "reasoning_tokens", "total_tokens", "finish_reason",
           "session_id", "user_id", "input_preview", "output_preview", "error_type", "error_message")
_MERGED_WITH_SOURCE = (("ttft_ms", "ttft_source"), ("cost_usd", "cost_source"))


def _same_call(outer: InferenceRow, inner: InferenceRow, prompts: _Prompts | None = None) -> bool:
    """Two nested inference spans that describe one model call: the same response id; or, where
    one has none, the same operation, a model in common (or none said) and token counts that do
    not differ where both have them."""
    if outer.response_id and inner.response_id:
        return outer.response_id == inner.response_id
    # A failed attempt inside a call that succeeded (a retry) is a call of its own; so is a call
    # that reported nothing inside one that measured itself (a judge's call inside the call).
    if not _one_operation(outer.operation, inner.operation) or outer.is_success != inner.is_success:
        return False
    # ... unless it sent the very same input messages, every one (the OpenAI instrumentation on
    # the Agents SDK's streams records no usage and no id); a judge sends its own prompt.
    if _measured(outer) and not _measured(inner) and not (prompts is not None and prompts.same(outer, inner)):
        return False
    outer_models = {m.lower() for m in (outer.request_model, outer.response_model) if m}
    inner_models = {m.lower() for m in (inner.request_model, inner.response_model) if m}
    if outer_models and inner_models and not any(_one_model(a, b) for a in outer_models for b in inner_models):
        return False
    return all(not a or not b or a == b for a, b in ((outer.input_tokens, inner.input_tokens),
                                                     (outer.output_tokens, inner.output_tokens)))


# A dated snapshot and its alias name one model (gpt-4o-mini-2024-07-18 / gpt-4o-mini,
# claude-sonnet-4-5-20250929 / claude-sonnet-4-5): one span says what was asked, the other what answered.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


# One generation call said two ways: a library's span says `chat` (or nothing, which reads as chat)
# around Gemini's `generate_content` (Google ADK's legacy call_llm around its own model span).
_GENERATION_OPERATIONS = frozenset({"chat", "generate_content"})


def _one_operation(a: str, b: str) -> bool:
    return a == b or (a in _GENERATION_OPERATIONS and b in _GENERATION_OPERATIONS)


def _names_itself(row: InferenceRow) -> bool:
    """A span that gives its own instrumentation scope as the provider (Google ADK's call_llm:
    gen_ai.system 'gcp.vertex.agent') is the library's step around a model call, not the call."""
    return bool(row.provider) and row.provider == row.scope_name


def _one_model(a: str, b: str) -> bool:
    """The same name, or one the other's dated snapshot (two snapshots are two models); a
    router's `provider/model` (LiteLLM's `openai/gpt-4o-mini`) names the model after its `/`."""
    a, b = a.rsplit("/", 1)[-1], b.rsplit("/", 1)[-1]
    return a == b or _SNAPSHOT.sub("", a) == b or a == _SNAPSHOT.sub("", b)


class _Prompts:
    """A batch's input messages by inference, gathered once and only when asked."""

    def __init__(self, messages: list[MessageRow]) -> None:
        self._messages = messages
        self._by_inference: dict[str, list[tuple[int, str, str]]] | None = None
        self._answers: dict[str, list[tuple[int, str, str, str]]] | None = None

    def of(self, row: InferenceRow) -> tuple[tuple[int, str, str], ...]:
        """The row's input messages, in order: (index, role, content)."""
        if self._by_inference is None:
            self._by_inference = {}
            for m in self._messages:
                if m.direction == "input":
                    self._by_inference.setdefault(m.inference_id, []).append((m.index, m.role, m.content))
        return tuple(sorted(self._by_inference.get(row.inference_id, ())))

    def same(self, a: InferenceRow, b: InferenceRow) -> bool:
        mine = self.of(a)
        return bool(mine) and mine == self.of(b)

    def same_answer(self, a: InferenceRow, b: InferenceRow) -> bool:
        """The same output messages (content and tool calls), or one of them recorded none."""
        if self._answers is None:
            self._answers = {}
            for m in self._messages:
                if m.direction == "output":
                    self._answers.setdefault(m.inference_id, []).append((m.index, m.role, m.content, m.tool_calls))
        mine, theirs = self._answers.get(a.inference_id), self._answers.get(b.inference_id)
        return not mine or not theirs or sorted(mine) == sorted(theirs)


def _model_name(model: str) -> str:
    """`projects/p/locations/l/publishers/google/models/gemini-2.0-flash` is gemini-2.0-flash."""
    return model.rsplit("/", 1)[1] if model.startswith("projects/") and "/models/" in model else model


def _said_failed(row: InferenceRow) -> bool:
    """Failed, by its status or (Mastra's model span, status OK) by its finish reason alone."""
    return not row.is_success or row.finish_reason == "error"


def _said(m: MessageRow) -> bool:
    return bool(m.content or m.tool_calls or m.tool_call_id)


def _measured(row: InferenceRow) -> bool:
    return bool(row.input_tokens or row.output_tokens or row.response_id)


def _drop_nested_duplicates(batch: RowBatch, native_parents: dict[tuple[str, str], str],
                            full_maps: dict[tuple[str, str], dict[str, str]], pricing: Pricing,
                            owner: dict[tuple[str, str], int] | None = None) -> bool:
    """One model call traced twice, one span inside the other (an instrumentation library's span
    around the provider SDK's own: anthropic 2.x traces itself whenever a tracer provider is set;
    OpenInference's LangChain span around its OpenAI span; LlamaIndex's spans around the OpenAI
    instrumentation's), is one inference: the outer span's (unless both are one library's and
    only the inner measured the call). They are told apart from two calls by `_same_call`, in the
    same project. What only the inner span measured fills the outer row (and its messages of a
    direction the outer has none of); the inner span stays a span row with its attributes whole,
    linked to the outer inference (so erasing the inference erases it); its evaluations go to the
    outer inference. An outer row whose own outer is also a fold target when it gives way to its
    inner one keeps only the latter link (rare: three layers of one library)."""
    if not any(row.parent_span_id for row in batch.inferences):
        return False  # only roots (a batch of separate calls): nothing is nested
    by_span = {(row.trace_id, row.span_id): row for row in batch.inferences}
    by_inference_row = {row.inference_id: row for row in batch.inferences}
    prompts = _Prompts(batch.messages)
    parents: dict[tuple[str, str], str] | None = None
    outer_of: dict[str, InferenceRow] = {}
    # A pair found through spans of two requests (folded or not, as the rules below decide):
    # mapped apart, as a replay would without the chunk logged, the requests could fold otherwise.
    across = False
    for row in batch.inferences:
        if not row.parent_span_id:
            continue
        if parents is None:
            parents = {(span.trace_id, span.span_id): span.parent_span_id for span in batch.spans}
            parents.update(native_parents)
        # The nearest enclosing inference, through spans between them (an HTTP client span).
        parent = row.parent_span_id
        requests = {owner.get((row.trace_id, row.span_id))} if owner is not None else set()
        for _ in range(_MAX_NESTING):
            if not parent or parent == row.span_id:
                break
            if owner is not None:
                requests.add(owner.get((row.trace_id, parent)))
            outer = by_span.get((row.trace_id, parent))
            if outer is not None:
                if (outer.project_id == row.project_id and outer.inference_id != row.inference_id
                        and _same_call(outer, row, prompts)):
                    outer_of[row.inference_id] = outer
                    across = across or len(requests) > 1
                break
            parent = parents.get((row.trace_id, parent), "")
    across = _match_siblings(batch.inferences, outer_of, prompts, owner) or across
    # Without a common response id, an outer span that two inner ones would match says nothing
    # about which is its call (two attempts, or a step making two calls): none of them is folded.
    heuristic: dict[str, list[str]] = {}
    for inner_id, outer in outer_of.items():
        if not (outer.response_id and by_inference_row[inner_id].response_id):
            heuristic.setdefault(outer.inference_id, []).append(inner_id)
    for inners in heuristic.values():
        if len(inners) > 1:
            for inner_id in inners:
                del outer_of[inner_id]
    if not outer_of:
        return across
    # Which of the two stands for the call: the outer span, unless both come from one library and
    # only the inner one measured it (LlamaIndex's `OpenAI.predict` around its `OpenAI.chat`) or
    # the outer is the library's step naming itself as the provider (ADK's call_llm): then the
    # outer one is folded into the inner.
    for inner_id, outer in list(outer_of.items()):
        inner = by_inference_row[inner_id]
        # (Not when the outer row itself folds into a span further out: the chain ends there.)
        if (inner.scope_name == outer.scope_name and outer_of.get(inner_id) is outer
                and outer.inference_id not in outer_of
                and ((_measured(inner) and not _measured(outer))
                     or (_names_itself(outer) and not _names_itself(inner))
                     or (_said_failed(inner) and not _said_failed(outer)))):
            del outer_of[inner_id]
            outer_of[outer.inference_id] = inner
    # Chains (three spans of one call) end at the outermost, each resolved once (a hostile chain
    # of thousands of spans must not cost its square); a cycle in hostile parent links (A inside
    # B inside A) ends where it would repeat.
    final: dict[str, InferenceRow] = {}
    for inner_id in outer_of:
        if inner_id in final:
            continue
        path, seen = [inner_id], {inner_id}
        outer = outer_of[inner_id]
        while True:
            oid = outer.inference_id
            if oid in final:
                outer = final[oid]
                break
            if oid not in outer_of or oid in seen:
                break
            seen.add(oid)
            path.append(oid)
            outer = outer_of[oid]
        for member in path:
            # Through a span that matched both neighbours (one that measured nothing), two calls
            # that disagree would chain into one: each folds only into a row it matches itself.
            if member != outer.inference_id and (
                    outer_of[member] is outer or _same_call(outer, by_inference_row[member], prompts)):
                final[member] = outer
    if final:
        _fold_rows(batch, final, full_maps, pricing)
    return across


_MAX_SIBLING_PAIRS = 64


def _match_siblings(rows: list[InferenceRow], outer_of: dict[str, InferenceRow], prompts: _Prompts,
                    owner: dict[tuple[str, str], int] | None = None) -> bool:
    """One call traced by two libraries whose spans sit side by side, not one inside the other
    (LlamaIndex's `OpenAI.astream_chat` ends when it hands back the stream; the OpenAI
    instrumentation's ChatCompletion span starts as the stream is read, under the same agent
    step): the library's span, which measured nothing, stands for the call the other measured,
    when they share parent, project, operation and outcome, a model (both name one), every input
    message and, where both recorded it, the answer (a cache hit's stored answer or another
    sample differs), the library's span started first, and neither matches another sibling. A
    span that already stands for a call nested in it pairs with nothing more. True when a bucket
    that could pair held rows of two requests (`owner`: (trace, span) -> request)."""
    stands = {outer.inference_id for outer in outer_of.values()}
    # Only rows with one parent, operation, outcome and input messages can pair: a batch job's
    # thousands of siblings are compared within such buckets, not each with each.
    buckets: dict[tuple[Any, ...], tuple[list[InferenceRow], list[InferenceRow]]] = {}
    for row in rows:
        if not row.parent_span_id or not (row.request_model or row.response_model):
            continue
        if _measured(row):
            if row.inference_id in outer_of:
                continue
            side = 1
        elif row.inference_id not in stands:
            side = 0
        else:
            continue
        prompt = prompts.of(row)
        if prompt:
            key = (row.project_id, row.trace_id, row.parent_span_id, row.operation, row.is_success, prompt)
            buckets.setdefault(key, ([], []))[side].append(row)
    across = False
    for unmeasured, measured in buckets.values():
        if not unmeasured or not measured:
            continue
        if owner is not None and not across:
            across = len({owner.get((row.trace_id, row.span_id)) for row in (*unmeasured, *measured)}) > 1
        # So many alike that a pair would be a guess (and comparing them all would take long).
        if len(unmeasured) * len(measured) > _MAX_SIBLING_PAIRS:
            continue
        pairs = [(a, b) for b in measured for a in unmeasured
                 if a.scope_name != b.scope_name and ts_ns(a.timestamp) <= ts_ns(b.timestamp)
                 and _same_call(a, b, prompts) and prompts.same_answer(a, b)]
        outers = Counter(a.inference_id for a, _ in pairs)
        inners = Counter(b.inference_id for _, b in pairs)
        for a, b in pairs:
            if outers[a.inference_id] == 1 and inners[b.inference_id] == 1:
                outer_of[b.inference_id] = a
    return across


def _fold_rows(batch: RowBatch, final: dict[str, InferenceRow], full_maps: dict[tuple[str, str], dict[str, str]],
               pricing: Pricing) -> None:
    """Each row of `final` (inference id -> the row that stands for its call) given way: what only
    it has fills that row, its messages of a direction that row has none of move there, and its
    span row, evaluations and inference id follow."""
    by_inference: dict[str, list[MessageRow]] = {}
    for m in batch.messages:
        by_inference.setdefault(m.inference_id, []).append(m)
    merged: dict[str, InferenceRow] = {}
    dropped: set[int] = set()
    for row in batch.inferences:
        outer = final.get(row.inference_id)
        if outer is None:
            continue
        merged[outer.inference_id] = outer
        priced_on = outer.input_tokens or outer.output_tokens
        for name in _MERGED:
            if not getattr(outer, name) and getattr(row, name):
                setattr(outer, name, getattr(row, name))
        for name, source in _MERGED_WITH_SOURCE:
            # A cost computed on no tokens gives way to the inner row's, with the tokens it took.
            empty = not getattr(outer, source) or (name == "cost_usd" and not priced_on)
            if empty and getattr(row, source):
                setattr(outer, name, getattr(row, name))
                setattr(outer, source, getattr(row, source))
        outer.is_streaming = outer.is_streaming or row.is_streaming
        # The inner span's messages of a direction the outer has none of (its output, say), or
        # only empty ones of (Mastra's model span records a tool-call answer as empty text).
        outer_messages = by_inference.setdefault(outer.inference_id, [])
        have = {m.direction for m in outer_messages if _said(m)}
        given = [m for m in by_inference.get(row.inference_id, []) if m.direction not in have]
        giving = {m.direction for m in given if _said(m)}
        for m in outer_messages:
            if m.direction in giving:
                dropped.add(id(m))
        outer_messages[:] = [m for m in outer_messages if id(m) not in dropped]
        standing = {m.direction for m in outer_messages}
        for m in given:
            # (A failed call's empty "answer" goes after the fold: `Mapper.fold`.)
            if m.direction in giving or m.direction not in standing:
                m.inference_id = outer.inference_id
                outer_messages.append(m)
    # Tokens taken from the inner row: the total and a priced cost follow them.
    for outer in merged.values():
        outer.total_tokens = max(outer.total_tokens, outer.input_tokens + outer.output_tokens)
        if outer.cost_source == "pricing":
            priced = pricing.cost(outer.response_model or outer.request_model, outer.input_tokens,
                                  outer.cached_input_tokens, outer.output_tokens, outer.cache_write_input_tokens)
            if priced is not None:
                outer.cost_usd = priced
    batch.inferences = [r for r in batch.inferences if r.inference_id not in final]
    batch.messages = [m for m in batch.messages if m.inference_id not in final and id(m) not in dropped]
    for fb in batch.feedback:
        if fb.inference_id in final:
            fb.inference_id = final[fb.inference_id].inference_id
    for span in batch.spans:
        outer = final.get(span.inference_id)
        if outer is not None:
            span.inference_id = outer.inference_id
            span.attributes = full_maps.get((span.trace_id, span.span_id), span.attributes)


# Pydantic Logfire (5.4, instrument_openai / instrument_anthropic) traces a stream as two spans: the
# request span, ended when the client returns the stream (request attributes and input messages
# only), and, once the stream is read, a zero-length log span "streaming response from ... took
# {duration}s" (logfire.span_type "log") with the request attributes again plus the answer, id and
# usage. The log is started in the context the call was made in: the request span's sibling, or,
# with no parent, the root of a trace of its own.
_LOGFIRE_STREAM_LOG = "streaming response from "


def _join_logfire_streams(batch: RowBatch, full_maps: dict[tuple[str, str], dict[str, str]],
                          pricing: Pricing, owner: dict[tuple[str, str], int] | None = None) -> bool:
    """A Logfire stream's log row is the completion of its request row: same scope, project,
    service, parent (and trace, under a parent), operation, request model and input messages
    (all of them), a request that succeeded and measured nothing, ended before the log; the
    earliest such pairs with the earliest log. One call, one inference, on the request span,
    streamed, timed from the request's start to the log, failed if the stream failed. Both spans
    must be in this batch (the requests of one mapping chunk): apart, they stay two rows
    (docs/conventions.md). True when a log and a request that could pair came in two requests
    (`owner`: (trace, span) -> request)."""
    logs = [r for r in batch.inferences
            if r.scope_name.startswith("logfire") and r.span_name.startswith(_LOGFIRE_STREAM_LOG)]
    if not logs:
        return False
    log_ids = {r.inference_id for r in logs}
    candidates = [r for r in batch.inferences
                  if r.scope_name.startswith("logfire") and r.inference_id not in log_ids and r.is_success
                  and not _measured(r)]
    if not candidates:
        return False
    prompts = _Prompts(batch.messages)

    def key(row: InferenceRow) -> tuple[Any, ...]:
        return (row.scope_name, row.project_id, row.service_name, row.parent_span_id,
                row.trace_id if row.parent_span_id else "", row.operation, row.request_model, prompts.of(row))

    waiting: dict[tuple[Any, ...], deque[InferenceRow]] = {}
    for row in sorted(candidates, key=lambda r: ts_ns(r.end_timestamp)):
        waiting.setdefault(key(row), deque()).append(row)
    across = owner is not None and any(
        any(owner.get((row.trace_id, row.span_id)) != owner.get((log.trace_id, log.span_id))
            for row in waiting.get(key(log), ()))
        for log in logs)
    final: dict[str, InferenceRow] = {}
    for log in sorted(logs, key=lambda r: ts_ns(r.timestamp)):
        queue = waiting.get(key(log))
        if not queue or ts_ns(queue[0].end_timestamp) > ts_ns(log.timestamp):
            continue
        request = queue.popleft()
        final[log.inference_id] = request
        request.is_streaming = True
        request.is_success = log.is_success
        request.latency_ms = max(request.latency_ms, (ts_ns(log.end_timestamp) - ts_ns(request.timestamp)) / 1e6)
        if ts_ns(log.end_timestamp) > ts_ns(request.end_timestamp):
            request.end_timestamp = log.end_timestamp
    if final:
        _fold_rows(batch, final, full_maps, pricing)
    return across


def _message_keys(conv: Conventions, family: Any, attrs: dict[str, Any]) -> set[str]:
    """Attribute keys that carry messages: their content lives in message rows, not twice on
    the inference row (the spans table keeps every attribute as sent)."""
    carries = conv.plan(family).carries_messages
    return {k for k in attrs if carries(k)}
