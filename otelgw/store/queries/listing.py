"""SQL for listing and exporting inferences: filters become a WHERE clause with bound
parameters (never formatted values), sort keys come from a fixed list, cursors are keyset
positions (sort value, inference id) so a deep page costs what the first one does."""

from __future__ import annotations

import base64
import math
import uuid
from typing import Any

import msgspec

SORT_COLUMNS: dict[str, str] = {
    "timestamp": "timestamp",
    "tokens": "total_tokens",
    "latency": "latency_ms",
    "cost": "cost_usd",
    "ttft": "ifNull(ttft_ms, -1)",
}

LIST_COLUMNS = """inference_id, toUnixTimestamp64Nano(timestamp) AS timestamp_ns, project_id, service_name, span_name,
    provider, request_model, response_model, operation, input_tokens, output_tokens, cached_input_tokens,
    total_tokens, latency_ms, ttft_ms, cost_usd, is_success, error_type, is_streaming, input_preview,
    output_preview, finish_reason"""


class Filter(msgspec.Struct, kw_only=True):
    """A validated filter: times in ns, `projects` is the caller's allowed set (None = any)."""

    from_ns: int
    to_ns: int
    projects: list[str] | None = None
    project_id: str | None = None
    is_success: bool | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    max_latency_ms: float | None = None
    model: str | None = None
    provider: str | None = None
    service_name: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    has_feedback: bool | None = None
    search: str | None = None
    finish_reasons: list[str] | None = None


class Cursor(msgspec.Struct, array_like=True):
    sort_by: str
    order: str
    value: float | int
    inference_id: str


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """A cursor `encode_cursor` made; a ValueError for anything else (a tampered cursor must
    not reach the query as a value ClickHouse cannot take)."""
    padded = text + "=" * (-len(text) % 4)
    try:
        cursor = msgspec.json.decode(base64.urlsafe_b64decode(padded), type=Cursor)
        cursor.inference_id = str(uuid.UUID(cursor.inference_id))
    except (ValueError, msgspec.DecodeError) as exc:
        raise ValueError("cursor is not one this API issued") from exc
    timestamp = cursor.sort_by == "timestamp"
    # (abs() first: a 400-digit int is no float, and isfinite would overflow on it.)
    if (cursor.sort_by not in SORT_COLUMNS or cursor.order not in ("asc", "desc") or not abs(cursor.value) < 2**63
            or not math.isfinite(cursor.value) or (timestamp and not isinstance(cursor.value, int))):
        raise ValueError("cursor is not one this API issued")
    return cursor


