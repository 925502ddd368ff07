"""The chDB-backed ClickHouse HTTP test double (tests/chserver.py), driven by clickhouse-connect's
real HTTP client: what works here is what otelgw's `http://` DSN path can rely on in tests."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import lz4.frame
import pytest
import zstandard
from chserver import ChServer
from chserver_fixture import chserver, chserver_factory  # noqa: F401
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from otelgw.protowire import varint

SPANS_DDL = """
CREATE TABLE IF NOT EXISTS spans
(
    id          UUID,
    project     LowCardinality(String),
    ts          DateTime64(9, 'UTC'),
    attrs       Map(String, String),
    tags        Array(String),
    ttft_ms     Nullable(Float64),
    note        Nullable(String),
    version     UInt32,
    ingested_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (project, id)
SETTINGS non_replicated_deduplication_window = 100
"""

# What otelgw's writer sends with every insert.
INSERT_SETTINGS = {"input_format_skip_unknown_fields": 1, "input_format_null_as_default": 1, "insert_deduplicate": 1}


def connect(server: ChServer, database: str = "default", **options: Any) -> Client:
    return clickhouse_connect.get_client(dsn=server.dsn(database, **options))


def span_rows(count: int, start: int = 0, version: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.UUID(int=i + 1)),
            "project": f"p{i % 3}",
            "ts": f"2025-01-02 03:04:05.{i:06d}789",
            "attrs": {"gen_ai.system": "openai", "n": str(i)},
            "tags": ["a", f"t{i}"],
            "ttft_ms": None if i % 2 else i / 10,
            "version": version,
            "ingested_at": f"2025-01-0{version + 1} 00:00:00.000",
            "not_a_column": "skipped by input_format_skip_unknown_fields",
        }
        for i in range(start, start + count)
    ]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def http(server: ChServer, method: str = "POST", body: bytes | None = None, headers: dict[str, str] | None = None,
         **params: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{server.url}/?{urllib.parse.urlencode(params)}", data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def db(chserver: ChServer) -> Client:  # noqa: F811
    admin = connect(chserver)  # no database in the DSN, like otelgw's ensure_database()
    admin.command("CREATE DATABASE IF NOT EXISTS otel")
    admin.close()
    client = connect(chserver, "otel")
    client.command(SPANS_DDL)
    return client


def test_client_start_up(chserver: ChServer, db: Client) -> None:  # noqa: F811
    assert chserver.ping()
    assert db.ping()
    assert db.database == "otel"
    # The start-up queries (version/timezone, system.settings) went through: the client knows the engine.
    assert db.server_version.count(".") >= 2
    assert db.server_tz is not None
    assert "insert_deduplication_token" in db.server_settings
    assert db.command("SELECT currentDatabase()") == "otel"


def test_raw_insert_jsoneachrow_and_parameterized_reads(db: Client) -> None:
    rows = span_rows(5000)
    summary = db.raw_insert("spans", insert_block=jsonl(rows), fmt="JSONEachRow",
                            settings={**INSERT_SETTINGS, "insert_deduplication_token": "spans:1-5000"})
    assert summary.written_rows == 5000
    assert summary.query_id()

    one = db.query("SELECT * FROM spans WHERE id = {id:UUID}", parameters={"id": uuid.UUID(int=43)})
    [row] = list(one.named_results())
    assert row["id"] == uuid.UUID(int=43)
    assert row["project"] == "p0"
    assert isinstance(row["ts"], datetime) and row["ts"].microsecond == 42
    assert row["attrs"] == {"gen_ai.system": "openai", "n": "42"}
    assert row["tags"] == ["a", "t42"]
    assert row["ttft_ms"] == pytest.approx(4.2)
    assert row["note"] is None
    assert db.query("SELECT ttft_ms FROM spans WHERE id = {id:UUID}", parameters={"id": uuid.UUID(int=2)}).result_rows \
        == [(None,)]

    count = db.query(
        "SELECT count() FROM spans WHERE project IN {projects:Array(String)} AND ts >= {since:DateTime64(9)} "
        "AND attrs[{key:String}] = {value:String}",
        parameters={"projects": ["p0", "p1"], "since": datetime(2025, 1, 2, 3, 4, 5), "key": "gen_ai.system",
                    "value": "openai"},
    ).result_rows[0][0]
    assert count == sum(1 for i in range(5000) if i % 3 in (0, 1))

    # ReplacingMergeTree: a re-sent, newer version of 100 rows collapses under FINAL.
    db.raw_insert("spans", insert_block=jsonl(span_rows(100, version=2)), fmt="JSONEachRow",
                  settings={**INSERT_SETTINGS, "insert_deduplication_token": "spans:5001-5100"})
    assert db.command("SELECT count() FROM spans") == 5100
    assert db.query("SELECT version, count() FROM spans FINAL GROUP BY version ORDER BY version").result_rows \
        == [(1, 4900), (2, 100)]



def test_protobuf_insert_reaches_the_table_and_its_views(db: Client, tmp_path: Path) -> None:
    # chDB cannot read Protobuf data inline after the query text; the double routes it through a
    # file, as a server reads it from the request body: same rows, views fired.
    schema = tmp_path / "row.proto"
    schema.write_text('syntax = "proto3";\nmessage Row { string name = 1; int64 n = 2; }\n')
    db.command("CREATE TABLE pb_in (name String, n Int64) ENGINE = Null")
    db.command("CREATE TABLE pb_rows (name String, n Int64) ENGINE = MergeTree ORDER BY name")
    db.command("CREATE MATERIALIZED VIEW pb_mv TO pb_rows AS SELECT name, n * 2 AS n FROM pb_in")
    messages = [b"\x0a" + varint(len(name)) + name + b"\x10" + varint(n)
                for name, n in ((b"a\x00b", 1), ("\u00e9".encode(), 300), (b"x" * 200, 2**40))]
    body = b"".join(varint(len(m)) + m for m in messages)
    settings = {"format_schema": f"{schema}:Row"}
    db.raw_insert("pb_in", insert_block=body, fmt="Protobuf", settings=settings)  # statement in the body
    # An already compressed block: the statement travels in query=.
    db.raw_insert("pb_in", insert_block=gzip.compress(body), fmt="Protobuf", settings=settings, compression="gzip")
    assert db.query("SELECT name, n, count() FROM pb_rows GROUP BY name, n ORDER BY n").result_rows == [
        ("a\x00b", 2, 2), ("\u00e9", 600, 2), ("x" * 200, 2**41, 2)]


def test_command_results(db: Client) -> None:
    assert db.command("SELECT 1") == 1
    assert db.command("SELECT 'a', 'b'") == ["a", "b"]
    assert db.command("SELECT 1 WHERE 0") == ""  # a result set, empty: X-ClickHouse-Format says so
    assert db.command("SELECT {n:UInt8} + 1", parameters={"n": 41}) == 42
    summary = db.command("CREATE TABLE IF NOT EXISTS scratch (k UInt8) ENGINE = Memory")
    assert not isinstance(summary, (str, int, list))  # DDL returns a QuerySummary
    db.command("INSERT INTO scratch VALUES (1), (2)")
    assert db.command("SELECT sum(k) FROM scratch") == 3
    db.command("DROP TABLE scratch")
    assert db.command("EXISTS TABLE scratch") == 0


def test_insert_deduplication_by_token(db: Client) -> None:
    db.command("CREATE TABLE IF NOT EXISTS dedup (k UInt32, v String) ENGINE = MergeTree ORDER BY k "
               "SETTINGS non_replicated_deduplication_window = 100")
    block = jsonl([{"k": i, "v": "x"} for i in range(50)])
    settings = {**INSERT_SETTINGS, "insert_deduplication_token": "wal:1-50:dedup"}
    db.raw_insert("dedup", insert_block=block, settings=settings, fmt="JSONEachRow")
    db.raw_insert("dedup", insert_block=block, settings=settings, fmt="JSONEachRow")  # a replay
    assert db.command("SELECT count() FROM dedup") == 50
    # The token decides, not the content: a new token is a new insert.
    db.raw_insert("dedup", insert_block=block, fmt="JSONEachRow",
                  settings={**INSERT_SETTINGS, "insert_deduplication_token": "wal:51-100:dedup"})
    assert db.command("SELECT count() FROM dedup") == 100


@pytest.mark.parametrize("compress", [False, "lz4", "zstd", "gzip"])
def test_compression(chserver: ChServer, compress: Any) -> None:  # noqa: F811
    client = connect(chserver, "otel", compress=compress)
    table = f"comp_{compress or 'none'}"
    client.command(f"CREATE TABLE IF NOT EXISTS {table} (k UInt32, s String, lc LowCardinality(String)) "
                   "ENGINE = MergeTree ORDER BY k")
    rows = [{"k": i, "s": "v" * (i % 50), "lc": f"c{i % 4}"} for i in range(2000)]
    block = jsonl(rows)
    # A pre-compressed block goes with Content-Encoding and the INSERT in the `query` parameter.
    encoded = {"lz4": lz4.frame.compress, "zstd": zstandard.ZstdCompressor().compress, "gzip": gzip.compress}
    if compress:
        client.raw_insert(table, insert_block=encoded[compress](block), fmt="JSONEachRow", compression=compress)
    else:
        client.raw_insert(table, insert_block=block, fmt="JSONEachRow")
    # client.insert() builds Native blocks, compressed with the client's write compression.
    client.insert(table, [[5000 + i, "native", "n"] for i in range(1000)], column_names=["k", "s", "lc"])
    result = client.query(f"SELECT k, s, lc FROM {table} ORDER BY k")
    assert len(result.result_rows) == 3000
    assert result.result_rows[7] == (7, "v" * 7, "c3")
    assert result.result_rows[-1] == (5999, "native", "n")
    client.close()


def test_errors_are_database_errors_with_the_clickhouse_message(chserver: ChServer, db: Client) -> None:  # noqa: F811
    with pytest.raises(DatabaseError) as err:
        db.query("SELEC 1")
    assert not isinstance(err.value, OperationalError)
    assert err.value.code == 62
    assert "Code: 62. DB::Exception: Syntax error" in str(err.value)

    with pytest.raises(DatabaseError) as err:
        db.command("SELECT * FROM no_such_table")
    assert err.value.code == 60 and "UNKNOWN_TABLE" in str(err.value)

    # Bad data: a row the server cannot parse (otelgw's writer classifies these by code).
    bad = jsonl(span_rows(3)) + b'{"id": "not-a-uuid", "project": "p"}\n'
    with pytest.raises(DatabaseError) as err:
        db.raw_insert("spans", insert_block=bad, fmt="JSONEachRow", settings=INSERT_SETTINGS)
    assert not isinstance(err.value, OperationalError)
    assert err.value.code in (6, 27, 376)

    with pytest.raises(DatabaseError) as err:
        db.query("SELECT 1", settings={"no_such_setting_xyz": 1})
    assert err.value.code == 115

    with pytest.raises(DatabaseError) as err:
        connect(chserver, "no_such_database")
    assert err.value.code == 81 and not isinstance(err.value, OperationalError)


def test_http_interface_directly(chserver: ChServer, db: Client) -> None:  # noqa: F811
    db.command("CREATE TABLE IF NOT EXISTS raw (k UInt32, v String) ENGINE = MergeTree ORDER BY k")
    status, _, body = http(chserver, "GET")
    assert (status, body) == (200, b"Ok.\n")

    # INSERT in `query`, gzip data in the body, a setting and the database as URL parameters.
    data = gzip.compress(b'{"k": 1, "v": "a", "x": 0}\n{"k": 2, "v": "b", "x": 0}\n')
    status, headers, body = http(chserver, body=data, headers={"Content-Encoding": "gzip"}, database="otel",
                                 query="INSERT INTO raw FORMAT JSONEachRow", input_format_skip_unknown_fields="1")
    assert status == 200, body
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    assert "X-ClickHouse-Format" not in headers

    status, headers, body = http(chserver, "GET", query="SELECT k, v FROM otel.raw ORDER BY k",
                                 default_format="JSONEachRow", query_id="q-1")
    assert status == 200
    assert [json.loads(line) for line in body.splitlines()] == [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert headers["X-ClickHouse-Query-Id"] == "q-1"
    assert headers["X-ClickHouse-Timezone"] and headers["X-ClickHouse-Server-Display-Name"]

    status, headers, body = http(chserver, body=b"SELECT {n:UInt32} * 2 FORMAT TabSeparated", param_n="21")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b"42\n", "TabSeparated")

    # GET is read-only, as in ClickHouse.
    status, headers, body = http(chserver, "GET", query="INSERT INTO otel.raw VALUES (3, 'c')")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "164" and b"READONLY" in body
    status, headers, body = http(chserver, body=b"SELECT nope()")
    assert status == 404 and body.startswith(b"Code: 46. DB::Exception:")

    # Long parameter values make clickhouse-connect send a multipart form instead of a URL.
    form_client = connect(chserver, "otel", form_encode_query_params=True)
    assert form_client.query("SELECT count() FROM raw WHERE v IN {vs:Array(String)}",
                             parameters={"vs": ["a", "b", *("z" * 20 for _ in range(1000))]}).result_rows == [(2,)]
    form_client.close()


def test_concurrent_clients(chserver: ChServer, db: Client) -> None:  # noqa: F811
    db.command("CREATE TABLE IF NOT EXISTS conc (w UInt8, k UInt32) ENGINE = MergeTree ORDER BY (w, k)")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            client = connect(chserver, "otel")
            for batch in range(5):
                block = jsonl([{"w": worker, "k": batch * 100 + i} for i in range(100)])
                client.raw_insert("conc", insert_block=block, fmt="JSONEachRow",
                                  settings={**INSERT_SETTINGS, "insert_deduplication_token": f"{worker}:{batch}"})
                assert client.query("SELECT count() FROM conc WHERE w = {w:UInt8}",
                                    parameters={"w": worker}).result_rows == [((batch + 1) * 100,)]
            client.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert db.command("SELECT count() FROM conc") == 3000


def test_crash_restart_keeps_data_and_outage_is_operational_error(chserver_factory: Any) -> None:  # noqa: F811
    server = chserver_factory()
    client = connect(server)
    client.command("CREATE TABLE kv (k UInt32, v String) ENGINE = MergeTree ORDER BY k")
    client.raw_insert("kv", insert_block=jsonl([{"k": i, "v": str(i)} for i in range(1000)]), fmt="JSONEachRow")

    server.kill()  # SIGKILL: nothing flushed or shut down
    assert not server.ping()
    # Server down: OperationalError (a DatabaseError subclass) without a ClickHouse code; the same
    # for a read, an insert and a client that cannot even start.
    with pytest.raises(OperationalError) as down:
        client.query("SELECT count() FROM kv")
    assert down.value.code is None and "Code:" not in str(down.value)
    with pytest.raises(OperationalError):
        client.raw_insert("kv", insert_block=b'{"k": 1, "v": "x"}\n', fmt="JSONEachRow")
    with pytest.raises(OperationalError):
        connect(server)

    server.start()  # same data dir, same port: the same client object works again
    assert client.command("SELECT count(), sum(k) FROM kv") == ["1000", str(sum(range(1000)))]
    client.raw_insert("kv", insert_block=b'{"k": 1000, "v": "after"}\n', fmt="JSONEachRow")

    assert server.stop() == 0  # SIGTERM: a clean exit
    server.start()
    assert connect(server).command("SELECT count() FROM kv") == 1001


def test_hung_server_times_out_and_token_replay_is_not_duplicated(chserver_factory: Any) -> None:  # noqa: F811
    server = chserver_factory()
    client = connect(server, send_receive_timeout=1)
    client.command("CREATE TABLE kv (k UInt32) ENGINE = MergeTree ORDER BY k "
                   "SETTINGS non_replicated_deduplication_window = 100")
    block = jsonl([{"k": i} for i in range(10)])
    settings = {**INSERT_SETTINGS, "insert_deduplication_token": "wal:1-10:kv"}

    server.pause()
    with pytest.raises(OperationalError) as hung:  # a read timeout, also an OperationalError
        client.raw_insert("kv", insert_block=block, fmt="JSONEachRow", settings=settings)
    assert "timed out" in str(hung.value).lower()
    server.resume()
    # The timed-out insert was still received and may or may not have landed: the outcome is
    # unknown to the client, so it replays with the same token, and there is one copy either way.
    client.raw_insert("kv", insert_block=block, fmt="JSONEachRow", settings=settings)
    assert client.command("SELECT count() FROM kv") == 10
