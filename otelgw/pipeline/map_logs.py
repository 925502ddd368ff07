"""Map an OTLP logs request: GenAI events become message and feedback rows of the inference
their trace/span ids point to; every other record goes to `logs`."""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from otelgw.pipeline import genai, messages
from otelgw.pipeline.anyvalue import any_to_py, attrs_to_dict, clip, str_map, to_json, to_str
from otelgw.pipeline.genai import SpanView
from otelgw.pipeline.mapper import (
    EVALUATION_EVENT,
    NIL_UUID,
    Mapper,
    derived_inference_id,
    explicit_uuid,
    resource_context,
)
from otelgw.pipeline.messages import Message, without_repeated_results
from otelgw.pipeline.rows import LogRow, RowBatch, ts

DETAILS_EVENT = "gen_ai.client.inference.operation.details"


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


def _event_key(record: Any, position: int, part: int) -> int:
    """The same record at the same place of a request (a retried export) gives the same key, so
    its message replaces itself; any other event of the call gets another (a 32-bit key: two of
    a call's n events collide with a chance of about n^2 / 2^33)."""
    digest = hashlib.blake2b(record.SerializeToString(deterministic=True), digest_size=8,
                             salt=position.to_bytes(8, "little"), person=part.to_bytes(8, "little")).digest()
    return int.from_bytes(digest[:4], "little")


def _inference_id(attrs: dict[str, Any], trace_hex: str, span_hex: str) -> str:
    return explicit_uuid(attrs.get("otelgw.inference_id")) or derived_inference_id(trace_hex, span_hex)


def map_logs(mapper: Mapper, request: Any, project_header: str, received_ns: int) -> RowBatch:
    batch = RowBatch(messages=[], feedback=[], logs=[])
    legacy: dict[str, _Legacy] = {}
    conv = mapper.conventions
    received_us = received_ns // 1000
    position = 0  # of the record in the request, across resources and scopes
    otel_family = next((f for f in conv.families if f.name == "otel_genai"), None)
    for resource_logs in request.resource_logs:
        resource = resource_context(resource_logs.resource, project_header, mapper.options)
        resource_map, project, service = resource.attributes, resource.project, resource.service
        for scope_logs in resource_logs.scope_logs:
            scope_name = scope_logs.scope.name
            for index, record in enumerate(scope_logs.log_records):
                position += 1
                attrs = attrs_to_dict(record.attributes, mapper.options.max_attributes)
                event_name = record.event_name or to_str(attrs.get("event.name", ""))
                at_ns = record.time_unix_nano or record.observed_time_unix_nano or received_ns
                trace_hex = record.trace_id.hex()
                span_hex = record.span_id.hex()
                linked = bool(trace_hex and span_hex)
                legacy_event = event_name in messages.LEGACY_INPUT_EVENTS or event_name == messages.LEGACY_OUTPUT_EVENT
                if linked and legacy_event:
                    body = any_to_py(record.body) if record.HasField("body") else None
                    found = messages.legacy_event(event_name, body, attrs)
                    if found:
                        inference_id = _inference_id(attrs, trace_hex, span_hex)
                        group = legacy.setdefault(inference_id, _Legacy(project))
                        direction, found_messages, choice = found
                        # A choice index says where an output goes; otherwise arrival order does.
                        order = min(choice if direction == "output" and choice is not None else position, 999)
                        events = [_Event(at_ns, received_us * 1000 + order, _event_key(record, position, part), msg)
                                  for part, msg in enumerate(found_messages)]
                        (group.inputs if direction == "input" else group.outputs).extend(events)
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
                batch.logs.append(LogRow(
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
                    attributes=str_map(attrs, mapper.options.max_attribute_chars),
                    resource_attributes=resource_map,
                    scope_name=scope_name,
                    flags=record.flags,
                ))
    for inference_id, group in legacy.items():
        inputs = group.inputs
        if len(inputs) > 1:
            kept = {id(m) for m in without_repeated_results([e.msg for e in inputs])}
            inputs = [e for e in inputs if id(e.msg) in kept]
        for direction, events in (("input", inputs), ("output", group.outputs)):
            batch.messages.extend(mapper.message_row(inference_id, group.project, ts(e.at_ns), direction, e.key, e.msg,
                                                     "log", arrival=e.arrival) for e in events)
    return batch
