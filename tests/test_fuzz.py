"""Fuzz and property tests: the decoders, the mappers and row encoding against hostile input.

The contract under test:
  * `decode(signal, body, encoding)` returns a Decoded or raises DecodeError, for any bytes,
    and never hangs;
  * for any Decoded, map_traces / map_logs / map_metrics and `encode_batch` do not raise, and
    every JSONEachRow line is strict JSON whose values fit their ClickHouse columns (types,
    unsigned ranges, UUIDs, timestamps in the form `rows.ts` writes);
  * valid items in a request that also carries invalid ones are kept (OTLP partial success).

Inputs: random bytes; every prefix, bit flips and byte-level mutations of the captured fixtures;
structured requests built by hypothesis with hostile values on the keys the convention tables
read; OTLP/JSON with wrong types anywhere; deep AnyValue nesting; huge values and counts;
invalid UTF-8; NaN/inf; extreme timestamps; duplicate keys; and a few of the nastiest bodies
sent to a running gateway over HTTP and gRPC.

Fixed bugs: FIXED_BUGS lists what this file found, all fixed since; each keeps its minimal
reproducer (`@known(...)`) as a regression test. Nothing is tolerated: any exception fails.

Reproducible: every hypothesis test is derandomized, bounded, and keeps no example database. For a
deeper local hunt: OTELGW_FUZZ_SCALE=<n> (n times the examples), OTELGW_FUZZ_RANDOM=1 (a new seed
each run), OTELGW_FUZZ_SLOW=1 (also maps a 1M-span request end to end, ~30 s on its own).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import random
import re
import time
import traceback
import uuid
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import msgspec
import pytest
from fixtures_lib import CAPTURED, SHARED
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_client import get_json, grpc_export, post, post_otlp

import otelgw
from otelgw.config import Config
from otelgw.pipeline import messages as otel_messages
from otelgw.pipeline.anyvalue import DROPPED_ATTRIBUTES, TRUNCATED
from otelgw.pipeline.map_logs import DETAILS_EVENT, map_logs
from otelgw.pipeline.map_metrics import map_metrics
from otelgw.pipeline.mapper import EVALUATION_EVENT, Mapper
from otelgw.pipeline.request import REQUEST_TYPES, Decoded, Signal
from otelgw.pipeline.rows import (
    MAX_NS,
    TABLES,
    FeedbackRow,
    InferenceRow,
    LogRow,
    MessageRow,
    MetricPointRow,
    RowBatch,
    SpanRow,
    UnmappedRow,
    encode_batch,
    ts,
)
from otelgw.pipeline.workers import build_mapper
from otelgw.protowire import len_field as field  # one length-delimited field
from otelgw.receiver.decode import DecodeError, Encoding, decode
from otelgw.semconv import load_tables

pytestmark = pytest.mark.timeout(120)

# OTELGW_FUZZ_SCALE=20 runs 20x the examples; OTELGW_FUZZ_RANDOM=1 draws a fresh seed each run
# (exploration: a failure found that way is printed with @reproduce_failure to pin it down).
SCALE = float(os.environ.get("OTELGW_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=int(150 * SCALE),
    deadline=None,
    derandomize=os.environ.get("OTELGW_FUZZ_RANDOM") != "1",
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.filter_too_much],
)


def fuzz(max_examples: int) -> settings:
    return settings(FUZZ, max_examples=max(1, int(max_examples * SCALE)))


RECEIVED_NS = 1_764_150_000_000_000_000
INGESTED_AT = ts(RECEIVED_NS)
OTELGW_DIR = Path(otelgw.__file__).resolve().parent
TESTS_DIR = Path(__file__).resolve().parent
FIXTURE_DIRS = (SHARED, CAPTURED)
SLOW = os.environ.get("OTELGW_FUZZ_SLOW") == "1"

TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


# -- known bugs ----------------------------------------------------------------------------------

class KnownBug(NamedTuple):
    where: str  # "otelgw/<file>.py:<function>": the innermost otelgw frame the exception left
    exc: tuple[type[BaseException], ...]
    what: str


# Bugs this file found, all fixed; their reproducers below are regression tests now.
FIXED_BUGS: dict[str, KnownBug] = {
    "json-deep-nesting": KnownBug(
        "otelgw/receiver/decode.py:_from_json", (RecursionError,),
        "msgspec raises RecursionError (not msgspec.DecodeError) for JSON nested ~1000 deep: HTTP 500"),
    "json-invalid-utf8": KnownBug(
        "otelgw/receiver/decode.py:_from_json", (UnicodeDecodeError,),
        "msgspec raises UnicodeDecodeError for invalid UTF-8 inside a JSON string: HTTP 500"),
    "json-huge-int-double": KnownBug(
        "otelgw/receiver/decode.py:_from_json", (OverflowError,),
        "ParseDict raises OverflowError for an integer > 1.8e308 in a double field: HTTP 500"),
    "attribute-json-deep-nesting": KnownBug(
        "otelgw/pipeline/messages.py:parse_json_text", (RecursionError,),
        "an attribute holding deeply nested JSON text crashes the mapper (the whole request is dead-lettered)"),
    "since-start-timestamp": KnownBug(
        "otelgw/pipeline/genai.py:parse_timestamp_ns", (OverflowError, ValueError),
        "a digit-only timestamp string that is huge, > 4300 digits or a Unicode digit crashes the mapper"),
    "indexed-message-index": KnownBug(
        "otelgw/pipeline/messages.py:from_indexed", (ValueError,),
        "a flattened message index that isdigit() but int() rejects ('²', > 4300 digits) crashes the mapper"),
    "token-count-overflow": KnownBug(
        "otelgw/pipeline/mapper.py:_inference", (),
        "token counts above 2**64-1 (\"1e300\", 1e300) reach UInt64 columns; ClickHouse stores 0"),
}


def known(name: str, raises: Any = None, note: str = "") -> pytest.MarkDecorator:
    """A reproducer of a bug this file found (listed in FIXED_BUGS). They are all fixed, so the
    reproducers run as ordinary regression tests; the mark only names the bug."""
    assert name in FIXED_BUGS, name
    return pytest.mark.filterwarnings("default")


class OutOfRange(AssertionError):
    """A row value that its ClickHouse column cannot hold."""

    def __init__(self, table: str, column: str, value: Any) -> None:
        super().__init__(f"{table}.{column} = {str(value)[:80]} does not fit the column")
        self.table = table
        self.column = column


def _origin(exc: BaseException) -> str:
    """'otelgw/<file>:<function>' of the innermost otelgw frame in the exception's traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(OTELGW_DIR):
            return f"otelgw/{path.relative_to(OTELGW_DIR).as_posix()}:{frame.name}"
    return ""


def known_bug(exc: BaseException) -> str | None:
    """No bug is tolerated any more: every failure fails the test."""
    return None


def tolerate_known(fn: Any, *args: Any) -> Any:
    """Run fn; a known bug is recorded as a hypothesis event and returns None, anything else
    propagates (and fails the test)."""
    try:
        return fn(*args)
    except Exception as exc:
        bug = known_bug(exc)
        if bug is None:
            raise
        event(f"known bug: {bug}")
        return None


# -- the contract --------------------------------------------------------------------------------

@cache
def mapper() -> Mapper:
    return build_mapper(Config())


def stored_payload(body: bytes, encoding: Encoding, decoded: Decoded) -> bytes:
    """What the gateway's write-ahead log keeps for a decoded request (receiver/ingest.py): the
    body itself when it is protobuf and nothing was removed, else the validated message."""
    if encoding is Encoding.PROTOBUF and not decoded.rejected:
        return body
    return decoded.message.SerializeToString()


def map_message(signal: Signal, message: Any) -> RowBatch:
    if signal is Signal.TRACES:
        return mapper().map_traces(message, "", RECEIVED_NS)
    if signal is Signal.LOGS:
        return map_logs(mapper(), message, "", RECEIVED_NS)
    return map_metrics(message, "", RECEIVED_NS, mapper().options)


ROW_TYPES: dict[str, type] = {
    "inferences": InferenceRow, "messages": MessageRow, "feedback": FeedbackRow, "spans": SpanRow,
    "logs": LogRow, "metric_points": MetricPointRow, "unmapped_attributes": UnmappedRow,
}
TIME_COLUMNS = frozenset({"timestamp", "end_timestamp", "start_time", "end_time", "observed_timestamp",
                          "start_timestamp", "last_seen", "ingested_at"})
UUID_COLUMNS = {"inferences": {"inference_id"}, "messages": {"inference_id"},
                "feedback": {"feedback_id", "inference_id"}}
# Every integer column is unsigned; these are narrower than UInt64.
UINT_LIMITS = {("messages", "index"): 2**32, ("logs", "severity_number"): 2**8, ("logs", "flags"): 2**32}
TS_RE = re.compile(r"(\d{10,})\.(\d{9})|(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\.(\d{9})")


@lru_cache(maxsize=65536)
def ts_to_ns(text: str) -> int:
    match = TS_RE.fullmatch(text)
    assert match, f"timestamp {text!r} is not in the form rows.ts writes"
    if match.group(1):
        return int(match.group(1)) * 1_000_000_000 + int(match.group(2))
    day = match.group(3)
    when = datetime(int(day[:4]), int(day[5:7]), int(day[8:10]), int(day[11:13]), int(day[14:16]), int(day[17:19]),
                    tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + int(match.group(4))


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


NON_FINITE_TEXT = ("nan", "inf", "-inf")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@cache
def row_columns(table: str) -> tuple[frozenset[str], tuple[tuple[str, Any], ...]]:
    fields = msgspec.structs.fields(ROW_TYPES[table])
    return frozenset(f.encode_name for f in fields), tuple((f.encode_name, f.type) for f in fields)


def check_row(table: str, row: dict[str, Any]) -> None:
    names, columns = row_columns(table)
    assert row.keys() == names, f"{table}: columns {sorted(row)}"
    for name, kind in columns:
        value = row[name]
        if kind is str:
            assert isinstance(value, str), f"{table}.{name}: {value!r}"
            if name in TIME_COLUMNS:
                assert 0 <= ts_to_ns(value) <= MAX_NS, f"{table}.{name}: {value!r}"
            elif name in UUID_COLUMNS.get(table, ()):
                assert str(uuid.UUID(value)) == value, f"{table}.{name}: {value!r}"
        elif kind is bool:
            assert isinstance(value, bool), f"{table}.{name}: {value!r}"
        elif kind is int:
            assert isinstance(value, int) and not isinstance(value, bool), f"{table}.{name}: {value!r}"
            if not 0 <= value < UINT_LIMITS.get((table, name), 2**64):
                raise OutOfRange(table, name, value)
        elif kind in (float, float | None):
            # NaN / inf would be written as null (read as the column default): such columns take
            # float | str instead.
            assert value is None or _is_number(value), f"{table}.{name}: {value!r}"
        elif kind in (float | str, float | str | None):
            # Non-finite doubles travel as the strings ClickHouse reads into Float64.
            assert value is None or _is_number(value) or value in NON_FINITE_TEXT, f"{table}.{name}: {value!r}"
        elif kind == dict[str, str]:
            assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), f"{table}.{name}"
        elif kind == list[int]:
            assert isinstance(value, list), f"{table}.{name}"
            for item in value:
                if not (isinstance(item, int) and 0 <= item < 2**64):
                    raise OutOfRange(table, name, item)
        elif kind == list[float]:
            assert isinstance(value, list) and all(v is None or _is_number(v) for v in value), f"{table}.{name}"
        elif kind == list[float | str]:
            assert isinstance(value, list) and all(_is_number(v) or v in NON_FINITE_TEXT for v in value), \
                f"{table}.{name}"
        else:  # pragma: no cover - a new column type: teach this check about it
            raise AssertionError(f"{table}.{name}: unchecked column type {kind!r}")


