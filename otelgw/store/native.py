"""The native fast path's SQL: `spans` rows made by ClickHouse itself from OTLP request bytes.

ClickHouse reads the requests with its `Protobuf` input format (a reader-side proto below, the
OTLP field numbers) and flattens them with ARRAY JOIN; the Python mapper stays the reference.
It decided, span by span, which spans ClickHouse may write (`pipeline/fastpath.py`: plain spans
whose values this SQL reproduces exactly) and hands over the request bytes with a selection:
which spans (by position) and each resource's project and service. The differential test
(`tests/test_fastpath.py`) holds the two paths to identical stored rows.

One query for many requests: each query costs milliseconds of analysis, so the writer batches
every native span of a flush into one INSERT ... SELECT over a glob of request files (chDB does
not accept binary Protobuf inline in a query; `file()` reads it).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import msgspec

from otelgw.pipeline.fastpath import NativeSpans, unpack_position
from otelgw.pipeline.rows import MAX_NS
from otelgw.store.client import quote_string

# Reader-side proto: the OTLP field numbers, one level of array values (kvlist values are read as
# bytes: spans holding them stay on the Python path). ClickHouse reads only the fields in STRUCT.
_ONEOF = ("string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; "
          "{array} array_value = 5; bytes kvlist_value = 6; bytes bytes_value = 7;")
PROTO = "\n".join([
    'syntax = "proto3";',
    "message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }",
    "message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }",
    "message Resource { repeated KeyValue attributes = 1; }",
    "message InstrumentationScope { string name = 1; string version = 2; }",
    "message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }",
    "message Span {",
    "  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;",
    "  string name = 5; int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;",
    "  repeated KeyValue attributes = 9;",
    "  message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; }",
    "  repeated Event events = 11;",
    "  message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3;",
    "                 repeated KeyValue attributes = 4; }",
    "  repeated Link links = 13;",
    "  Status status = 15;",
    "}",
    "message Status { string message = 2; int32 code = 3; }",
    "message KeyValue { string key = 1; AnyValue value = 2; }",
    "message AnyValue { oneof value { " + _ONEOF.format(array="LeafArray") + " } }",
    "message Leaf { oneof value { " + _ONEOF.format(array="bytes") + " } }",
    "message LeafArray { repeated Leaf values = 1; }",
]) + "\n"
_PRESENCE = ("value Enum8('none'=0, 'string_value'=1, 'bool_value'=2, 'int_value'=3, 'double_value'=4, "
             "'array_value'=5, 'kvlist_value'=6, 'bytes_value'=7)")
_SCALARS = "string_value String, bool_value Bool, int_value Int64, double_value Float64, bytes_value String"
_LEAF = f"Tuple({_SCALARS}, {_PRESENCE})"
_ANY = f"Tuple({_SCALARS}, array_value Tuple(values Array({_LEAF})), kvlist_value String, {_PRESENCE})"
_KV = f"Array(Tuple(key String, value {_ANY}))"
STRUCT = (
    f"resource_spans Array(Tuple(resource Tuple(attributes {_KV}), scope_spans Array(Tuple("
    f"scope Tuple(name String, version String), spans Array(Tuple(trace_id String, span_id String, "
    f"trace_state String, parent_span_id String, name String, kind Int32, start_time_unix_nano UInt64, "
    f"end_time_unix_nano UInt64, attributes {_KV}, "
    f"events Array(Tuple(time_unix_nano UInt64, name String, attributes {_KV})), "
    f"links Array(Tuple(trace_id String, span_id String, trace_state String, attributes {_KV})), "
    f"status Tuple(message String, code Int32)))))))"
)

def _f(value: str, name: str) -> str:
    return f"tupleElement({value}, '{name}')"


def _python_float(x: str) -> str:
    # repr() of a double in the range the fast path takes ([1e-4, 1e16) and 0): ClickHouse writes
    # 1.0 as '1', Python as '1.0'; the shortest round-trip digits are the same otherwise.
    return f"if({x} = floor({x}), toString({x}) || '.0', toString({x}))"


def _leaf_json(leaf: str) -> str:
    """One array element as msgspec writes it in JSON (arrays holding doubles stay in Python)."""
    kind = _f(leaf, "value")
    return (f"multiIf({kind} = 'string_value', toJSONString({_f(leaf, 'string_value')}), "
            f"{kind} = 'int_value', toString({_f(leaf, 'int_value')}), "
            f"{kind} = 'bool_value', if({_f(leaf, 'bool_value')}, 'true', 'false'), "
            f"{kind} = 'bytes_value', toJSONString(base64Encode({_f(leaf, 'bytes_value')})), 'null')")


def _value_string(kv: str) -> str:
    """anyvalue.to_str() of one attribute value."""
    value = _f(kv, "value")
    kind = _f(value, "value")
    array = (f"'[' || arrayStringConcat(arrayMap(x -> {_leaf_json('x')}, "
             f"{_f(_f(value, 'array_value'), 'values')}), ',') || ']'")
    return (f"multiIf({kind} = 'string_value', {_f(value, 'string_value')}, "
            f"{kind} = 'int_value', toString({_f(value, 'int_value')}), "
            f"{kind} = 'double_value', {_python_float(_f(value, 'double_value'))}, "
            f"{kind} = 'bool_value', if({_f(value, 'bool_value')}, 'true', 'false'), "
            f"{kind} = 'bytes_value', base64Encode({_f(value, 'bytes_value')}), "
            f"{kind} = 'array_value', {array}, '')")


def _attribute_map(kvs: str) -> str:
    return f"mapFromArrays(arrayMap(a -> tupleElement(a, 'key'), {kvs}), arrayMap(a -> {_value_string('a')}, {kvs}))"


def _json_list(items: str, var: str, fields: list[tuple[str, str]]) -> str:
    """'[]' or a JSON array of objects, keys in the mapper's order (msgspec keeps dict order)."""
    parts = " || ',' || ".join(f"'\"{name}\":' || {expr}" for name, expr in fields)
    objects = f"arrayMap({var} -> '{{' || {parts} || '}}', {items})"
    return f"if(empty({items}), '[]', '[' || arrayStringConcat({objects}, ',') || ']')"


