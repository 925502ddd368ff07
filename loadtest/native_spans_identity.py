#!/usr/bin/env python3
"""Research for the native fast path (issue 11; built since: otelgw/store/native.py, whose proto
this uses): can ClickHouse's own Protobuf input reproduce otelgw's `spans` rows field by field?
Python rows from the mapper against rows from chDB reading the same request bytes
(`file(..., ProtobufSingle, structure)` with a reader-side proto), for every shared fixture, the
load generator's spans and a request of hostile values.

    .venv/bin/python loadtest/native_spans_identity.py

Prints the spans compared and every kind of mismatch with an example (docs/scaling.md has the
findings). The SQL here is a sketch of what the fast path's views would generate; it does not
handle kvlist values (read as bytes) nor the message attributes the mapper moves out of GenAI
spans (`semconv` `carries_messages`, counted separately).
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "loadtest"))

import bench_ingest  # noqa: E402
import chdb  # noqa: E402
from fixtures_lib import all_fixtures  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue  # noqa: E402

from otelgw.config import Config  # noqa: E402
from otelgw.pipeline.request import Signal  # noqa: E402
from otelgw.pipeline.workers import build_mapper  # noqa: E402
from otelgw.receiver.decode import Encoding, decode  # noqa: E402
from otelgw.store.native import PROTO, STRUCT  # noqa: E402

# The reader-side proto and structure are the fast path's (otelgw/store/native.py).


def _field(value: str, name: str) -> str:
    return f"tupleElement({value}, '{name}')"


def python_float(x: str) -> str:
    """repr() of a double for the usual magnitudes: ClickHouse writes 1.0 as '1'. (Outside
    [1e-4, 1e16) Python switches to 'e' notation, which this sketch does not reproduce.)"""
    return f"if(isFinite({x}) AND {x} = floor({x}) AND abs({x}) < 1e16, toString({x}) || '.0', toString({x}))"


def leaf_json(leaf: str) -> str:
    """One array element as msgspec writes it in JSON."""
    def f(name: str) -> str:
        return _field(leaf, name)
    return (f"multiIf({f('value')} = 'string_value', toJSONString({f('string_value')}), "
            f"{f('value')} = 'int_value', toString({f('int_value')}), "
            f"{f('value')} = 'double_value', toJSONString({f('double_value')}), "
            f"{f('value')} = 'bool_value', if({f('bool_value')}, 'true', 'false'), "
            f"{f('value')} = 'bytes_value', toJSONString(base64Encode({f('bytes_value')})), 'null')")


def value_string(kv: str) -> str:
    """The mapper's to_str() of one attribute value."""
    def f(name: str) -> str:
        return _field(_field(kv, "value"), name)
    array = (f"'[' || arrayStringConcat(arrayMap(x -> {leaf_json('x')}, {_field(f('array_value'), 'values')}), ',') "
             "|| ']'")
    return (f"multiIf({f('value')} = 'string_value', {f('string_value')}, "
            f"{f('value')} = 'int_value', toString({f('int_value')}), "
            f"{f('value')} = 'double_value', {python_float(f('double_value'))}, "
            f"{f('value')} = 'bool_value', if({f('bool_value')}, 'true', 'false'), "
            f"{f('value')} = 'bytes_value', base64Encode({f('bytes_value')}), "
            f"{f('value')} = 'array_value', {array}, '')")


def attribute_map(kvs: str) -> str:
    return f"mapFromArrays(arrayMap(a -> tupleElement(a, 'key'), {kvs}), arrayMap(a -> {value_string('a')}, {kvs}))"


_EVENT_ATTRIBUTES = attribute_map("tupleElement(e, 'attributes')")
_EVENT = ("""'{"name":' || toJSONString(tupleElement(e, 'name')) || ',"time_unix_nano":' """
          """|| toString(tupleElement(e, 'time_unix_nano')) || ',"attributes":' """
          f"|| toJSONString({_EVENT_ATTRIBUTES}) || '}}'")
SELECT = f"""
  lower(hex(s.trace_id)) AS trace_id, lower(hex(s.span_id)) AS span_id,
  lower(hex(s.parent_span_id)) AS parent_span_id, s.trace_state AS trace_state, s.name AS name,
  ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'][s.kind + 1] AS kind,
  ['unset', 'ok', 'error'][tupleElement(s.status, 'code') + 1] AS status_code,
  tupleElement(s.status, 'message') AS status_message,
  {attribute_map("tupleElement(rs.resource, 'attributes')")} AS resource_attributes,
  {attribute_map("s.attributes")} AS attributes,
  tupleElement(ss.scope, 'name') AS scope_name, tupleElement(ss.scope, 'version') AS scope_version,
  if(empty(s.events), '[]', '[' || arrayStringConcat(arrayMap(e -> {_EVENT}, s.events), ',') || ']') AS events
"""
TAIL = "ARRAY JOIN resource_spans AS rs ARRAY JOIN rs.scope_spans AS ss ARRAY JOIN ss.spans AS s"



