"""Masking at ingest: detectors (unit), then real SDK exporters sending planted secrets and PII in
messages, attributes, span events and log bodies; with masking on, no raw value is in any table
(a full-text scan of every table), the placeholders are, `metadata` stores no content, and an
invalid-Luhn number is left alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningGateway, start_gateway
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from otelgw.governance.masking import Masker, MaskingFile, ProjectPolicy, Rule, iban_ok, luhn

EMAIL = "jane.roe+ops@example.org"
CARD = "4539 1488 0343 6467"  # valid Luhn
BAD_CARD = "4539 1488 0343 6468"  # invalid Luhn: not a card number
PHONE = "+44 20 7946 0958"
OPENAI_KEY = "sk-proj-Zx8Qm3Lr9Tt2Vb7Nw4Kp6Yh1Jd5"
AWS_KEY = "AKIAZ7QW3ER5TY9UI1OP"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
IBAN = "GB82 WEST 1234 5698 7654 32"
SSN = "078-05-1120"
IP = "203.0.113.77"
RAW = {"email": EMAIL, "card": CARD, "phone": PHONE, "openai": OPENAI_KEY, "aws": AWS_KEY,
       "pem": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "iban": IBAN, "ssn": SSN, "ip": IP}
PLANTED = (f"Contact {EMAIL} or {PHONE}. Card {CARD}, not {BAD_CARD}. IBAN {IBAN}, SSN {SSN}, from {IP}. "
           f"Use {OPENAI_KEY} and {AWS_KEY}.\n{PRIVATE_KEY}")


def masker(**policy: Any) -> tuple[Masker, Any, dict[str, int]]:
    m = Masker(MaskingFile(defaults=ProjectPolicy(**policy)), hmac_key="k")
    return m, m.policy("p"), {}


@pytest.mark.parametrize("text,expected", [
    ("write to a.b@c.io", "write to [EMAIL]"),
    (f"card {CARD}", "card [CREDIT_CARD]"),
    (f"card {BAD_CARD}", f"card {BAD_CARD}"),
    ("call (415) 555-2671 or +1-415-555-2671", "call [PHONE] or [PHONE]"),
    (f"iban {IBAN}", "iban [IBAN]"),
    ("iban GB82 WEST 1234 5698 7654 33", "iban GB82 WEST 1234 5698 7654 33"),  # bad checksum
    (f"ssn {SSN}", "ssn [SSN]"),
    ("v4 10.0.0.1 v6 fe80::1ff:fe23:4567:890a", "v4 [IP] v6 [IP]"),
    ("at 10:30:00 on 2026-11-26, version 1.2.3, 1764150000000000000 ns", None),
    ("https://bob:s3cr3t@example.com/x", "https://bob:[SECRET]@example.com/x"),
])
def test_pii_detectors(text: str, expected: str | None) -> None:
    m, policy, counts = masker(pii=True)
    assert m.mask_text(text, policy, counts) == (text if expected is None else expected)


def test_secrets_are_masked_even_with_pii_off_and_custom_rules() -> None:
    m, policy, counts = masker(pii=False, rules=[Rule(pattern=r"ACME-\d{6}", placeholder="[ACME_ID]")])
    text = f"{OPENAI_KEY} {AWS_KEY} Bearer abcdefghijklmnop1234 ghp_{'a' * 36} {EMAIL} ACME-123456"
    assert m.mask_text(text, policy, counts) == f"[SECRET] [SECRET] [SECRET] [SECRET] {EMAIL} [ACME_ID]"
    assert counts == {"openai_key": 1, "aws_key": 1, "bearer": 1, "github_token": 1, "rule:[ACME_ID]": 1}
    assert m.mask_text(PRIVATE_KEY, policy, counts) == "[SECRET]"


def test_checksums() -> None:
    assert luhn("4539148803436467") and not luhn("4539148803436468")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")


def test_masking_file_validation(tmp_path: Path) -> None:
    from otelgw.governance.masking import load_masking
    bad = tmp_path / "m.toml"
    bad.write_text('[projects.x]\nrules = [{ pattern = "(" }]\n')
    with pytest.raises(ValueError, match="pattern"):
        load_masking(str(bad))
    bad.write_text('[defaults]\ncapture = "everything"\n')
    with pytest.raises(ValueError, match="capture"):
        load_masking(str(bad))
    with pytest.raises(ValueError, match="mask_hmac_key"):
        Masker(MaskingFile(defaults=ProjectPolicy(hash_attributes=["user.email"])))


@pytest.fixture(scope="module")
def masked(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    folder = tmp_path_factory.mktemp("masking")
    policy = folder / "masking.toml"
    policy.write_text("""
