"""Inferences: POST /api/v1/metrics/inferences/list and GET /api/v1/metrics/inferences/{id}
(overview, messages, performance waterfall, raw spans, feedback)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web

from otelgw.api import waterfall
from otelgw.api.common import (
    BASELINE_CACHE_KEY,
    CANONICAL_KEY,
    MAX_NS,
    READER_KEY,
    ApiError,
    decode_body,
    json_response,
    no_rows,
    parse_time_ns,
    principal,
    rfc3339_ns,
)
from otelgw.api.feedback import feedback_list
from otelgw.api.lookup import load_inference, parse_inference_id
from otelgw.api.schemas import MAX_LIMIT, InferenceFilter, InferenceItem, ListRequest, ListResponse
from otelgw.auth import Principal
from otelgw.canonical import CanonicalValues
from otelgw.governance.audit import audit
from otelgw.pipeline.anyvalue import clip
from otelgw.store.queries.listing import (
    Cursor,
    Filter,
    count_query,
    decode_cursor,
    encode_cursor,
    list_query,
    rows_by_ids_query,
)
from otelgw.store.reader import Reader

# The gateway's `preview_chars`, for previews made at read time.
PREVIEW_CHARS_KEY: web.AppKey[int] = web.AppKey("preview_chars", int)
DEFAULT_PREVIEW_CHARS = 512

_decoder = msgspec.json.Decoder()
# FINAL per partition only: rows of one inference never straddle partitions (same timestamp).
FINAL_SETTINGS = {"do_not_merge_across_partitions_select_final": 1}


def build_filter(body: InferenceFilter, caller: Principal, values: CanonicalValues) -> Filter:
    from_ns = parse_time_ns(body.from_date, "from_date")
    to_ns = parse_time_ns(body.to_date, "to_date") if body.to_date else time.time_ns() + 60_000_000_000
    if from_ns >= to_ns:
        raise ApiError(400, "invalid_request", "from_date must be before to_date")
    if body.min_tokens is not None and body.max_tokens is not None and body.min_tokens > body.max_tokens:
        raise ApiError(400, "invalid_request", "min_tokens must not exceed max_tokens")
    for name in ("min_tokens", "max_tokens", "max_latency_ms"):
        value = getattr(body, name)
        if value is not None and value < 0:
            raise ApiError(400, "invalid_request", f"{name} must not be negative")
    if body.endpoint and body.service_name and body.endpoint != body.service_name:
        raise ApiError(400, "invalid_request", "endpoint and service_name name the same field: give one")
    return Filter(
        from_ns=from_ns, to_ns=to_ns, projects=caller.project_list(), project_id=body.project_id,
        is_success=body.is_success, min_tokens=body.min_tokens, max_tokens=body.max_tokens,
        max_latency_ms=body.max_latency_ms, model=body.model, provider=body.provider,
        service_name=body.endpoint or body.service_name, session_id=body.session_id, user_id=body.user_id,
        has_feedback=body.has_feedback, search=body.search or None,
        finish_reasons=values.finish_reason_spellings(body.finish_reason) if body.finish_reason else None,
    )


async def feedback_counts(reader: Reader, ids: list[str]) -> dict[str, int]:
    if not ids:
        return {}
    rows = await reader.sql("SELECT inference_id, count() AS n FROM feedback FINAL "
                            "WHERE inference_id IN {ids:Array(UUID)} GROUP BY inference_id", {"ids": ids})
    return {str(r["inference_id"]): r["n"] for r in rows}


async def fill_previews(reader: Reader, rows: list[dict[str, Any]], limit: int) -> None:
    """Previews (and the finish reason) of rows whose messages arrived after their span, as log
    records (the official OpenAI instrumentation's default mode): the row was written without
    them, so the page reads them from `messages`, as the mapper would have chosen them (the last
    user message, the first output message). A row with previews but no finish reason takes the
    reason its output messages name, as the detail and the finish_reason filter do."""
    missing = [r for r in rows if not (r["input_preview"] or r["output_preview"]) or r.get("finish_reason") == ""]
    if not missing:
        return
    found = await reader.rows("inferences", "previews_from_messages",
                              ids=[str(r["inference_id"]) for r in missing],
                              projects=sorted({r["project_id"] for r in missing}), limit=limit)
    by_id = {(f["project_id"], str(f["inference_id"])): f for f in found}
    for row in missing:
        got = by_id.get((row["project_id"], str(row["inference_id"])))
        if got is None:
            continue
        if "finish_reason" in row and not row["finish_reason"]:
            row["finish_reason"] = got["finish_reason"]
        if row["input_preview"] or row["output_preview"]:
            continue
        row["input_preview"] = clip(got["input_text"], limit)
        output = got["first_output"]
        if not output and got["first_output_calls"]:
            calls = _decoder.decode(got["first_output_calls"])
            output = "; ".join(f"{c.get('name', '')}({c.get('arguments', '')})" for c in calls if isinstance(c, dict))
        row["output_preview"] = clip(output, limit)


def _item(row: dict[str, Any], feedback: int) -> InferenceItem:
    return InferenceItem(
        inference_id=str(row["inference_id"]), timestamp=rfc3339_ns(row["timestamp_ns"]), project_id=row["project_id"],
        service_name=row["service_name"], endpoint=row["service_name"], provider=row["provider"],
        model=row["response_model"] or row["request_model"], request_model=row["request_model"],
        response_model=row["response_model"], operation=row["operation"], input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"], cached_input_tokens=row["cached_input_tokens"],
        total_tokens=row["total_tokens"], latency_ms=row["latency_ms"], ttft_ms=row["ttft_ms"],
        cost_usd=row["cost_usd"], is_success=bool(row["is_success"]), error_type=row["error_type"],
        is_streaming=bool(row["is_streaming"]), prompt_preview=row["input_preview"],
        response_preview=row["output_preview"], feedback_count=feedback, finish_reason=row["finish_reason"],
    )


async def list_inferences(request: web.Request) -> web.Response:
    body = await decode_body(request, ListRequest)
    if not 1 <= body.limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_request", f"limit must be between 1 and {MAX_LIMIT}")
    if body.offset < 0:
        raise ApiError(400, "invalid_request", "offset must not be negative")
    cursor = None
    if body.cursor:
        try:
            cursor = decode_cursor(body.cursor)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", f"cursor: {exc}") from exc
        if (cursor.sort_by, cursor.order) != (body.sort_by, body.sort_order):
            raise ApiError(400, "invalid_request", "cursor was issued for another sort_by / sort_order")
    filt = build_filter(body, principal(request), request.app[CANONICAL_KEY])
    reader = request.app[READER_KEY]
    offset = body.offset if cursor is None else 0
    # Slack for re-sent rows, which phase one does not fold (they are rare).
    fetch = offset + 2 * (body.limit + 1)
    keys_sql, keys_params = list_query(filt, body.sort_by, body.sort_order, fetch, 0, cursor)
    count_sql, count_params = count_query(filt)
    keys, counted = await asyncio.gather(reader.sql(keys_sql, keys_params),
                                         reader.sql(count_sql, count_params))
    total = counted[0]["count()"]
    seen: set[str] = set()
    ordered: list[dict[str, Any]] = []
    for key in keys:
        inference_id = str(key["inference_id"])
        if inference_id not in seen:
            seen.add(inference_id)
            ordered.append(key)
    page = ordered[offset:offset + body.limit + 1]
    has_more = len(page) > body.limit
    page = page[:body.limit]
    ids = [str(k["inference_id"]) for k in page]
    rows_sql, rows_params = rows_by_ids_query(ids, filt)
    fetched, counts = await asyncio.gather(reader.sql(rows_sql, rows_params, FINAL_SETTINGS) if ids else no_rows(),
                                           feedback_counts(reader, ids))
    by_id = {str(r["inference_id"]): r for r in fetched}
    rows = [by_id[i] for i in ids if i in by_id]
    await fill_previews(reader, rows, request.app.get(PREVIEW_CHARS_KEY, DEFAULT_PREVIEW_CHARS))
    if rows:  # previews are content; an empty page (the UI's live poll, mostly) read none
        audit(request, "inference.list", project=body.project_id or "", detail=f"returned={len(rows)}")
    next_cursor = None
    if has_more and page:
        last = page[-1]
        value = last["timestamp_ns"] if body.sort_by == "timestamp" else last["sort_value"]
        next_cursor = encode_cursor(Cursor(body.sort_by, body.sort_order, value, str(last["inference_id"])))
    return json_response(ListResponse(
        items=[_item(r, counts.get(str(r["inference_id"]), 0)) for r in rows],
        total_count=total, offset=offset, limit=body.limit, has_more=has_more,
        next_cursor=next_cursor,
    ))


async def get_inference(request: web.Request) -> web.Response:
    inference_id = parse_inference_id(request)
    row = await load_inference(request, inference_id)
    reader = request.app[READER_KEY]
    model = row["response_model"] or row["request_model"]
    # The 24 h baseline of a model moves slowly: one query per project, model and hour.
    cache = request.app[BASELINE_CACHE_KEY]
    cache_key = (row["project_id"], model, row["timestamp_ns"] // 3_600_000_000_000)
    cached = cache.get(cache_key)

    async def baseline_rows() -> list[dict[str, Any]]:
        if cached is not None:
            return cached
        # (A row stored at the store's end: its "+ 1 second" would overflow DateTime64(9).)
        rows = await reader.rows("inferences", "model_baseline", project_id=row["project_id"], model=model,
                                 until_ns=min(row["timestamp_ns"], MAX_NS - 1_000_000_000), hours=24)
        cache.put(cache_key, rows)
        return rows

    messages, spans, baseline, feedback = await asyncio.gather(
        reader.rows("inferences", "messages_by_inference", inference_id=inference_id, project_id=row["project_id"]),
        # The inference's own project only: a trace may cross projects the caller cannot see.
        reader.rows("inferences", "spans_of_trace", trace_id=row["trace_id"], project_id=row["project_id"])
        if row["trace_id"] else no_rows(),
        baseline_rows(),
        feedback_list(reader, inference_id, row["response_id"], row["project_id"]),
    )
    ordinals: dict[str, int] = {}
    for msg in messages:
        msg["tool_calls"] = _decoder.decode(msg["tool_calls"]) if msg["tool_calls"] else []
        msg.pop("timestamp_ns", None)
        # A log record's message is stored under a key of its own: the answer numbers them.
        msg["index"] = ordinals[msg["direction"]] = ordinals.get(msg["direction"], -1) + 1
    if not row["finish_reason"]:
        # Messages that arrived as log records after the span name it (fill_previews).
        row["finish_reason"] = next((m["finish_reason"] for m in messages
                                     if m["direction"] == "output" and m["finish_reason"]), "")
    detail = waterfall.detail(row, messages, spans, baseline[0] if baseline else {}, feedback)
    audit(request, "inference.read", target=inference_id, project=row["project_id"])
    return json_response(detail)
