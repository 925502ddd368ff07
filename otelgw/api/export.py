"""POST /api/v1/metrics/inferences/export: every matching inference (not a page), streamed.

ClickHouse formats the rows (CSV, JSONEachRow, Parquet); the gateway only relays them. Rows are
read in keyset batches (first the batch's last key, then the rows up to it), so memory stays
constant whatever the size: one batch in ClickHouse, a few MiB in flight to the client.
Parquet is one query (a Parquet file has a footer for the whole file): its memory grows with the
result, so it is capped at PARQUET_MAX_ROWS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec
from aiohttp import web

from otelgw.api.common import CANONICAL_KEY, READER_KEY, ApiError, decode_body, principal, rfc3339_ns
from otelgw.api.inferences import FINAL_SETTINGS, build_filter
from otelgw.api.schemas import ExportRequest
from otelgw.governance.audit import audit
from otelgw.store.queries.listing import (
    EXPORT_FIELDS,
    Filter,
    count_query,
    export_batch_query,
    export_boundary_query,
)

BATCH_ROWS = 50_000
PARQUET_MAX_ROWS = 2_000_000
FORMAT_VERSION = "1"
MEDIA = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson",
         "parquet": "application/vnd.apache.parquet"}
CLICKHOUSE_FORMAT = {"csv": "CSV", "json": "JSONEachRow", "jsonl": "JSONEachRow", "parquet": "Parquet"}


def _batches(client: Any, filt: Filter, order: str, include_messages: bool, fmt: str) -> Iterator[bytes]:
    after: tuple[int, str] | None = None
    while True:
        sql, params = export_boundary_query(filt, order, after, BATCH_ROWS)
        found = client.query(sql, parameters=params).result_rows
        upto = (int(found[0][0]), str(found[0][1])) if found else None
        sql, params = export_batch_query(filt, order, include_messages, after, upto)
        stream = client.raw_stream(sql, parameters=params, fmt=fmt)
        try:
            while chunk := stream.read(1 << 20):
                yield chunk
        finally:
            stream.close()
        if upto is None:
            return
        after = upto


def _json_items(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """JSONEachRow lines as the elements of a JSON array (commas between, lines may be split
    across chunks)."""
    first = True
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1:]
        lines = [line for line in data[:cut].split(b"\n") if line]
        if lines:
            yield (b"" if first else b",\n") + b",\n".join(lines)
            first = False
    if carry.strip():
        yield (b"" if first else b",\n") + carry


async def export_inferences(request: web.Request) -> web.StreamResponse:
    body = await decode_body(request, ExportRequest)
    filt = build_filter(body, principal(request), request.app[CANONICAL_KEY])
    reader = request.app[READER_KEY]
    count_sql, count_params = count_query(filt)
    total = (await reader.sql(count_sql, count_params, FINAL_SETTINGS))[0]["count()"]
    if body.format == "parquet" and total > PARQUET_MAX_ROWS:
        raise ApiError(400, "too_many_rows", f"{total} rows match; Parquet export is limited to {PARQUET_MAX_ROWS} "
                                             "(use csv or jsonl, which stream, or narrow the filters)")
    audit(request, "inference.export",
          project=body.project_id if body.project_id and principal(request).sees(body.project_id) else "",
          detail=f"format={body.format} include_messages={str(body.include_messages).lower()} rows={total}")
    response = web.StreamResponse(headers={
        "Content-Type": MEDIA[body.format],
        "Content-Disposition": f'attachment; filename="inferences-{int(time.time())}.{body.format}"',
        "X-Export-Total-Count": str(total),
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    fmt = CLICKHOUSE_FORMAT[body.format]
    include = body.include_messages

    def produce(client: Any) -> Iterator[bytes]:
        if body.format == "csv":
            columns = [*EXPORT_FIELDS, *(["messages"] if include else [])]
            yield (",".join(columns) + "\n").encode()
            yield from _batches(client, filt, body.sort_order, include, fmt)
        elif body.format == "jsonl":
            yield from _batches(client, filt, body.sort_order, include, fmt)
        elif body.format == "json":
            metadata = {"exported_at": rfc3339_ns(time.time_ns()), "format_version": FORMAT_VERSION,
                        "total_count": total, "filters": msgspec.to_builtins(body)}
            yield b'{"export_metadata": ' + msgspec.json.encode(metadata) + b', "items": [\n'
            yield from _json_items(_batches(client, filt, body.sort_order, include, fmt))
            yield b"\n]}\n"
        else:
            sql, params = export_batch_query(filt, body.sort_order, include, None, None)
            yield client.raw_query(sql, parameters=params, fmt="Parquet")

    async for chunk in reader.stream(produce):
        await response.write(chunk)
    await response.write_eof()
    return response
