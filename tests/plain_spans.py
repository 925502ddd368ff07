"""Plain (non-GenAI) OTLP spans as apps send them beside their LLM calls: HTTP server and client
spans, database and messaging spans, with every attribute value type, events (exceptions with
stack traces), links, error statuses and several resources a request. `hostile=True` mixes in
what the fast path must leave to the Python mapper (kvlist values, doubles in e notation, NaN,
duplicate keys, secrets, JSON-awkward characters, over-long values) so both sides are exercised.

Used by the fast path's differential test and by `loadtest/bench_ingest.py --plain`."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

BASE_NS = 1_764_150_000_000_000_000
ROUTES = ["/api/v1/orders", "/api/v1/users/{id}", "/healthz", "/search", "/checkout/éte", "/v2/items/{sku}"]
TABLES = ["orders", "users", "inventory", "sessions"]
HOSTILE_VALUES = [
    AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="a", value=AnyValue(int_value=1))])),
    AnyValue(double_value=1e-7), AnyValue(double_value=3.5e20), AnyValue(double_value=float("nan")),
    AnyValue(double_value=float("inf")),
    AnyValue(string_value="Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123"),
    AnyValue(string_value="postgres://admin:hunter2secret@db.internal:5432/app"),
    AnyValue(string_value="key sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
    AnyValue(string_value="vertical\x0btab and \u2028 line separator"),
    AnyValue(array_value=ArrayValue(values=[AnyValue(double_value=0.5), AnyValue(int_value=2)])),
    AnyValue(array_value=ArrayValue(values=[AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))])),
    AnyValue(string_value="x" * 70_000),
]


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _s(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _i(key: str, value: int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value))


def _attributes(rnd: random.Random, kind: str) -> list[KeyValue]:
    route = rnd.choice(ROUTES)
    if kind == "http":
        out = [_s("http.request.method", rnd.choice(["GET", "POST", "PUT"])), _s("http.route", route),
               _s("url.full", f"https://shop.example.com{route}?q={rnd.randint(1, 999)}&next=/a/b"),
               _i("http.response.status_code", rnd.choice([200, 201, 404, 500])),
               _s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" agent"),
               _kv("http.request.body.size", AnyValue(int_value=rnd.randint(0, 1 << 40))),
               _kv("net.sock.peer.port", AnyValue(int_value=-rnd.randint(1, 65535))),
               _kv("app.latency.ratio", AnyValue(double_value=rnd.choice([0.0, -0.0, 1.0, 0.25, 1 / 3, 123456.789,
                                                                        9999999999999998.0, 0.0001]))),
               _kv("app.cache.hit", AnyValue(bool_value=rnd.random() < 0.5)),
               _kv("http.request.header.accept", AnyValue(array_value=ArrayValue(values=[
                   AnyValue(string_value="application/json"), AnyValue(string_value='text/"html"/\\x')]))),
               _kv("app.retry.codes", AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=502),
                                                                             AnyValue(bool_value=False),
                                                                             AnyValue()]))),
               _kv("app.request.digest", AnyValue(bytes_value=rnd.randbytes(rnd.randint(0, 24)))),
               _s("app.note", rnd.choice(["", "naïve café ☃ 😀", "tab\there\nnewline", "nul\x00byte"]))]
    elif kind == "db":
        out = [_s("db.system", "postgresql"), _s("db.namespace", "shop"),
               _s("db.query.text", f"SELECT * FROM {rnd.choice(TABLES)} WHERE id = $1 AND note = 'a/b'"),
               _i("db.response.returned_rows", rnd.randint(0, 500)), _kv("app.empty", AnyValue())]
    else:
        out = [_s("messaging.system", "kafka"), _s("messaging.destination.name", "orders"),
               _i("messaging.batch.message_count", rnd.randint(1, 100))]
    rnd.shuffle(out)
    return out


def build_request(rnd: random.Random, spans: int, *, hostile: bool = False, project: str = "") -> bytes:
    """One request of about `spans` plain spans over 1-3 resources and 1-2 scopes each."""
    request = ExportTraceServiceRequest()
    made = 0
    while made < spans:
        rs = request.resource_spans.add()
        rs.resource.attributes.extend([_s("service.name", rnd.choice(["checkout", "frontend", "inventory-ü"])),
                                       _s("deployment.environment", "prod"), _i("process.pid", rnd.randint(1, 9999))])
        if project:
            rs.resource.attributes.append(_s("otelgw.project", project))
        for _ in range(rnd.randint(1, 2)):
            ss = rs.scope_spans.add()
            ss.scope.name = rnd.choice(["opentelemetry.instrumentation.flask", "io.opentelemetry.jdbc", "@otel/kafka"])
            ss.scope.version = rnd.choice(["", "0.48b0", "2.1.0"])
            for _ in range(min(rnd.randint(5, 60), spans - made)):
                made += 1
                kind = rnd.choice(["http", "http", "db", "messaging"])
                start = BASE_NS + rnd.randint(0, 10**12)
                span = ss.spans.add(trace_id=rnd.randbytes(16), span_id=rnd.randbytes(8),
                                    parent_span_id=rnd.choice([b"", rnd.randbytes(8)]),
                                    trace_state=rnd.choice(["", "vendor=a,rojo=00f067aa0ba902b7"]),
                                    name=f"{kind} {rnd.choice(ROUTES)}", kind=rnd.randint(0, 5),
                                    start_time_unix_nano=start,
                                    end_time_unix_nano=start + rnd.choice([0, 1, 1500, 2_500_000_000, -5 % 2**63]))
                span.attributes.extend(_attributes(rnd, kind))
                code = rnd.choice([0, 0, 1, 2])
                span.status.code = code  # type: ignore[assignment]
                if code == 2:
                    span.status.message = rnd.choice(["boom", "timeout after 30s: upstream /v1 \"x\""])
                    event = span.events.add(name="exception", time_unix_nano=start + 10)
                    event.attributes.extend([_s("exception.type", "ValueError"),
                                             _s("exception.message", "bad value 'x' / é"),
                                             _s("exception.stacktrace", "Traceback (most recent call last):\n"
                                                                        "  File \"app.py\", line 3\n\tValueError")])
                if rnd.random() < 0.1:
                    link = span.links.add(trace_id=rnd.randbytes(16), span_id=rnd.randbytes(8),
                                          trace_state=rnd.choice(["", "k=v"]))
                    link.attributes.extend([_s("link.reason", "batch/fan-in"), _i("link.n", 3)])
                if rnd.random() < 0.05:
                    span.events.add(name="cache.miss ☃", time_unix_nano=start + 20)
                if hostile and rnd.random() < 0.3:
                    where = rnd.choice(["span", "span", "event", "resource", "duplicate", "status"])
                    value = rnd.choice(HOSTILE_VALUES)
                    if where == "span":
                        span.attributes.append(_kv("app.hostile", value))
                    elif where == "event":
                        # A hostile value, or a benign one under a key ClickHouse's JSON escapes
                        # differently.
                        event = span.events.add(name="hostile", time_unix_nano=start)
                        event.attributes.append(_kv("v", value) if rnd.random() < 0.5 else _s("key\x1b\u2028", "ok"))
                    elif where == "resource":
                        rs.resource.attributes.append(_kv("app.hostile", value))
                    elif where == "duplicate":
                        span.attributes.append(_s("http.route", "/second/value"))
                    else:
                        span.status.code = 2  # type: ignore[assignment]
                        span.status.message = "upstream said Bearer abcdefghijklmnopqrstuvwxyz0123456789"
    return request.SerializeToString()