def check_batch(batch: RowBatch, decoded: Decoded) -> list[dict[str, Any]]:
    """Encode the batch and check every line; returns the span rows (or logs / points) as dicts."""
    encoded = encode_batch(batch, INGESTED_AT)
    assert encoded.rows == {t: len(getattr(batch, t)) for t in TABLES if getattr(batch, t)}
    main = {"traces": "spans", "logs": "logs", "metrics": "metric_points"}[decoded.signal]
    main_rows: list[dict[str, Any]] = []
    for table, block in encoded.blocks.items():
        assert block.endswith(b"\n")
        lines = block[:-1].split(b"\n")
        assert len(lines) == encoded.rows[table]
        for line in lines:
            row = json.loads(line, parse_constant=_reject_constant)
            assert isinstance(row, dict)
            check_row(table, row)
            if table == main:
                main_rows.append(row)
    if decoded.signal is Signal.TRACES:
        assert len(batch.spans) == decoded.accepted
        for span in main_rows:
            start, end = ts_to_ns(span["start_time"]), ts_to_ns(span["end_time"])
            assert start <= end, span
    elif decoded.signal is Signal.LOGS:
        assert len(batch.logs) <= decoded.accepted and len(batch.feedback) <= decoded.accepted
    else:
        assert len(batch.metric_points) == decoded.accepted
    for inference in batch.inferences:
        assert inference.latency_ms >= 0
    return main_rows


def check_body(signal: Signal, body: bytes, encoding: Encoding) -> tuple[Decoded | None, list[dict[str, Any]]]:
    """The whole contract for one body. (None, []) when the body is rejected with DecodeError."""
    try:
        decoded = decode(signal, body, encoding)
    except DecodeError:
        return None, []
    assert isinstance(decoded, Decoded) and decoded.signal is signal
    assert decoded.accepted >= 0 and decoded.rejected >= 0
    assert bool(decoded.error_message) == bool(decoded.rejected)
    # As the pipeline does: the logged payload is read back (it must parse) and mapped.
    message = REQUEST_TYPES[signal].FromString(stored_payload(body, encoding, decoded))
    return decoded, check_batch(map_message(signal, message), decoded)


def check_message(signal: Signal, message: Any) -> tuple[Decoded | None, list[dict[str, Any]]]:
    return check_body(signal, message.SerializeToString(), Encoding.PROTOBUF)


# -- building blocks -----------------------------------------------------------------------------

class Payload(NamedTuple):
    name: str
    signal: Signal
    encoding: Encoding
    body: bytes


def _load_fixtures() -> list[Payload]:
    found: list[Payload] = []
    for base in FIXTURE_DIRS:
        for path in sorted(base.glob("*/*-000.*")):
            stem = path.name.split("-")[0]
            if stem in ("traces", "logs", "metrics"):
                encoding = Encoding.JSON if path.suffix == ".json" else Encoding.PROTOBUF
                found.append(Payload(f"{path.parent.name}/{path.name}", Signal(stem), encoding, path.read_bytes()))
    return found


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def sv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def trace_request(*spans: Any, resource: list[KeyValue] | None = None, scope: str = "fuzz") -> Any:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(resource or [sv("service.name", "fuzz")])
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    for span in spans:
        scope_spans.spans.append(span)
    return request


def good_span(n: int, trace_id: bytes = TRACE_ID, **kwargs: Any) -> Any:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=trace_id, span_id=n.to_bytes(8, "big"), name="chat gpt-4o-mini", kind=3,
        start_time_unix_nano=RECEIVED_NS, end_time_unix_nano=RECEIVED_NS + 500_000_000)
    span.attributes.extend([sv("gen_ai.operation.name", "chat"), sv("gen_ai.request.model", "gpt-4o-mini"),
                            kv("gen_ai.usage.input_tokens", AnyValue(int_value=12))])
    for key, value in kwargs.items():
        setattr(span, key, value)
    return span


_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def otlp_json(message: Any) -> dict[str, Any]:
    """A message as OTLP/JSON: camelCase, enums as integers, trace and span ids as hex."""
    doc = MessageToDict(message, use_integers_for_enums=True)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    fix(doc)
    return doc


def json_body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def span_keys(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((r["trace_id"], r["span_id"]) for r in rows)


# -- what the convention tables read: keys and values worth aiming at ----------------------------

_SUB_FIELDS = frozenset({"role", "content", "content_parts", "tool_name", "tool_arguments", "tool_id", "tool_call_id",
                         "name", "finish_reason"})


class TableStrings(NamedTuple):
    keys: set[str]  # attribute keys (and JSON paths: harmless as keys)
    prefixes: set[str]  # flattened-message prefixes, "llm.input_messages."
    subs: set[str]  # their sub-keys, "message.role", "message.contents.{j}.message_content.text"
    values: set[str]  # short values: detection values, mapping keys
    events: set[str]  # event names the table reads


def _table_strings(table: Any) -> TableStrings:
    found = TableStrings(set(), set(), set(), set(), set())
    stack: list[Any] = [msgspec.to_builtins(table)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for name, value in node.items():
                if isinstance(value, str) and value:
                    if name == "event":
                        found.events.add(value)
                    elif name == "prefix":
                        found.prefixes.add(value)
                    elif name in _SUB_FIELDS:
                        found.subs.add(value)
                if name == "map" and isinstance(value, dict):
                    found.values.update(value)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and node:
            if " " not in node and "." in node and len(node) < 80:
                found.keys.add(node)
            elif len(node) < 40:
                found.values.add(node)
    return found


@cache
def convention_strings() -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """(attribute keys, indexed-message prefixes, indexed sub-keys, short values, event names) of
    every convention table."""
    merged = TableStrings(set(), set(), set(), set(), set(otel_messages.LEGACY_INPUT_EVENTS) | {
        otel_messages.LEGACY_OUTPUT_EVENT, EVALUATION_EVENT, DETAILS_EVENT, "exception"})
    for table in load_tables():
        for mine, theirs in zip(merged, _table_strings(table), strict=True):
            mine |= theirs
    return tuple(sorted(part) for part in merged)  # type: ignore[return-value]


@cache
def family_profiles() -> list[tuple[tuple[tuple[str, str], ...], tuple[str, ...]]]:
    """(attributes that make one detection rule fire, the keys its family's table reads, with
    flattened-message keys spelled out): spans built from one profile reach that family's
    extraction code instead of stopping at detection."""
    profiles: list[tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = [((), tuple(convention_strings()[0]))]
    for table in load_tables():
        strings = _table_strings(table)
        keys = strings.keys | {f"{p}{i}.{sub.replace('{j}', j)}" for p in strings.prefixes for sub in strings.subs
                               for i in ("0", "1", "²", "9" * 5000) for j in ("0", "1", "٣")}
        for rule in table.detect:
            if rule.attribute:
                pairs = [(rule.attribute, rule.in_[0] if rule.in_ else "x")]
                pairs += [(key, "m") for key in rule.requires_any[:1]]
                profiles.append((tuple(pairs), tuple(sorted(keys))))
    return profiles


@cache
def scope_and_span_names() -> list[str]:
    names = ["", "fuzz", "chat gpt-4o", "chat ", "chat " + "x" * 5000, "text_completion (", "embeddings \u0000"]
    for table in load_tables():
        names += [rule.scope_prefix for rule in table.detect if rule.scope_prefix]
    return names


INDEXES = ["0", "1", "12", "²", "٣", "9" * 30, "9" * 5000, "-1", "x", ""]
NASTY_STRINGS = [
    "", " ", "0", "-1", "1", "3.5", "-0.0", "1e308", "-1e308", "1e999", "NaN", "nan", "inf", "-Infinity", "1_000",
    "²", "٣٤", "Ⅻ", "9" * 25, "9" * 400, "9" * 5000, "true", "FALSE", "yes", "\x00", "\u2028\u2029", "\ufeff",
    "🦙" * 3, "\U0010ffff", "[", "{", "[]", "{}", "[" * 200 + "]" * 200, "[" * 5000, "null", '"quoted"',
    "[1, 2, 3]", "[null, true, {}]", '{"a": ' * 50 + "1" + "}" * 50,
    '{"input": 1e300, "output": 123456789012345678901234567890, "total": -5}',
    '{"input": "1e300", "prompt_tokens_details": {"cached_tokens": "12"}, "completion_tokens_details": []}',
    '{"stream": "yes", "total": 18446744073709551616}',
    '[{"role": "user", "content": [{"type": "tool_call", "name": 5, "arguments": {"a": [1]}}, '
    '{"type": "image_url"}, 7, null, {"type": "tool_result", "output": [1]}]}]',
    '[{"role": {"nested": 1}, "parts": {"type": "text", "content": null}}, 5, "plain"]',
    '{"choices": [null, 5, {"message": 5}, {"delta": {"content": [1]}, "finish_reason": 3}, {"text": null}]}',
    '{"messages": [{"role": "tool", "id": 5, "tool_calls": [{"function": "x"}, {"function": {"name": null}}]}]}',
    '[{"type": "text", "content": "sys"}, {"type": "reasoning"}, {"type": "blob"}]',
    '{"role": "assistant", "function_call": {"name": 1, "arguments": null}, "index": 99999999999999999999}',
    "user: hi\nassistant: there\n\nsystem:", "system: " + "x" * 100, ": no role",
    "2024-01-01T00:00:00.123456789123Z", "2024-13-45T99:99:99Z", "9999-12-31T23:59:59.999999999+14:00",
    "0001-01-01T00:00:00-23:59", '"2025-11-26T10:00:00.5Z"', "1764150000.5", "1764150000500", "17641500005000000000000",
    "00000000-0000-0000-0000-000000000000", "{12345678-1234-5678-1234-567812345678}",
    "urn:uuid:12345678-1234-5678-1234-567812345678", "not-a-uuid", "application/json", "text/plain", "ERROR",
]
INT64_EDGES = [0, 1, -1, 2**31, 2**53 + 1, 10**18, 2**63 - 1, -(2**63)]
UINT64_EDGES = [0, 1, 10**9, 10**18 - 1, 10**18, RECEIVED_NS, MAX_NS, MAX_NS + 1, 2**63 - 1, 2**63, 2**64 - 1]


@cache
def strings() -> st.SearchStrategy[str]:
    values = convention_strings()[3]
    return st.one_of(st.sampled_from(NASTY_STRINGS), st.sampled_from(values), st.text(max_size=30))


@cache
def attribute_keys() -> st.SearchStrategy[str]:
    keys, prefixes, subs, _, _ = convention_strings()
    indexed = st.builds(lambda p, i, s, j: f"{p}{i}.{s.replace('{j}', j)}", st.sampled_from(prefixes),
                        st.sampled_from(INDEXES), st.sampled_from(subs), st.sampled_from(INDEXES))
    return st.one_of(st.sampled_from(keys), indexed, st.sampled_from(["", "service.name", "project.id", "x" * 300]),
                     st.text(max_size=20))


@cache
def int64s() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1))


@cache
def uint64s() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(UINT64_EDGES), st.integers(0, 2**64 - 1))


@cache
def int32s() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([0, 1, 2, 3, 5, 255, 256, -1, 2**31 - 1, -(2**31)]),
                     st.integers(-(2**31), 2**31 - 1))


