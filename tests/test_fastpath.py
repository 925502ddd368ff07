"""The native fast path's licence: every request goes through the Python mapper alone and
through the fast path (ClickHouse writing the spans it may, the mapper the rest), into two copies
of the `spans` table; the stored rows must be identical, field by field. Then the fast path in a
running gateway: real OTel SDK spans, tail sampling deciding over native spans, masking."""

from __future__ import annotations

import random
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import start_gateway, wait_until
from fixtures_lib import all_fixtures
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from otlp_client import get_json, post_otlp
from plain_spans import build_request

from otelgw.config import Config, fast_path_on
from otelgw.governance.masking import MaskingFile, masker_from_config
from otelgw.pipeline.anyvalue import attrs_to_dict
from otelgw.pipeline.fastpath import NativeCheck, NativeSource, NativeSpans, position_key, rules_tag, value_ok
from otelgw.pipeline.request import Signal
from otelgw.pipeline.rows import EncodedBatch, RowBatch, encode_batch, ts
from otelgw.pipeline.sampler import SamplingConfig, SpanDigest, TailSampler, trace_hash_percent
from otelgw.pipeline.workers import build_mapper
from otelgw.protowire import len_field
from otelgw.receiver.decode import Encoding, decode
from otelgw.store.client import DSN, ClientFactory
from otelgw.store.migrate import apply_migrations
from otelgw.store.native import NativeInserter
from otelgw.store.writer import INSERT_SETTINGS, BatchWriter

NO_DEDUP = {**INSERT_SETTINGS, "insert_deduplicate": 0}
# Many requests an insert: a span sent twice must not collapse inside the block either.
GROUPED = {**NO_DEDUP, "optimize_on_insert": 0}


class TwoPaths:
    """One request at a time through both paths; rows land in spans_python / spans_native."""

    def __init__(self, chdb_path: Path, work: Path, cfg: Config, database: str) -> None:
        self.clients = ClientFactory(DSN(f"chdb://{chdb_path}?database={database}"))
        self.client = self.clients.get()
        apply_migrations(self.client)
        for table in ("spans_python", "spans_native"):
            self.client.command(f"DROP TABLE IF EXISTS {table}")
            self.client.command(f"CREATE TABLE {table} AS spans")
        self.mapper = build_mapper(cfg)
        content = self.mapper.conventions.content_attributes()
        self.python_masker = masker_from_config(cfg, content)
        self.native_masker = masker_from_config(cfg, content)
        self.check = NativeCheck(cfg.max_attributes_per_span, cfg.max_attribute_chars, self.native_masker)
        self.inserter = NativeInserter(work)
        self.inserter.prepare()
        self.spans = 0
        self.native = 0
        # Inserted in groups of requests, as the writer does (a chDB insert a request made these
        # tests mostly insert overhead).
        self._rows: dict[str, list[bytes]] = {"spans_python": [], "spans_native": []}
        self._native: list[NativeSpans] = []

    def _insert_rows(self, table: str, batch: RowBatch) -> None:
        encoded = encode_batch(batch, ts(time.time_ns()))
        if "spans" in encoded.blocks:
            self._rows[table].append(encoded.blocks["spans"])

    def flush(self) -> None:
        for table, blocks in self._rows.items():
            if blocks:
                # No deduplication: a fixture sent twice is two inserts of the same block here.
                self.client.raw_insert(table, insert_block=b"".join(blocks), settings=GROUPED, fmt="JSONEachRow")
                blocks.clear()
        if self._native:
            self.inserter.insert(self.client, self._native, table="spans_native", settings=GROUPED)
            self._native = []

    def send(self, body: bytes, project: str = "") -> tuple[int, int]:
        """(spans, native spans) of this request."""
        request = ExportTraceServiceRequest.FromString(body)
        received = time.time_ns()
        reference = self.mapper.map_traces(request, project, received)
        self.python_masker.apply(reference)
        self._insert_rows("spans_python", reference)
        fast = self.mapper.map_traces(request, project, received, self.check)
        self.native_masker.apply(fast)
        self._insert_rows("spans_native", fast)
        if fast.native:
            source = NativeSource(body, fast.native_resources)
            self._native.append(NativeSpans(source, [n.position for n in fast.native]))
        if len(self._native) >= 50:
            self.flush()
        self.spans += len(reference.spans)
        self.native += len(fast.native)
        assert len(fast.spans) + len(fast.native) == len(reference.spans)
        # The rest of the record is the same whichever path its spans take.
        for table in ("inferences", "messages", "feedback", "unmapped_attributes"):
            assert len(getattr(fast, table)) == len(getattr(reference, table)), table
        return len(reference.spans), len(fast.native)

    def differences(self) -> list[tuple[Any, Any]]:
        self.flush()
        columns = "* EXCEPT ingested_at"
        python = self.client.query(f"SELECT {columns} FROM spans_python ORDER BY ALL").result_rows
        native = self.client.query(f"SELECT {columns} FROM spans_native ORDER BY ALL").result_rows
        assert len(python) == self.spans and len(native) == self.spans
        return [(p, n) for p, n in zip(python, native, strict=True) if p != n]

    def close(self) -> None:
        self.clients.close()


