"""POST /observability/add: the Bud metrics service's bulk intake of inference records (a Dapr
bulk CloudEvents envelope, each record in `entries[].event.data`).

Records are validated one by one, converted to spans (receiver/bud_records.py) and made durable
in the write-ahead log exactly like an OTLP request: the answer comes once they are fsynced, and
the rollups, listings and traces see them as they see any span. Authorization is the OTLP
receivers' (an ingest key when ingest keys exist). Ids already stored are skipped and reported as
duplicates, as Bud does; a record re-sent before its first copy reached ClickHouse collapses onto
it in the inference tables.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from aiohttp import web

from otelgw.api.common import AUTH_KEY, PIPELINE_KEY, READER_KEY, ApiError, json_response
from otelgw.auth import bearer_token
from otelgw.pipeline.admission import Overloaded, RateLimited
from otelgw.pipeline.request import Decoded, Signal
from otelgw.receiver.bud_records import MAX_ENTRIES, BudRecord, BulkEnvelope, to_request
from otelgw.receiver.ingest import BadProject, admission_project, clean_project, http_connection
from otelgw.receiver.otlp_http import PROJECT_HEADER

_SHOWN = 10  # ids and errors listed in the answer, as Bud does


def _records(envelope: BulkEnvelope) -> tuple[list[BudRecord], list[dict[str, Any]]]:
    records: list[BudRecord] = []
    errors: list[dict[str, Any]] = []
    for index, entry in enumerate(envelope.entries):
        data = entry.event.get("data")
        try:
            if not isinstance(data, dict):
                raise ValueError("event.data must be an object holding the inference record")
            record = msgspec.convert(data, BudRecord, strict=False)
            record.check()
            records.append(record)
        except (msgspec.ValidationError, ValueError) as exc:
            inference_id = data.get("inference_id") if isinstance(data, dict) else None
            errors.append({"index": index, "inference_id": str(inference_id or "unknown"), "error": str(exc)})
    return records, errors


async def _existing(request: web.Request, ids: list[str], projects: list[str]) -> set[str]:
    # Within the projects the records go to: whether an id exists elsewhere is not the sender's to know.
    rows = await request.app[READER_KEY].sql(
        "SELECT DISTINCT toString(inference_id) AS id FROM inference_lookup "
        "WHERE inference_id IN {ids:Array(UUID)} AND project_id IN {projects:Array(String)}",
        {"ids": ids, "projects": projects})
    return {r["id"] for r in rows}


async def add(request: web.Request) -> web.Response:
    try:
        project = request.app[AUTH_KEY].ingest_project(bearer_token(request.headers.get("Authorization")),
                                                       clean_project(request.headers.get(PROJECT_HEADER)))
    except BadProject as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    raw = await request.read()
    try:
        envelope = msgspec.json.decode(raw, type=BulkEnvelope)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "entries" in message and "length" in message:
            message = f"entries: at most {MAX_ENTRIES} records per request ({message})"
        raise ApiError(400, "invalid_request", message) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    records, errors = _records(envelope)
    if envelope.entries and not records:
        shown = "; ".join(f"entries[{e['index']}]: {e['error']}" for e in errors[:3])
        raise ApiError(400, "invalid_request", f"no valid record in {len(errors)} entries: {shown}")
    unique: dict[str, BudRecord] = {}
    repeated: list[str] = []  # ids given twice in this request
    for record in records:
        key = str(record.inference_id)
        if key in unique:
            repeated.append(key)
        else:
            unique[key] = record
    projects = sorted({project or r.project_id for r in unique.values()})
    existing = await _existing(request, list(unique), projects) if unique else set()
    fresh = [r for key, r in unique.items() if key not in existing]
    duplicates = sorted(existing) + repeated
    if fresh:
        message = to_request(fresh)
        decoded = Decoded(Signal.TRACES, message, accepted=len(fresh), rejected=0)
        pipeline = request.app[PIPELINE_KEY]
        connection = http_connection(request)
        try:
            with pipeline.admission.slot(connection):
                pipeline.check_open(project, connection)
                await pipeline.accept(decoded, message.SerializeToString(), project,
                                      admission_project(project, decoded), connection)
        except Overloaded as exc:
            status = 429 if isinstance(exc, RateLimited) else 503
            response = json_response({"error": {"code": "unavailable" if status == 503 else "rate_limited",
                                                "message": str(exc)}}, status=status)
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            return response
    parts = [f"Successfully inserted {len(fresh)} new records"]
    if duplicates:
        parts.append(f"Skipped {len(duplicates)} duplicate records")
    if errors:
        parts.append(f"Failed to validate {len(errors)} entries")
    details: dict[str, Any] = {}
    if duplicates:
        details["duplicate_inference_ids"] = duplicates[:_SHOWN]
        if len(duplicates) > _SHOWN:
            details["note"] = f"Showing first {_SHOWN} of {len(duplicates)} duplicate IDs"
    if errors:
        details["validation_errors"] = errors[:_SHOWN]
        if len(errors) > _SHOWN:
            details["validation_note"] = f"Showing first {_SHOWN} of {len(errors)} validation errors"
    return json_response({
        "object": "info",
        "message": ". ".join(parts) if envelope.entries else "No records to process",
        "param": {"summary": {"total_entries": len(envelope.entries), "successfully_inserted": len(fresh),
                              "duplicates_skipped": len(duplicates), "validation_failures": len(errors)},
                  "details": details},
    })