def where(f: Filter) -> tuple[str, dict[str, Any]]:
    clauses = ["timestamp >= fromUnixTimestamp64Nano({from_ns:Int64}, 'UTC')",
               "timestamp < fromUnixTimestamp64Nano({to_ns:Int64}, 'UTC')"]
    params: dict[str, Any] = {"from_ns": f.from_ns, "to_ns": f.to_ns}
    if f.projects is not None:
        clauses.append("project_id IN {projects:Array(String)}")
        params["projects"] = f.projects
    if f.project_id is not None:
        clauses.append("project_id = {project_id:String}")
        params["project_id"] = f.project_id
    if f.is_success is not None:
        clauses.append("is_success = {is_success:Bool}")
        params["is_success"] = f.is_success
    if f.min_tokens is not None:
        clauses.append("total_tokens >= {min_tokens:UInt64}")
        params["min_tokens"] = f.min_tokens
    if f.max_tokens is not None:
        clauses.append("total_tokens <= {max_tokens:UInt64}")
        params["max_tokens"] = f.max_tokens
    if f.max_latency_ms is not None:
        clauses.append("latency_ms <= {max_latency_ms:Float64}")
        params["max_latency_ms"] = f.max_latency_ms
    if f.model is not None:
        clauses.append("(request_model = {model:String} OR response_model = {model:String})")
        params["model"] = f.model
    for name in ("provider", "service_name", "session_id", "user_id"):
        value = getattr(f, name)
        if value is not None:
            clauses.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if f.search:
        clauses.append("(positionCaseInsensitiveUTF8(input_preview, {search:String}) > 0 "
                       "OR positionCaseInsensitiveUTF8(output_preview, {search:String}) > 0)")
        params["search"] = f.search
    if f.finish_reasons is not None:
        # A call whose reason came only in its output messages (log-record events) has none of
        # its own: the listing reads it from them, and so does the filter — from the messages of
        # the window's calls without one (messages are keyed by inference id).
        scope = " AND ".join(clauses)
        clauses.append("(finish_reason IN {finish_reasons:Array(String)} OR (finish_reason = '' AND inference_id IN "
                       "(SELECT inference_id FROM messages WHERE inference_id IN (SELECT inference_id FROM inferences "
                       f"WHERE {scope} AND finish_reason = '') AND direction = 'output' "
                       "AND finish_reason IN {finish_reasons:Array(String)})))")
        params["finish_reasons"] = f.finish_reasons
    if f.has_feedback is not None:
        op = "IN" if f.has_feedback else "NOT IN"
        clauses.append(f"inference_id {op} (SELECT inference_id FROM feedback WHERE "
                       "timestamp >= fromUnixTimestamp64Nano({from_ns:Int64}, 'UTC') - INTERVAL 30 DAY)")
    return " AND ".join(clauses), params


def list_query(f: Filter, sort_by: str, order: str, limit: int, offset: int,
               cursor: Cursor | None) -> tuple[str, dict[str, Any]]:
    clause, params = where(f)
    column = SORT_COLUMNS[sort_by]
    direction = "DESC" if order == "desc" else "ASC"
    if cursor is not None:
        comparison = "<" if order == "desc" else ">"
        clause += f" AND ({column}, inference_id) {comparison} ({{cursor_value:Float64}}, {{cursor_id:UUID}})"
        params["cursor_value"] = cursor.value
        params["cursor_id"] = cursor.inference_id
        if sort_by == "timestamp":
            clause = clause.replace("(timestamp, inference_id)", "(toUnixTimestamp64Nano(timestamp), inference_id)")
            clause = clause.replace("{cursor_value:Float64}", "{cursor_value:Int64}")
    # Phase one reads only the sort key and the id (no FINAL: a re-sent row has the same key
    # and id, and the caller drops such repeats), so a top-N over millions of rows stays cheap.
    sql = (f"SELECT {column} AS sort_value, inference_id, toUnixTimestamp64Nano(timestamp) AS timestamp_ns "
           f"FROM inferences WHERE {clause} "
           f"ORDER BY {column} {direction}, inference_id {direction} LIMIT {{limit:UInt32}}")
    params["limit"] = limit
    return sql, params


def rows_by_ids_query(ids: list[str], f: Filter) -> tuple[str, dict[str, Any]]:
    """Phase two: the listed columns of the page's rows, by id (bloom-filter index) within the
    filter's time range."""
    sql = (f"SELECT {LIST_COLUMNS} FROM inferences FINAL WHERE inference_id IN {{ids:Array(UUID)}} "
           "AND timestamp >= fromUnixTimestamp64Nano({from_ns:Int64}, 'UTC') "
           "AND timestamp < fromUnixTimestamp64Nano({to_ns:Int64}, 'UTC')")
    return sql, {"ids": ids, "from_ns": f.from_ns, "to_ns": f.to_ns}


def count_query(f: Filter) -> tuple[str, dict[str, Any]]:
    """Rows matching the filter, without FINAL: a re-sent inference counts twice until the
    table's background merge folds it (rare; documented)."""
    clause, params = where(f)
    return f"SELECT count() FROM inferences WHERE {clause}", params


