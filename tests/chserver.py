"""A ClickHouse HTTP-interface test double that executes what it receives with chDB.

No ClickHouse server can run on the test machines, but chDB is the same SQL engine in a library.
This module serves the part of the ClickHouse HTTP interface that clickhouse-connect's HTTP client
uses, so `clickhouse_connect.get_client(dsn="http://default:@127.0.0.1:PORT/db")` works against it
unchanged, and the production `http://` DSN path can be tested end to end.

chDB allows one data path per process and the test process owns one already, so the server runs
as its own process:

    python tests/chserver.py --port PORT --path DATA_DIR [--host 127.0.0.1]

It prints `chserver listening on HOST:PORT` when ready (PORT 0 picks a free port and prints it) and
exits cleanly on SIGTERM/SIGINT. From pytest use `ChServer` below (or the fixtures in
`chserver_fixture.py`): start(), stop(), kill() (SIGKILL: a crash), pause()/resume() (SIGSTOP/SIGCONT:
a hung server), restart(), dsn(database).

What is served, as ClickHouse does it:
- `GET|HEAD /ping` and a bare `GET /` answer `Ok.\\n`.
- `/` runs one statement: the text of the `query` URL parameter, then a newline, then the request
  body (so an INSERT can carry its statement in `query=` and its data in the body, or both in the
  body). A multipart/form-data body is read as form fields instead (clickhouse-connect sends the
  query and its `param_*` values that way when they are too long for a URL).
- `database` (or the `X-ClickHouse-Database` header) selects the current database.
- `param_NAME=value` binds `{NAME:Type}` placeholders (values in the same escaped text form that
  ClickHouse reads; chDB parses them exactly as the server does).
- Every other URL parameter is a setting, applied with `SET` on the request's own chDB connection;
  an unknown setting fails the request like ClickHouse (Code 115). HTTP-transport parameters
  (session_id, query_id, wait_end_of_query, enable_http_compression, send_progress_in_http_headers,
  client_protocol_version, ...) are consumed and not applied.
- A GET request runs with readonly=2, as ClickHouse runs it.
- `INSERT ... FORMAT Protobuf` (ProtobufSingle, ProtobufList, CapnProto) data, whose bytes chDB
  will not read inline after the statement, is written to a file and inserted with
  `INSERT ... SELECT * FROM file(path, Format, <the table's structure>)`: the same rows, and the
  table's materialized views fire.
- Request bodies with `Content-Encoding` gzip/deflate/zstd/lz4 (frame)/xz/bz2 (br if `brotli` is
  installed) are decompressed. Responses are compressed when `enable_http_compression` is on (it is
  by default in chDB's settings, which clickhouse-connect reads at start-up) and the client's
  `Accept-Encoding` names a method this server can produce.
- The output format is the statement's own `FORMAT` clause, else `default_format`, else
  TabSeparated. Result-producing statements get `X-ClickHouse-Format` and `X-ClickHouse-Timezone`;
  every response gets `X-ClickHouse-Query-Id`, `X-ClickHouse-Summary` and
  `X-ClickHouse-Server-Display-Name`.
- Errors answer `Code: N. DB::Exception: ... (NAME) (version V)` with `X-ClickHouse-Exception-Code`
  and the HTTP status ClickHouse maps the code to (400 bad input/syntax, 404 unknown
  table/database/setting, 403 auth, else 500), so clickhouse-connect raises DatabaseError.

Not emulated: sessions (every request gets a fresh chDB connection, so SET/USE/temporary tables do
not carry over between requests even with a session_id; clickhouse-connect does not depend on it),
the ClickHouse-native block compression of `compress=1`/`decompress=1` (refused with Code 48),
external data tables in multipart bodies (refused with Code 48), streaming/progress headers (the
whole result is computed before the response is sent), and the client_protocol_version Native
variant (ignored: clickhouse-connect's probe then falls back to protocol 0, as it does with
proxies that strip the parameter).
"""

from __future__ import annotations

import argparse
import asyncio
import bz2
import gzip
import io
import json
import logging
import lzma
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("chserver")

READY_PREFIX = "chserver listening on "

