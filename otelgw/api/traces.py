"""The Grafana-Tempo-compatible trace API: trace by id (v1 and v2, JSON or protobuf), echo and
build info, and the inference-to-trace link.

Responses are built as OTLP protobuf messages (tempopb.Trace is wire-compatible with OTLP's
TracesData: field 1, repeated ResourceSpans) and rendered as protobuf or as proto3 JSON, which
is what Tempo's own JSON is (ids base64, int64 as strings). Stored attribute values are strings
(the spans table keeps Map(String, String)), so they come back as stringValue.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status, TracesData

from otelgw import __version__
from otelgw.api.common import MAX_NS, READER_KEY, ApiError, clamp_ns, json_response, principal
from otelgw.api.lookup import load_inference, parse_inference_id
from otelgw.governance.audit import audit
from otelgw.protowire import len_field

KINDS = {"unspecified": 0, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUS = {"unset": 0, "ok": 1, "error": 2}
MAX_SPANS = 10_000
PROTOBUF = "application/protobuf"
_decoder = msgspec.json.Decoder()


def parse_trace_id(raw: str) -> str:
    """1 to 32 hex digits, left-padded to 32 as Tempo does; anything else is a 400."""
    text = raw.strip().lower()
    if not 1 <= len(text) <= 32 or any(c not in "0123456789abcdef" for c in text):
        raise ApiError(400, "invalid_trace_id", f"trace id {raw!r} must be 1 to 32 hex digits")
    return text.rjust(32, "0")


def _time_range(request: web.Request) -> tuple[int, int]:
    """Optional start/end in unix seconds (Tempo's parameters) as ns bounds."""
    bounds = []
    for name in ("start", "end"):
        value = request.query.get(name)
        if value in (None, ""):
            bounds.append(None)
            continue
        try:
            bounds.append(clamp_ns(int(value) * 1_000_000_000))
        except ValueError as exc:
            raise ApiError(400, "invalid_request", f"{name} must be unix seconds") from exc
    # 0 is "not given", as in Tempo.
    start = bounds[0] or 0
    end = bounds[1] or MAX_NS
    if start > end:
        raise ApiError(400, "invalid_request", "start must not be after end")
    return start, end


def _kvs(attrs: dict[str, str]) -> Iterable[KeyValue]:
    return (KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items())


def build_trace(trace_id: str, rows: list[dict[str, Any]]) -> TracesData:
    """Stored span rows as OTLP, grouped by resource and scope as they were sent."""
    data = TracesData()
    groups: dict[tuple[Any, ...], Any] = {}
    trace_bytes = bytes.fromhex(trace_id)
    for row in rows:
        resource_key = tuple(sorted(row["resource_attributes"].items()))
        resource_spans = groups.get(resource_key)
        if resource_spans is None:
            resource_spans = data.resource_spans.add()
            resource_spans.resource.attributes.extend(_kvs(row["resource_attributes"]))
            groups[resource_key] = resource_spans
        scope_key = (resource_key, row["scope_name"], row["scope_version"])
        scope_spans = groups.get(scope_key)
        if scope_spans is None:
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = row["scope_name"]
            scope_spans.scope.version = row["scope_version"]
            groups[scope_key] = scope_spans
        span = scope_spans.spans.add(
            trace_id=trace_bytes, span_id=bytes.fromhex(row["span_id"]),
            parent_span_id=bytes.fromhex(row["parent_span_id"]) if row["parent_span_id"] else b"",
            name=row["name"], kind=KINDS.get(row["kind"], 0), start_time_unix_nano=row["start_ns"],
            end_time_unix_nano=row["end_ns"], status=Status(code=STATUS.get(row["status_code"], 0),
                                                            message=row["status_message"]))
        attributes = dict(row["attributes"])
        if row.get("inference_id"):
            attributes["otelgw.inference_id"] = row["inference_id"]
        span.attributes.extend(_kvs(attributes))
        for event in _decoder.decode(row["events"]) if row["events"] else ():
            span.events.add(name=event["name"], time_unix_nano=int(event["time_unix_nano"]),
                            attributes=list(_kvs(event["attributes"])))
        for link in _decoder.decode(row["links"]) if row["links"] else ():
            span.links.add(trace_id=bytes.fromhex(link["trace_id"]), span_id=bytes.fromhex(link["span_id"]),
                           trace_state=link.get("trace_state", ""), attributes=list(_kvs(link["attributes"])))
    return data


def span_from_inference(row: dict[str, Any]) -> dict[str, Any]:
    """A span row rebuilt from an inference row, for a trace whose detail was not kept."""
    return {
        "span_id": row["span_id"], "parent_span_id": row["parent_span_id"], "name": row["span_name"],
        "kind": row["span_kind"], "start_ns": row["timestamp_ns"], "end_ns": row["end_timestamp_ns"],
        "status_code": "ok" if row["is_success"] else "error", "status_message": row["error_message"],
        "attributes": {**row["attributes"], "otelgw.sampled_out": "true"},
        "resource_attributes": {"service.name": row["service_name"]}, "scope_name": row["scope_name"],
        "scope_version": "", "events": "[]", "links": "[]", "inference_id": str(row["inference_id"]),
    }


async def _load(request: web.Request, trace_id: str) -> tuple[list[dict[str, Any]], str]:
    """The trace's spans the caller may see, and its status (COMPLETE | PARTIAL | SAMPLED_OUT)."""
    start, end = _time_range(request)
    reader = request.app[READER_KEY]
    rows = await reader.rows("traces", "trace_by_id", trace_id=trace_id, start_ns=start, end_ns=end,
                             limit=MAX_SPANS + 1)
    caller = principal(request)
    rows = [r for r in rows if caller.sees(r["project_id"])]
    status = "COMPLETE"
    if len(rows) > MAX_SPANS:
        rows, status = rows[:MAX_SPANS], "PARTIAL"
    if not rows:
        # Trace detail sampled out (or never sent): the GenAI spans live on as inference rows.
        inferences = await reader.rows("traces", "inferences_of_trace", trace_id=trace_id, start_ns=start,
                                       end_ns=end)
        rows = [{**span_from_inference(r), "project_id": r["project_id"]} for r in inferences
                if caller.sees(r["project_id"])]
        status = "SAMPLED_OUT" if rows else status
    if not rows:
        raise ApiError(404, "trace_not_found", f"trace {trace_id} not found")
    projects = sorted({r.get("project_id", "") for r in rows})
    audit(request, "trace.read", target=trace_id, project=projects[0] if len(projects) == 1 else "",
          detail=f"spans={len(rows)} status={status} projects={','.join(projects)}")
    return rows, status


def _wants_protobuf(request: web.Request) -> bool:
    return PROTOBUF in request.headers.get("Accept", "")


def _proto_json(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=False)


async def trace_v1(request: web.Request) -> web.Response:
    trace_id = parse_trace_id(request.match_info["trace_id"])
    rows, _ = await _load(request, trace_id)
    trace = build_trace(trace_id, rows)
    if _wants_protobuf(request):
        return web.Response(body=trace.SerializeToString(), content_type=PROTOBUF)
    return json_response({"batches": _proto_json(trace).get("resourceSpans", [])})


def _v2_protobuf(trace: TracesData, status: str) -> bytes:
    """tempopb.TraceByIDResponse: trace = 1 (Trace), status = 3 (PartialStatus enum:
    COMPLETE = 0, PARTIAL = 1)."""
    body = trace.SerializeToString()
    out = len_field(1, body)
    if status == "PARTIAL":
        out += b"\x18\x01"
    return out


async def trace_v2(request: web.Request) -> web.Response:
    trace_id = parse_trace_id(request.match_info["trace_id"])
    rows, status = await _load(request, trace_id)
    trace = build_trace(trace_id, rows)
    if _wants_protobuf(request):
        return web.Response(body=_v2_protobuf(trace, status), content_type=PROTOBUF)
    answer: dict[str, Any] = {"trace": _proto_json(trace), "status": "PARTIAL" if status == "PARTIAL" else "COMPLETE"}
    if status == "SAMPLED_OUT":
        answer["message"] = "trace detail was sampled out; the GenAI spans are rebuilt from their inference rows"
    return json_response(answer)


async def inference_trace(request: web.Request) -> web.Response:
    """GET /api/v1/metrics/inferences/{id}/trace: the Tempo v2 trace, with the inference's span
    named in `inference_span_id` (and marked with the otelgw.inference_id attribute)."""
    inference_id = parse_inference_id(request)
    row = await load_inference(request, inference_id)
    if not row["trace_id"]:
        raise ApiError(404, "no_trace", f"inference {inference_id} was said by a log record: it has no trace")
    rows, status = await _load(request, row["trace_id"])
    trace = build_trace(row["trace_id"], rows)
    answer = {"trace": _proto_json(trace), "status": "PARTIAL" if status == "PARTIAL" else "COMPLETE",
              "inference_id": inference_id, "trace_id": row["trace_id"], "inference_span_id": row["span_id"],
              "inference_span_id_base64": base64.b64encode(bytes.fromhex(row["span_id"])).decode(),
              "sampled_out": status == "SAMPLED_OUT"}
    return json_response(answer)


async def echo(request: web.Request) -> web.Response:
    return web.Response(text="echo")


async def buildinfo(request: web.Request) -> web.Response:
    # A Tempo 2.x version, so Grafana's data source uses the v2 trace and search paths.
    return json_response({"version": "2.6.0", "revision": f"otelgw-{__version__}", "branch": "otelgw",
                          "buildUser": "otelgw", "buildDate": "", "goVersion": "n/a (otelgw is Python)"})