class Comparison:
    def __init__(self) -> None:
        self.work = tempfile.mkdtemp(prefix="otelgw-native-")
        proto = os.path.join(self.work, "otlp.proto")
        Path(proto).write_text(PROTO)
        self.conn = chdb.connect(self.work)
        self.conn.query(f"SET format_schema = '{proto}:ExportTraceServiceRequest'")
        self.conn.query("SET input_format_protobuf_oneof_presence = 1")
        # msgspec does not escape '/': neither may ClickHouse for the events JSON to match.
        self.conn.query("SET output_format_json_escape_forward_slashes = 0")
        self.mapper = build_mapper(Config())
        self.mismatches: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, tuple[str, Any, Any]] = {}
        self.total = 0

    def sql_rows(self, body: bytes) -> list[dict[str, Any]]:
        path = os.path.join(self.work, "request.bin")
        Path(path).write_bytes(body)
        out = self.conn.query(f"SELECT {SELECT} FROM file('{path}', ProtobufSingle, $${STRUCT}$$) {TAIL}",
                              "JSONEachRow").bytes()
        return [json.loads(line) for line in out.decode().splitlines() if line]

    def note(self, key: str, where: str, sql: Any, py: Any) -> None:
        self.mismatches[key] += 1
        self.examples.setdefault(key, (where, sql[:300] if isinstance(sql, str) else sql,
                                       py[:300] if isinstance(py, str) else py))

    def compare(self, where: str, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        python = {(r.trace_id, r.span_id): r for r in self.mapper.map_traces(request, "", time.time_ns()).spans}
        for row in self.sql_rows(body):
            self.total += 1
            py = python[(row["trace_id"], row["span_id"])]
            for field in ("parent_span_id", "trace_state", "name", "kind", "status_code", "status_message",
                          "scope_name", "scope_version", "resource_attributes", "events"):
                if row[field] != getattr(py, field):
                    self.note(field, where, row[field], getattr(py, field))
            for key, value in row["attributes"].items():
                if key not in py.attributes:
                    self.mismatches["attribute moved to messages by the mapper"] += 1
                elif py.attributes[key] != value:
                    self.note(f"attribute {key}", where, value, py.attributes[key])


def hostile_request() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="x", start_time_unix_nano=1, end_time_unix_nano=2)
    doubles = [0.1, 1.0, -0.0, 1e-05, 0.0001, 123456789.125, 1e16, 1.5e300, 2.5e-300, float("nan"), float("inf"),
               1 / 3, 100.0]
    for i, x in enumerate(doubles):
        span.attributes.append(KeyValue(key=f"double.{i}", value=AnyValue(double_value=x)))
    span.attributes.append(KeyValue(key="array", value=AnyValue(array_value=ArrayValue(values=[
        AnyValue(double_value=1.0), AnyValue(string_value='a"b/c\u00e9\x01'), AnyValue(int_value=-3),
        AnyValue(bool_value=True)]))))
    span.attributes.append(KeyValue(key="text", value=AnyValue(string_value='tab\there "q" \u2603 /slash \x00nul')))
    event = span.events.add(name="e\u00e9", time_unix_nano=5)
    event.attributes.append(KeyValue(key="k/", value=AnyValue(string_value='v"\n')))
    return request.SerializeToString()


def main() -> int:
    comparison = Comparison()
    for fixture in all_fixtures():
        for signal, encoding, body in fixture.payloads():
            if signal == "traces":
                message = decode(Signal.TRACES, body, Encoding(encoding)).message
                comparison.compare(fixture.name, message.SerializeToString())
    for body in bench_ingest.build_requests(2048, 512, 4, 1):
        comparison.compare("load generator", body)
    comparison.compare("hostile values", hostile_request())
    print(f"spans compared: {comparison.total}")
    for key, count in comparison.mismatches.most_common():
        print(f"{count:7d}  {key}")
    for key, (where, sql, py) in comparison.examples.items():
        print(f"--- {key} [{where}]\n  ClickHouse: {sql!r}\n  Python:     {py!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
