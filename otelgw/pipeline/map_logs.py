"""Map an OTLP logs request: GenAI events become message and feedback rows of the inference
their trace/span ids point to; a record a log-record family claims (a coding agent's
`api_request` event: one record, one call) is an inference of its own and kept in `logs` too;
every other record goes to `logs`."""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from otelgw.pipeline import genai, messages
from otelgw.pipeline.anyvalue import any_to_py, attrs_to_dict, clip, str_map, to_json, to_str
from otelgw.pipeline.genai import SpanView, parse_timestamp_ns
from otelgw.pipeline.mapper import (
    EVALUATION_EVENT,
    NIL_UUID,
    Mapper,
    derived_inference_id,
    explicit_uuid,
    resource_context,
)
from otelgw.pipeline.messages import Message, without_repeated_results
from otelgw.pipeline.rows import MAX_NS, LogRow, RowBatch, ts

DETAILS_EVENT = "gen_ai.client.inference.operation.details"
INFERENCE_ID_ATTRIBUTE = "otelgw.inference_id"


# Places of one call's events in one request that `arrival` tells apart (past them, the key).
ARRIVAL_PLACES = 4096


class _Event(NamedTuple):
    """One message of a legacy event: its record's time, where it came (`arrival`) and a key of
    its own (`index`; see schema/015_message_arrival.sql)."""

    at_ns: int
    arrival: int
    key: int
    msg: Message


class _Legacy:
    """Legacy per-message events of one inference in this request, in arrival order."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.inputs: list[_Event] = []
        self.outputs: list[_Event] = []
        self._keys: set[tuple[str, int]] = set()

    def add(self, direction: str, at_ns: int, received_us: int, order: int | None, key: int, msg: Message) -> None:
        """`order`: a choice index, or None for the next place; `arrival` is the request's receive
        time (µs) and the place, which orders a call's events when they came in several requests."""
        events = self.inputs if direction == "input" else self.outputs
        place = min(max(order if order is not None else len(events), 0), ARRIVAL_PLACES - 1)
        while (direction, key) in self._keys:
            key = (key + 1) & 0xFFFFFFFF
        self._keys.add((direction, key))
        events.append(_Event(at_ns, received_us * ARRIVAL_PLACES + place, key, msg))


