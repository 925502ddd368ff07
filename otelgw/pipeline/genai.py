"""Read inference fields and messages out of one span's attributes and events, as the
convention tables say. Pure functions over plain values; the mapper builds rows from them."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from otelgw.pipeline import messages as msgs
from otelgw.pipeline.messages import Message
from otelgw.semconv import FIELD_TYPES, Conventions, Family, MessageSpec, Plan, Source


class SpanEvent(msgspec.Struct, gc=False):
    name: str
    time_ns: int
    attrs: dict[str, Any]


class SpanView(msgspec.Struct, gc=False):
    """What extraction needs of a span (or of a log record standing in for one)."""

    name: str
    scope_name: str
    start_ns: int
    attrs: dict[str, Any]
    events: list[SpanEvent] = []


class Extracted(msgspec.Struct, gc=False):
    values: dict[str, Any]
    # field -> where its value came from ("attribute:gen_ai.server.time_to_first_token", ...)
    sources: dict[str, str]


MAX_COUNT = 10**15
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _coerce(value: Any, kind: type) -> Any:
    """The value as `kind`, or None when it cannot be one (never raises)."""
    if kind is str:
        if isinstance(value, str):
            return value or None
        if isinstance(value, list):
            return _coerce(value[0], str) if value else None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        return None
    if kind is int:
        # Counts (tokens) past MAX_COUNT are not real and would overflow UInt64 sums.
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value if 0 <= value <= MAX_COUNT else None
        number = _coerce(value, float) if isinstance(value, (float, str)) else None
        return int(number) if number is not None and 0 <= number <= MAX_COUNT else None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str):
            low = value.strip().lower()
            return True if low in _TRUE else False if low in _FALSE else None
        return None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _walk(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isascii() and part.isdigit() and len(part) <= 6 and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
        if doc is None:
            return None
    return doc


def parse_timestamp_ns(value: Any) -> int | None:
    """An ISO-8601 string (possibly JSON-quoted, as Langfuse sends it) or a ns/ms/s number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not 0 < value < 2**63:
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            return None
        if value > 1e17:
            return int(value)
        if value > 1e14:
            return int(value * 1_000)
        if value > 1e11:
            return int(value * 1_000_000)
        return int(value * 1_000_000_000)
    if not isinstance(value, str):
        return None
    text = value.strip().strip('"')
    if not text:
        return None
    if text.isdigit():
        return parse_timestamp_ns(int(text)) if text.isascii() and len(text) <= 20 else None
    frac_ns = 0
    # datetime keeps microseconds only: cut nanosecond fractions off and add them back.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        tail = rest[len(digits):]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        text = head + tail
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1_000_000_000 + frac_ns


class _Reader:
    """Reads sources for one span, parsing each JSON attribute at most once."""

    __slots__ = ("view", "_json")

    def __init__(self, view: SpanView) -> None:
        self.view = view
        self._json: dict[str, Any] = {}

    def json(self, key: str) -> Any:
        if key in self._json:
            return self._json[key]
        raw = self.view.attrs.get(key)
        doc = msgs.parse_json_text(raw) if isinstance(raw, str) else raw if isinstance(raw, (dict, list)) else None
        self._json[key] = doc
        return doc

    def first_event(self, name: str, having: str | None = None) -> SpanEvent | None:
        best: SpanEvent | None = None
        for event in self.view.events:
            if event.name == name and (having is None or having in event.attrs) \
                    and (best is None or event.time_ns < best.time_ns):
                best = event
        return best

    def read(self, src: Source) -> Any:
        view = self.view
        kind = src.kind
        if kind == "attribute":
            value = view.attrs.get(src.key)
        elif kind == "json":
            value = _walk(self.json(src.key), src.path) if src.key in view.attrs else None
            if src.plus_details and _is_number(value):
                parent = _walk(self.json(src.key), src.path[:-1])
                if isinstance(parent, dict):
                    prefix = src.path[-1] + "_"
                    # A sibling that is no plausible count (negative, huge) is not added.
                    value += sum(v for k, v in parent.items()
                                 if k.startswith(prefix) and _is_number(v) and 0 <= v < 2**53)
        elif kind == "event":
            event = self.first_event(src.event)
            value = (event.time_ns - view.start_ns) / 1e6 if event and event.time_ns >= view.start_ns else None
        elif kind == "event_attribute":
            event = self.first_event(src.event)
            value = event.attrs.get(src.key) if event else None
        elif kind == "span_name" or kind == "scope_name":
            assert src.pattern is not None
            match = src.pattern.search(view.name if kind == "span_name" else view.scope_name)
            value = match.group(1) if match else None
        else:  # since_start
            at = parse_timestamp_ns(view.attrs.get(src.key))
            value = (at - view.start_ns) / 1e6 if at is not None and at >= view.start_ns else None
        if value is None:
            return None
        if src.present:
            return True
        # Trimmed first: a map names the trimmed value ("google.generative-ai" -> "google" -> ...).
        if src.until_last and isinstance(value, str) and src.until_last in value:
            value = value.rsplit(src.until_last, 1)[0] or None
            if value is None:
                return None
        if src.mapping is not None and isinstance(value, str):
            value = src.mapping.get(value.lower(), value)
        if src.lower and isinstance(value, str):
            value = value.lower()
        return value