# URL parameters the HTTP handler consumes itself; they never reach the engine as settings.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "role",
    "session_id", "session_timeout", "session_check", "query_id", "buffer_size", "wait_end_of_query",
    "compress", "decompress", "client_protocol_version", "stacktrace",
    "enable_http_compression", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close",
    "http_response_buffer_size", "http_wait_end_of_query", "http_write_exception_in_output_format",
    "add_http_cors_header",
})

# Leading keywords of statements that produce a result set (ClickHouse answers these with
# X-ClickHouse-Format even when the result is empty; clickhouse-connect's command() relies on it).
RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "WATCH"})

# ClickHouse's exceptionCodeToHTTPStatus, by error name (the code numbers come from the message).
_STATUS_BY_NAME: dict[str, int] = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE"), 403),
    **dict.fromkeys((
        "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
        "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "CANNOT_PARSE_BOOL", "DUPLICATE_COLUMN",
        "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "TOO_DEEP_AST", "TOO_BIG_AST",
        "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "UNKNOWN_QUERY_PARAMETER", "BAD_QUERY_PARAMETER",
        "ILLEGAL_TYPE_OF_ARGUMENT", "NUMBER_OF_ARGUMENTS_DOESNT_MATCH", "READONLY",
    ), 400),
    **dict.fromkeys((
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
        "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
        "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE",
    ), 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "TIMEOUT_EXCEEDED": 408,
    "HTTP_LENGTH_REQUIRED": 411,
}

_CONTENT_TYPES = (
    (("TabSeparated", "TSV"), "text/tab-separated-values; charset=UTF-8"),
    (("CSV",), "text/csv; charset=UTF-8; header=absent"),
    (("JSON", "Pretty"), "application/json; charset=UTF-8"),
    (("Native", "RowBinary", "Parquet", "Arrow", "ORC", "Avro", "MsgPack", "Protobuf", "CapnProto", "BSON", "Npy"),
     "application/octet-stream"),
)

_LEADING_NOISE = re.compile(rb"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
_KEYWORD = re.compile(rb"[A-Za-z_]+")
_FORMAT_CLAUSE = re.compile(rb"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)", re.I)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*(?:\(version [^)]*\))?\s*$")