@pytest.fixture(scope="module")
def paths(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoPaths]:
    two = TwoPaths(chdb_path, tmp_path_factory.mktemp("fastpath"), Config(), "t_fastpath_plain")
    try:
        yield two
    finally:
        two.close()


def test_plain_spans_identical_rows_both_paths(paths: TwoPaths) -> None:
    """100k generated plain spans (every value type, events, links, several resources and
    scopes a request) plus a hostile share the fast path must leave to Python."""
    rnd = random.Random(11)
    for n in range(200):
        hostile = n % 4 == 0
        spans, native = paths.send(build_request(rnd, 500, hostile=hostile, project="" if n % 3 else "team-a"))
        # The fast path takes every plain span of a benign request, and leaves hostile values.
        assert native < spans if hostile else native == spans
    assert paths.spans == 100_000
    assert paths.differences() == []
    # Masking saw the same secrets either way: the native spans were the ones it would not change.
    assert paths.python_masker.take_stats() == paths.native_masker.take_stats()


def test_fixtures_and_genai_spans_identical_rows_both_paths(chdb_path: Path, tmp_path: Path) -> None:
    """Every shared fixture (every library, both OTel GenAI modes): GenAI spans stay on the
    Python path (their inference and moved messages); their plain neighbours go native."""
    paths = TwoPaths(chdb_path, tmp_path, Config(), "t_fastpath_fixtures")
    try:
        families = 0
        for fixture in all_fixtures():
            for signal, encoding, body in fixture.payloads():
                if signal == "traces":
                    message = decode(Signal.TRACES, body, Encoding(encoding)).message
                    before = paths.native
                    paths.send(message.SerializeToString())
                    request = message
                    # Detected as the mapper detects (values as Python values: a veto compares them).
                    genai = sum(1 for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
                                if paths.mapper.conventions.detect(
                                    attrs_to_dict(s.attributes), ss.scope.name, s.name) is not None)
                    families += genai
                    assert paths.native - before <= len([s for rs in request.resource_spans
                                                         for ss in rs.scope_spans for s in ss.spans]) - genai
        assert paths.spans > 20 and families > 0
        assert paths.differences() == []
    finally:
        paths.close()