_EVENTS = _json_list("s.events", "e", [
    ("name", "toJSONString(tupleElement(e, 'name'))"),
    ("time_unix_nano", "toString(tupleElement(e, 'time_unix_nano'))"),
    ("attributes", f"toJSONString({_attribute_map(_f('e', 'attributes'))})"),
])
_LINKS = _json_list("s.links", "l", [
    ("trace_id", "toJSONString(lower(hex(tupleElement(l, 'trace_id'))))"),
    ("span_id", "toJSONString(lower(hex(tupleElement(l, 'span_id'))))"),
    ("trace_state", "toJSONString(tupleElement(l, 'trace_state'))"),
    ("attributes", f"toJSONString({_attribute_map(_f('l', 'attributes'))})"),
])

COLUMNS = ("trace_id", "span_id", "parent_span_id", "trace_state", "project_id", "service_name", "name", "kind",
           "start_time", "end_time", "duration_ns", "status_code", "status_message", "attributes",
           "resource_attributes", "scope_name", "scope_version", "events", "links", "inference_id", "ingested_at")

# Per span of the requests, before the selection: its file and position, and the row's columns.
_FLAT = f"""
SELECT _file AS file,
  toUInt64(ri - 1) AS r_index, toUInt64(si - 1) AS s_index, toUInt64(pi - 1) AS p_index,
  lower(hex(s.trace_id)) AS trace_id, lower(hex(s.span_id)) AS span_id,
  lower(hex(s.parent_span_id)) AS parent_span_id, s.trace_state AS trace_state, s.name AS name,
  if(s.kind BETWEEN 0 AND 5, ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'][s.kind + 1],
     toString(s.kind)) AS kind,
  least(s.start_time_unix_nano, {MAX_NS}) AS start_ns,
  greatest(least(s.end_time_unix_nano, {MAX_NS}), start_ns) AS end_ns,
  if(tupleElement(s.status, 'code') BETWEEN 0 AND 2, ['unset', 'ok', 'error'][tupleElement(s.status, 'code') + 1],
     'unset') AS status_code,
  tupleElement(s.status, 'message') AS status_message,
  {_attribute_map("s.attributes")} AS attributes,
  {_attribute_map("tupleElement(rs.resource, 'attributes')")} AS resource_attributes,
  tupleElement(ss.scope, 'name') AS scope_name, tupleElement(ss.scope, 'version') AS scope_version,
  {_EVENTS} AS events,
  {_LINKS} AS links
FROM file(@FILES@, ProtobufSingle, $${STRUCT}$$)
ARRAY JOIN resource_spans AS rs, arrayEnumerate(resource_spans) AS ri
ARRAY JOIN rs.scope_spans AS ss, arrayEnumerate(rs.scope_spans) AS si
ARRAY JOIN ss.spans AS s, arrayEnumerate(ss.spans) AS pi
"""

