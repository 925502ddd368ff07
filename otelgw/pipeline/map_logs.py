"""Map an OTLP logs request: GenAI events become message and feedback rows of the inference
their trace/span ids point to; every other record goes to `logs`."""

from __future__ import annotations

from typing import Any

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
from otelgw.pipeline.messages import Message
from otelgw.pipeline.rows import LogRow, RowBatch, ts

DETAILS_EVENT = "gen_ai.client.inference.operation.details"


class _Legacy:
    """Legacy per-message events of one inference, in arrival order."""

    def __init__(self, project: str, at_ns: int) -> None:
        self.project = project
        self.at_ns = at_ns
        self.inputs: list[Message] = []
        self.outputs: list[tuple[int | None, Message]] = []


def _inference_id(attrs: dict[str, Any], trace_hex: str, span_hex: str) -> str:
    return explicit_uuid(attrs.get("otelgw.inference_id")) or derived_inference_id(trace_hex, span_hex)


def map_logs(mapper: Mapper, request: Any, project_header: str, received_ns: int) -> RowBatch:
    batch = RowBatch(messages=[], feedback=[], logs=[])
    legacy: dict[str, _Legacy] = {}
    conv = mapper.conventions
    otel_family = next((f for f in conv.families if f.name == "otel_genai"), None)
    for resource_logs in request.resource_logs:
        resource = resource_context(resource_logs.resource, project_header, mapper.options)
        resource_map, project, service = resource.attributes, resource.project, resource.service
        for scope_logs in resource_logs.scope_logs:
            scope_name = scope_logs.scope.name
            for index, record in enumerate(scope_logs.log_records):
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
                        group = legacy.setdefault(inference_id, _Legacy(project, at_ns))
                        direction, found_messages, choice = found
                        if direction == "input":
                            group.inputs.extend(found_messages)
                        else:
                            group.outputs.extend((choice, msg) for msg in found_messages)
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
        # A choice index says where an output goes; otherwise arrival order does.
        ordered = sorted(enumerate(group.outputs), key=lambda item: (item[1][0] if item[1][0] is not None else item[0]))
        mapper.add_messages(batch, inference_id, group.project, group.at_ns, group.inputs,
                            [msg for _, (_, msg) in ordered], "log")
    return batch