def test_mixed_requests_identical_rows_both_paths(chdb_path: Path, tmp_path: Path) -> None:
    """GenAI and plain spans in one request (two serialized requests concatenated are one, with
    both's resources): positions count across resources, GenAI spans stay in Python."""
    paths = TwoPaths(chdb_path, tmp_path, Config(), "t_fastpath_mixed")
    try:
        genai = [decode(Signal.TRACES, body, Encoding(encoding)).message.SerializeToString()
                 for fixture in all_fixtures() for signal, encoding, body in fixture.payloads() if signal == "traces"]
        rnd = random.Random(7)
        # Each fixture once: `spans` is a ReplacingMergeTree, a span sent twice may merge away.
        for i, body in enumerate(genai):
            plain = build_request(rnd, 40, hostile=i % 2 == 1)
            spans, native = paths.send(plain + body + build_request(rnd, 30) if i % 3 else body + plain)
            # The fixture's GenAI spans stay in Python (some payloads hold none: the Vercel SDK
            # exports its outer ai.* span in a request of its own).
            inferences = len(paths.mapper.map_traces(ExportTraceServiceRequest.FromString(body), "", 0).inferences)
            assert native <= spans - inferences
        assert paths.native > paths.spans / 2
        assert paths.differences() == []
    finally:
        paths.close()


@pytest.mark.parametrize(("value", "ok"), [
    ("plain", True), ("x" * 65_537, False), (1.0, True), (1e-5, False), (1e16, False), (float("nan"), False),
    (-0.0, True), ([1, "a", True, None, b"\x00"], True), ([0.5], False), ([[1]], False), ({"a": 1}, False),
    (b"\x00" * 10, True),
])
def test_values_the_sql_reproduces(value: Any, ok: bool) -> None:
    assert value_ok(value, 65_536, False) is ok


def test_values_past_a_small_limit_stay_in_python() -> None:
    """The mapper clips every value's text at max_attribute_chars, numbers too."""
    assert value_ok(123, 12, False) and not value_ok(-9_223_372_036_854_775_808, 12, False)
    assert value_ok(0.25, 12, False) and not value_ok(9999999999999998.0, 12, False)
    assert not value_ok(True, 4, False) and value_ok(False, 5, False)


def test_fast_path_setting() -> None:
    assert not fast_path_on(Config())  # off by default (docs/performance.md says why)
    assert fast_path_on(Config(fast_path="auto"))
    assert not fast_path_on(Config(fast_path="auto", clickhouse_dsn="http://localhost:8123"))
    assert Config(fast_path="sometimes").validate() == ["fast_path: 'sometimes' is not auto or off"]
    # ClickHouse reads the request files by a glob under data_dir.
    assert Config(fast_path="auto", data_dir="/tmp/otelgw[1]").validate() == [
        "fast_path: data_dir must not contain * ? { } [ ] : or ' (ClickHouse globs its files)"]
    assert Config(data_dir="/tmp/otelgw[1]").validate() == []


def _sdk_spans(url: str, service: str) -> list[str]:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("shop.checkout", "1.2.3")
    traces = []
    for i in range(40):
        with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER,
                                          attributes={"http.route": "/checkout", "http.response.status_code": 200,
                                                      "app.ratio": 0.25, "app.tags": ["a", "b"]}) as root:
            traces.append(format(root.get_span_context().trace_id, "032x"))
            with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                              attributes={"db.system": "postgresql", "db.rows": i}) as child:
                if i % 5 == 0:
                    child.record_exception(ValueError(f"bad order {i}"))
                    child.set_status(Status(StatusCode.ERROR, "bad order"))
            with tracer.start_as_current_span("chat m", kind=SpanKind.CLIENT,
                                              attributes={"gen_ai.operation.name": "chat",
                                                          "gen_ai.request.model": "m",
                                                          "gen_ai.usage.input_tokens": 3}):
                pass
    provider.shutdown()
    return traces