def _fields_to_read(plan: Plan, keys: tuple[str, ...], has_events: bool) -> list[tuple[str, Any, list[Source]]]:
    """The fields a span with these attribute keys can fill, each with its sources in rank order."""
    cache_key = (keys, has_events)
    found = plan.fields_cache.get(cache_key)
    if found is not None:
        return found
    candidates: dict[str, list[tuple[int, Source]]] = {}
    by_key = plan.by_key
    for key in keys:
        hits = by_key.get(key)
        if hits:
            for field, rank, src in hits:
                candidates.setdefault(field, []).append((rank, src))
    for field, rank, src in plan.keyless:
        if src.kind == "span_name" or src.kind == "scope_name" or has_events:
            candidates.setdefault(field, []).append((rank, src))
    found = [(field, FIELD_TYPES[field], [src for _, src in sorted(ranked, key=_rank)])
             for field, ranked in candidates.items()]
    # Keys come from requests: at most 1,024 sets of at most 4 KiB of key text are kept.
    if sum(map(len, keys)) <= 4096:
        if len(plan.fields_cache) >= 1024:
            plan.fields_cache.clear()
        plan.fields_cache[cache_key] = found
    return found


def extract_fields(conv: Conventions, family: Family | None, view: SpanView) -> Extracted:
    plan = conv.plan(family)
    reader = _Reader(view)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field, kind, ranked in _fields_to_read(plan, tuple(view.attrs), bool(view.events)):
        for src in ranked:
            raw = reader.read(src)
            if raw is None:
                continue
            value = _coerce(raw, kind)
            if value is None:
                continue
            if src.scale != 1.0 and kind in (int, float):
                value = kind(value * src.scale)
            values[field] = value
            sources[field] = src.label
            break
    if family is not None:
        for field, value in family.defaults.items():
            values.setdefault(field, value)
    return Extracted(values, sources)


def _rank(item: tuple[int, Source]) -> int:
    return item[0]


def _from_spec(spec: MessageSpec, reader: _Reader,
               event_messages: list[tuple[str, Message, int | None]]) -> list[Message]:
    attrs = reader.view.attrs
    if spec.shape == "events":
        return [m for direction, m, _ in event_messages if direction == spec.direction]
    if spec.shape == "indexed":
        return msgs.from_indexed(spec, attrs)
    if spec.event:
        # The first such event that carries the attribute: Strands Agents sends one
        # gen_ai.client.inference.operation.details span event per attribute.
        event = reader.first_event(spec.event, spec.attribute)
        value = event.attrs.get(spec.attribute) if event else None
    else:
        value = attrs.get(spec.attribute)
    if (value is None or value == "") and spec.shape != "text":
        return []
    if spec.mime_attribute and attrs.get(spec.mime_attribute) not in (None, "application/json"):
        return []
    if spec.shape == "json":
        if spec.json_only and isinstance(value, (str, bytes)):
            value = msgs.parse_json_text(value)
            if value is None:
                return []
        if spec.path:
            doc = msgs.parse_json_text(value) if isinstance(value, (str, bytes)) else value
            value = _walk(doc, tuple(p for p in spec.path.split(".") if p))
            if value is None:
                return []
        return msgs.from_json(value, spec.default_role)
    if spec.shape == "role_lines":
        return msgs.from_role_lines(value)
    return msgs.from_text(spec, attrs, value)


