"""Feedback: POST and GET /api/v1/metrics/inferences/{id}/feedback, and GET
/api/v1/traces/{trace_id}/feedback (every span's, evaluations of agent and tool spans included).

Types: `boolean` (thumbs up/down, value true/false), `rating` (1-5), `comment` (text in
`comment`), `demonstration` (a corrected response, in `value` or `comment`). API feedback and
evaluations that arrived as span events or log records are listed together, newest first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from otelgw.api.common import (
    FLUSH_INTERVAL_KEY,
    READER_KEY,
    ApiError,
    decode_body,
    json_response,
    no_rows,
    principal,
    rfc3339_ns,
)
from otelgw.api.lookup import load_inference, parse_inference_id
from otelgw.api.schemas import FeedbackItem, FeedbackList, FeedbackRequest, FeedbackSummary, TraceFeedbackList
from otelgw.api.traces import parse_trace_id
from otelgw.auth import Principal
from otelgw.governance.audit import audit
from otelgw.store.reader import Reader

FEEDBACK_COLUMNS = ["feedback_id", "inference_id", "project_id", "timestamp", "kind", "name", "value", "label",
                    "comment", "source", "created_by", "response_id", "trace_id", "span_id", "ingested_at"]
MAX_TEXT = 100_000
DEFAULT_TRACE_LIMIT = 1000
MAX_TRACE_LIMIT = 10_000


def _item(row: dict[str, Any], inference_id: str | None) -> FeedbackItem:
    return FeedbackItem(feedback_id=str(row["feedback_id"]), inference_id=inference_id, kind=row["kind"],
                        name=row["name"], value=row["value"], label=row["label"], comment=row["comment"],
                        source=row["source"], created_by=row["created_by"], timestamp=rfc3339_ns(row["timestamp_ns"]),
                        trace_id=row["trace_id"], span_id=row["span_id"])


def _summary(items: list[FeedbackItem]) -> FeedbackSummary:
    by_kind: dict[str, int] = {}
    for item in items:
        by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
    ratings = [i.value for i in items if i.kind == "rating" and i.value is not None]
    thumbs = [i.value for i in items if i.kind == "boolean" and i.value is not None]
    return FeedbackSummary(total=len(items), by_kind=by_kind,
                           mean_rating=sum(ratings) / len(ratings) if ratings else None,
                           thumbs_up_ratio=sum(1 for t in thumbs if t > 0) / len(thumbs) if thumbs else None)


async def feedback_list(reader: Reader, inference_id: str, response_id: str, project_id: str) -> FeedbackList:
    # Within the inference's project: ids come from clients, and another project may reuse them.
    rows = await reader.rows("inferences", "feedback_by_inference", inference_id=inference_id, response_id=response_id,
                             project_id=project_id)
    # The response-id half reads without FINAL: fold re-sent copies here.
    rows = list({str(r["feedback_id"]): r for r in rows}.values())
    items = [_item(r, inference_id) for r in rows]
    items.sort(key=lambda f: f.timestamp, reverse=True)
    return FeedbackList(inference_id=inference_id, items=items, summary=_summary(items))


async def trace_feedback(reader: Reader, trace_id: str, caller: Principal,
                         limit: int) -> tuple[TraceFeedbackList, list[str]]:
    """Every feedback row recorded on the trace's spans that the caller may see, each naming the
    inference it belongs to: the one its span is, or the one its response id names (an evaluation
    sent on a span of its own), or none (an evaluation of an agent, tool or retrieval span); and
    the projects they are in."""
    rows = await reader.rows("traces", "feedback_of_trace", trace_id=trace_id, limit=limit + 1,
                             every_project=caller.projects is None, projects=caller.project_list() or [])
    rows = [r for r in rows if caller.sees(r["project_id"])]
    has_more = len(rows) > limit
    rows = rows[:limit]
    by_id: set[tuple[str, str]] = set()
    by_response: dict[tuple[str, str], str] = {}
    projects = sorted({r["project_id"] for r in rows})
    response_ids = sorted({r["response_id"] for r in rows if r["response_id"]})
    if rows:
        # Two point reads (by id in the narrow lookup table, by response id through its index)
        # rather than one OR, which older servers cannot answer from the indexes.
        found, named = await asyncio.gather(
            reader.rows("traces", "inferences_by_id", ids=sorted({str(r["inference_id"]) for r in rows}),
                        projects=projects),
            reader.rows("traces", "inferences_by_response_id", projects=projects, response_ids=response_ids)
            if response_ids else no_rows())
        by_id = {(row["project_id"], str(row["inference_id"])) for row in found}
        by_response = {(row["project_id"], row["response_id"]): str(row["inference_id"]) for row in named}
    items = []
    for row in rows:
        own = (row["project_id"], str(row["inference_id"]))
        items.append(_item(row, own[1] if own in by_id else by_response.get((row["project_id"], row["response_id"]))))
    return (TraceFeedbackList(trace_id=trace_id, items=items, summary=_summary(items), has_more=has_more),
            projects)


def _validate(body: FeedbackRequest) -> tuple[float | None, str, str]:
    """(value, label, comment) for the row, or a 400 naming what is wrong."""
    if len(body.comment) > MAX_TEXT or len(body.name) > 256 or len(body.created_by) > 256:
        raise ApiError(400, "invalid_request", f"comment is limited to {MAX_TEXT} characters, name and "
                                               "created_by to 256")
    if body.type == "boolean":
        if not isinstance(body.value, bool):
            raise ApiError(400, "invalid_request", "value: a boolean feedback needs true or false")
        return (1.0 if body.value else 0.0), ("true" if body.value else "false"), body.comment
    if body.type == "rating":
        if isinstance(body.value, bool) or not isinstance(body.value, (int, float)) or not 1 <= body.value <= 5:
            raise ApiError(400, "invalid_request", "value: a rating is a number from 1 to 5")
        return float(body.value), "", body.comment
    if body.type == "comment":
        text = body.comment or (body.value if isinstance(body.value, str) else "")
        if not text.strip():
            raise ApiError(400, "invalid_request", "comment: a comment feedback needs text")
        return None, "", text
    text = body.value if isinstance(body.value, str) else body.comment
    if not text or not text.strip():
        raise ApiError(400, "invalid_request", "value: a demonstration needs the corrected response as text")
    if len(text) > MAX_TEXT:
        raise ApiError(400, "invalid_request", f"value is limited to {MAX_TEXT} characters")
    return None, "", text


async def _find(request: web.Request, inference_id: str) -> dict[str, Any]:
    """The inference, waiting briefly for one still in the pipeline (accepted, not flushed)."""
    deadline = time.monotonic() + 2 * request.app[FLUSH_INTERVAL_KEY] + 1.0
    while True:
        try:
            return await load_inference(request, inference_id)
        except ApiError as exc:
            if exc.status != 404 or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.2)


async def post_feedback(request: web.Request) -> web.Response:
    inference_id = parse_inference_id(request)
    body = await decode_body(request, FeedbackRequest)
    value, label, comment = _validate(body)
    row = await _find(request, inference_id)
    caller = principal(request)
    now = datetime.now(UTC)
    feedback_id = str(uuid.uuid4())
    created_by = body.created_by or caller.key_id or "anonymous"
    await request.app[READER_KEY].insert("feedback", [[
        feedback_id, inference_id, row["project_id"], now, body.type, body.name or body.type, value, label, comment,
        "api", created_by, row["response_id"], row["trace_id"], row["span_id"], now,
    ]], FEEDBACK_COLUMNS)
    audit(request, "feedback.create", target=inference_id, project=row["project_id"],
          detail=f"feedback_id={feedback_id} type={body.type}")
    item = FeedbackItem(feedback_id=feedback_id, inference_id=inference_id, kind=body.type,
                        name=body.name or body.type, value=value, label=label, comment=comment, source="api",
                        created_by=created_by, timestamp=rfc3339_ns(int(now.timestamp() * 1e9)),
                        trace_id=row["trace_id"], span_id=row["span_id"])
    return json_response(item, status=201)


async def get_feedback(request: web.Request) -> web.Response:
    inference_id = parse_inference_id(request)
    row = await load_inference(request, inference_id)
    listed = await feedback_list(request.app[READER_KEY], inference_id, row["response_id"], row["project_id"])
    audit(request, "feedback.read", target=inference_id, project=row["project_id"])
    return json_response(listed)


async def get_trace_feedback(request: web.Request) -> web.Response:
    """GET /api/v1/traces/{trace_id}/feedback[?limit=N]: the trace's feedback, newest first."""
    trace_id = parse_trace_id(request.match_info["trace_id"])
    raw = request.query.get("limit", str(DEFAULT_TRACE_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_TRACE_LIMIT:
        raise ApiError(400, "invalid_request", f"limit must be a whole number from 1 to {MAX_TRACE_LIMIT}")
    listed, projects = await trace_feedback(request.app[READER_KEY], trace_id, principal(request), limit)
    audit(request, "feedback.read", target=trace_id, project=projects[0] if len(projects) == 1 else "",
          detail=f"trace items={len(listed.items)} projects={','.join(projects)}")
    return json_response(listed)