def test_gateway_writes_sdk_spans_natively(chdb_path: Path, tmp_path: Path) -> None:
    gateway = start_gateway(chdb_path, "t_fastpath_sdk", tmp_path / "gw", fast_path="auto")
    try:
        traces = _sdk_spans(gateway.http_url, "shop")
        gateway.settle()
        assert gateway.gateway.writer.stats.native_rows == 80  # the HTTP and database spans
        assert gateway.gateway.writer.stats.rows_written["spans"] == 120
        with urllib.request.urlopen(f"{gateway.api_url}/metrics", timeout=10) as response:
            assert "otelgw_writer_native_rows_total 80" in response.read().decode()
        assert gateway.scalar("SELECT count() FROM spans") == 120
        assert gateway.scalar("SELECT count() FROM inferences") == 40
        assert gateway.scalar("SELECT countIf(project_id = 'default' AND service_name = 'shop') FROM spans") == 120
        status, trace = get_json(f"{gateway.api_url}/api/v2/traces/{traces[0]}")
        assert status == 200
        spans = {s["name"]: s for b in trace["trace"]["resourceSpans"] for ss in b["scopeSpans"] for s in ss["spans"]}
        assert set(spans) == {"POST /checkout", "SELECT orders", "chat m"}
        root_attrs = {a["key"]: a["value"] for a in spans["POST /checkout"]["attributes"]}
        assert root_attrs["http.route"] == {"stringValue": "/checkout"}
        assert spans["SELECT orders"]["status"]["code"] == "STATUS_CODE_ERROR"
        assert "exception" in {e["name"] for e in spans["SELECT orders"].get("events", [])}
    finally:
        assert gateway.stop()


def test_tail_sampling_decides_native_spans_with_the_rest(chdb_path: Path, tmp_path: Path) -> None:
    """Native spans wait in the sampler like the others: a kept trace lands whole (native and
    Python spans alike), a dropped one not at all; secrets are masked (their spans took Python)."""
    policies = tmp_path / "sampling.toml"
    policies.write_text('decision_wait_s = 0.3\n[[policies]]\nname = "half"\ntype = "probabilistic"\n'
                        'sampling_percentage = 50\n')
    gateway = start_gateway(chdb_path, "t_fastpath_sampling", tmp_path / "gw", tail_sampling=True,
                            sampling_file=str(policies), fast_path="auto")
    try:
        rnd = random.Random(5)
        sent: dict[str, int] = {}
        for i in range(6):
            body = build_request(rnd, 300, hostile=i % 3 == 0)
            # Two spans a trace: copy each trace id onto the next span, so traces mix both paths.
            request = ExportTraceServiceRequest.FromString(body)
            spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
            for first, second in zip(spans[::2], spans[1::2], strict=False):
                second.trace_id = first.trace_id
            for s in spans:
                sent[s.trace_id.hex()] = sent.get(s.trace_id.hex(), 0) + 1
            assert post_otlp(gateway.http_url, "traces", request.SerializeToString()).status == 200
        gateway.settle()
        wait_until(lambda: gateway.gateway.pipeline.describe()["sampler"]["buffered_traces"] == 0, timeout=20)
        gateway.settle()
        stored = {r["trace_id"]: r["n"] for r in gateway.query("SELECT trace_id, count() AS n FROM spans GROUP BY 1")}
        kept = {t: n for t, n in sent.items() if trace_hash_percent(t) < 50}
        assert stored == kept
        assert gateway.gateway.writer.stats.native_rows > 0.4 * sum(kept.values())
        assert gateway.scalar("SELECT count() FROM spans WHERE status_message LIKE '%Bearer abcdefgh%'") == 0
        assert gateway.scalar("SELECT count() FROM spans WHERE mapValues(attributes) "
                              "::String LIKE '%hunter2secret%'") == 0
    finally:
        assert gateway.stop()