# Libraries whose message events carry Bedrock Converse blocks as JSON text (Strands Agents:
# Python's scope strands.telemetry.tracer, TypeScript's strands-agents).
_CONVERSE_EVENT_SCOPES = ("strands.telemetry", "strands-agents")


def legacy_event_messages(events: list[SpanEvent], scope_name: str = "") -> list[tuple[str, Message, int | None]]:
    out: list[tuple[str, Message, int | None]] = []
    converse = scope_name.startswith(_CONVERSE_EVENT_SCOPES)
    for event in events:
        if event.name in msgs.LEGACY_INPUT_EVENTS or event.name == msgs.LEGACY_OUTPUT_EVENT:
            found = msgs.legacy_event(event.name, None, event.attrs, converse)
            if found:
                direction, messages, choice = found
                out.extend((direction, msg, choice) for msg in messages)
    return out


def extract_messages(conv: Conventions, family: Family | None, view: SpanView) -> tuple[list[Message], list[Message]]:
    """(input messages with system instructions first, output messages)."""
    reader = _Reader(view)
    event_messages = legacy_event_messages(view.events, view.scope_name) if view.events else []
    found: dict[str, list[Message]] = {}
    hollow: dict[str, list[Message]] = {}
    for spec in conv.plan(family).messages:
        if spec.direction in found or (spec.direction in hollow and not spec.fills_empty):
            continue
        got = _from_spec(spec, reader, event_messages)
        if not got:
            continue
        if spec.direction not in hollow and not any(m.content or m.tool_calls or m.tool_call_id for m in got):
            # Messages with nothing in them: a later `fills_empty` source may say more.
            hollow[spec.direction] = got
        elif spec.direction not in hollow or any(m.content or m.tool_calls for m in got):
            found[spec.direction] = got
    for direction, got in hollow.items():
        if direction not in found:
            found[direction] = got
        elif len(got) == len(found[direction]):  # one message a choice on both sides
            for before, after in zip(got, found[direction], strict=True):
                after.finish_reason = after.finish_reason or before.finish_reason
    outputs = found.get("output", [])
    if view.scope_name.startswith(_CHUNKED_OUTPUT_SCOPES):
        outputs = _joined_chunks(outputs)
    return with_system(found.get("system", []), found.get("input", [])), outputs


# Libraries that send a streamed answer as one output message per chunk (Google ADK 2.13). Only
# theirs: elsewhere several output messages are several choices.
_CHUNKED_OUTPUT_SCOPES = ("gcp.vertex.agent",)


def _joined_chunks(outputs: list[Message]) -> list[Message]:
    """A streamed answer sent as one output message per chunk (every message but the last without
    a finish reason, the last with it) is one message: the conventions' output messages are
    choices, and a stream of one choice answered once."""
    if len(outputs) < 2 or not outputs[-1].finish_reason:
        return outputs
    role = outputs[0].role
    if any(m.finish_reason or m.role != role or m.tool_calls or m.tool_call_id for m in outputs[:-1]) \
            or outputs[-1].role != role or outputs[-1].tool_calls:
        return outputs
    last = outputs[-1]
    last.content = "".join(m.content for m in outputs)
    return [last]


def with_system(system: list[Message], inputs: list[Message]) -> list[Message]:
    """System instructions first, unless the input messages carry them already (OpenLIT sends
    the system prompt both in `gen_ai.input.messages` and in `gen_ai.system_instructions`)."""
    if not system:
        return inputs
    present = {m.content for m in inputs if m.role == "system"}
    return [m for m in system if m.content not in present] + inputs