[defaults]
drop_attributes = ["http.request.header.cookie"]

[projects.meta]
capture = "metadata"

[projects.open]
pii = false

[projects.custom]
rules = [{ pattern = "ACME-\\\\d{6}", placeholder = "[ACME_ID]" }]
hash_attributes = ["app.customer_id"]
""")
    running = start_gateway(chdb_path, "t_masking", folder / "data", mask_pii=True, masking_file=str(policy),
                            mask_hmac_key="test-key")
    try:
        for project in ("masked", "meta", "open", "custom"):
            send(running, project)
        running.settle()
        yield running
    finally:
        assert running.stop()


def send(gateway: RunningGateway, project: str) -> None:
    resource = Resource.create({"service.name": "pii-app", "deployment.owner": EMAIL})
    headers = {"x-otelgw-project": project}
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{gateway.http_url}/v1/traces", headers=headers)))
    tracer = tracer_provider.get_tracer("pii.test")
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
        span.set_attributes({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 10,
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": PLANTED}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "text", "content": f"I will email {EMAIL} about ACME-123456."}]}]),
            "app.customer_email": EMAIL, "app.customer_id": "cust-42", "http.request.header.cookie": "session=abc",
            "db.connection_string": "postgresql://app:Pa55word@db.internal:5432/app",
        })
        span.add_event("tool.result", {"output": f"Card on file: {CARD}; phone {PHONE}"})
    tracer_provider.shutdown()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
        endpoint=f"{gateway.http_url}/v1/logs", headers=headers)))
    logger = logger_provider.get_logger("pii.test")
    from opentelemetry._logs import LogRecord
    logger.emit(LogRecord(timestamp=time.time_ns(), body=f"user {EMAIL} paid with {CARD} using {OPENAI_KEY}",
                          attributes={"user.phone": PHONE}))
    logger_provider.shutdown()


def table_text(gateway: RunningGateway, project: str | None = None) -> dict[str, str]:
    """Every row of every table in the gateway's database, as text."""
    tables = [r["name"] for r in gateway.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View%'")]
    out = {}
    for table in tables:
        rows = gateway._clients.get().raw_query(f"SELECT * FROM `{table}` FORMAT JSONEachRow").decode()
        tag = f'"project_id":"{project}"'
        out[table] = rows if project is None else "\n".join(line for line in rows.splitlines() if tag in line)
    return out


def test_no_raw_value_reaches_any_table(masked: RunningGateway) -> None:
    texts = table_text(masked)
    assert any(texts.values())
    for table, text in texts.items():
        for name, raw in RAW.items():
            if name in ("email", "phone", "card", "iban", "ssn", "ip"):
                continue  # PII is stored for the project that turned PII masking off (checked below)
            assert raw not in text, (table, name)
        assert "Pa55word" not in text and "session=abc" not in text, table
    for project in ("masked", "meta", "custom"):
        per_project = table_text(masked, project)
        for table, text in per_project.items():
            for name, raw in RAW.items():
                assert raw not in text, (project, table, name)
            assert json.dumps(EMAIL)[1:-1] not in text


def test_placeholders_and_the_invalid_card_are_stored(masked: RunningGateway) -> None:
    content = masked.scalar("SELECT content FROM messages WHERE project_id = 'masked' AND role = 'user'")
    for placeholder in ("[EMAIL]", "[PHONE]", "[CREDIT_CARD]", "[IBAN]", "[SSN]", "[IP]", "[SECRET]"):
        assert placeholder in content, placeholder
    assert BAD_CARD in content  # fails Luhn: not a card number
    row = masked.query("SELECT masked, attributes, input_preview FROM inferences WHERE project_id = 'masked'")[0]
    assert row["masked"] and row["attributes"]["app.customer_email"] == "[EMAIL]"
    assert "http.request.header.cookie" not in row["attributes"]
    assert row["attributes"]["db.connection_string"] == "postgresql://app:[SECRET]@db.internal:5432/app"
    span = masked.query("SELECT events, resource_attributes FROM spans WHERE project_id = 'masked'")[0]
    assert "[CREDIT_CARD]" in span["events"] and "[PHONE]" in span["events"]
    assert json.loads(span["events"])[0]["time_unix_nano"] > 0  # timestamps untouched
    assert span["resource_attributes"]["deployment.owner"] == "[EMAIL]"
    body = masked.scalar("SELECT body FROM logs WHERE project_id = 'masked'")
    assert body == "user [EMAIL] paid with [CREDIT_CARD] using [SECRET]"


def test_per_project_policies(masked: RunningGateway) -> None:
    # metadata: no content at all, lengths kept.
    messages = masked.query("SELECT content, content_length, role FROM messages WHERE project_id = 'meta'")
    assert messages and all(m["content"] == "" for m in messages) and all(m["content_length"] > 0 for m in messages)
    row = masked.query("SELECT input_preview, output_preview, attributes, masked FROM inferences "
                       "WHERE project_id = 'meta'")[0]
    assert row["input_preview"] == row["output_preview"] == "" and row["masked"]
    assert "gen_ai.input.messages" not in row["attributes"]
    span = masked.query("SELECT attributes, events FROM spans WHERE project_id = 'meta'")[0]
    assert "gen_ai.input.messages" not in span["attributes"] and "gen_ai.output.messages" not in span["attributes"]
    assert json.loads(span["events"])[0]["attributes"] == {}
    assert masked.scalar("SELECT body FROM logs WHERE project_id = 'meta'") == ""
    # PII off: PII stays, secrets still go.
    content = masked.scalar("SELECT content FROM messages WHERE project_id = 'open' AND role = 'user'")
    assert EMAIL in content and CARD in content and OPENAI_KEY not in content and "[SECRET]" in content
    # custom: a project rule and a hashed attribute (equal values stay joinable).
    answer = masked.scalar("SELECT content FROM messages WHERE project_id = 'custom' AND role = 'assistant'")
    assert "[ACME_ID]" in answer and "ACME-123456" not in answer
    hashed = masked.scalar("SELECT attributes['app.customer_id'] FROM inferences WHERE project_id = 'custom'")
    assert hashed.startswith("hmac:") and hashed == masked.scalar(
        "SELECT attributes['app.customer_id'] FROM spans WHERE project_id = 'custom'")


def test_masked_counters_on_metrics(masked: RunningGateway) -> None:
    import urllib.request
    text = urllib.request.urlopen(f"{masked.api_url}/metrics", timeout=10).read().decode()
    assert 'otelgw_masked_items_total{detector="email",project="masked"}' in text
    lines = [line for line in text.splitlines() if line.startswith("otelgw_masked_items_total{")]
    assert any('project="open"' in line and 'detector="openai_key"' in line for line in lines)
    assert not any('project="open"' in line and 'detector="email"' in line for line in lines)


def test_one_record_with_two_projects_masks_each_by_its_own_policy() -> None:
    from otelgw.pipeline.rows import MessageRow, RowBatch
    m = Masker(MaskingFile(projects={"strict": ProjectPolicy(pii=True), "open": ProjectPolicy(pii=False)}))
    rows = [MessageRow(inference_id="i", project_id=p, timestamp="1", direction="input", index=0, role="user",
                       content=f"mail {EMAIL}") for p in ("open", "strict")]
    m.apply(RowBatch(messages=rows))
    assert rows[0].content == f"mail {EMAIL}" and rows[1].content == "mail [EMAIL]"


def test_hex_ids_and_uuids_are_not_cards() -> None:
    m, policy, counts = masker(pii=True)
    for value in ("3aac2464-4044-4221-8f46-123456789abc", "4539148803436467ab", "trace 4539148803436467f0"):
        assert m.mask_text(value, policy, counts) == value
