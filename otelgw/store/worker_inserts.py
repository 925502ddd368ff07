"""Rows a mapping worker inserts itself (`worker_inserts`, a ClickHouse server DSN).

One insert per table of a mapping chunk, named by the chunk's write-ahead-log range like the
writer's blocks; the gateway logs the range (`chunks.log`) before the chunk is mapped, so a replay
after a crash rebuilds the same chunk and repeats the tokens, and ClickHouse keeps one copy.
One attempt per table: whatever fails goes back to the gateway with the chunk, and its writer
retries it under the same token (a store that is down, bad data split and dead-lettered), so a
worker never waits out an outage and never decides to drop anything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from otelgw.pipeline.rows import TABLES
from otelgw.store.client import DSN, ClientFactory, server_timeouts
from otelgw.store.writer import INSERT_SETTINGS

if TYPE_CHECKING:
    from otelgw.pipeline.workers import MappedChunk


def chunk_token(prefix: str, first: int, last: int, table: str, spans: str = "spans@off") -> str:
    """The deduplication token of one table's rows of the mapping chunk of log records
    first..last (a namespace of its own: never equal to a writer block's token). `spans`: the
    writer's name for span rows (the fast path's tag; off, as it always is with a server DSN,
    where workers insert)."""
    return f"{prefix}:chunk:{first}-{last}:{spans if table == 'spans' else table}"


class ChunkInserter:
    """Lives in a worker process; its HTTP client is made on first use."""

    def __init__(self, dsn: str, timeout_s: float) -> None:
        # A worker waiting on a hung server holds up every chunk behind its own (results are
        # applied in log order); past the timeout the writer retries the chunk under the same
        # tokens, so an insert that did land late is not stored twice.
        self._clients = ClientFactory(DSN(dsn), options=server_timeouts(timeout_s))

    def insert(self, chunk: MappedChunk, token_range: tuple[int, int], prefix: str) -> None:
        """Insert the chunk's rows table by table; the tables that went in leave the records
        (their counts and seconds go to `chunk.inserted_*`). Stops at the first failure: the rest
        stay in the records, for the gateway's writer to insert under the same tokens."""
        chunk.token_range = token_range
        first, last = token_range
        for table in TABLES:
            parts = [record.blocks[table] for record in chunk.records if table in record.blocks]
            if not parts:
                continue
            rows = sum(record.rows.get(table, 0) for record in chunk.records)
            settings = {**INSERT_SETTINGS, "insert_deduplication_token": chunk_token(prefix, first, last, table)}
            started = time.monotonic()
            try:
                self._clients.get().raw_insert(table, insert_block=b"".join(parts), settings=settings,
                                               fmt="JSONEachRow")
            except Exception as exc:  # every driver error: the gateway's writer classifies and retries
                chunk.insert_error = f"{table}: {type(exc).__name__}: {str(exc)[:300]}"
                self._clients.discard()
                return
            chunk.inserted_rows[table] = rows
            chunk.inserted_s[table] = time.monotonic() - started
            for record in chunk.records:
                record.blocks.pop(table, None)
                record.rows.pop(table, None)