class ServerError(Exception):
    """A ClickHouse-style failure raised by the HTTP layer itself (not by the engine)."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


@dataclass
class Job:
    sql: bytes
    fmt: str
    database: str | None
    settings: dict[str, str]
    params: dict[str, str]
    # An INSERT whose binary body chDB cannot read inline (Protobuf): (table, columns, format).
    file_insert: tuple[str, str, str] | None = None
    body: bytes = b""


# Formats whose data chDB refuses inline after the query text (`INSERT ... FORMAT Protobuf\n<bytes>`
# fails with ATTEMPT_TO_READ_AFTER_EOF): the body goes through a file and `file()` instead.
_FILE_FORMATS = ("Protobuf", "ProtobufSingle", "ProtobufList", "CapnProto")
_FILE_INSERT = re.compile(rb"^\s*INSERT\s+INTO\s+([\w.`]+)\s*(\([^)]*\))?\s*FORMAT\s+(" +
                          "|".join(_FILE_FORMATS).encode() + rb")\s*$", re.I)


@dataclass
class Outcome:
    body: bytes = b""
    summary: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The server (runs in the subprocess)
# ---------------------------------------------------------------------------------------------


def _quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _quote_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_keyword(sql: bytes) -> str:
    head = sql[:65536]
    pos = _LEADING_NOISE.match(head).end()
    match = _KEYWORD.match(head, pos)
    return match.group().decode().upper() if match else ""


def _content_type(fmt: str) -> str:
    for prefixes, ctype in _CONTENT_TYPES:
        if fmt.startswith(prefixes):
            return ctype
    return "text/plain; charset=UTF-8"


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate, no zlib header


def _decoders() -> dict[str, Callable[[bytes], bytes]]:
    """Request-body decoders. Bodies may hold several concatenated frames (clickhouse-connect
    compresses each insert block as its own lz4/zstd frame), so every decoder reads all of them."""
    table: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.decompress, "x-gzip": gzip.decompress, "deflate": _inflate,
        "xz": lzma.decompress, "bz2": bz2.decompress, "bzip2": bz2.decompress,
    }
    try:
        if sys.version_info >= (3, 14):
            from compression import zstd  # type: ignore[import-not-found]
        else:
            from backports import zstd  # type: ignore[import-not-found]
        table["zstd"] = zstd.decompress
    except ImportError:
        try:
            import zstandard

            def _zstd_frames(data: bytes) -> bytes:
                with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as r:
                    return r.read()

            table["zstd"] = _zstd_frames
        except ImportError:
            pass
    try:
        import lz4.frame

        def _lz4_frames(data: bytes) -> bytes:
            out = []
            while data:
                decompressor = lz4.frame.LZ4FrameDecompressor()
                out.append(decompressor.decompress(data))
                if not decompressor.eof:
                    raise ValueError("truncated lz4 frame")
                data = decompressor.unused_data
            return b"".join(out)

        table["lz4"] = _lz4_frames
    except ImportError:
        pass
    try:
        import brotli  # type: ignore[import-not-found]

        table["br"] = brotli.decompress
    except ImportError:
        pass
    return table


def _encoders() -> dict[str, Callable[[bytes], bytes]]:
    table: dict[str, Callable[[bytes], bytes]] = {
        "gzip": lambda data: gzip.compress(data, compresslevel=1),
        "deflate": lambda data: zlib.compress(data, 1),
        "xz": lzma.compress,
        "bz2": bz2.compress,
    }
    try:
        import zstandard

        table["zstd"] = lambda data: zstandard.ZstdCompressor(level=1).compress(data)
    except ImportError:
        pass
    try:
        import lz4.frame

        table["lz4"] = lz4.frame.compress
    except ImportError:
        pass
    try:
        import brotli  # type: ignore[import-not-found]

        table["br"] = lambda data: brotli.compress(data, quality=1)
    except ImportError:
        pass
    return table


# The order ClickHouse prefers when the client accepts several (chooseHTTPCompressionMethod).
_RESPONSE_PREFERENCE = ("zstd", "br", "lz4", "gzip", "deflate", "xz", "bz2")


class ChdbHttpServer:
    def __init__(self, path: str, workers: int = 8, password: str | None = None) -> None:
        import chdb

        self._chdb = chdb
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        # Holding one connection keeps the engine up between requests (it shuts down with the last).
        self._anchor = chdb.connect(self.path)
        info = self._anchor.query(
            "SELECT version(), timezone(), hostName(), "
            "(SELECT value FROM system.settings WHERE name = 'enable_http_compression') FORMAT JSONCompactEachRow"
        ).bytes()
        self.version, self.timezone, self.display_name, http_compression = json.loads(info)
        self.compress_by_default = http_compression not in ("0", "false", "")
        formats = self._anchor.query("SELECT name FROM system.formats WHERE is_output", "TabSeparated").bytes()
        self.output_formats = {name.lower(): name for name in formats.decode().split()}
        self.password = password
        self.decoders = _decoders()
        self.encoders = _encoders()
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chdb")
        self.requests_served = 0

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self._anchor.close()

    # -- engine side (executor threads) --------------------------------------------------------

    def execute(self, job: Job) -> Outcome:
        # A fresh connection per request: chDB keeps USE/SET state per connection, so every
        # request starts from the defaults, like a session-less ClickHouse HTTP query.
        conn = self._chdb.connect(self.path)
        try:
            if job.database:
                conn.query(f"USE {_quote_ident(job.database)}", "TabSeparated")
            for name, value in job.settings.items():
                conn.query(f"SET {name} = {_quote_value(value)}", "TabSeparated")
            if job.file_insert is not None:
                result = self._insert_through_file(conn, job)
            else:
                result = conn.query(job.sql, job.fmt, params=job.params)
            body = result.bytes() or b""
            summary = {
                "read_rows": str(result.rows_read()),
                "read_bytes": str(result.bytes_read()),
                "written_rows": str(result.rows_written()),
                "written_bytes": str(result.bytes_written()),
                "total_rows_to_read": str(result.rows_read()),
                "result_bytes": str(len(body)),
                "elapsed_ns": str(int(result.elapsed() * 1e9)),
            }
            return Outcome(body, summary)
        finally:
            conn.close()

    def _insert_through_file(self, conn: Any, job: Job) -> Any:
        """`INSERT INTO t [(cols)] FORMAT Protobuf` + body, as `INSERT ... SELECT FROM file()`:
        the same rows, the same materialized views."""
        assert job.file_insert is not None
        table, columns, fmt = job.file_insert
        where = f"table = {_quote_value(table.split('.')[-1].strip('`'))} AND database = " + (
            _quote_value(table.split(".")[0].strip("`")) if "." in table else "currentDatabase()")
        wanted = [c.strip().strip("`") for c in columns.strip("()").split(",") if c.strip()] if columns else []
        rows = conn.query(f"SELECT name, type FROM system.columns WHERE {where} ORDER BY position",
                          "TSVRaw").bytes().decode().splitlines()
        types = dict(line.split("\t", 1) for line in rows if line)
        names = wanted or list(types)
        structure = ", ".join(f"{_quote_ident(n)} {types[n]}" for n in names)
        handle, path = tempfile.mkstemp(prefix="chserver-insert-", dir=self.path)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(job.body)
            cols = ", ".join(_quote_ident(n) for n in names)
            return conn.query(f"INSERT INTO {table} ({cols}) SELECT * FROM file({_quote_value(path)}, {fmt}, "
                              f"$${structure}$$)", "TabSeparated")
        finally:
            os.unlink(path)

    def decode_body(self, body: bytes, encoding: str) -> bytes:
        encoding = encoding.strip().lower()
        if not body or encoding in ("", "identity"):
            return body
        decoder = self.decoders.get(encoding)
        if decoder is None:
            raise ServerError(36, "BAD_ARGUMENTS", f"Unknown HTTP Content-Encoding: {encoding}")
        try:
            return decoder(body)
        except Exception as exc:
            raise ServerError(271, "CANNOT_DECOMPRESS", f"Cannot decompress {encoding} request body: {exc}") from exc

    # -- HTTP side -----------------------------------------------------------------------------

    def _headers(self, query_id: str) -> dict[str, str]:
        return {"X-ClickHouse-Server-Display-Name": self.display_name, "X-ClickHouse-Query-Id": query_id}

    def error_response(self, exc: BaseException, query_id: str) -> Any:
        from aiohttp import web

        if isinstance(exc, ServerError):
            code, name, text = exc.code, exc.name, f"Code: {exc.code}. DB::Exception: {exc}. ({exc.name})"
        else:
            text = str(exc).strip()
            start = text.find("Code: ")
            text = text[start:] if start > 0 else text
            code_match = _ERROR_CODE.match(text)
            if code_match:
                code = int(code_match.group(1))
                name_match = _ERROR_NAME.search(text)
                name = name_match.group(1) if name_match else ""
            else:
                code, name = 1002, "UNKNOWN_EXCEPTION"
                text = f"Code: 1002. DB::Exception: {text}. (UNKNOWN_EXCEPTION)"
        if "(version " not in text:
            text = f"{text} (version {self.version})"
        headers = self._headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(code)
        status = _STATUS_BY_NAME.get(name, 500)
        log.info("error %s: %s", status, text.splitlines()[0][:300])
        return web.Response(status=status, body=(text + "\n").encode(), headers=headers,
                            content_type="text/plain", charset="UTF-8")

    def _check_auth(self, request: Any, params: dict[str, str]) -> None:
        if self.password is None:
            return
        user, password = params.get("user", ""), params.get("password")
        if password is None and "X-ClickHouse-Key" in request.headers:
            user, password = request.headers.get("X-ClickHouse-User", ""), request.headers["X-ClickHouse-Key"]
        auth = request.headers.get("Authorization", "")
        if password is None and auth.startswith("Basic "):
            import base64

            user, _, password = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")
        if password != self.password:
            raise ServerError(516, "AUTHENTICATION_FAILED", f"{user or 'default'}: Authentication failed: "
                              "password is incorrect, or there is no user with such name")

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        if request.path == "/ping":
            return web.Response(text="Ok.\n", content_type="text/plain")
        if request.path != "/":
            text = f"There is no handle {request.path}\n\nUse / or /ping for health checks.\n"
            return web.Response(status=404, text=text)
        params: dict[str, str] = dict(request.query)
        query_id = params.get("query_id") or str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        try:
            if request.content_type == "multipart/form-data":
                body = b""
                reader = await request.multipart()
                async for part in reader:
                    if part.filename:
                        raise ServerError(48, "NOT_IMPLEMENTED", "External data tables are not supported by chserver")
                    params[part.name] = (await part.read(decode=True)).decode()
            else:
                body = await request.read()
            if request.method in ("GET", "HEAD") and not params.get("query") and not body:
                return web.Response(text="Ok.\n", content_type="text/plain")  # like /ping, no auth
            self._check_auth(request, params)
            if params.get("compress", "0") not in ("0", "false") or params.get("decompress", "0") not in ("0", "false"):
                raise ServerError(48, "NOT_IMPLEMENTED", "ClickHouse-native compress/decompress is not supported by "
                                  "chserver; use HTTP Content-Encoding")
            encoding = request.headers.get("Content-Encoding", "")
            if encoding:
                body = await loop.run_in_executor(self.executor, self.decode_body, body, encoding)
            query = params.get("query", "")
            sql = query.encode() + b"\n" + body if query else body
            if not sql.strip():
                raise ServerError(62, "SYNTAX_ERROR", "Empty query")
            settings: dict[str, str] = {}
            bind: dict[str, str] = {}
            if request.method in ("GET", "HEAD"):
                settings["readonly"] = "2"
            for name, value in params.items():
                if name.startswith("param_"):
                    bind[name[6:]] = value
                elif name not in TRANSPORT_PARAMS:
                    if not _IDENT.match(name):
                        raise ServerError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
                    settings[name] = value
            keyword = _first_keyword(sql)
            produces_result = keyword in RESULT_KEYWORDS
            fmt = params.get("default_format") or "TabSeparated"
            if produces_result:
                clauses = _FORMAT_CLAUSE.findall(sql)
                if clauses and clauses[-1].decode().lower() in self.output_formats:
                    fmt = clauses[-1].decode()
            database = params.get("database") or request.headers.get("X-ClickHouse-Database") or None
            job = Job(sql=sql, fmt=fmt, database=database, settings=settings, params=bind)
            # The statement in `query=` and the data in the body, or both in the body (first line).
            head, data = (query.encode(), body) if query else (body.partition(b"\n")[0], body.partition(b"\n")[2])
            inline = _FILE_INSERT.match(head) if data else None
            if inline:
                table, columns, fmt_name = (part.decode() if part else "" for part in inline.groups())
                job.file_insert = (table, columns, fmt_name)
                job.body = data
            log.debug("%s %s params=%s headers=%s body=%d bytes: %r", request.method, query_id, params,
                      {k: v for k, v in request.headers.items() if k.lower() != "authorization"}, len(body), sql[:120])
            outcome = await loop.run_in_executor(self.executor, self.execute, job)
        except Exception as exc:
            return self.error_response(exc, query_id)
        finally:
            self.requests_served += 1

        headers = self._headers(query_id)
        headers["X-ClickHouse-Summary"] = json.dumps(outcome.summary, separators=(",", ":"))
        content_type = "text/plain; charset=UTF-8"
        if produces_result:
            headers["X-ClickHouse-Format"] = fmt
            headers["X-ClickHouse-Timezone"] = settings.get("session_timezone") or self.timezone
            content_type = _content_type(fmt)
        headers["Content-Type"] = content_type
        payload = outcome.body
        compression = params.get("enable_http_compression")
        compress = self.compress_by_default if compression is None else compression not in ("0", "false")
        accept = request.headers.get("Accept-Encoding", "")
        accepted = {token.split(";")[0].strip().lower() for token in accept.split(",")}
        if compress and payload:
            method = next((m for m in _RESPONSE_PREFERENCE if m in accepted and m in self.encoders), None)
            if method is not None:
                payload = await loop.run_in_executor(self.executor, self.encoders[method], payload)
                headers["Content-Encoding"] = method
        return web.Response(body=payload, headers=headers)


async def _exit_with_parent(stop: asyncio.Event) -> None:
    """Stop when the process that started us is gone (a test run killed without cleanup), so no
    orphaned server keeps the port and the data dir."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1)
    log.warning("parent process %d is gone, stopping", parent)
    stop.set()