def test_a_replayed_native_insert_is_deduplicated(chdb_path: Path, tmp_path: Path) -> None:
    """The writer's replay after a crash repeats a block's token; the fast path's INSERT ... SELECT
    must then land nothing twice, like the JSONEachRow inserts."""
    clients = ClientFactory(DSN(f"chdb://{chdb_path}?database=t_fastpath_dedup"))
    try:
        client = clients.get()
        apply_migrations(client)
        inserter = NativeInserter(tmp_path)
        inserter.prepare()
        rnd = random.Random(3)
        items = []
        for _ in range(30):
            body = build_request(rnd, 400)
            request = ExportTraceServiceRequest.FromString(body)
            positions = [position_key(r, s, p) for r, rs in enumerate(request.resource_spans)
                         for s, ss in enumerate(rs.scope_spans) for p in range(len(ss.spans))]
            items.append(NativeSpans(NativeSource(body, [("p", "svc")] * len(request.resource_spans)), positions))
        token = {**INSERT_SETTINGS, "insert_deduplication_token": "otelgw-x:1-30:spans-native"}
        for _ in range(3):
            assert inserter.insert(client, items, settings=token) == 12_000
            assert client.query("SELECT count() FROM spans").result_rows[0][0] == 12_000
        assert not list(tmp_path.glob("batch-*")), "request files left behind"
    finally:
        clients.close()


# -- requests protobuf accepts but ClickHouse's reader would not read the same ------------------

def _field(number: int, payload: bytes | str) -> bytes:
    return len_field(number, payload.encode() if isinstance(payload, str) else payload)


def _span_bytes(n: int, extra: bytes = b"") -> bytes:
    start = 1_764_150_000_000_000_000 + n
    return (_field(1, n.to_bytes(16, "big")) + _field(2, n.to_bytes(8, "big")) + _field(5, "GET /x")
            + b"\x39" + start.to_bytes(8, "little") + b"\x41" + (start + 1000).to_bytes(8, "little") + extra)


def _request_bytes(*spans: bytes) -> bytes:
    scope = _field(1, _field(1, "lib")) + b"".join(_field(2, s) for s in spans)
    resource = _field(1, _field(1, _field(1, "service.name") + _field(2, _field(1, "svc"))))
    return _field(1, resource + _field(2, scope))


NON_CANONICAL = {
    "name twice": _span_bytes(1, _field(5, "second name")),
    "oneof set twice": _span_bytes(2, _field(9, _field(1, "k") + _field(2, _field(1, "s") + b"\x18\x07"))),
    "status twice": _span_bytes(3, _field(15, _field(2, "first")) + _field(15, _field(2, "second"))),
    "unknown group field": _span_bytes(4, b"\xa3\x06\x08\x01\xa4\x06"),  # field 100, start/end group
}


def test_non_canonical_requests_take_the_python_path(chdb_path: Path, tmp_path: Path) -> None:
    """A request protobuf reads one way and ClickHouse another (a field sent twice, a oneof set
    twice, a group) is accepted and stored as protobuf reads it: on the Python path, with no
    effect on a well-formed request flushed beside it."""
    gateway = start_gateway(chdb_path, "t_fastpath_noncanonical", tmp_path / "gw", fast_path="auto")
    try:
        for body in NON_CANONICAL.values():
            assert post_otlp(gateway.http_url, "traces", _request_bytes(body)).status == 200
        assert post_otlp(gateway.http_url, "traces", _request_bytes(_span_bytes(9))).status == 200
        gateway.settle()
        writer = gateway.gateway.writer.stats
        assert writer.healthy and writer.native_rows == 1 and writer.dead_letter_rows == 0
        assert gateway.gateway.pipeline.stats.fast_path_non_canonical == len(NON_CANONICAL)
        with urllib.request.urlopen(f"{gateway.api_url}/metrics", timeout=10) as response:
            assert f"otelgw_fast_path_non_canonical_requests_total {len(NON_CANONICAL)}" in response.read().decode()
        rows = {r["span_id"]: r for r in gateway.query("SELECT span_id, name, status_message, attributes FROM spans")}
        assert len(rows) == 5
        assert rows[(1).to_bytes(8, "big").hex()]["name"] == "second name"  # the last value wins
        assert rows[(2).to_bytes(8, "big").hex()]["attributes"] == {"k": "7"}
        assert rows[(3).to_bytes(8, "big").hex()]["status_message"] == "second"
    finally:
        assert gateway.stop()


