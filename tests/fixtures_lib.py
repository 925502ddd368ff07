"""Shared helpers for the captured OTLP fixtures (../shared/fixtures and tests/fixtures/captured):
loading payloads and comparing mapped rows with each expected.json."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent


def _shared_fixtures() -> Path:
    """../shared/fixtures next to the checkout; for a clone made elsewhere (git clone . /tmp/x),
    next to the repository it was cloned from; OTELGW_SHARED_FIXTURES names it outright."""
    if os.environ.get("OTELGW_SHARED_FIXTURES"):
        return Path(os.environ["OTELGW_SHARED_FIXTURES"])
    beside = ROOT.parent / "shared" / "fixtures"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    source = Path(origin) if origin and "://" not in origin and ":" not in origin.split("/")[0] else None
    if source is not None and (source.parent / "shared" / "fixtures").is_dir():
        return source.parent / "shared" / "fixtures"
    return beside


SHARED = _shared_fixtures()
CAPTURED = ROOT / "tests" / "fixtures" / "captured"


class Fixture(msgspec.Struct):
    name: str
    path: Path
    expected: dict[str, Any]

    def payloads(self) -> list[tuple[str, str, bytes]]:
        """(signal, encoding, body) for each payload file, traces before logs."""
        out: list[tuple[str, str, bytes]] = []
        for file in sorted(self.path.iterdir()):
            stem = file.name.split("-")[0]
            if stem not in ("traces", "logs", "metrics"):
                continue
            encoding = "json" if file.suffix == ".json" else "protobuf"
            out.append((stem, encoding, file.read_bytes()))
        out.sort(key=lambda p: p[0] != "traces")
        return out


def all_fixtures() -> list[Fixture]:
    found: list[Fixture] = []
    for base in (SHARED, CAPTURED):
        if not base.is_dir():
            continue
        for expected in sorted(base.glob("*/expected.json")):
            found.append(Fixture(expected.parent.name, expected.parent, json.loads(expected.read_text())))
    return found


def _norm_text(value: Any) -> Any:
    return None if value in ("", None) else value


def _parse_args(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def compare_messages(expected: list[dict[str, Any]], actual: list[dict[str, Any]], where: str) -> list[str]:
    problems: list[str] = []
    if len(expected) != len(actual):
        return [f"{where}: expected {len(expected)} messages, got {len(actual)}: {actual}"]
    for i, (exp, act) in enumerate(zip(expected, actual, strict=True)):
        if exp.get("role") != act.get("role"):
            problems.append(f"{where}[{i}].role: expected {exp.get('role')!r}, got {act.get('role')!r}")
        if _norm_text(exp.get("content")) != _norm_text(act.get("content")):
            problems.append(f"{where}[{i}].content: expected {exp.get('content')!r}, got {act.get('content')!r}")
        if "tool_call_id" in exp and "tool_call_id" in act and exp["tool_call_id"] != act["tool_call_id"]:
            problems.append(f"{where}[{i}].tool_call_id: expected {exp['tool_call_id']!r}, "
                            f"got {act['tool_call_id']!r}")
        exp_calls = exp.get("tool_calls") or []
        act_calls = act.get("tool_calls") or []
        if len(exp_calls) != len(act_calls):
            problems.append(f"{where}[{i}].tool_calls: expected {exp_calls}, got {act_calls}")
            continue
        for j, (ec, ac) in enumerate(zip(exp_calls, act_calls, strict=True)):
            if ec.get("name") != ac.get("name"):
                problems.append(f"{where}[{i}].tool_calls[{j}].name: expected {ec.get('name')!r}, "
                                f"got {ac.get('name')!r}")
            if ec.get("id") and ec["id"] != ac.get("id"):
                problems.append(f"{where}[{i}].tool_calls[{j}].id: expected {ec['id']!r}, got {ac.get('id')!r}")
            if "arguments" in ec and _parse_args(ec["arguments"]) != _parse_args(ac.get("arguments")):
                problems.append(f"{where}[{i}].tool_calls[{j}].arguments: expected {ec['arguments']!r}, "
                                f"got {ac.get('arguments')!r}")
    return problems


def compare_inference(exp: dict[str, Any], row: dict[str, Any], inputs: list[dict[str, Any]],
                      outputs: list[dict[str, Any]]) -> list[str]:
    """Field-by-field check of one stored inference against expected.json; null = not checked."""
    problems: list[str] = []

    def check(name: str, expected: Any, actual: Any) -> None:
        if expected is not None and expected != actual:
            problems.append(f"{name}: expected {expected!r}, got {actual!r}")

    check("span_id", exp["span_id"], row["span_id"])
    check("trace_id", exp["trace_id"], row["trace_id"])
    check("model", exp.get("model"), row["response_model"] or row["request_model"])
    # Optional, where a capture tells the two apart (a request naming an alias, a dated answer).
    check("request_model", exp.get("request_model"), row["request_model"])
    check("response_model", exp.get("response_model"), row["response_model"])
    check("finish_reason", exp.get("finish_reason"), row["finish_reason"])
    check("provider", exp.get("provider"), row["provider"] or None)
    check("operation", exp.get("operation"), row["operation"] or None)
    check("input_tokens", exp.get("input_tokens"), row["input_tokens"])
    check("output_tokens", exp.get("output_tokens"), row["output_tokens"])
    check("cached_input_tokens", exp.get("cached_input_tokens"), row["cached_input_tokens"])
    check("cache_write_input_tokens", exp.get("cache_write_input_tokens"), row["cache_write_input_tokens"])
    check("total_tokens", exp.get("total_tokens"), row["total_tokens"])
    check("stream", exp.get("stream"), bool(row["is_streaming"]))
    if exp.get("status") is not None:
        check("status", exp["status"], "ok" if row["is_success"] else "error")
    check("response_id", exp.get("response_id"), row["response_id"] or None)
    if exp.get("ttft_ms_available") and row["ttft_ms"] is None:
        problems.append("ttft_ms: expected a value, got NULL")
    if exp.get("input_messages") is not None:
        problems += compare_messages(exp["input_messages"], inputs, "input_messages")
    if exp.get("output_messages") is not None:
        problems += compare_messages(exp["output_messages"], outputs, "output_messages")
    return problems