def _event_key(record: Any, part: int) -> int:
    """A key of the event's own, from its record: the same record sent again (an export retried,
    re-batched, or replayed from the log) replaces its message, as every other row replaces
    itself. Two records alike to the byte in one request are two messages (`_Legacy.add` moves a
    colliding key on); in two requests, one. (A 32-bit key: two of a call's n events in different
    requests collide with a chance of about n^2 / 2^33.)"""
    digest = hashlib.blake2b(record.SerializeToString(deterministic=True), digest_size=4,
                             person=part.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little")


def _inference_id(attrs: dict[str, Any], trace_hex: str, span_hex: str) -> str:
    return explicit_uuid(attrs.get("otelgw.inference_id")) or derived_inference_id(trace_hex, span_hex)


def _record_inference_id(record: Any, trace_hex: str, span_hex: str) -> str:
    """The id of the call a record says: from the record itself, so the same record sent again
    (a retried export) is the same row, and two calls under one span (every call of a Claude Code
    interaction) are two."""
    digest = hashlib.blake2b(record.SerializeToString(deterministic=True), digest_size=12).hexdigest()
    return derived_inference_id(trace_hex, f"{span_hex}:log:{digest}")


def _record_time_ns(record: Any, attrs: dict[str, Any]) -> int:
    """When the record was written: its time, else its `event.timestamp` attribute (Codex CLI
    sends records with no time but that), else when it was observed; 0 when nothing says."""
    if record.time_unix_nano:
        return record.time_unix_nano
    stamp = attrs.get("event.timestamp")
    parsed = parse_timestamp_ns(stamp) if stamp is not None else None
    return parsed if parsed is not None and 0 < parsed < MAX_NS else record.observed_time_unix_nano


def _event_names(record: Any, attrs: dict[str, Any]) -> tuple[str, str]:
    """The record's event name (its `event_name`, else its `event.name` attribute), and the
    attribute's when the two differ (Codex CLI's event_name is a source line, its event is named
    in the attribute): a log-record family is looked up by either."""
    named = to_str(attrs["event.name"]) if "event.name" in attrs else ""
    if record.event_name:
        return record.event_name, (named if named != record.event_name else "")
    return named, ""


_Place = tuple[int, int, int]  # (resource, scope, record) of a record in its request
_CompanionKey = tuple[int, str, str, str]  # (resource, scope name, event name, key value)
# Content joined from companion records, at most this many times the request's own size (one
# prompt record joined to thousands of calls would otherwise make gigabytes of message rows).
JOIN_BUDGET_FACTOR = 4


class _Companions:
    """A request's records that say more of a log-record family's call (Claude Code's prompts
    and answers), by what joins them to it (the first of each), and which call each joined."""

    def __init__(self, request: Any, conv: Any, max_attributes: int) -> None:
        # Every record's attributes decoded here, for the mapping to use again.
        self.decoded: dict[_Place, dict[str, Any]] = {}
        self.joined: dict[_Place, str] = {}
        self._found: dict[_CompanionKey, tuple[_Place, dict[str, Any]]] = {}
        if not conv.companion_events:
            self._budget = 0
            return
        self._budget = JOIN_BUDGET_FACTOR * request.ByteSize()
        keys = {c.event_name: c.key for fam in conv.log_families for c in fam.companions}
        for r, resource_logs in enumerate(request.resource_logs):
            for s, scope_logs in enumerate(resource_logs.scope_logs):
                scope_name = scope_logs.scope.name
                if not scope_name.startswith(conv.companion_scopes):
                    continue
                for i, record in enumerate(scope_logs.log_records):
                    attrs = self.decoded[(r, s, i)] = attrs_to_dict(record.attributes, max_attributes)
                    event_name, other = _event_names(record, attrs)
                    if event_name not in keys:
                        event_name = other
                    value = to_str(attrs.get(keys[event_name], "")) if event_name in keys else ""
                    if value.strip():
                        self._found.setdefault((r, scope_name, event_name, value), ((r, s, i), attrs))

    def view(self, family: Any, attrs: dict[str, Any], resource: int, scope_name: str,
             call_id: str) -> dict[str, Any]:
        """The call record's attributes with its companions' as "<event>.<attribute>" (what the
        table reads); within the request's budget of joined content."""
        view = attrs
        for companion in family.companions:
            value = to_str(attrs.get(companion.key, ""))
            found = self._found.get((resource, scope_name, companion.event_name, value)) if value.strip() else None
            if found is None:
                continue
            place, extra = found
            kept = {f"{companion.event_name}.{k}": v for k, v in extra.items()
                    if not (isinstance(v, str) and (v in companion.absent or not v.strip()))}
            self._budget -= sum(len(v) for v in kept.values() if isinstance(v, str))
            if self._budget < 0:
                break
            self.joined.setdefault(place, call_id)
            view = {**view, **kept}
        return view


def map_logs(mapper: Mapper, request: Any, project_header: str, received_ns: int) -> RowBatch:
    batch = RowBatch(inferences=[], messages=[], feedback=[], logs=[])
    legacy: dict[str, _Legacy] = {}
    conv = mapper.conventions
    companions = _Companions(request, conv, mapper.options.max_attributes)
    log_rows: dict[_Place, LogRow] = {}
    received_us = received_ns // 1000
    otel_family = next((f for f in conv.families if f.name == "otel_genai"), None)
    for r_index, resource_logs in enumerate(request.resource_logs):
        resource = resource_context(resource_logs.resource, project_header, mapper.options)
        resource_map, project, service = resource.attributes, resource.project, resource.service
        for s_index, scope_logs in enumerate(resource_logs.scope_logs):
            scope_name = scope_logs.scope.name
            for index, record in enumerate(scope_logs.log_records):
                attrs = companions.decoded.get((r_index, s_index, index)) or attrs_to_dict(
                    record.attributes, mapper.options.max_attributes)
                event_name, other_name = _event_names(record, attrs)
                record_ns = _record_time_ns(record, attrs)
                at_ns = record_ns or received_ns
                trace_hex = record.trace_id.hex()
                span_hex = record.span_id.hex()
                linked = bool(trace_hex and span_hex)
                call_name = event_name
                family = conv.detect_record(event_name, attrs, scope_name) if conv.log_families else None
                if family is None and other_name and conv.log_families:
                    call_name = other_name
                    family = conv.detect_record(call_name, attrs, scope_name)
                # A call needs a time of its own (a row keyed by when it was received would be
                # a second row each time the record is sent again), and a record in a sampled
                # trace is no call of an `unlinked_only` family (the trace's spans say it).
                said_by_span = family is not None and family.unlinked_only and linked and bool(record.flags & 1)
                call_id = ""
                if family is not None and record_ns and not said_by_span:
                    # Named as its body names it where that is the event's full name (Claude Code:
                    # body "claude_code.api_request", event.name "api_request").
                    body = record.body.string_value if record.body.HasField("string_value") else ""
                    name = body if body.endswith(call_name) and len(body) <= 128 else call_name
                    call_id = _record_inference_id(record, trace_hex, span_hex)
                    # The row's attributes stay the call record's own.
                    view = companions.view(family, attrs, r_index, scope_name, call_id)
                    mapper.record_inference(batch, family, name, scope_name, min(at_ns, MAX_NS), view,
                                            project, service, trace_hex, span_hex, call_id,
                                            str_map(attrs, mapper.options.max_attribute_chars))
                legacy_event = event_name in messages.LEGACY_INPUT_EVENTS or event_name == messages.LEGACY_OUTPUT_EVENT
                if linked and legacy_event:
                    body = any_to_py(record.body) if record.HasField("body") else None
                    found = messages.legacy_event(event_name, body, attrs)
                    if found:
                        inference_id = _inference_id(attrs, trace_hex, span_hex)
                        group = legacy.setdefault(inference_id, _Legacy(project))
                        direction, found_messages, choice = found
                        for part, msg in enumerate(found_messages):
                            # A choice index says where an output goes; otherwise arrival order does.
                            group.add(direction, at_ns, received_us, choice if direction == "output" else None,
                                      _event_key(record, part), msg)
                        continue
                if linked and event_name == DETAILS_EVENT:
                    view = SpanView("", scope_name, at_ns, attrs)
                    inputs, outputs = genai.extract_messages(conv, otel_family, view)
                    if inputs or outputs:
                        mapper.add_messages(batch, _inference_id(attrs, trace_hex, span_hex), project, at_ns,
                                            inputs, outputs, "log")
                        continue
                if event_name == EVALUATION_EVENT:
                    target = _inference_id(attrs, trace_hex, span_hex) if span_hex else NIL_UUID
                    batch.feedback.append(mapper.evaluation(attrs, target, project, trace_hex, span_hex, at_ns, "log",
                                                            index, service))
                    continue
                body = any_to_py(record.body) if record.HasField("body") else None
                row = LogRow(
                    project_id=project,
                    service_name=service,
                    timestamp=ts(at_ns),
                    observed_timestamp=ts(record.observed_time_unix_nano or received_ns),
                    trace_id=trace_hex,
                    span_id=span_hex,
                    severity_number=record.severity_number if 0 <= record.severity_number < 256 else 0,
                    severity_text=record.severity_text,
                    event_name=event_name,
                    body=clip(body if isinstance(body, str) else ("" if body is None else to_json(body)),
                              mapper.options.max_message_chars),
                    # The call's record names its inference: erasing the call erases the record.
                    attributes=str_map({**attrs, INFERENCE_ID_ATTRIBUTE: call_id} if call_id else attrs,
                                       mapper.options.max_attribute_chars),
                    resource_attributes=resource_map,
                    scope_name=scope_name,
                    flags=record.flags,
                )
                batch.logs.append(row)
                if (r_index, s_index, index) in companions.decoded:  # (it may be a companion)
                    log_rows[(r_index, s_index, index)] = row
    # A companion record names the (first) call it said more of, as the call's record does.
    for place, call_id in companions.joined.items():
        row = log_rows.get(place)
        if row is not None and INFERENCE_ID_ATTRIBUTE not in row.attributes:
            row.attributes = {**row.attributes, INFERENCE_ID_ATTRIBUTE: call_id}
    if batch.inferences:
        mapper.settle_values(batch)
    for inference_id, group in legacy.items():
        inputs = group.inputs
        if len(inputs) > 1:
            kept = {id(m) for m in without_repeated_results([e.msg for e in inputs])}
            inputs = [e for e in inputs if id(e.msg) in kept]
        for direction, events in (("input", inputs), ("output", group.outputs)):
            batch.messages.extend(mapper.message_row(inference_id, group.project, ts(e.at_ns), direction, e.key, e.msg,
                                                     "log", arrival=e.arrival) for e in events)
    return batch
