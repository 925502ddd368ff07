"""GET /api/v1/metrics/inferences/{inference_id}: one inference with its messages and feedback."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from aiohttp import web

from otelgw.api.common import READER_KEY, error, json_response, rfc3339_ns

_decode = msgspec.json.Decoder()


def _tool_calls(raw: str) -> list[Any]:
    if not raw:
        return []
    try:
        value = _decode.decode(raw)
    except msgspec.DecodeError:
        return []
    return value if isinstance(value, list) else []


async def get_inference(request: web.Request) -> web.Response:
    raw_id = request.match_info["inference_id"]
    try:
        inference_id = str(uuid.UUID(raw_id))
    except ValueError:
        return error(400, "invalid_inference_id", f"inference id {raw_id!r} is not a UUID")
    reader = request.app[READER_KEY]
    found = await reader.rows("inferences", "inference_by_id", inference_id=inference_id)
    if not found:
        return error(404, "not_found", f"no inference {inference_id}")
    row = found[0]
    messages = await reader.rows("inferences", "messages_by_inference", inference_id=inference_id)
    feedback = await reader.rows("inferences", "feedback_by_inference", inference_id=inference_id,
                                 response_id=row["response_id"])
    start_ns, end_ns = row.pop("timestamp_ns"), row.pop("end_timestamp_ns")
    row["timestamp"] = rfc3339_ns(start_ns)
    row["end_timestamp"] = rfc3339_ns(end_ns)
    row["timestamp_unix_nano"] = start_ns
    row["end_timestamp_unix_nano"] = end_ns
    for msg in messages:
        msg["tool_calls"] = _tool_calls(msg["tool_calls"])
        msg["timestamp"] = rfc3339_ns(msg.pop("timestamp_ns"))
    for item in feedback:
        item["timestamp"] = rfc3339_ns(item.pop("timestamp_ns"))
    row["input_messages"] = [m for m in messages if m["direction"] == "input"]
    row["output_messages"] = [m for m in messages if m["direction"] == "output"]
    row["feedback"] = feedback
    return json_response(row)