def test_positions_that_overflow_their_key_stay_in_python(chdb_path: Path, tmp_path: Path) -> None:
    """2**21 empty scopes before a span: its position would not fit the key."""
    paths = TwoPaths(chdb_path, tmp_path, Config(), "t_fastpath_overflow")
    request = ExportTraceServiceRequest()
    crowded = request.resource_spans.add()
    crowded.resource.attributes.add(key="service.name").value.string_value = "svc-a"
    empty = _field(2, b"")
    crowded_bytes = _field(1, crowded.resource.SerializeToString()) + empty * (1 << 21)
    tail = ExportTraceServiceRequest.FromString(build_request(random.Random(1), 5))
    body = _field(1, crowded_bytes + _field(2, _field(2, _span_bytes(77)))) + tail.SerializeToString()
    try:
        spans, native = paths.send(body)
        assert spans == 6 and native == 5  # the crowded resource's span in Python, the rest native
        assert paths.differences() == []
    finally:
        paths.close()


def test_a_request_clickhouse_refuses_is_dead_lettered_alone(chdb_path: Path, tmp_path: Path) -> None:
    clients = ClientFactory(DSN(f"chdb://{chdb_path}?database=t_fastpath_refused"))
    writer = BatchWriter(clients, batch_rows=100_000, flush_interval_s=60, max_bytes=1 << 30, attempts=1,
                         dead_letter_dir=tmp_path / "dead", native=NativeInserter(tmp_path / "fp"))
    try:
        apply_migrations(clients.get())
        writer.start()
        rnd = random.Random(9)

        def item(body: bytes) -> NativeSpans:
            request = ExportTraceServiceRequest.FromString(body)
            return NativeSpans(NativeSource(body, [("p", "s")] * len(request.resource_spans)),
                               [position_key(r, s, i) for r, rs in enumerate(request.resource_spans)
                                for s, ss in enumerate(rs.scope_spans) for i in range(len(ss.spans))])

        good = [item(build_request(rnd, 50)) for _ in range(2)]
        bad = NativeSpans(NativeSource(b"\x0a\x05garbage-not-a-request", [("p", "s")]), [0])
        assert writer.add(EncodedBatch(blocks={}, rows={}), 1, native=[good[0], bad, good[1]])
        assert writer.flush(60)
        assert clients.get().query("SELECT count() FROM spans").result_rows[0][0] == 100
        assert writer.stats.native_rows == 100 and writer.stats.rows_written["spans"] == 100
        assert writer.stats.dead_letter_rows == 1 and writer.stats.healthy
        dead = sorted(p.name for p in (tmp_path / "dead").iterdir())
        assert len(dead) == 2 and dead[0].endswith(".pb") and dead[1].endswith(".positions.json")
    finally:
        writer.stop(10)
        clients.close()


def test_waiting_fast_path_spans_count_their_whole_request() -> None:
    sampler = TailSampler(SamplingConfig(policies=[], decision_wait_s=10))
    source = NativeSource(b"x" * 1_000_000, [("p", "s")])
    digests = [SpanDigest(f"{t:032x}", f"{t:016x}", "p", "unset", {}, 1, 2, b"", t) for t in range(3)]
    sampler.add_digests(digests, 1, now=0.0, source=source)
    assert sampler.stats.buffered_bytes == 1_000_000 + 3 * 120
    sampler.tick(now=20.0, flush_all=True)
    assert sampler.stats.buffered_bytes == 0


def test_the_rules_tag_follows_what_decides_the_split() -> None:
    code = ["1.0", "6.0", "abc"]
    base = rules_tag(256, 65_536, False, MaskingFile(), code)
    assert base == rules_tag(256, 65_536, False, MaskingFile(), list(code))
    assert len({base, rules_tag(255, 65_536, False, MaskingFile(), code),
                rules_tag(256, 100, False, MaskingFile(), code), rules_tag(256, 65_536, True, MaskingFile(), code),
                rules_tag(256, 65_536, False, MaskingFile(), ["1.1", "6.0", "abc"])}) == 5