async def serve(host: str, port: int, path: str, workers: int, password: str | None) -> None:
    from aiohttp import web

    server = ChdbHttpServer(path, workers=workers, password=password)
    app = web.Application(client_max_size=1 << 31)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    # auto_decompress=False: bodies are decoded here, for every Content-Encoding ClickHouse accepts.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=30, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX}{bound[0]}:{bound[1]}", flush=True)
    # Nothing else goes to stdout: the parent reads only the ready line, then closes its pipe.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    watchdog = asyncio.create_task(_exit_with_parent(stop))
    try:
        await stop.wait()
    finally:
        watchdog.cancel()
        await runner.cleanup()
        server.close()
        log.info("chserver stopped after %d requests", server.requests_served)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ClickHouse HTTP interface served by chDB (test double)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port (printed on the ready line)")
    parser.add_argument("--path", required=True, help="chDB data directory")
    parser.add_argument("--workers", type=int, default=8, help="threads running chDB queries")
    parser.add_argument("--password", default=None, help="require this password (any user); default: no auth")
    parser.add_argument("--log-level", default=os.environ.get("CHSERVER_LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="chserver %(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.host, args.port, args.path, args.workers, args.password))
    return 0


# ---------------------------------------------------------------------------------------------
# The pytest-side helper (runs in the test process)
# ---------------------------------------------------------------------------------------------


class ChServer:
    """Runs `chserver.py` as a subprocess on a chDB data directory.

    `port=None` (or 0) lets the server pick a free port on first start; restarts keep that port so
    DSNs handed out earlier stay valid.
    """

    def __init__(self, path: str | os.PathLike[str], port: int | None = None, host: str = "127.0.0.1",
                 password: str | None = None, start_timeout: float = 30) -> None:
        self.path = Path(path).resolve()
        self.port = port or 0
        self.host = host
        self.password = password
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ChServer:
        if self.running:
            raise RuntimeError("chserver already running")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--host", self.host, "--port", str(self.port),
               "--path", str(self.path)]
        if self.password is not None:
            cmd += ["--password", self.password]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.proc = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.kill()
                    raise RuntimeError(f"chserver did not report ready within {self.start_timeout}s")
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    code = proc.wait()
                    raise RuntimeError(f"chserver exited with {code} before it was ready (see stderr)")
                line += chunk
        text = line.decode().strip()
        if not text.startswith(READY_PREFIX):
            self.kill()
            raise RuntimeError(f"unexpected chserver output: {text!r}")
        self.port = int(text.rsplit(":", 1)[1])
        self._close_pipes(proc)
        if not self.ping():
            self.kill()
            raise RuntimeError("chserver reported ready but does not answer /ping")
        return self

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not exit in time). Returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # in case it was paused
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_pipes(proc)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: an abrupt crash or outage, nothing flushed or closed by the server."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._close_pipes(proc)

    def pause(self) -> None:
        """SIGSTOP: a hung server. Connections are still accepted by the kernel but never
        answered, so clients hit their read timeout (send_receive_timeout in the DSN)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: the server carries on, including with the requests queued while paused."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, hard: bool = False) -> ChServer:
        """Stop (SIGTERM, or SIGKILL with hard=True) and start again on the same data dir and port."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is not None and not proc.stdout.closed:
            proc.stdout.close()

    def __enter__(self) -> ChServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def dsn(self, database: str = "default", **options: Any) -> str:
        """`http://default:PASSWORD@HOST:PORT/DATABASE[?options]` for clickhouse_connect.get_client(dsn=...).

        No option is needed: compression (lz4/zstd/gzip/deflate) works both ways. Options such as
        compress=False or send_receive_timeout=5 are passed through as DSN query parameters."""
        from urllib.parse import quote, urlencode

        query = f"?{urlencode({k: str(v) for k, v in options.items()})}" if options else ""
        password = quote(self.password or "", safe="")
        return f"http://default:{password}@{self.host}:{self.port}/{database}{query}"

    def ping(self, timeout: float = 2) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=timeout) as response:
                return response.status == 200 and response.read() == b"Ok.\n"
        except OSError:
            return False


if __name__ == "__main__":
    sys.exit(main())
