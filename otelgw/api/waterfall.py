"""The inference detail's tabs, built from the inference row, its trace's spans, the model's
recent baseline and its feedback. The performance tab is the timing waterfall:

    request received -> forwarded to provider -> first token -> complete

Each phase says where its start came from: the gateway or server span above the inference
(received), an HTTP client or model-server span below it, or the server's queue time
(forwarded), the TTFT attribute or event (first token), the span end (complete).
"""

from __future__ import annotations

from typing import Any

import msgspec

from otelgw.api.common import rfc3339_ns
from otelgw.api.schemas import (
    FeedbackList,
    InferenceDetail,
    Message,
    ModelBaseline,
    Overview,
    Performance,
    Phase,
)
from otelgw.pipeline.mapper import MAX_WAIT_MS

_decoder = msgspec.json.Decoder()
_SECONDS = 1000.0


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _latency_attrs(attributes: dict[str, str]) -> dict[str, float]:
    """vLLM's gen_ai.latency.* (seconds) as milliseconds."""
    out: dict[str, float] = {}
    for key, value in attributes.items():
        if key.startswith("gen_ai.latency."):
            number = _float(value)
            # A negative, infinite or absurd wait (past the mapper's bound) is no measurement.
            if number is not None and 0 <= number * _SECONDS <= MAX_WAIT_MS:
                out[key[len("gen_ai.latency."):]] = number * _SECONDS
    return out


def performance(row: dict[str, Any], spans: list[dict[str, Any]], baseline: dict[str, Any]) -> Performance:
    start = row["timestamp_ns"]
    end = row["end_timestamp_ns"]
    by_id = {s["span_id"]: s for s in spans}
    parent = by_id.get(row["parent_span_id"])
    children = [s for s in spans if s["parent_span_id"] == row["span_id"]]

    received, received_source = start, "inference span start"
    if parent is not None and parent["kind"] in ("server", "internal") and parent["start_ns"] <= start:
        received, received_source = parent["start_ns"], f"span:{parent['name']} ({parent['kind']})"

    server = next((c for c in children if any(k.startswith("gen_ai.latency.") for k in c["attributes"])), None)
    # The inference may itself be the server span; otherwise its model-server child has them.
    timings = _latency_attrs(row["attributes"])
    if server is not None and not timings:
        timings = _latency_attrs(server["attributes"])
    queue_ms = timings.get("time_in_queue")
    forwarded, forwarded_source = start, "inference span start"
    client = next((c for c in children if c["kind"] == "client"), None)
    if server is not None:
        forwarded = server["start_ns"] + int((queue_ms or 0) * 1e6)
        forwarded_source = f"span:{server['name']} + gen_ai.latency.time_in_queue" if queue_ms else \
            f"span:{server['name']}"
    elif client is not None:
        forwarded, forwarded_source = client["start_ns"], f"span:{client['name']} (client)"
    elif queue_ms is not None:
        forwarded, forwarded_source = start + int(queue_ms * 1e6), "gen_ai.latency.time_in_queue"

    ttft = row["ttft_ms"]
    first_token = start + int(ttft * 1e6) if ttft is not None else None
    phases = [Phase(name="request_received", offset_ms=0.0, duration_ms=None, source=received_source),
              Phase(name="forwarded_to_provider", offset_ms=(forwarded - received) / 1e6, duration_ms=None,
                    source=forwarded_source)]
    if first_token is not None:
        phases.append(Phase(name="first_token", offset_ms=(first_token - received) / 1e6, duration_ms=None,
                            source=row["ttft_source"]))
    phases.append(Phase(name="complete", offset_ms=(max(end, start) - received) / 1e6, duration_ms=0.0,
                        source="inference span end"))
    for this, following in zip(phases, phases[1:], strict=False):
        this.duration_ms = max(following.offset_ms - this.offset_ms, 0.0)

    prefill_ms = timings.get("time_in_model_prefill")
    decode_ms = timings.get("time_in_model_decode")
    if decode_ms is None and first_token is not None:
        decode_ms = max(end - first_token, 0) / 1e6
    if prefill_ms is None and ttft is not None:
        prefill_ms = max(ttft - (queue_ms or 0.0), 0.0)
    tokens_per_second = None
    if decode_ms and row["output_tokens"]:
        tokens_per_second = row["output_tokens"] / (decode_ms / 1000)
    elif row["output_tokens"] and end > start:
        tokens_per_second = row["output_tokens"] / ((end - start) / 1e9)
    latency_q = baseline.get("latency_q") or []
    ttft_q = baseline.get("ttft_q") or []
    samples = int(baseline.get("samples") or 0)

    def q(values: list[float], i: int) -> float | None:
        return float(values[i]) if samples and len(values) > i and values[i] == values[i] else None

    return Performance(
        phases=phases, total_ms=(max(end, start) - received) / 1e6, ttft_ms=ttft, ttft_source=row["ttft_source"],
        queue_ms=queue_ms, prefill_ms=prefill_ms, decode_ms=decode_ms, tokens_per_second=tokens_per_second,
        model_baseline=ModelBaseline(window_hours=24, samples=samples, latency_p50_ms=q(latency_q, 0),
                                     latency_p95_ms=q(latency_q, 1), ttft_p50_ms=q(ttft_q, 0),
                                     ttft_p95_ms=q(ttft_q, 1)),
    )