@cache
def doubles() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]),
                     st.floats(allow_nan=True, allow_infinity=True))


Tree = tuple[Any, ...]


@cache
def any_trees() -> st.SearchStrategy[Tree]:
    """AnyValue as ('s'|'i'|'d'|'b'|'y'|'none', value) leaves and ('a', [..]) / ('kv', [(key, ..)])."""
    leaves = st.one_of(
        st.tuples(st.just("s"), strings()), st.tuples(st.just("i"), int64s()), st.tuples(st.just("d"), doubles()),
        st.tuples(st.just("b"), st.booleans()), st.tuples(st.just("y"), st.binary(max_size=24)),
        st.just(("none",)))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.tuples(st.just("a"), st.lists(inner, max_size=4)),
        st.tuples(st.just("kv"), st.lists(st.tuples(attribute_keys(), inner), max_size=4))), max_leaves=6)


def to_any(tree: Tree) -> AnyValue:
    value = AnyValue()
    tag = tree[0]
    if tag == "s":
        value.string_value = tree[1]
    elif tag == "i":
        value.int_value = tree[1]
    elif tag == "d":
        value.double_value = tree[1]
    elif tag == "b":
        value.bool_value = tree[1]
    elif tag == "y":
        value.bytes_value = tree[1]
    elif tag == "a":
        value.array_value.SetInParent()
        value.array_value.values.extend(to_any(t) for t in tree[1])
    elif tag == "kv":
        value.kvlist_value.SetInParent()
        value.kvlist_value.values.extend(kv(k, to_any(t)) for k, t in tree[1])
    return value


@cache
def attribute_lists(max_size: int = 8) -> st.SearchStrategy[list[KeyValue]]:
    @st.composite
    def build(draw: st.DrawFn) -> list[KeyValue]:
        seed, keys = draw(st.sampled_from(family_profiles()))
        items = draw(st.lists(st.tuples(st.one_of(st.sampled_from(keys), attribute_keys()), any_trees()),
                              max_size=max_size))
        return [sv(k, v) for k, v in seed] + [kv(k, to_any(t)) for k, t in items]

    return build()


@cache
def event_names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(convention_strings()[4]), st.text(max_size=10))


ID16 = [TRACE_ID, TRACE_ID, TRACE_ID, b"", b"\0" * 16, b"\1" * 15, b"\1" * 17]


def span_valid(span: Any) -> bool:
    return (len(span.trace_id) == 16 and span.trace_id != b"\0" * 16 and len(span.span_id) == 8
            and span.span_id != b"\0" * 8 and (not span.parent_span_id or len(span.parent_span_id) == 8))


