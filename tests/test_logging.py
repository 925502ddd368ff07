"""Structured logs: one JSON object per line with time, level, message and logger, the call's
fields, and the trace/span ids of the request being handled (the caller's trace when it sent a
traceparent); text for a terminal."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import grpc
import pytest
from conftest import wait_until
from otlp_client import post

from otelgw.jsonlog import ClientErrorFilter, JsonFormatter, TextFormatter, request_scope

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ClientErrorFilter())  # as setup_logging installs it
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_callers_trace_over_http(gateway, captured: io.StringIO) -> None:
    result = post(f"{gateway.http_url}/v1/traces", b"\xff\xfe not protobuf", "application/x-protobuf",
                  headers={"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"})
    assert result.status == 400
    entry = next(e for e in lines(captured) if e["message"] == "export refused")
    assert entry["level"] == "info" and entry["logger"] == "otelgw.receiver.otlp_http"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert entry["trace_id"] == CALLER_TRACE and re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])
    assert entry["span_id"] != "00f067aa0ba902b7"  # our handling is its own span
    assert entry["status"] == 400 and entry["path"] == "/v1/traces"


def test_requests_without_traceparent_get_fresh_ids_and_lines_outside_requests_none(gateway,
                                                                                    captured: io.StringIO) -> None:
    for _ in range(2):
        assert post(f"{gateway.http_url}/v1/logs", b"{", "application/json").status == 400
    logging.getLogger("otelgw.test").info("outside any request", extra={"answer": 42})
    entries = lines(captured)
    refused = [e for e in entries if e["message"] == "export refused"]
    assert len(refused) == 2 and refused[0]["trace_id"] != refused[1]["trace_id"]
    outside = next(e for e in entries if e["message"] == "outside any request")
    assert outside["answer"] == 42 and "trace_id" not in outside


def test_grpc_metadata_traceparent_reaches_the_log_context(gateway) -> None:
    seen: list[tuple[str, str] | None] = []

    class Probe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            from otelgw.jsonlog import REQUEST_IDS
            if record.name.startswith("otelgw.receiver"):
                seen.append(REQUEST_IDS.get())

    probe = Probe()
    logger = logging.getLogger("otelgw.receiver")
    logger.addHandler(probe)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with grpc.insecure_channel(gateway.grpc_target) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            with pytest.raises(grpc.RpcError) as info:
                export(b"\xff\xfe", metadata=(("traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"),), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The server logs after the status went out: wait for the line.
        wait_until(lambda: seen, timeout=10)
    finally:
        logger.removeHandler(probe)
        logger.setLevel(old)
    assert seen and all(ids is not None and ids[0] == CALLER_TRACE for ids in seen)


def test_text_format_for_a_terminal() -> None:
    record = logging.LogRecord("otelgw.x", logging.WARNING, __file__, 1, "store down", None, None)
    record.table = "inferences"
    with request_scope(f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"):
        text = TextFormatter().format(record)
    assert "WARNING otelgw.x: store down" in text and "table=inferences" in text
    assert f"trace_id={CALLER_TRACE}" in text
    with request_scope("garbage"):
        line = json.loads(JsonFormatter().format(record))
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]) and line["trace_id"] != CALLER_TRACE


def test_what_a_client_sent_is_not_logged_as_an_error(gateway, captured: io.StringIO) -> None:
    """grpcio logged an undecodable metadata value at ERROR, quoting it (an Authorization
    header's secret); aiohttp logged an over-long request line at ERROR with a traceback and a
    header excerpt. Any client could flood the log with either."""
    secret = "otgw_0123456789ab_s3cr3t-value"
    try:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    except UnicodeDecodeError as exc:
        logging.getLogger("grpc._cython.cygrpc").error("Invalid encoding on %s", f"Bearer {secret}".encode() + b"\xff",
                                                       exc_info=exc)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gateway.ports.otlp_http, timeout=10)
    conn.putrequest("GET", "/v1/traces?" + "a" * 10_000)
    conn.putheader("Authorization", f"Bearer {secret}")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    text = captured.getvalue()
    assert secret not in text and "Traceback" not in text
    entries = lines(captured)
    assert {e["message"] for e in entries} >= {"refused a gRPC metadata value that is not UTF-8 (value withheld)",
                                               "refused a malformed HTTP request from 127.0.0.1: LineTooLong"}
    assert all(e["level"] == "info" for e in entries if e["message"].startswith("refused a"))
