"""Which spans the native fast path may write (`fast_path`, `store/native.py` has the SQL).

ClickHouse makes a span's row from the request bytes only where its SQL gives exactly the row the
Python mapper would: a span no GenAI family claims (no inference, no moved message attributes),
with no evaluation event, no attribute the mapper would drop, clip or turn into JSON the SQL does
not reproduce (kvlist values, doubles in `e` notation or inside arrays, duplicate keys), and no
text the masker would change. Everything else stays on the Python path, span by span; the
Python mapper is the reference and `tests/test_fastpath.py` holds the two to identical rows.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import msgspec

from otelgw.governance.masking import _SECRET_TRIGGER, Masker
from otelgw.pipeline.anyvalue import attrs_to_dict, to_json, to_str

# Characters msgspec and ClickHouse's toJSONString escape differently (upper vs lower hex, or
# not at all): a JSON-embedded string holding one stays in Python.
_JSON_UNSAFE = re.compile("[\x0b\x0e-\x1f\u2028\u2029]")

# A span's position in its request as one number (how a position travels to the writer):
# resource, scope and span index. An index past MAX_INDEX (a request of millions of empty scopes)
# keeps its spans in Python: the mapper checks.
POSITION_SHIFT = 21
MAX_INDEX = 1 << POSITION_SHIFT
# Bumped whenever the rules of what goes native change: it is part of the writer's deduplication
# tokens for span rows, so a replay under other rules writes rows again rather than skipping them.
RULES_VERSION = 1


def position_key(resource: int, scope: int, span: int) -> int:
    return (resource << (2 * POSITION_SHIFT)) | (scope << POSITION_SHIFT) | span


def unpack_position(key: int) -> tuple[int, int, int]:
    mask = MAX_INDEX - 1
    return key >> (2 * POSITION_SHIFT), (key >> POSITION_SHIFT) & mask, key & mask


class NativeSource(msgspec.Struct, frozen=True):
    """One trace request's bytes, for ClickHouse to read, and each resource's (project, service)
    as the mapper resolved them (the project header and resource attributes)."""

    payload: bytes
    resources: list[tuple[str, str]]


class NativeSpans(msgspec.Struct):
    """Spans of one source to write natively, by position key."""

    source: NativeSource
    positions: list[int]


def _float_ok(value: float) -> bool:
    # repr() switches to 'e' notation outside [1e-4, 1e16); ClickHouse's toString does not.
    return value == 0.0 or (math.isfinite(value) and 1e-4 <= abs(value) < 1e16)


def _leaf_ok(value: Any) -> bool:
    kind = value.__class__
    if kind is str:
        return not _JSON_UNSAFE.search(value)
    return kind is int or kind is bool or kind is bytes or value is None


def value_ok(value: Any, limit: int, in_json: bool) -> bool:
    """Does the SQL write this attribute value (as anyvalue.to_str does, unclipped)?"""
    kind = value.__class__
    if kind is str:
        return len(value) <= limit and not (in_json and _JSON_UNSAFE.search(value))
    if kind is bool or value is None:
        return limit >= 5
    if kind is int:
        return len(str(value)) <= limit
    if kind is float:
        return _float_ok(value) and len(repr(value)) <= limit
    if kind is bytes:
        return (len(value) + 2) // 3 * 4 <= limit
    if kind is list:
        return all(_leaf_ok(v) for v in value) and len(to_json(value)) <= limit
    return False


def rules_tag(max_attributes: int, max_chars: int, mask_pii: bool, masking: Any, code: list[str]) -> str:
    """A short digest of everything that decides which spans go native: the rules' version, the
    limits, the masking policy, and `code` (otelgw's and protobuf's versions, the convention
    tables' digest: which spans are GenAI, which fields are known). The writer's span tokens
    carry it."""
    state = msgspec.json.encode([RULES_VERSION, max_attributes, max_chars, mask_pii, masking, code])
    return "fp" + hashlib.blake2b(state, digest_size=5).hexdigest()


def canonical(message: Any, raw: bytes) -> bool:
    """Are `raw` exactly the bytes protobuf writes for `message`, with no unknown fields? Only
    then may ClickHouse read them: its Protobuf reader fails, or keeps an empty value, on what
    protobuf accepts otherwise (a field sent twice, a oneof set twice, a known field with another
    wire type, groups). Exporters write canonical bytes; anything else takes the Python path.
    Discards the message's unknown fields (the mapper never reads them)."""
    message.DiscardUnknownFields()
    return message.SerializeToString() == raw


class NativeCheck:
    """The fast path's eligibility rules for one gateway's limits and masking policy."""

    def __init__(self, max_attributes: int, max_chars: int, masker: Masker | None) -> None:
        self.max_attributes = max_attributes
        self.max_chars = max_chars
        self.masker = masker

    def project_ok(self, project: str) -> bool:
        """A project whose policy only masks secrets (no PII, rules, drops, hashes or metadata-only
        capture): anything more stays in Python."""
        if self.masker is None:
            return True
        policy = self.masker.policy(project)
        return not (policy.pii or policy.rules or policy.drop or policy.hash or policy.capture == "metadata")

    def _attrs_ok(self, kvs: Any, attrs: dict[str, Any], in_json: bool) -> bool:
        # Duplicate keys collapse in the mapper's dict but not in a ClickHouse map; past the
        # limit the mapper drops and counts.
        if len(attrs) != len(kvs) or (self.max_attributes and len(kvs) > self.max_attributes):
            return False
        if in_json and any(_JSON_UNSAFE.search(key) for key in attrs):
            return False
        limit = self.max_chars
        return all(value_ok(v, limit, in_json) for v in attrs.values())

    def resource_ok(self, resource: Any, attrs: dict[str, Any], project: str) -> bool:
        return self._attrs_ok(resource.attributes, attrs, False) and not self._masks(project, attrs.values())

    def span_ok(self, span: Any, attrs: dict[str, Any], events: list[Any], project: str) -> bool:
        """`events` are the mapper's SpanEvents of `span` (name, time, attribute dict)."""
        if not self._attrs_ok(span.attributes, attrs, False):
            return False
        texts: list[Any] = [span.status.message, *attrs.values()]
        for event, raw in zip(events, span.events, strict=True):
            if _JSON_UNSAFE.search(event.name) or not self._attrs_ok(raw.attributes, event.attrs, True):
                return False
            texts.extend(event.attrs.values())
        for link in span.links:
            link_attrs = attrs_to_dict(link.attributes)
            if _JSON_UNSAFE.search(link.trace_state) or not self._attrs_ok(link.attributes, link_attrs, True):
                return False
        return not self._masks(project, texts)

    def _masks(self, project: str, values: Any) -> bool:
        """Would the masker change any of these values? (Its own code decides, where one of the
        secrets' literal triggers is: masking.py runs a secret's pattern only there.)"""
        if self.masker is None:
            return False
        # As stored: bytes as base64, arrays as JSON (the masker sees those strings).
        texts = [v if v.__class__ is str else to_str(v) for v in values]
        if not _SECRET_TRIGGER.search("\x00".join(texts)):
            return False
        policy = self.masker.policy(project)
        return any(_SECRET_TRIGGER.search(t) and self.masker.mask_text(t, policy, {}) != t for t in texts)