@st.composite
def trace_requests(draw: st.DrawFn) -> Any:
    request = ExportTraceServiceRequest()
    counter = 0
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(attribute_lists(4)))
        for _ in range(draw(st.integers(1, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(st.one_of(st.sampled_from(scope_and_span_names()), strings()))
            scope_spans.scope.version = draw(strings())
            for _ in range(draw(st.integers(0, 3))):
                counter += 1
                span = scope_spans.spans.add()
                span.trace_id = draw(st.sampled_from(ID16))
                span.span_id = draw(st.sampled_from(
                    [counter.to_bytes(8, "big")] * 3 + [b"", b"\0" * 8, b"\1" * 7, b"\1" * 9]))
                span.parent_span_id = draw(st.sampled_from([b"", b"", b"\2" * 8, b"\2" * 7]))
                span.name = draw(st.one_of(st.sampled_from(scope_and_span_names()), strings()))
                span.trace_state = draw(strings())
                span.kind = draw(int32s())
                span.start_time_unix_nano = draw(uint64s())
                after_start = min(span.start_time_unix_nano + 1, 2**64 - 1)
                span.end_time_unix_nano = draw(st.one_of(st.just(after_start), uint64s()))
                span.attributes.extend(draw(attribute_lists()))
                for _ in range(draw(st.integers(0, 2))):
                    ev = span.events.add(name=draw(event_names()), time_unix_nano=draw(uint64s()))
                    ev.attributes.extend(draw(attribute_lists(4)))
                for _ in range(draw(st.integers(0, 1))):
                    link = span.links.add(trace_id=draw(st.binary(max_size=17)), span_id=draw(st.binary(max_size=9)),
                                          trace_state=draw(strings()))
                    link.attributes.extend(draw(attribute_lists(2)))
                span.status.code = draw(int32s())
                span.status.message = draw(strings())
    return request


@st.composite
def log_requests(draw: st.DrawFn) -> Any:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.extend(draw(attribute_lists(4)))
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = draw(strings())
        for n in range(draw(st.integers(0, 5))):
            record = scope_logs.log_records.add()
            record.event_name = draw(st.one_of(event_names(), st.just("")))
            if draw(st.booleans()):
                record.body.CopyFrom(to_any(draw(any_trees())))
            record.attributes.extend(draw(attribute_lists(6)))
            record.trace_id = draw(st.sampled_from([TRACE_ID, TRACE_ID, b"", b"\1" * 15, b"\0" * 16]))
            record.span_id = draw(st.sampled_from([(n + 1).to_bytes(8, "big")] * 2 + [b"", b"\1" * 7]))
            record.severity_number = draw(int32s())
            record.severity_text = draw(strings())
            record.flags = draw(st.integers(0, 2**32 - 1))
            record.time_unix_nano = draw(uint64s())
            record.observed_time_unix_nano = draw(uint64s())
    return request


def _points(draw: st.DrawFn, container: Any, kind: str) -> None:
    for _ in range(draw(st.integers(0, 3))):
        point = container.data_points.add()
        point.attributes.extend(draw(attribute_lists(3)))
        point.start_time_unix_nano = draw(uint64s())
        point.time_unix_nano = draw(uint64s())
        point.flags = draw(st.integers(0, 2**32 - 1))
        if kind in ("gauge", "sum"):
            which = draw(st.sampled_from(["int", "double", "none"]))
            if which == "int":
                point.as_int = draw(int64s())
            elif which == "double":
                point.as_double = draw(doubles())
        elif kind == "summary":
            point.count = draw(uint64s())
            point.sum = draw(doubles())
            for _ in range(draw(st.integers(0, 2))):
                point.quantile_values.add(quantile=draw(doubles()), value=draw(doubles()))
        else:
            point.count = draw(uint64s())
            if draw(st.booleans()):
                point.sum = draw(doubles())
            if draw(st.booleans()):
                point.min = draw(doubles())
            if draw(st.booleans()):
                point.max = draw(doubles())
            if kind == "histogram":
                point.bucket_counts.extend(draw(st.lists(uint64s(), max_size=4)))
                point.explicit_bounds.extend(draw(st.lists(doubles(), max_size=4)))
            else:
                point.scale = draw(int32s())
                point.zero_count = draw(uint64s())
                point.zero_threshold = draw(doubles())
                for buckets in (point.positive, point.negative):
                    buckets.offset = draw(int32s())
                    buckets.bucket_counts.extend(draw(st.lists(uint64s(), max_size=3)))
        if kind != "summary":
            for _ in range(draw(st.integers(0, 2))):
                exemplar = point.exemplars.add(time_unix_nano=draw(uint64s()), span_id=draw(st.binary(max_size=9)),
                                               trace_id=draw(st.binary(max_size=17)))
                exemplar.filtered_attributes.extend(draw(attribute_lists(2)))
                if draw(st.booleans()):
                    exemplar.as_double = draw(doubles())
                else:
                    exemplar.as_int = draw(int64s())


@st.composite
def metric_requests(draw: st.DrawFn) -> Any:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(draw(attribute_lists(4)))
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = draw(strings())
    for _ in range(draw(st.integers(0, 4))):
        metric = scope_metrics.metrics.add(name=draw(st.one_of(st.just(""), strings())),
                                           description=draw(strings()), unit=draw(strings()))
        kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram", "summary", "none"]))
        if kind == "none":
            continue
        data = getattr(metric, kind)
        data.SetInParent()
        if kind in ("sum", "histogram", "exponential_histogram"):
            data.aggregation_temporality = draw(int32s())
        if kind == "sum":
            data.is_monotonic = draw(st.booleans())
        _points(draw, data, kind)
    return request


def expected_metric_counts(request: Any) -> tuple[int, int]:
    accepted = rejected = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                points = len(getattr(metric, kind).data_points) if kind else 0
                if metric.name:
                    accepted += points
                else:
                    rejected += max(points, 1)
    return accepted, rejected


def metrics_sample() -> Any:
    """Every metric kind once, with ordinary values: a base for mutation (no fixture has metrics)."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(sv("service.name", "metric-svc"))
    metrics = resource_metrics.scope_metrics.add(scope={"name": "m"}).metrics
    gauge = metrics.add(name="temperature", unit="C").gauge.data_points.add(time_unix_nano=RECEIVED_NS,
                                                                           as_double=21.5)
    gauge.attributes.append(sv("room", "a"))
    total = metrics.add(name="requests").sum
    total.aggregation_temporality = 2
    total.is_monotonic = True
    point = total.data_points.add(time_unix_nano=RECEIVED_NS, as_int=7)
    point.exemplars.add(time_unix_nano=RECEIVED_NS, as_int=1, trace_id=TRACE_ID, span_id=b"\1" * 8)
    histogram = metrics.add(name="gen_ai.client.token.usage", unit="{token}").histogram
    histogram.aggregation_temporality = 2
    histogram.data_points.add(time_unix_nano=RECEIVED_NS, count=2, sum=30, min=10, max=20, bucket_counts=[0, 2],
                              explicit_bounds=[5], attributes=[sv("gen_ai.token.type", "input")])
    exp = metrics.add(name="latency").exponential_histogram.data_points.add(time_unix_nano=RECEIVED_NS, count=3,
                                                                            scale=2, zero_count=1)
    exp.positive.bucket_counts.extend([1, 1])
    summary = metrics.add(name="sizes").summary.data_points.add(time_unix_nano=RECEIVED_NS, count=2, sum=3.0)
    summary.quantile_values.add(quantile=0.5, value=1.0)
    return request


@cache
def fixtures() -> list[Payload]:
    return _load_fixtures()


@cache
def protobuf_fixtures() -> list[Payload]:
    found = [p for p in fixtures() if p.encoding is Encoding.PROTOBUF]
    found.append(Payload("synthetic/metrics", Signal.METRICS, Encoding.PROTOBUF, metrics_sample().SerializeToString()))
    return found


@cache
def json_bases() -> list[tuple[str, Signal, str]]:
    """(name, signal, OTLP/JSON text) to mutate: the JSON fixture and every protobuf one as JSON."""
    out: list[tuple[str, Signal, str]] = []
    for payload in fixtures():
        if payload.encoding is Encoding.JSON:
            out.append((payload.name, payload.signal, payload.body.decode()))
    for payload in protobuf_fixtures():
        message = decode(payload.signal, payload.body, Encoding.PROTOBUF).message
        out.append((payload.name + ".json", payload.signal, json.dumps(otlp_json(message))))
    return out


def test_fixtures_are_present() -> None:
    names = {p.name for p in fixtures()}
    assert any(n.endswith("traces-000.pb") for n in names) and any(n.endswith("logs-000.pb") for n in names)
    assert any(p.encoding is Encoding.JSON for p in fixtures())
    for payload in protobuf_fixtures():  # the bases are valid: every mutation starts from a good request
        decoded, _ = check_body(payload.signal, payload.body, payload.encoding)
        assert decoded is not None and decoded.rejected == 0, payload.name


# -- message JSON: the typed decode of the OTel text-parts shape against the general path --------

_PART_VALUES = st.one_of(st.text(max_size=12), st.none(), st.integers(), st.lists(st.text(max_size=4), max_size=2),
                         st.dictionaries(st.sampled_from(["text", "content"]), st.text(max_size=4), max_size=2))
_PART = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["text", "input_text", "output_text", "tool_call", "reasoning", "image_url"]),
                       st.none(), st.integers())},
    optional={"content": _PART_VALUES, "text": st.text(max_size=6), "id": st.text(max_size=4)})
_MESSAGE = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool", ""]), st.none(), st.integers())},
    optional={"parts": st.one_of(st.lists(_PART, max_size=3), st.text(max_size=6)),
              "finish_reason": st.one_of(st.sampled_from(["stop", "length", ""]), st.none(), st.integers()),
              "content": st.text(max_size=6), "name": st.text(max_size=4), "tool_call_id": st.text(max_size=4),
              "id": st.text(max_size=4), "type": st.just("message")})


# The shape itself, with hostile text (escapes, empty strings, non-ASCII, keys repeated below).
_TEXT_MESSAGE = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool", ""]), st.text(max_size=5)),
     "parts": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "input_text", "output_text"]),
                                              "content": st.one_of(st.just(""), st.text(max_size=12))}), max_size=3)},
    optional={"finish_reason": st.one_of(st.none(), st.text(max_size=6))})


@FUZZ
@given(messages=st.lists(st.one_of(_TEXT_MESSAGE, _MESSAGE), max_size=4),
       default_role=st.sampled_from(["", "user", "assistant"]), as_bytes=st.booleans(), compact=st.booleans())
def test_text_parts_messages_decode_like_the_general_path(messages: list[Any], default_role: str, as_bytes: bool,
                                                          compact: bool) -> None:
    """`from_json` decodes the OTel text-parts shape into structs (fast) and anything else the
    general way: wherever the fast decode answers, it must give the general path's messages."""
    text = json.dumps(messages, separators=(",", ":") if compact else None, ensure_ascii=False)
    value: str | bytes = text.encode() if as_bytes else text
    fast = otel_messages._text_parts_messages(value, default_role)
    general = otel_messages._from_json_general(value, default_role)
    assert otel_messages.from_json(value, default_role) == (general if fast is None else fast)
    if fast is not None:
        event("typed decode")
        assert fast == general
    def text_parts_shape(m: dict[str, Any]) -> bool:
        return (isinstance(m.get("role"), str) and isinstance(m.get("parts"), list)
                and set(m) <= {"role", "parts", "finish_reason"}
                and (m.get("finish_reason") is None or isinstance(m["finish_reason"], str))
                and all(set(p) == {"type", "content"} and p["type"] in ("text", "input_text", "output_text")
                        and isinstance(p["content"], str) for p in m["parts"]))

    if all(text_parts_shape(m) for m in messages):
        assert fast is not None  # the shape it exists for does take the fast path


@pytest.mark.parametrize("value", [
    '[{"role":"user","parts":[{"type":"text","content":"a"}],"role":"system"}]',  # a key twice: the last wins
    '[{"role":"user","parts":[{"type":"text","content":"a","content":"b"}]}]',
    ' [{"role":"user","parts":[{"type":"text","content":"a"}]}]',  # not JSON text for the mapper: plain text
    '[{"role":"user","parts":[{"type":"text","content":"\\u0073k-\\ud83d\\ude00"}]}]',
    b'[{"role":"user","parts":[{"type":"text","content":"\xff"}]}]',  # not UTF-8
    '[{"role":"user","parts":[{"type":"text","content":"a"}]}] trailing',
    '[]', '[{"role":"tool","parts":[]}]', '[{"role":"","parts":[{"type":"output_text","content":""}]}]',
])
def test_text_parts_messages_edge_cases(value: str | bytes) -> None:
    for default_role in ("", "assistant"):
        assert otel_messages.from_json(value, default_role) == otel_messages._from_json_general(value, default_role)


# -- raw bytes -----------------------------------------------------------------------------------

SIGNALS = st.sampled_from(list(Signal))
ENCODINGS = st.sampled_from(list(Encoding))


@FUZZ
@given(signal=SIGNALS, encoding=ENCODINGS, body=st.binary(max_size=2048))
def test_random_bytes(signal: Signal, encoding: Encoding, body: bytes) -> None:
    tolerate_known(check_body, signal, body, encoding)


@FUZZ
@given(signal=SIGNALS, body=st.one_of(
    st.text(max_size=200).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                 max_leaves=8).map(lambda doc: json.dumps(doc).encode())))
def test_random_json_documents(signal: Signal, body: bytes) -> None:
    tolerate_known(check_body, signal, body, Encoding.JSON)


def test_every_prefix_of_every_fixture() -> None:
    started = time.monotonic()
    # Quadratic in a payload's size: the few captures past 64 KiB (a coding agent's hundreds of
    # spans and metrics) are cut elsewhere (every_fixture_as_every_signal halves them).
    for payload in [p for p in fixtures() if len(p.body) <= 64 * 1024] + protobuf_fixtures()[-1:]:
        full, _ = check_body(payload.signal, payload.body, payload.encoding)
        assert full is not None, payload.name
        for end in range(len(payload.body)):
            decoded, _ = check_body(payload.signal, payload.body[:end], payload.encoding)
            if decoded is not None:  # cut at a field boundary: a smaller request, never more items
                assert decoded.accepted <= full.accepted, (payload.name, end)
    assert time.monotonic() - started < 30


def test_every_fixture_as_every_signal() -> None:
    """A body sent to the wrong endpoint (field numbers collide across the three requests)."""
    for payload in protobuf_fixtures():
        for signal in Signal:
            for body in (payload.body, payload.body * 2, payload.body[: len(payload.body) // 2]):
                check_body(signal, body, payload.encoding)


def test_every_single_byte_corruption_of_the_smallest_fixtures() -> None:
    """Each byte XOR 0xFF and each byte set to 0x80 (an unterminated varint), one at a time."""
    by_signal: dict[Signal, Payload] = {}
    for payload in protobuf_fixtures():
        best = by_signal.get(payload.signal)
        if best is None or len(payload.body) < len(best.body):
            by_signal[payload.signal] = payload
    for payload in by_signal.values():
        for i in range(len(payload.body)):
            for mutate in (lambda b: b ^ 0xFF, lambda b: 0x80):
                body = bytearray(payload.body)
                body[i] = mutate(body[i])
                check_body(payload.signal, bytes(body), payload.encoding)


@FUZZ
@given(data=st.data())
def test_fixture_mutations(data: st.DataObject) -> None:
    payload = data.draw(st.sampled_from(protobuf_fixtures()), label="fixture")
    body = bytearray(payload.body)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "byte", "delete", "insert", "duplicate", "truncate", "varint",
                                        "splice"]))
        pos = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "flip" and body:
            body[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "byte" and body:
            body[pos] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del body[pos:pos + data.draw(st.integers(1, 16))]
        elif op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "duplicate":
            body[pos:pos] = body[pos:pos + data.draw(st.integers(1, 64))]
        elif op == "truncate":
            del body[pos:]
        elif op == "varint":  # a huge or overlong length / tag
            body[pos:pos] = data.draw(st.sampled_from([b"\xff" * 10 + b"\x01", b"\x80" * 11, b"\xff\xff\xff\xff\x0f"]))
        elif op == "splice":
            other = data.draw(st.sampled_from(protobuf_fixtures())).body
            body[pos:] = other[data.draw(st.integers(0, len(other) - 1)):]
    tolerate_known(check_body, payload.signal, bytes(body), payload.encoding)


def test_concatenated_bodies_merge_and_keep_every_span() -> None:
    """protobuf merges a concatenation: repeated fields append, duplicate singular fields keep the last."""
    for payload in protobuf_fixtures():
        once, rows_once = check_body(payload.signal, payload.body, payload.encoding)
        twice, rows_twice = check_body(payload.signal, payload.body * 2, payload.encoding)
        assert once is not None and twice is not None
        assert twice.accepted == 2 * once.accepted and len(rows_twice) == 2 * len(rows_once), payload.name


# -- structured requests with hostile values -----------------------------------------------------

def _traces_property(request: Any) -> None:
    valid = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans if span_valid(span)]
    total = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    expected = sorted((s.trace_id.hex(), s.span_id.hex()) for s in valid)
    result = tolerate_known(check_message, Signal.TRACES, request)
    if result is None:
        return
    decoded, rows = result
    assert decoded is not None, "a well-formed protobuf request must decode"
    assert (decoded.accepted, decoded.rejected) == (len(valid), total - len(valid))
    assert span_keys(rows) == expected, "valid spans next to invalid ones must all be kept"
    # The same request as OTLP/JSON: same verdict, same spans.
    result = tolerate_known(check_body, Signal.TRACES, json_body(otlp_json(request)), Encoding.JSON)
    if result is not None:
        json_decoded, json_rows = result
        assert json_decoded is not None and (json_decoded.accepted, json_decoded.rejected) == (
            decoded.accepted, decoded.rejected)
        assert span_keys(json_rows) == expected


@fuzz(100)
@given(request=trace_requests())
def test_structured_traces(request: Any) -> None:
    _traces_property(request)


@fuzz(100)
@given(request=log_requests())
def test_structured_logs(request: Any) -> None:
    records = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    valid = [r for r in records if (not r.trace_id or len(r.trace_id) == 16) and (not r.span_id or len(r.span_id) == 8)]
    for body, encoding in ((request.SerializeToString(), Encoding.PROTOBUF),
                           (json_body(otlp_json(request)), Encoding.JSON)):
        result = tolerate_known(check_body, Signal.LOGS, body, encoding)
        if result is not None:
            decoded, _ = result
            assert decoded is not None
            assert (decoded.accepted, decoded.rejected) == (len(valid), len(records) - len(valid))


@fuzz(100)
@given(request=metric_requests())
def test_structured_metrics(request: Any) -> None:
    expected = expected_metric_counts(request)
    for body, encoding in ((request.SerializeToString(), Encoding.PROTOBUF),
                           (json_body(otlp_json(request)), Encoding.JSON)):
        result = tolerate_known(check_body, Signal.METRICS, body, encoding)
        if result is not None:
            decoded, rows = result
            assert decoded is not None
            assert (decoded.accepted, decoded.rejected) == expected
            assert len(rows) == expected[0]


SWEEP_STRINGS = ["", "0", "-1", "1e308", "1e999", "NaN", "²", "9" * 25, "9" * 400, "true", "[", "[]", "{}", "[" * 5000,
                 '{"a": ' * 50 + "1" + "}" * 50, "user: hi\nassistant: there\n\nsystem:", "2024-13-45T99:99:99Z",
                 "0001-01-01T00:00:00-23:59", "17641500005000000000000", "{12345678-1234-5678-1234-567812345678}",
                 "application/json"] + [v for v in NASTY_STRINGS if v.startswith(("[{", '{"'))]


def sweep_values() -> list[AnyValue]:
    values = [AnyValue(string_value=v) for v in SWEEP_STRINGS]
    values += [AnyValue(int_value=v) for v in (-1, 2**63 - 1)]
    values += [AnyValue(double_value=v) for v in (math.nan, math.inf, 1e300)]
    values += [AnyValue(bool_value=True), AnyValue(bytes_value=b"\xff\x00[{"), AnyValue()]
    array = AnyValue()
    array.array_value.values.extend([AnyValue(string_value="a"), AnyValue(int_value=1),
                                     AnyValue(string_value="[" * 5000)])
    kvlist = AnyValue()
    kvlist.kvlist_value.values.extend([sv("role", "user"), sv("content", "[" * 5000),
                                       kv("input", AnyValue(double_value=1e300))])
    return values + [array, kvlist]


def test_every_convention_key_with_hostile_values() -> None:
    """Deterministic sweep: for each convention family (one detection seed), every key its table
    reads gets every hostile value, one span per key. A request that breaks is bisected to its
    spans, so each failure is named; only KNOWN_BUGS may fail."""
    unknown: list[str] = []
    families: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
    for seed, keys in family_profiles()[1:]:
        families.setdefault(keys, seed)
    for keys, seed in families.items():
        plain = [k for k in keys if "²" not in k and "٣" not in k and len(k) < 200]
        for value in sweep_values():
            spans = []
            for i, key in enumerate(plain):
                span = good_span(i + 1)
                del span.attributes[:]
                span.attributes.extend([sv(k, v) for k, v in seed] + [kv(key, value)])
                spans.append(span)
            try:
                check_message(Signal.TRACES, trace_request(*spans))
                continue
            except Exception:
                pass
            for span in spans:
                try:
                    check_message(Signal.TRACES, trace_request(span))
                except Exception as exc:
                    where = f"{span.attributes[-1].key}={str(span.attributes[-1].value)[:40]!r}"
                    if known_bug(exc) is None:
                        unknown.append(f"{where}: {_origin(exc)} {type(exc).__name__}: {str(exc)[:120]}")
    assert not unknown, "\n".join(unknown[:30])


# -- OTLP/JSON with wrong types everywhere -------------------------------------------------------

JSON_TRAPS = [None, True, False, 0, -1, 1.5, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400, "", "zz", "0x1f",
              "1" * 31, "1" * 33, "g" * 32, "AAAA", "NaN", "Infinity", "-Infinity", "1e999", "\u0000", [], {},
              [1, "a", None, {}, []], {"stringValue": 5}, {"intValue": "x"}, {"kvlistValue": []},
              {"arrayValue": {"values": [None]}}, {"values": "x"}]


@cache
def _json_keys() -> list[str]:
    keys: set[str] = set()
    for _, _, text in json_bases():
        stack: list[Any] = [json.loads(text)]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                keys.update(node)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return sorted(keys)


@cache
def hostile_json() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.sampled_from(JSON_TRAPS), st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), strings())
    keys = st.one_of(st.sampled_from(_json_keys()), st.text(max_size=6))
    return st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3),
                        max_leaves=6)


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON document."""
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                out.append((node, key))
                stack.append(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                out.append((node, i))
                stack.append(value)
    return out


@fuzz(300)
@given(data=st.data())
def test_json_wrong_types_everywhere(data: st.DataObject) -> None:
    name, signal, text = data.draw(st.sampled_from(json_bases()), label="base")
    doc = json.loads(text)
    for _ in range(data.draw(st.integers(1, 4))):
        slots = _slots(doc)
        if not slots:
            break
        container, key = slots[data.draw(st.integers(0, len(slots) - 1))]
        op = data.draw(st.sampled_from(["replace", "replace", "delete", "rename", "wrap"]))
        if op == "replace":  # a copy: the traps are shared, and later steps mutate what they insert
            container[key] = copy.deepcopy(data.draw(hostile_json(), label="value"))
        elif op == "delete":
            del container[key]
        elif op == "rename" and isinstance(container, dict):  # camelCase <-> snake_case, or a stray key
            new = data.draw(st.sampled_from([re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key),
                                             key.upper(), key + "x"]))
            container[new] = container.pop(key)
        elif op == "wrap":  # an object where a list goes, a list where an object goes
            container[key] = [container[key]] if not isinstance(container[key], list) else {"values": container[key]}
    tolerate_known(check_body, signal, json.dumps(doc).encode(), Encoding.JSON)


def _trace_doc(*spans: Any) -> bytes:
    return json_body({"resourceSpans": [{"resource": {"attributes": []},
                                         "scopeSpans": [{"scope": {"name": "s"}, "spans": list(spans)}]}]})


def _log_doc(*records: Any) -> bytes:
    return json_body({"resourceLogs": [{"scopeLogs": [{"logRecords": list(records)}]}]})


def _metric_doc(*metrics: Any) -> bytes:
    return json_body({"resourceMetrics": [{"scopeMetrics": [{"metrics": list(metrics)}]}]})


OK_SPAN = {"traceId": TRACE_ID.hex(), "spanId": "00000000000000a1", "name": "ok"}
OK_LOG = {"traceId": TRACE_ID.hex(), "spanId": "00000000000000a1", "body": {"stringValue": "ok"}}
OK_METRIC = {"name": "ok", "gauge": {"dataPoints": [{"asDouble": 1.0}]}}

WRONG_TYPE_CASES: list[tuple[str, Signal, bytes]] = [
    ("number for string", Signal.TRACES, _trace_doc({**OK_SPAN, "name": 5})),
    ("object for string", Signal.TRACES, _trace_doc({**OK_SPAN, "name": {"a": 1}})),
    ("string for object", Signal.TRACES, _trace_doc({**OK_SPAN, "status": "error"})),
    ("string for list", Signal.TRACES, _trace_doc({**OK_SPAN, "attributes": "x"})),
    ("null everywhere", Signal.TRACES, json_body({"resourceSpans": [{"resource": None, "scopeSpans": [
        {"scope": None, "spans": [{**OK_SPAN, "attributes": None, "events": None, "status": None}]}]}]})),
    ("null in a list", Signal.TRACES, _trace_doc(OK_SPAN, None)),
    ("mixed list", Signal.TRACES, _trace_doc(OK_SPAN, 5, "x", [], True)),
    ("mixed array value", Signal.TRACES, _trace_doc({**OK_SPAN, "attributes": [{"key": "k", "value": {
        "arrayValue": {"values": [{"intValue": 1}, {"stringValue": 2}, None, 3]}}}]})),
    ("huge int64", Signal.TRACES, _trace_doc({**OK_SPAN, "startTimeUnixNano": 10**30})),
    ("huge int as string", Signal.TRACES, _trace_doc({**OK_SPAN, "startTimeUnixNano": "9" * 30})),
    ("negative uint64", Signal.TRACES, _trace_doc({**OK_SPAN, "endTimeUnixNano": "-1"})),
    ("float uint64", Signal.TRACES, _trace_doc({**OK_SPAN, "endTimeUnixNano": 1.5})),
    ("kind out of range", Signal.TRACES, _trace_doc({**OK_SPAN, "kind": 2**40})),
    ("kind unknown name", Signal.TRACES, _trace_doc({**OK_SPAN, "kind": "SPAN_KIND_NOPE"})),
    ("int for bytes id", Signal.TRACES, _trace_doc({**OK_SPAN, "traceId": 12345})),
    ("list for bytes id", Signal.TRACES, _trace_doc({**OK_SPAN, "spanId": [1, 2]})),
    ("two oneof values", Signal.TRACES, _trace_doc({**OK_SPAN, "attributes": [{"key": "k", "value": {
        "stringValue": "a", "intValue": "1"}}]})),
    ("bad base64 bytes value", Signal.TRACES, _trace_doc({**OK_SPAN, "attributes": [{"key": "k", "value": {
        "bytesValue": "!!!"}}]})),
    ("camel and snake both", Signal.TRACES, json_body({"resourceSpans": [], "resource_spans": []})),
    ("body is a list", Signal.TRACES, b"[]"),
    ("body is a string", Signal.LOGS, b'"x"'),
    ("body is null", Signal.METRICS, b"null"),
    ("empty body", Signal.TRACES, b""),
    ("log body number for object", Signal.LOGS, _log_doc({**OK_LOG, "body": 5})),
    ("log severity string", Signal.LOGS, _log_doc({**OK_LOG, "severityNumber": "LOUD"})),
    ("log severity huge", Signal.LOGS, _log_doc({**OK_LOG, "severityNumber": 2**40})),
    ("log flags negative", Signal.LOGS, _log_doc({**OK_LOG, "flags": -1})),
    ("log null record", Signal.LOGS, _log_doc(OK_LOG, None)),
    ("metric name number", Signal.METRICS, _metric_doc({**OK_METRIC, "name": 7})),
    ("metric two kinds", Signal.METRICS, _metric_doc({**OK_METRIC, "sum": {"dataPoints": []}})),
    ("metric points not a list", Signal.METRICS, _metric_doc({"name": "m", "gauge": {"dataPoints": {}}})),
    ("metric asInt huge", Signal.METRICS, _metric_doc({"name": "m", "gauge": {"dataPoints": [{"asInt": 10**30}]}})),
    ("metric asDouble string", Signal.METRICS, _metric_doc({"name": "m", "gauge": {"dataPoints": [
        {"asDouble": "lots"}]}})),
    ("histogram counts mixed", Signal.METRICS, _metric_doc({"name": "h", "histogram": {"dataPoints": [
        {"bucketCounts": ["1", 2, "x"], "explicitBounds": [1, "NaN", None]}]}})),
    ("exemplar ids wrong", Signal.METRICS, _metric_doc({"name": "m", "gauge": {"dataPoints": [
        {"asInt": "1", "exemplars": [{"traceId": "zz", "spanId": 5}]}]}})),
]


@pytest.mark.parametrize(("case", "signal", "body"), WRONG_TYPE_CASES, ids=[c[0] for c in WRONG_TYPE_CASES])
def test_json_wrong_types(case: str, signal: Signal, body: bytes) -> None:
    check_body(signal, body, Encoding.JSON)


BAD_ID_SPANS = [
    {**OK_SPAN, "traceId": "zz" * 16}, {**OK_SPAN, "traceId": "abc"}, {**OK_SPAN, "traceId": "1" * 31},
    {**OK_SPAN, "traceId": "1" * 34}, {**OK_SPAN, "traceId": "0" * 32}, {**OK_SPAN, "traceId": None},
    {**OK_SPAN, "traceId": ""}, {**OK_SPAN, "traceId": "0x" + "1" * 30}, {**OK_SPAN, "spanId": "xyz"},
    {**OK_SPAN, "spanId": "1" * 17}, {**OK_SPAN, "spanId": "0" * 16}, {**OK_SPAN, "parentSpanId": "12"},
    {**OK_SPAN, "traceId": "ＡＢ" * 16},
]


def test_json_bad_ids_are_rejected_per_span_and_valid_spans_kept() -> None:
    spans = [{**OK_SPAN, "spanId": f"{i + 1:016x}"} for i in range(3)]
    body = _trace_doc(spans[0], *BAD_ID_SPANS, spans[1], {**OK_SPAN, "trace_id": "1" * 31}, spans[2])
    decoded, rows = check_body(Signal.TRACES, body, Encoding.JSON)
    assert decoded is not None
    assert (decoded.accepted, decoded.rejected) == (3, len(BAD_ID_SPANS) + 1)
    assert span_keys(rows) == sorted((TRACE_ID.hex(), s["spanId"]) for s in spans)

    records = [{**OK_LOG, "traceId": "abc"}, {**OK_LOG, "spanId": "zz"}, {**OK_LOG, "traceId": "1" * 30}]
    decoded, rows = check_body(Signal.LOGS, _log_doc(OK_LOG, *records, {**OK_LOG, "traceId": ""}), Encoding.JSON)
    assert decoded is not None and (decoded.accepted, decoded.rejected) == (2, 3) and len(rows) == 2


DUPLICATE_KEY_CASES: list[tuple[str, Signal, bytes, int, int]] = [
    # (case, signal, body, accepted, rejected): JSON objects keep the last of duplicate keys.
    ("traceId bad then good", Signal.TRACES, (
        '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"00000000000000a1",'
        f'"traceId":"{TRACE_ID.hex()}"}}]}}]}}]}}').encode(), 1, 0),
    ("traceId good then bad", Signal.TRACES, (
        f'{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{TRACE_ID.hex()}","spanId":"00000000000000a1",'
        '"traceId":"abc"}]}]}]}').encode(), 0, 1),
    ("spans twice", Signal.TRACES, (
        f'{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{json.dumps(OK_SPAN)}],"spans":[]}}]}}]}}').encode(), 0, 0),
    ("oneof value twice", Signal.TRACES, (
        f'{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{TRACE_ID.hex()}","spanId":"00000000000000a1",'
        '"attributes":[{"key":"k","value":{"stringValue":"a","stringValue":"b"}}]}]}]}]}').encode(), 1, 0),
    ("attribute key repeated", Signal.TRACES, _trace_doc({**OK_SPAN, "attributes": [
        {"key": "gen_ai.usage.input_tokens", "value": {"stringValue": "x"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.operation.name", "value": {"arrayValue": {"values": [{"stringValue": "chat"}]}}}]}), 1, 0),
    ("log body twice", Signal.LOGS, (
        b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a"},"body":{"intValue":"1"}}]}]}]}'
    ), 1, 0),
    ("metric name twice", Signal.METRICS, (
        b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"a","name":"","gauge":{"dataPoints":[{}]}}]}]}]}'
    ), 0, 1),
]


@pytest.mark.parametrize(("case", "signal", "body", "accepted", "rejected"), DUPLICATE_KEY_CASES,
                         ids=[c[0] for c in DUPLICATE_KEY_CASES])
def test_duplicate_keys(case: str, signal: Signal, body: bytes, accepted: int, rejected: int) -> None:
    decoded, _ = check_body(signal, body, Encoding.JSON)
    assert decoded is not None and (decoded.accepted, decoded.rejected) == (accepted, rejected)


def test_duplicate_attribute_keys_in_protobuf_keep_the_last() -> None:
    span = good_span(1)
    span.attributes.extend([sv("dup", "first"), kv("dup", AnyValue(int_value=2)),
                            kv("dup", AnyValue(double_value=3.5))])
    decoded, rows = check_message(Signal.TRACES, trace_request(span))
    assert decoded is not None and rows[0]["attributes"]["dup"] == "3.5"


# -- deep nesting --------------------------------------------------------------------------------

def nested_any_protobuf(depth: int, kind: str) -> bytes:
    """An AnyValue nested `depth` levels, built as raw bytes (no Python recursion)."""
    # kvlist_value(6) -> KeyValueList.values(1) -> KeyValue{key(1), value(2)}; array_value(5) -> ArrayValue.values(1)
    wrap = (lambda v: field(6, field(1, field(1, b"k") + field(2, v)))) if kind == "kvlist" else (
        lambda v: field(5, field(1, v)))
    value = field(1, b"leaf")  # string_value
    for _ in range(depth):
        value = wrap(value)
    return value


def nested_any_json(depth: int, kind: str) -> str:
    head, tail = ('{"kvlistValue":{"values":[{"key":"k","value":', "}]}}") if kind == "kvlist" else (
        '{"arrayValue":{"values":[', "]}}")
    return head * depth + '{"stringValue":"leaf"}' + tail * depth


def _deep_request(signal: Signal, nested: AnyValue | None) -> Any:
    """Two items; the second carries `nested` (a span attribute, or a log body) when given."""
    if signal is Signal.TRACES:
        second = good_span(2)
        if nested is not None:
            second.attributes.append(kv("deep", nested))
        return trace_request(good_span(1), second)
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=RECEIVED_NS, body=AnyValue(string_value="ok"))
    second = records.add(time_unix_nano=RECEIVED_NS)
    if nested is not None:
        second.body.CopyFrom(nested)
    return request


def deep_body(depth: int, kind: str, encoding: Encoding, signal: Signal) -> bytes:
    """A request whose first item is valid and whose second carries an AnyValue nested `depth`
    levels. Built as text / raw bytes: protobuf objects that deep cannot even be serialized."""
    nested = nested_any_protobuf(depth, kind)
    if encoding is Encoding.JSON:
        placeholder = {"stringValue": "\x7fNEST\x7f"}
        text = json.dumps(otlp_json(_deep_request(signal, AnyValue(string_value=placeholder["stringValue"]))))
        assert text.count(json.dumps(placeholder)) == 1
        return text.replace(json.dumps(placeholder), nested_any_json(depth, kind)).encode()
    request = _deep_request(signal, None)
    if signal is Signal.TRACES:
        resource_spans = request.resource_spans[0]
        first, second = resource_spans.scope_spans[0].spans
        span = second.SerializeToString() + field(9, field(1, b"deep") + field(2, nested))  # Span.attributes = 9
        scope = field(1, resource_spans.scope_spans[0].scope.SerializeToString()) + field(
            2, first.SerializeToString()) + field(2, span)
        return field(1, field(1, resource_spans.resource.SerializeToString()) + field(2, scope))
    first, second = request.resource_logs[0].scope_logs[0].log_records
    record = second.SerializeToString() + field(5, nested)  # LogRecord.body = 5
    return field(1, field(2, field(2, first.SerializeToString()) + field(2, record)))


DEEP_CASES = [
    pytest.param(depth, kind, encoding, signal, id=f"{signal}-{encoding}-{kind}-{depth}",
                 marks=[known("json-deep-nesting")]
                 if encoding is Encoding.JSON and depth == 1000 else [])
    for depth in (10, 20, 100, 1000) for kind in ("kvlist", "array") for encoding in Encoding
    for signal in (Signal.TRACES, Signal.LOGS)
]


@pytest.mark.parametrize(("depth", "kind", "encoding", "signal"), DEEP_CASES)
def test_deeply_nested_anyvalue(depth: int, kind: str, encoding: Encoding, signal: Signal) -> None:
    body = deep_body(depth, kind, encoding, signal)
    decoded, rows = check_body(signal, body, encoding)
    if decoded is None:  # protobuf's recursion limit (100 messages) or ParseDict's: the request is refused
        assert depth > 10
        return
    assert decoded.accepted == 2 and len(rows) == 2
    if signal is Signal.TRACES:
        stored = rows[-1]["attributes"]["deep"]
        assert ("[too deep]" in stored) == (depth > 16), stored[:200]  # anyvalue.MAX_DEPTH
    else:
        assert any('"leaf"' in r["body"] or "[too deep]" in r["body"] for r in rows)


def test_protobuf_depth_limit_is_a_decode_error_not_a_crash() -> None:
    for depth in range(25, 40):
        check_body(Signal.TRACES, deep_body(depth, "kvlist", Encoding.PROTOBUF, Signal.TRACES), Encoding.PROTOBUF)
    with pytest.raises(DecodeError):
        decode(Signal.TRACES, deep_body(1000, "kvlist", Encoding.PROTOBUF, Signal.TRACES), Encoding.PROTOBUF)
    # Raw nesting with no OTLP meaning: 2000 nested length-delimited fields.
    body = b"leaf"
    for _ in range(2000):
        body = field(1, body)
    for signal in Signal:
        check_body(signal, body, Encoding.PROTOBUF)


def test_deep_json_below_the_recursion_limit_is_refused_cleanly() -> None:
    for depth in (50, 200, 400):
        check_body(Signal.TRACES, b"[" * depth + b"]" * depth, Encoding.JSON)
        check_body(Signal.TRACES, b'{"a":' * depth + b"1" + b"}" * depth, Encoding.JSON)


# -- huge values and counts ----------------------------------------------------------------------

def test_ten_megabyte_attribute_value_and_key() -> None:
    big = "x" * 10_000_000
    span = good_span(1)
    span.attributes.extend([sv("gen_ai.request.model", big), sv("custom.big", big), sv("k" * 1_000_000, "v"),
                            sv("gen_ai.input.messages", "[" + big), sv("gen_ai.prompt", big)])
    started = time.monotonic()
    for body, encoding in ((trace_request(span).SerializeToString(), Encoding.PROTOBUF),
                           (json_body(otlp_json(trace_request(span))), Encoding.JSON)):
        decoded, rows = check_body(Signal.TRACES, body, encoding)
        assert decoded is not None and decoded.accepted == 1 and len(rows) == 1
    batch = map_message(Signal.TRACES, trace_request(span))
    opts = mapper().options
    assert batch.spans[0].attributes["custom.big"] == big[:opts.max_attribute_chars] + TRUNCATED
    assert batch.inferences[0].attributes["custom.big"] == big[:opts.attribute_value_max_chars] + TRUNCATED
    assert len(batch.inferences[0].input_preview) <= opts.preview_chars + len(TRUNCATED)
    assert all(len(m.content) <= opts.max_message_chars + len(TRUNCATED) for m in batch.messages)
    assert time.monotonic() - started < 15


def test_hundred_thousand_attributes_on_one_span() -> None:
    span = good_span(1)
    span.attributes.extend(sv(f"gen_ai.custom.{i}", str(i)) for i in range(100_000))
    span.events.add(name="exception").attributes.extend(sv(f"e{i}", "v") for i in range(10_000))
    started = time.monotonic()
    decoded, rows = check_message(Signal.TRACES, trace_request(span, resource=[sv(f"r{i}", "v")
                                                                                for i in range(10_000)]))
    assert decoded is not None
    limit = mapper().options.max_attributes  # past the limit the rest are dropped and counted
    attributes = rows[0]["attributes"]
    assert len(attributes) == min(100_003, limit + 1 if limit else 100_003)
    if limit:
        assert attributes[DROPPED_ATTRIBUTES] == str(100_003 - limit)
        assert len(rows[0]["resource_attributes"]) == limit + 1
    assert time.monotonic() - started < 10


def _many_spans_body(count: int, every_invalid: int) -> bytes:
    """A request of `count` minimal spans built as bytes: in each run of `every_invalid` spans the
    first has a 15-byte trace id, the others are valid (span ids 1..every_invalid-1, repeated)."""
    bad = field(2, field(1, TRACE_ID[:15]) + field(2, b"\1" * 8))
    run = bad + b"".join(field(2, field(1, TRACE_ID) + field(2, i.to_bytes(8, "big")) + field(5, b"s"))
                         for i in range(1, every_invalid))
    assert count % every_invalid == 0
    return field(1, field(2, run * (count // every_invalid)))


def test_hundred_thousand_spans_half_invalid() -> None:
    body = _many_spans_body(100_000, every_invalid=2)
    started = time.monotonic()
    decoded, rows = check_body(Signal.TRACES, body, Encoding.PROTOBUF)
    assert decoded is not None and (decoded.accepted, decoded.rejected) == (50_000, 50_000)
    assert len(rows) == 50_000 and {r["span_id"] for r in rows} == {f"{1:016x}"}
    assert time.monotonic() - started < 15


def test_million_spans_decode_and_validate() -> None:
    body = _many_spans_body(1_000_000, every_invalid=1000)
    started = time.monotonic()
    decoded = decode(Signal.TRACES, body, Encoding.PROTOBUF)
    assert (decoded.accepted, decoded.rejected) == (999_000, 1000)
    assert time.monotonic() - started < 10


@pytest.mark.skipif(not SLOW, reason="maps 1M spans (~30 s): set OTELGW_FUZZ_SLOW=1")
@pytest.mark.timeout(300)
def test_million_spans_end_to_end_mapping() -> None:
    decoded, rows = check_body(Signal.TRACES, _many_spans_body(1_000_000, every_invalid=1000), Encoding.PROTOBUF)
    assert decoded is not None and len(rows) == 999_000


# -- invalid UTF-8 -------------------------------------------------------------------------------

MARK = "Zq9Zq9Zq"
# Same length as MARK: bad lead bytes, bad continuations, overlong, CESU-8 surrogates, above U+10FFFF.
BAD_UTF8 = [b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", b"\xc3\x28\xa0\xa1\xe2\x28\xa1\x80", b"\xc0\xafAAAAAA",
            b"\xed\xa0\x80\xed\xb0\x80AA", b"\xf4\x90\x80\x80AAAA"]


def _utf8_targets() -> list[tuple[str, Signal, Any]]:
    span = good_span(1)
    targets: list[tuple[str, Signal, Any]] = []
    for where in ("name", "attr key", "attr value", "nested value", "event name", "status", "resource", "scope"):
        s = copy.deepcopy(span)
        scope = "fuzz"
        resource = None
        if where == "name":
            s.name = MARK
        elif where == "attr key":
            s.attributes.append(sv(MARK, "v"))
        elif where == "attr value":
            s.attributes.append(sv("gen_ai.request.model", MARK))
        elif where == "nested value":
            value = AnyValue()
            value.kvlist_value.values.append(kv("k", AnyValue(string_value=MARK)))
            s.attributes.append(kv("nested", value))
        elif where == "event name":
            s.events.add(name=MARK)
        elif where == "status":
            s.status.message = MARK
        elif where == "resource":
            resource = [sv("service.name", MARK)]
        else:
            scope = MARK
        targets.append((f"span {where}", Signal.TRACES, trace_request(good_span(2), s, resource=resource,
                                                                      scope=scope)))
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    records.add(body=AnyValue(string_value=MARK))
    targets.append(("log body", Signal.LOGS, logs))
    metrics = ExportMetricsServiceRequest()
    metrics.resource_metrics.add().scope_metrics.add().metrics.add(name=MARK).gauge.data_points.add(as_int=1)
    targets.append(("metric name", Signal.METRICS, metrics))
    return targets


@pytest.mark.parametrize("bad", BAD_UTF8, ids=["bad-lead", "bad-continuation", "overlong", "cesu", "above-max"])
def test_invalid_utf8_in_protobuf_strings_is_a_decode_error(bad: bytes) -> None:
    for where, signal, message in _utf8_targets():
        body = message.SerializeToString()
        assert body.count(MARK.encode()) == 1, where
        with pytest.raises(DecodeError, match="UTF-8"):
            decode(signal, body.replace(MARK.encode(), bad), Encoding.PROTOBUF)
    # In a bytes field the same bytes are data, not an error.
    span = good_span(1)
    span.attributes.append(kv("raw", AnyValue(bytes_value=bad)))
    decoded, rows = check_message(Signal.TRACES, trace_request(span))
    assert decoded is not None and rows[0]["attributes"]["raw"] == base64.b64encode(bad).decode()


def test_invalid_json_text_outside_strings_and_bad_escapes() -> None:
    for body in (b'{"resourceSpans": [\xff]}', b"\xef\xbb\xbf{}", b'{"a": "\\ud800"}', b'{"a": "\\udc00\\ud800"}',
                 b'{"a": "\\u12"}', b'{"a": "\\x41"}', b'{"a": "\x00"}', b"{" + b" " * 100_000, b'{"a": NaN}',
                 b'{"a": Infinity}', b'{"a": 01}', b'{"a": 1e99999}', b'{"a": -}', b"{}{}", b'{"a":1,}'):
        for signal in Signal:
            check_body(signal, body, Encoding.JSON)


# -- NaN, infinities, extreme timestamps -----------------------------------------------------------

NON_FINITE = [math.nan, math.inf, -math.inf, -0.0, 5e-324, -1.7976931348623157e308]


def test_non_finite_doubles_in_span_attributes() -> None:
    span = good_span(1)
    for i, x in enumerate(NON_FINITE):
        span.attributes.append(kv(f"d{i}", AnyValue(double_value=x)))
        arr = AnyValue()
        arr.array_value.values.extend([AnyValue(double_value=x), AnyValue(string_value="s")])
        span.attributes.append(kv(f"a{i}", arr))
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.server.time_to_first_token",
                "gen_ai.evaluation.score.value", "gen_ai.request.temperature"):
        span.attributes.append(kv(key, AnyValue(double_value=math.nan)))
    span.events.add(name=EVALUATION_EVENT, time_unix_nano=RECEIVED_NS).attributes.extend(
        [kv("gen_ai.evaluation.score.value", AnyValue(double_value=math.inf)), sv("gen_ai.evaluation.name", "q")])
    span.links.add(trace_id=TRACE_ID, span_id=b"\3" * 8).attributes.append(kv("x", AnyValue(double_value=-math.inf)))
    request = trace_request(span, resource=[kv("service.name", AnyValue(double_value=math.nan))])
    for body, encoding in ((request.SerializeToString(), Encoding.PROTOBUF), (json_body(otlp_json(request)),
                                                                              Encoding.JSON)):
        decoded, rows = check_body(Signal.TRACES, body, encoding)
        assert decoded is not None and rows[0]["attributes"]["d0"] == "nan" and rows[0]["attributes"]["d1"] == "inf"
        assert json.loads(rows[0]["links"])[0]["attributes"] == {"x": "-inf"}


def test_non_finite_doubles_in_metric_points_and_log_bodies() -> None:
    request = metrics_sample()
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        kind = metric.WhichOneof("data")
        for x in NON_FINITE:
            point = getattr(metric, kind).data_points.add(time_unix_nano=RECEIVED_NS)
            if kind in ("gauge", "sum"):
                point.as_double = x
            else:
                point.sum = x
            if kind in ("histogram", "exponential_histogram"):
                point.min, point.max = x, -x
                point.exemplars.add(as_double=x, trace_id=TRACE_ID, span_id=b"\1" * 8)
            if kind == "histogram":
                point.explicit_bounds.extend([x, 1.0, x])
                point.bucket_counts.extend([1, 2, 3, 2**64 - 1])
            if kind == "summary":
                point.quantile_values.add(quantile=x, value=x)
            if kind == "exponential_histogram":
                point.zero_threshold = x
    for body, encoding in ((request.SerializeToString(), Encoding.PROTOBUF), (json_body(otlp_json(request)),
                                                                              Encoding.JSON)):
        decoded, rows = check_body(Signal.METRICS, body, encoding)
        assert decoded is not None and len(rows) == decoded.accepted == 5 + 5 * len(NON_FINITE)
        # Kept as such ("nan", "inf", "-inf": ClickHouse reads them into Float64); null stored 0.
        assert {r["value"] for r in rows if isinstance(r["value"], str)} == set(NON_FINITE_TEXT)
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    for x in NON_FINITE:
        records.add(body=AnyValue(double_value=x))
        body = AnyValue()
        body.kvlist_value.values.append(kv("x", AnyValue(double_value=x)))
        records.add(body=body, attributes=[kv("x", AnyValue(double_value=x))])
    decoded, rows = check_message(Signal.LOGS, logs)
    assert decoded is not None and len(rows) == 2 * len(NON_FINITE)


TIMES = [(0, 0), (0, 2**64 - 1), (2**64 - 1, 0), (2**64 - 1, 2**64 - 1), (1, 2), (RECEIVED_NS, RECEIVED_NS - 1),
         (MAX_NS, MAX_NS + 1), (MAX_NS + 1, 2**63), (10**18 - 1, 10**18), (999_999_999, 1_000_000_000),
         (1_000_000_000 * 1_000_000_000 - 1, 1)]


@pytest.mark.parametrize(("start", "end"), TIMES, ids=[f"{s}-{e}" for s, e in TIMES])
def test_extreme_timestamps_are_clamped(start: int, end: int) -> None:
    span = good_span(1, start_time_unix_nano=start, end_time_unix_nano=end)
    span.events.add(name="gen_ai.first_token", time_unix_nano=end)
    span.events.add(name=EVALUATION_EVENT, time_unix_nano=end).attributes.append(sv("gen_ai.evaluation.name", "q"))
    span.attributes.append(sv("langfuse.observation.completion_start_time", "2262-04-12T00:00:00Z"))
    decoded, rows = check_message(Signal.TRACES, trace_request(span))
    assert decoded is not None and len(rows) == 1
    row = rows[0]
    assert ts_to_ns(row["start_time"]) == min(start, MAX_NS)
    assert ts_to_ns(row["end_time"]) == min(max(start, end), MAX_NS)
    assert 0 <= row["duration_ns"] < 2**64

    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=start, observed_time_unix_nano=end)
    decoded, rows = check_message(Signal.LOGS, logs)
    assert decoded is not None and ts_to_ns(rows[0]["timestamp"]) == min(start or end or RECEIVED_NS, MAX_NS)

    metrics = ExportMetricsServiceRequest()
    metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="m").gauge.data_points.add(
        start_time_unix_nano=start, time_unix_nano=end, as_int=-(2**63))
    decoded, rows = check_message(Signal.METRICS, metrics)
    assert decoded is not None and ts_to_ns(rows[0]["start_timestamp"]) == min(start, MAX_NS)


@fuzz(500)
@given(ns=st.one_of(st.sampled_from(UINT64_EDGES + [-1, -(2**63), 2**64, 10**30]), st.integers(-(2**70), 2**70)))
def test_ts_is_clamped_and_round_trips(ns: int) -> None:
    assert ts_to_ns(ts(ns)) == min(max(ns, 0), MAX_NS)


# -- minimal reproducers of the known bugs (strict xfail: they fail the run once fixed) ------------

@known("json-deep-nesting")
@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000], ids=["arrays", "objects"])
def test_bug_json_deep_nesting_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(Signal.TRACES, body, Encoding.JSON)


@known("json-invalid-utf8")
def test_bug_json_invalid_utf8_in_a_string_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(Signal.TRACES, b'{"resourceSpans": [{"schemaUrl": "\xff"}]}', Encoding.JSON)


@known("json-huge-int-double")
@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.METRICS])
def test_bug_json_huge_integer_in_a_double_field_is_a_decode_error(signal: Signal) -> None:
    value = {"doubleValue": 10**400}
    body = _trace_doc({**OK_SPAN, "attributes": [{"key": "k", "value": value}]}) if signal is Signal.TRACES else \
        _metric_doc({"name": "g", "gauge": {"dataPoints": [{"asDouble": 10**400}]}})
    with pytest.raises(DecodeError):
        decode(signal, body, Encoding.JSON)


def _mapper_crash_request(key: str, value: str) -> Any:
    detect = {"langfuse": sv("langfuse.observation.type", "generation"),
              "llm": sv("openinference.span.kind", "LLM")}[key.split(".")[0]]
    span = good_span(2)
    del span.attributes[:]
    span.attributes.extend([detect, sv(key, value)])
    return trace_request(good_span(1), span)


MAPPER_CRASHES = [
    pytest.param("langfuse.observation.input", "[" * 100_000, id="attribute-json-deep-nesting",
                 marks=known("attribute-json-deep-nesting", RecursionError)),
    pytest.param("langfuse.observation.completion_start_time", "9" * 400, id="since-start-overflow",
                 marks=known("since-start-timestamp", OverflowError)),
    pytest.param("langfuse.observation.completion_start_time", "9" * 5000, id="since-start-4300-digits",
                 marks=known("since-start-timestamp", ValueError)),
    pytest.param("langfuse.observation.completion_start_time", "²", id="since-start-unicode-digit",
                 marks=known("since-start-timestamp", ValueError)),
    pytest.param("llm.input_messages.².message.role", "user", id="indexed-unicode-digit",
                 marks=known("indexed-message-index", ValueError)),
    pytest.param("llm.output_messages." + "9" * 5000 + ".message.content", "x", id="indexed-4300-digits",
                 marks=known("indexed-message-index", ValueError)),
]


@pytest.mark.parametrize(("key", "value"), MAPPER_CRASHES)
def test_bug_mapper_crash(key: str, value: str) -> None:
    decoded, rows = check_message(Signal.TRACES, _mapper_crash_request(key, value))
    assert decoded is not None and len(rows) == 2


@known("token-count-overflow", OutOfRange)
@pytest.mark.parametrize("value", [AnyValue(string_value="1e300"), AnyValue(double_value=1e300),
                                   AnyValue(string_value="18446744073709551616")], ids=["string", "double", "2**64"])
def test_bug_token_counts_fit_uint64(value: AnyValue) -> None:
    span = good_span(1)
    span.attributes.append(kv("gen_ai.usage.output_tokens", value))
    check_message(Signal.TRACES, trace_request(span))


# -- end to end: the running gateway ---------------------------------------------------------------

def _garbage(seed: int, size: int = 4096) -> bytes:
    return random.Random(seed).randbytes(size)


def _bad_utf8_trace() -> bytes:
    return trace_request(good_span(1, name=MARK)).SerializeToString().replace(MARK.encode(), BAD_UTF8[0])


def _mixed_trace(trace_id: bytes) -> Any:
    """Two valid spans, three with bad ids, and the hostile values that must not cost the valid ones."""
    nasty = good_span(3, trace_id=trace_id, start_time_unix_nano=2**64 - 1, end_time_unix_nano=0, kind=-7)
    nasty.status.code = 99
    nasty.attributes.extend([kv("nan", AnyValue(double_value=math.nan)), kv("inf", AnyValue(double_value=math.inf)),
                             sv("gen_ai.usage.input_tokens", "-5"), sv("gen_ai.request.model", "m" * 100_000)])
    nasty.attributes.extend(sv(f"gen_ai.x{i}", "v") for i in range(5_000))
    return trace_request(
        good_span(1, trace_id=trace_id), nasty, good_span(2, trace_id=trace_id),
        good_span(4, trace_id=trace_id[:15]), good_span(5, trace_id=b"\0" * 16), good_span(0, trace_id=trace_id))


def _http_case(name: str, signal: str, encoding: str, body: bytes | None, bug: str = "") -> Any:
    marks = [known(bug, AssertionError, ": the gateway answers 500")] if bug else []
    return pytest.param(signal, encoding, body, id=name, marks=marks)


HTTP_BAD = [
    _http_case("random bytes", "traces", "protobuf", _garbage(1)),
    _http_case("truncated fixture", "traces", "protobuf", None),
    _http_case("deep protobuf nesting", "traces", "protobuf",
               deep_body(1000, "kvlist", Encoding.PROTOBUF, Signal.TRACES)),
    _http_case("invalid UTF-8 protobuf", "traces", "protobuf", _bad_utf8_trace()),
    _http_case("random bytes on logs", "logs", "protobuf", _garbage(2, 64)),
    _http_case("JSON wrong types", "traces", "json", _trace_doc({**OK_SPAN, "name": 5, "attributes": "x"})),
    _http_case("JSON random bytes", "metrics", "json", _garbage(3)),
    _http_case("JSON deep nesting", "traces", "json", b"[" * 100_000, bug="json-deep-nesting"),
    _http_case("JSON invalid UTF-8", "traces", "json", b'{"resourceSpans": [{"schemaUrl": "\xff"}]}',
               bug="json-invalid-utf8"),
    _http_case("JSON huge double", "metrics", "json", _metric_doc(
        {"name": "g", "gauge": {"dataPoints": [{"asDouble": 10**400}]}}), bug="json-huge-int-double"),
]


@pytest.mark.parametrize(("signal", "encoding", "body"), HTTP_BAD)
def test_gateway_http_refuses_hostile_bodies(gateway, signal: str, encoding: str, body: bytes | None) -> None:
    if body is None:
        payload = next(p for p in protobuf_fixtures() if p.signal is Signal.TRACES)
        body = payload.body[: len(payload.body) - 3]
    result = post_otlp(gateway.http_url, signal, body, encoding)
    assert result.status == 400, (result.status, result.body[:300])
    assert get_json(f"{gateway.api_url}/healthz")[0] == 200


def test_gateway_http_partial_success_keeps_valid_spans(gateway) -> None:
    trace = bytes.fromhex("f1" * 16)
    result = post_otlp(gateway.http_url, "traces", _mixed_trace(trace).SerializeToString())
    assert result.status == 200, result.body[:300]
    assert ExportTraceServiceResponse.FromString(result.body).partial_success.rejected_spans == 3
    json_trace = bytes.fromhex("f2" * 16)
    doc = otlp_json(_mixed_trace(json_trace))
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**OK_SPAN, "traceId": "zz" * 16})
    spans.append({**OK_SPAN, "traceId": json_trace.hex()[:-2], "spanId": "1" * 16})
    result = post_otlp(gateway.http_url, "traces", json_body(doc), "json")
    assert result.status == 200, result.body[:300]
    assert json.loads(result.body)["partialSuccess"]["rejectedSpans"] == "5"
    gateway.settle()
    for tid in (trace, json_trace):
        rows = gateway.query("SELECT span_id, start_time, end_time FROM spans FINAL WHERE trace_id = {t:String} "
                             "ORDER BY span_id", t=tid.hex())
        assert [r["span_id"] for r in rows] == [f"{i:016x}" for i in (1, 2, 3)]
        assert rows[2]["start_time"].year == 2262  # 2**64-1 clamped, end before start taken as start


def test_gateway_grpc_refuses_hostile_bodies_and_answers_partial_success(gateway) -> None:
    for body in (_garbage(4), deep_body(1000, "array", Encoding.PROTOBUF, Signal.TRACES), _bad_utf8_trace(),
                 b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"):
        with pytest.raises(grpc.RpcError) as caught:
            grpc_export(gateway.grpc_target, "traces", body)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    # Trace bodies on the logs and metrics services: whatever protobuf makes of them, an answer, not a crash.
    for payload in protobuf_fixtures()[:3]:
        for signal in ("logs", "metrics"):
            try:
                grpc_export(gateway.grpc_target, signal, payload.body)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    trace = bytes.fromhex("f3" * 16)
    answer = ExportTraceServiceResponse.FromString(
        grpc_export(gateway.grpc_target, "traces", _mixed_trace(trace).SerializeToString()))
    assert answer.partial_success.rejected_spans == 3 and "trace_id" in answer.partial_success.error_message
    gateway.settle()
    assert gateway.scalar("SELECT count() FROM spans FINAL WHERE trace_id = {t:String}", t=trace.hex()) == 3


def test_gateway_stores_nan_metrics_and_extreme_logs(gateway) -> None:
    request = metrics_sample()
    request.resource_metrics[0].resource.attributes[0].value.string_value = "fuzz-metrics"
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        kind = metric.WhichOneof("data")
        point = getattr(metric, kind).data_points.add(time_unix_nano=2**64 - 1, start_time_unix_nano=0)
        if kind in ("gauge", "sum"):
            point.as_double = math.nan
        else:
            point.sum = math.inf
        if kind == "histogram":
            point.explicit_bounds.extend([math.nan, math.inf])
            point.bucket_counts.extend([2**64 - 1, 0, 1])
            point.min, point.max = -math.inf, math.nan
    assert post_otlp(gateway.http_url, "metrics", request.SerializeToString()).status == 200
    logs = ExportLogsServiceRequest()
    resource_logs = logs.resource_logs.add()
    resource_logs.resource.attributes.append(sv("service.name", "fuzz-logs"))
    records = resource_logs.scope_logs.add().log_records
    records.add(time_unix_nano=2**64 - 1, severity_number=-3, flags=2**32 - 1, body=AnyValue(double_value=math.nan))
    records.add(observed_time_unix_nano=1, severity_number=10_000, body=AnyValue(string_value="ok"))
    assert post_otlp(gateway.http_url, "logs", logs.SerializeToString()).status == 200
    gateway.settle()
    assert gateway.scalar("SELECT count() FROM metric_points WHERE service_name = 'fuzz-metrics'") == 10
    stored = gateway.query("SELECT toYear(timestamp) AS year, severity_number, flags, body FROM logs "
                           "WHERE service_name = 'fuzz-logs' ORDER BY timestamp")
    assert stored == [{"year": 1970, "severity_number": 0, "flags": 0, "body": "ok"},
                      {"year": 2262, "severity_number": 0, "flags": 2**32 - 1, "body": "null"}]  # to_json(NaN)


MAP_ERRORS_EXPECTED = {"count": 0}


@known("since-start-timestamp", AssertionError, "; and a mapper exception dead-letters the whole request "
       "(pipeline._process), so the valid span next to the bad one never reaches ClickHouse")
def test_gateway_keeps_valid_span_next_to_one_that_crashes_the_mapper(gateway) -> None:
    trace = bytes.fromhex("f4" * 16)
    request = _mapper_crash_request("langfuse.observation.completion_start_time", "²")
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.trace_id = trace
    before = gateway.gateway.pipeline.stats.map_errors
    assert post_otlp(gateway.http_url, "traces", request.SerializeToString()).status == 200
    gateway.settle()
    MAP_ERRORS_EXPECTED["count"] += gateway.gateway.pipeline.stats.map_errors - before
    assert gateway.scalar("SELECT count() FROM spans FINAL WHERE trace_id = {t:String}", t=trace.hex()) == 2


def test_gateway_still_serves_after_the_hostile_bodies(gateway) -> None:
    assert get_json(f"{gateway.api_url}/healthz")[0] == 200
    trace = bytes.fromhex("f5" * 16)
    assert post_otlp(gateway.http_url, "traces", trace_request(good_span(9, trace_id=trace)).SerializeToString(),
                     gzip_body=True).status == 200
    body = trace_request(good_span(10, trace_id=trace)).SerializeToString()
    answer = grpc_export(gateway.grpc_target, "traces", body)
    assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")
    gateway.settle()
    rows = gateway.query("SELECT span_id, input_tokens FROM inferences FINAL WHERE trace_id = {t:String} "
                         "ORDER BY span_id", t=trace.hex())
    assert rows == [{"span_id": f"{9:016x}", "input_tokens": 12}, {"span_id": f"{10:016x}", "input_tokens": 12}]
    # Every row the hostile bodies produced was accepted by ClickHouse: nothing failed or was dead-lettered.
    stats = gateway.gateway.writer.stats
    assert stats.insert_errors == 0 and stats.dead_letter_rows == 0, stats.last_error
    assert gateway.gateway.pipeline.stats.map_errors == MAP_ERRORS_EXPECTED["count"]
    assert post(f"{gateway.http_url}/v1/traces", b"", "application/x-protobuf").status == 200