def _after_clause(order: str, after: tuple[int, str] | None, upto: tuple[int, str] | None,
                  params: dict[str, Any]) -> str:
    key = "(toUnixTimestamp64Nano(timestamp), inference_id)"
    past, until = ("<", ">=") if order == "desc" else (">", "<=")
    clause = ""
    if after is not None:
        clause += f" AND {key} {past} ({{after_ns:Int64}}, {{after_id:UUID}})"
        params["after_ns"], params["after_id"] = after
    if upto is not None:
        clause += f" AND {key} {until} ({{upto_ns:Int64}}, {{upto_id:UUID}})"
        params["upto_ns"], params["upto_id"] = upto
    return clause


def export_boundary_query(f: Filter, order: str, after: tuple[int, str] | None,
                          batch: int) -> tuple[str, dict[str, Any]]:
    """The key of the last row of the next export batch (none: the rest fits in one batch)."""
    clause, params = where(f)
    clause += _after_clause(order, after, None, params)
    direction = "DESC" if order == "desc" else "ASC"
    sql = (f"SELECT toUnixTimestamp64Nano(timestamp) AS ts_ns, inference_id FROM inferences FINAL WHERE {clause} "
           f"ORDER BY timestamp {direction}, inference_id {direction} LIMIT 1 OFFSET {{skip:UInt64}}")
    params["skip"] = batch - 1
    return sql, params


def export_batch_query(f: Filter, order: str, include_messages: bool, after: tuple[int, str] | None,
                       upto: tuple[int, str] | None) -> tuple[str, dict[str, Any]]:
    """The rows after `after` up to and including `upto`, formatted for export. The inner query
    filters and orders on the raw columns; the outer one only renames and formats."""
    clause, params = where(f)
    clause += _after_clause(order, after, upto, params)
    direction = "DESC" if order == "desc" else "ASC"
    inner = (f"SELECT * FROM inferences FINAL WHERE {clause} "
             f"ORDER BY timestamp {direction}, inference_id {direction}")
    if not include_messages:
        return f"SELECT {EXPORT_COLUMNS} FROM ({inner}) AS i", params
    # In the detail's order, numbered per direction (a log record's message is stored under a key
    # of its own: schema/015_message_arrival.sql).
    messages = ("SELECT inference_id, toJSONString(arrayMap((m, n) -> (m.1, n - 1, m.3, m.4, m.5), s, "
                "arrayEnumerateUniq(arrayMap(m -> m.1, s)))) AS messages FROM ("
                "SELECT inference_id, arraySort(m -> (m.1 = 'output', m.6, m.2), groupArray(tuple(direction, "
                "`index`, role, content, tool_calls, arrival))) AS s FROM messages FINAL "
                f"WHERE (inference_id, project_id) IN (SELECT inference_id, project_id FROM ({inner})) "
                "GROUP BY inference_id)")
    return (f"SELECT {EXPORT_COLUMNS}, ifNull(m.messages, '[]') AS messages FROM ({inner}) AS i "
            f"LEFT JOIN ({messages}) AS m ON m.inference_id = i.inference_id "
            f"ORDER BY i.timestamp {direction}, i.inference_id {direction}"), params


EXPORT_FIELDS: tuple[str, ...] = (
    "inference_id", "timestamp", "project_id", "service_name", "operation", "provider", "request_model",
    "response_model", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_input_tokens",
    "reasoning_tokens", "total_tokens",
    "cost_usd", "latency_ms", "ttft_ms", "is_streaming", "is_success", "error_type", "finish_reason", "response_id",
    "session_id", "user_id", "trace_id", "span_id", "input_preview", "output_preview",
)
EXPORT_COLUMNS = ", ".join(
    "formatDateTime(i.timestamp, '%Y-%m-%dT%H:%i:%S.%fZ', 'UTC') AS timestamp" if f == "timestamp" else f"i.{f} AS {f}"
    for f in EXPORT_FIELDS
)