_INSERT = f"""
INSERT INTO @TABLE@ ({", ".join(COLUMNS)})
SELECT p.trace_id, p.span_id, p.parent_span_id, p.trace_state, sel.project, sel.service, p.name, p.kind,
  fromUnixTimestamp64Nano(toInt64(p.start_ns), 'UTC'), fromUnixTimestamp64Nano(toInt64(p.end_ns), 'UTC'),
  p.end_ns - p.start_ns, p.status_code, p.status_message, p.attributes, p.resource_attributes,
  p.scope_name, p.scope_version, p.events, p.links, '', now64(3)
FROM ({_FLAT}) AS p
INNER JOIN file(@SELECTION@, JSONEachRow,
                'file String, r UInt64, s UInt64, i UInt64, project String, service String') AS sel
  ON p.file = sel.file AND p.r_index = sel.r AND p.s_index = sel.s AND p.p_index = sel.i
"""

SETTINGS: dict[str, Any] = {
    "input_format_protobuf_oneof_presence": 1,
    # msgspec does not escape '/', so neither may the events' and links' JSON.
    "output_format_json_escape_forward_slashes": 0,
}


class _Selected(msgspec.Struct):
    file: str
    r: int
    s: int
    i: int
    project: str
    service: str


class NativeInserter:
    """Runs the fast path's INSERT ... SELECT for a list of NativeSpans. Files go to `work_dir`
    (one directory a batch, removed afterwards); `client` is a clickhouse-connect client of an
    embedded chDB store (the files must be on its machine)."""

    def __init__(self, work_dir: str | Path) -> None:
        self.work_dir = Path(work_dir).resolve()
        self._encoder = msgspec.json.Encoder()
        self._batches = itertools.count()

    def prepare(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "otlp.proto").write_text(PROTO)
        # Batches left by a process that died mid-insert are not needed: their spans replay from
        # the write-ahead log.
        for stale in self.work_dir.glob("batch-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def flatten(self, files: str) -> str:
        """The SELECT of every span's row in the files, before the selection (benchmarks)."""
        return _FLAT.replace("@FILES@", quote_string(files))

    def statement(self, table: str, files: str, selection: str) -> str:
        return (_INSERT.replace("@TABLE@", table).replace("@FILES@", quote_string(files))
                .replace("@SELECTION@", quote_string(selection)))

    def settings(self) -> dict[str, Any]:
        return {**SETTINGS, "format_schema": f"{self.work_dir / 'otlp.proto'}:ExportTraceServiceRequest"}

    def insert(self, client: Any, items: list[NativeSpans], table: str = "spans",
               settings: dict[str, Any] | None = None) -> int:
        """Rows inserted (the selection's size)."""
        batch = self.work_dir / f"batch-{next(self._batches)}"
        shutil.rmtree(batch, ignore_errors=True)
        batch.mkdir(parents=True)
        try:
            selected: list[_Selected] = []
            for n, item in enumerate(items):
                name = f"{n}.pb"
                (batch / name).write_bytes(item.source.payload)
                resources = item.source.resources
                for key in item.positions:
                    # Each index apart: a packed key could collide in SQL, where an index may be
                    # past the packing's range (the mapper only keeps spans whose indexes fit).
                    r, s, i = unpack_position(key)
                    project, service = resources[r]
                    selected.append(_Selected(name, r, s, i, project, service))
            if not selected:
                return 0
            (batch / "selection.jsonl").write_bytes(b"\n".join(self._encoder.encode(s) for s in selected))
            client.command(self.statement(table, str(batch / "*.pb"), str(batch / "selection.jsonl")),
                           settings={**self.settings(), **(settings or {})})
            return len(selected)
        finally:
            shutil.rmtree(batch, ignore_errors=True)