def _raw_span(span: dict[str, Any]) -> dict[str, Any]:
    """A stored span in OTLP JSON shape (ids hex, times as strings, attributes as key/value)."""
    def kvs(attrs: dict[str, str]) -> list[dict[str, Any]]:
        return [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]

    events = _decoder.decode(span["events"]) if span["events"] else []
    return {
        "traceId": span.get("trace_id", ""), "spanId": span["span_id"], "parentSpanId": span["parent_span_id"],
        "name": span["name"], "kind": span["kind"], "startTimeUnixNano": str(span["start_ns"]),
        "endTimeUnixNano": str(span["end_ns"]), "attributes": kvs(span["attributes"]),
        "status": {"code": span["status_code"], "message": span["status_message"]},
        "events": [{"name": e["name"], "timeUnixNano": str(e["time_unix_nano"]), "attributes": kvs(e["attributes"])}
                   for e in events],
        "resource": {"attributes": kvs(span["resource_attributes"])},
        "scope": {"name": span["scope_name"], "version": span["scope_version"]},
    }


def detail(row: dict[str, Any], messages: list[dict[str, Any]], spans: list[dict[str, Any]],
           baseline: dict[str, Any], feedback: FeedbackList) -> InferenceDetail:
    inference_id = str(row["inference_id"])
    own = [s for s in spans if s["span_id"] == row["span_id"]]
    related = [s for s in spans if s["span_id"] in (row["parent_span_id"],) or s["parent_span_id"] == row["span_id"]]
    for span in spans:
        span["trace_id"] = row["trace_id"]
    overview = Overview(
        inference_id=inference_id, project_id=row["project_id"], trace_id=row["trace_id"], span_id=row["span_id"],
        parent_span_id=row["parent_span_id"], timestamp=rfc3339_ns(row["timestamp_ns"]),
        end_timestamp=rfc3339_ns(row["end_timestamp_ns"]), service_name=row["service_name"],
        span_name=row["span_name"], family=row["family"], operation=row["operation"], provider=row["provider"],
        request_model=row["request_model"], response_model=row["response_model"], is_success=bool(row["is_success"]),
        error_type=row["error_type"], error_message=row["error_message"], input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"], cached_input_tokens=row["cached_input_tokens"],
        cache_write_input_tokens=row["cache_write_input_tokens"], reasoning_tokens=row["reasoning_tokens"],
        total_tokens=row["total_tokens"], cost_usd=row["cost_usd"],
        cost_source=row["cost_source"], latency_ms=row["latency_ms"], ttft_ms=row["ttft_ms"],
        ttft_source=row["ttft_source"], is_streaming=bool(row["is_streaming"]), finish_reason=row["finish_reason"],
        response_id=row["response_id"], session_id=row["session_id"], user_id=row["user_id"],
        trace_url=f"/api/v2/traces/{row['trace_id']}" if row["trace_id"] else "", trace_kept=bool(own),
    )
    return InferenceDetail(
        inference_id=inference_id,
        overview=overview,
        messages=[Message(**{k: m[k] for k in ("direction", "index", "role", "content", "tool_calls",
                                                "tool_call_id", "name", "finish_reason", "source")})
                  for m in messages],
        performance=performance(row, spans, baseline),
        raw={"spans": [_raw_span(s) for s in own + related],
             "log_events": [m for m in messages if m.get("source") == "log"]},
        feedback=feedback,
    )
