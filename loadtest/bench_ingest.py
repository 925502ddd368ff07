#!/usr/bin/env python3
"""End-to-end ingest benchmark: a real `otelgw serve` subprocess on fresh ports and a fresh chDB
directory, fed OTel GenAI chat spans (latest semconv, with message content) over OTLP/HTTP or
OTLP/gRPC, timed until every span is in ClickHouse.

    .venv/bin/python loadtest/bench_ingest.py                      # 200k spans over HTTP
    .venv/bin/python loadtest/bench_ingest.py --spans 1000000 --transport grpc --json
    .venv/bin/python loadtest/bench_ingest.py --profile            # py-spy profile of the gateway

What is measured:
  send      from the first request until the last one was answered 200 / OK
  landed    from the first request until GET /api/v1/status shows
            writer.rows_written.inferences >= spans (polled every 100 ms); "all tables" also waits
            for the spans and messages rows (with tail sampling, for the kept traces' span rows,
            written after the sampler's decision wait)
  latency   each request attempt, send to answer (retries are separate attempts)
  RSS       the gateway's VmRSS from /proc every 200 ms (peak) and its VmHWM
Every span is unique (fresh trace id, span id and response id): the store collapses re-sent
spans, so a reused span would never land as a new row. Requests are built before the clock
starts: a pool of `--templates` distinct batches, each copied with new ids patched into the
serialized bytes at the offsets the ids were found at.

Gateway settings: OTELGW_* from this process's environment and `--env KEY=VALUE` override the
benchmark's defaults (chdb:// in a temp dir, text logs); the listen addresses are always the
benchmark's. Everything stops by itself: startup, sending, landing and shutdown have timeouts,
and the gateway is killed if it outlives them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OTELGW = REPO / ".venv" / "bin" / "otelgw"
GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TICKS = os.sysconf("SC_CLK_TCK")

# (gen_ai.provider.name, request model, response model, server.address, response id prefix)
MODELS = [
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", "api.openai.com", "chatcmpl-"),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "api.openai.com", "chatcmpl-"),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "api.anthropic.com", "msg_"),
    ("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", "generativelanguage.googleapis.com", "resp-"),
]
SYSTEM_PROMPTS = [
    "You are a helpful customer-support assistant for Acme Cloud. Answer concisely, cite the relevant "
    "documentation page when you can, and never invent account details.",
    "You are a senior software engineer reviewing code. Point out bugs first, then style issues. Keep "
    "every answer under two hundred words.",
    "You are a travel planning assistant. Suggest practical itineraries with approximate costs and "
    "mention visa requirements when the traveller crosses a border.",
]
TOPICS = ["billing", "the API rate limits", "a failed deployment", "SSO configuration", "data export",
          "latency spikes", "a refund", "the Python SDK", "webhooks", "quota increases"]
ANSWER_SENTENCES = [
    "Thanks for the details, I can help with that.",
    "The most common cause is an expired access token, so please rotate it first.",
    "You can check the current limits on the usage page of the console.",
    "If the problem persists, open a ticket with the request id and we will look into it.",
    "The change takes effect within five minutes and needs no restart.",
    "Exports are written as compressed Parquet files to the bucket you configure.",
    "Retries use exponential backoff, starting at one second and capped at thirty.",
    "Make sure the webhook endpoint answers within ten seconds, otherwise the delivery is retried.",
]
FINISH_REASONS = ["stop"] * 9 + ["length"]
RESPONSE_ID_HEX = 24  # random hex characters at the end of every gen_ai.response.id


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- payloads ----------------------------------------------------------------------------------


def kv(key: str, value: Any) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, list):
        v.array_value.values.extend(kv("", x).value for x in value)
    else:
        v.string_value = value
    return KeyValue(key=key, value=v)


@dataclass
class Template:
    """One serialized request and where each span's ids sit in it."""

    data: bytes
    spans: int
    trace_offsets: list[int]
    span_offsets: list[int]
    response_id_offsets: list[int]


def _user_question(rnd: random.Random) -> str:
    topic = rnd.choice(TOPICS)
    order = rnd.randint(10_000, 99_999)
    return (f"Hi, I have a question about {topic}. Since yesterday our service (order #{order}) gets "
            f"intermittent errors when calling the endpoint and the dashboard shows nothing unusual. "
            f"We are on the {rnd.choice(['starter', 'team', 'enterprise'])} plan in region "
            f"{rnd.choice(['eu-west-1', 'us-east-2', 'ap-south-1'])}. What should we check first, and "
            f"is there anything we can change on our side to avoid it?")


def _span(rnd: random.Random, now_ns: int) -> tuple[Span, bytes, bytes, bytes]:
    provider, model, response_model, server, id_prefix = rnd.choice(MODELS)
    trace_id, span_id = os.urandom(16), os.urandom(8)
    id_tail = os.urandom(RESPONSE_ID_HEX // 2).hex()
    answer = " ".join(rnd.choice(ANSWER_SENTENCES) for _ in range(rnd.randint(2, 6)))
    finish = rnd.choice(FINISH_REASONS)
    inputs = [
        {"role": "system", "parts": [{"type": "text", "content": rnd.choice(SYSTEM_PROMPTS)}]},
        {"role": "user", "parts": [{"type": "text", "content": _user_question(rnd)}]},
    ]
    outputs = [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": finish}]
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        name=f"chat {model}",
        kind=Span.SPAN_KIND_CLIENT,
    )
    duration = rnd.randint(300_000_000, 8_000_000_000)
    end = now_ns - rnd.randint(0, 3_600_000_000_000)  # within the last hour
    span.start_time_unix_nano = end - duration
    span.end_time_unix_nano = end
    span.attributes.extend([
        kv("gen_ai.operation.name", "chat"),
        kv("gen_ai.provider.name", provider),
        kv("gen_ai.request.model", model),
        kv("gen_ai.request.max_tokens", 1024),
        kv("gen_ai.request.temperature", round(rnd.choice([0.0, 0.2, 0.7, 1.0]), 1)),
        kv("gen_ai.response.model", response_model),
        kv("gen_ai.response.id", id_prefix + id_tail),
        kv("gen_ai.response.finish_reasons", [finish]),
        kv("gen_ai.usage.input_tokens", rnd.randint(80, 1500)),
        kv("gen_ai.usage.output_tokens", rnd.randint(20, 600)),
        kv("server.address", server),
        kv("server.port", 443),
        kv("gen_ai.input.messages", json.dumps(inputs, separators=(",", ":"))),
        kv("gen_ai.output.messages", json.dumps(outputs, separators=(",", ":"))),
    ])
    span.status.code = Status.STATUS_CODE_UNSET
    return span, trace_id, span_id, id_tail.encode()


def build_template(rnd: random.Random, spans: int, now_ns: int) -> Template:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([
        kv("service.name", "support-chat"),
        kv("service.version", "2.14.0"),
        kv("deployment.environment.name", "bench"),
        kv("telemetry.sdk.name", "opentelemetry"),
        kv("telemetry.sdk.language", "python"),
        kv("telemetry.sdk.version", "1.38.0"),
    ])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    ss.scope.version = "2.2b0"
    sentinels = []
    for _ in range(spans):
        span, trace_id, span_id, id_tail = _span(rnd, now_ns)
        ss.spans.append(span)
        sentinels.append((trace_id, span_id, id_tail))
    data = req.SerializeToString()
    trace_offsets, span_offsets, rid_offsets = [], [], []
    pos = 0
    # Spans are serialized in order, each id once: a forward scan finds every offset while
    # reading the request about once.
    for trace_id, span_id, id_tail in sentinels:
        t = data.find(trace_id, pos)
        s = data.find(span_id, t)
        r = data.find(id_tail, s)
        if min(t, s, r) < 0:
            raise RuntimeError("could not locate span ids in the serialized template")
        trace_offsets.append(t)
        span_offsets.append(s)
        rid_offsets.append(r)
        pos = r + len(id_tail)
    return Template(data, spans, trace_offsets, span_offsets, rid_offsets)


def instantiate(tpl: Template) -> bytes:
    """A copy of the template with fresh random trace ids, span ids and response ids."""
    buf = bytearray(tpl.data)
    n = tpl.spans
    ids = os.urandom(24 * n)
    hexes = os.urandom(n * RESPONSE_ID_HEX // 2).hex().encode()
    h = RESPONSE_ID_HEX
    for i in range(n):
        t, s, r = tpl.trace_offsets[i], tpl.span_offsets[i], tpl.response_id_offsets[i]
        buf[t:t + 16] = ids[24 * i:24 * i + 16]
        buf[s:s + 8] = ids[24 * i + 16:24 * i + 24]
        buf[r:r + h] = hexes[h * i:h * i + h]
    return bytes(buf)


def build_requests(total: int, batch: int, templates: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    now_ns = time.time_ns()
    pool = [build_template(rnd, batch, now_ns) for _ in range(min(templates, max(1, total // batch)))]
    requests = [instantiate(pool[i % len(pool)]) for i in range(total // batch)]
    if total % batch:
        requests.append(instantiate(build_template(rnd, total % batch, now_ns)))
    return requests


def build_mixed_requests(total: int, batch: int, templates: int, seed: int, plain_share: float) -> list[bytes]:
    """Requests of `batch` spans, `plain_share` of them plain (non-GenAI: HTTP, database and
    messaging spans from tests/plain_spans.py) and the rest the usual GenAI chat spans: two
    serialized requests concatenated are one request holding both (protobuf merges repeated
    fields)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import plain_spans  # noqa: PLC0415 (the tests' generator, only needed here)

    plain_n = round(batch * plain_share)
    genai_n = batch - plain_n
    n_requests = total // batch
    genai = build_requests(genai_n * n_requests, genai_n, templates, seed) if genai_n else [b""] * n_requests
    rnd = random.Random(seed)
    plain_pool = [plain_spans.build_request(rnd, plain_n) for _ in range(min(templates, n_requests))] if plain_n \
        else [b""]
    # Plain spans repeat their pool's trace ids: give each request its own by flipping bytes.
    out = []
    for i in range(n_requests):
        body = plain_pool[i % len(plain_pool)]
        if plain_n:
            request = ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        span.trace_id, span.span_id = os.urandom(16), os.urandom(8)
            body = request.SerializeToString()
        out.append(genai[i] + body)
    return out


def check_requests(requests: list[bytes], batch: int) -> None:
    """Decode a sample of requests: right span count, ids unique, message JSON valid."""
    seen: set[tuple[bytes, bytes]] = set()
    picks = sorted({0, 1, 2, len(requests) - 2, len(requests) - 1} & set(range(len(requests))))
    for body in (requests[i] for i in picks):
        req = ExportTraceServiceRequest.FromString(body)
        spans = req.resource_spans[0].scope_spans[0].spans
        assert 0 < len(spans) <= batch, "span count"
        for sp in spans:
            key = (sp.trace_id, sp.span_id)
            assert key not in seen, "duplicate span id"
            assert len(sp.trace_id) == 16 and len(sp.span_id) == 8
            seen.add(key)
            attrs = {a.key: a.value for a in sp.attributes}
            json.loads(attrs["gen_ai.input.messages"].string_value)
            json.loads(attrs["gen_ai.output.messages"].string_value)
            assert len(attrs["gen_ai.response.id"].string_value) >= RESPONSE_ID_HEX


# -- gateway process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB from /proc/<pid>/status ({} once the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return out


def proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def child_pids(pid: int) -> list[int]:
    """The gateway's child processes: its mapping workers (OTELGW_WORKERS) and multiprocessing's
    resource tracker."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out.extend(int(p) for p in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return out


def children_cpu_s(pid: int) -> dict[int, float]:
    return {child: cpu for child in child_pids(pid) if (cpu := proc_cpu_s(child)) is not None}


def proc_thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, CPU seconds) for every thread, Python's and native (chDB, gRPC)."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def thread_cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                     top: int = 8) -> dict[str, list[Any]]:
    """CPU seconds spent between two snapshots: summed by OS thread name (Python threads are all
    named after the process; chDB's native pool is "ThreadPool"), and the busiest threads."""
    by_name: dict[str, float] = defaultdict(float)
    per_thread: list[tuple[str, int, float]] = []
    for tid, (name, cpu) in after.items():
        delta = cpu - before.get(tid, (name, 0.0))[1]
        by_name[name] += delta
        per_thread.append((name, tid, delta))
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])
    return {
        "by_name": [[n, round(c, 1)] for n, c in ranked[:top] if c >= 0.05],
        "busiest": [[f"{n}/{tid}", round(c, 1)] for n, tid, c in sorted(per_thread, key=lambda x: -x[2])[:top]
                    if c >= 0.05],
    }


class RssSampler(threading.Thread):
    """Samples the gateway's RSS every `interval` seconds until stopped or the process exits."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.hwm_kib = 0
        # The gateway plus its mapping worker processes, summed at each sample.
        self.total_peak_kib = 0
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.is_set():
            st = proc_status(self.pid)
            if not st:
                return
            rss = st.get("VmRSS", 0)
            self.peak_kib = max(self.peak_kib, rss)
            self.hwm_kib = max(self.hwm_kib, st.get("VmHWM", 0))
            workers = sum(proc_status(child).get("VmRSS", 0) for child in child_pids(self.pid))
            self.total_peak_kib = max(self.total_peak_kib, rss + workers)
            self.samples.append((time.monotonic() - t0, rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)

    def timeline_mib(self, buckets: int = 8) -> list[float]:
        """Peak RSS in each of `buckets` equal slices of the sampled time: growth shows here."""
        if not self.samples:
            return []
        span = self.samples[-1][0] or 1.0
        peaks = [0] * buckets
        for t, rss in self.samples:
            i = min(buckets - 1, int(t / span * buckets))
            peaks[i] = max(peaks[i], rss)
        return [round(p / 1024) for p in peaks]


@dataclass
class Gateway:
    proc: subprocess.Popen
    workdir: Path
    log_path: Path
    http_port: int
    grpc_port: int
    api_port: int
    env: dict[str, str]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


ROLLUP_VIEWS = ("inference_stats_1d_mv", "inference_stats_1h_mv", "inference_stats_1m_mv")


def drop_rollup_views(args: argparse.Namespace, workdir: Path) -> None:
    """Migrate the fresh store, then drop the analytics views, to measure ingest without them."""
    dsn = f"chdb://{workdir / 'chdb'}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}, "OTELGW_CLICKHOUSE_DSN": dsn,
           "OTELGW_DATA_DIR": str(workdir)}
    subprocess.run([args.otelgw, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    drop = "; ".join(f"c.command('DROP VIEW IF EXISTS {view}')" for view in ROLLUP_VIEWS)
    subprocess.run([sys.executable, "-c", "from otelgw.store.client import DSN, ClientFactory; "
                    f"c = ClientFactory(DSN({dsn!r})).get(); {drop}"], check=True)


def start_gateway(args: argparse.Namespace, workdir: Path) -> Gateway:
    if args.without_rollups:
        drop_rollup_views(args, workdir)
    http_port, grpc_port, api_port = free_port(), free_port(), free_port()
    settings = {
        "OTELGW_CLICKHOUSE_DSN": f"chdb://{workdir / 'chdb'}",
        "OTELGW_DATA_DIR": str(workdir),
        "OTELGW_LOG_FORMAT": "text",
    }
    settings.update({k: v for k, v in os.environ.items() if k.startswith("OTELGW_")})
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("OTELGW_"):
            raise SystemExit(f"--env {item!r}: expected OTELGW_NAME=VALUE")
        settings[key] = value
    settings.update({
        "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "OTELGW_OTLP_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "OTELGW_API_ADDR": f"127.0.0.1:{api_port}",
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update(settings)
    log_path = workdir / "gateway.log"
    otelgw = Path(args.otelgw)
    if not otelgw.exists():
        raise SystemExit(f"{otelgw} not found: run `make install` in {REPO}")
    with open(log_path, "wb") as log_fh:  # the child keeps its own descriptor
        proc = subprocess.Popen([str(otelgw), "serve"], env=env, stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(workdir), start_new_session=True)
    gw = Gateway(proc, workdir, log_path, http_port, grpc_port, api_port, settings)
    deadline = time.monotonic() + args.startup_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} during startup:\n{tail(log_path)}")
        try:
            if http_get_json(gw.api + "/healthz", timeout=2).get("status") == "ok":
                return gw
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateway not healthy after {args.startup_timeout}s:\n{tail(log_path)}")
        time.sleep(0.1)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_gateway(gw: Gateway, timeout: float) -> tuple[int | None, float, bool]:
    """SIGTERM, wait; SIGKILL if it outlives `timeout`. (exit code, seconds, killed)."""
    if gw.proc.poll() is not None:
        return gw.proc.returncode, 0.0, False
    t = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    try:
        code = gw.proc.wait(timeout)
        return code, time.monotonic() - t, False
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        code = gw.proc.wait(10)
        return code, time.monotonic() - t, True


def log_problems(path: Path, limit: int = 12) -> tuple[int, list[str]]:
    bad = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0, []
    for line in text.splitlines():
        if any(w in line for w in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback", "\"level\": \"error\"",
                                   "\"level\":\"warning\"", "\"level\":\"error\"")):
            bad.append(line[:300])
    return len(bad), bad[:limit]


# -- profiling ---------------------------------------------------------------------------------


def start_profiler(args: argparse.Namespace, pid: int) -> tuple[subprocess.Popen, Path] | None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        log("--profile: py-spy is not installed (pip install py-spy into the venv); running without it")
        return None
    ext = {"speedscope": "speedscope.json", "flamegraph": "svg", "raw": "txt"}[args.profile_format]
    out = Path("/tmp") / f"otelgw-profile-{args.transport}-{time.strftime('%Y%m%d-%H%M%S')}.{ext}"
    cmd = [pyspy, "record", "--pid", str(pid), "--rate", str(args.profile_rate), "--format",
           args.profile_format, "--output", str(out)]
    if args.profile_native:
        cmd.append("--native")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(1.0)  # attach before the first request
    if proc.poll() is not None:
        log(f"py-spy failed to start: {proc.stderr.read().decode(errors='replace')[-500:]}")
        return None
    log(f"py-spy recording pid {pid} -> {out}")
    return proc, out


def stop_profiler(proc: subprocess.Popen, out: Path) -> bool:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    return out.exists()


# Category of a sample: the first frame, walking from the leaf up, whose file/function matches.
CATEGORIES: list[tuple[str, str, str]] = [
    # (label, file substring, function name or "" for any)
    ("protobuf decode (FromString)", "receiver/decode.py", "_from_protobuf"),
    ("span validation", "receiver/decode.py", "_validate_traces"),
    ("OTLP response serialize", "receiver/decode.py", "partial_success"),
    ("message JSON parse/normalise", "pipeline/messages.py", ""),
    ("attribute walk (AnyValue->py)", "pipeline/anyvalue.py", "any_to_py"),
    ("attribute walk (AnyValue->py)", "pipeline/anyvalue.py", "attrs_to_dict"),
    ("attribute walk (AnyValue->py)", "pipeline/anyvalue.py", "attrs_to_dict.<locals>.<dictcomp>"),
    ("attribute stringify (to_str/str_map/clip)", "pipeline/anyvalue.py", ""),
    ("uuid5 ids", "uuid.py", ""),
    ("pricing", "otelgw/pricing.py", ""),
    ("genai field extraction", "pipeline/genai.py", ""),
    ("convention detect", "otelgw/semconv.py", ""),
    ("msgspec encode (rows.encode_batch)", "pipeline/rows.py", "encode_batch"),
    ("row timestamps (rows.ts)", "pipeline/rows.py", "ts"),
    ("mapping (mapper.py body)", "pipeline/mapper.py", ""),
    ("writer buffer (add/wait)", "store/writer.py", "add"),
    ("chDB insert", "chdb", ""),
    ("chDB insert (clickhouse_connect temp file + glue)", "clickhouse_connect", ""),
    ("chDB insert (clickhouse_connect temp file + glue)", "tempfile.py", ""),
    ("writer (join blocks, loop)", "store/writer.py", ""),
    ("pipeline glue (executor hop)", "pipeline/pipeline.py", ""),
    ("receiver glue", "otelgw/receiver", ""),
    ("API (status polling)", "otelgw/api", ""),
    ("aiohttp (Python side)", "aiohttp", ""),
    ("grpc (Python side)", "grpc", ""),
    ("asyncio/threading/executor plumbing", "asyncio", ""),
    ("asyncio/threading/executor plumbing", "uvloop", ""),
    ("asyncio/threading/executor plumbing", "concurrent/futures", ""),
    ("asyncio/threading/executor plumbing", "threading.py", ""),
]


def _is_idle(leaf: dict[str, Any], thread: str) -> bool:
    """Waits that py-spy's idle detection misses here (checked against the threads' CPU time in
    /proc): an executor worker blocked in work_queue.get, the writer on its condition, the event
    loop inside uvloop's C run loop (epoll; C parsing shows under aiohttp's Python frames), and
    gRPC's poller thread (epoll in C-core)."""
    file, name = leaf.get("file") or "", leaf.get("name") or ""
    if file.endswith("concurrent/futures/thread.py") and name == "_worker":
        return True
    if file.endswith("asyncio/runners.py") and name == "Runner.run":
        return True
    if file.endswith("threading.py") and name == "Thread.run" and "_poll_wrapper" in thread:
        return True
    return file.endswith("threading.py") and name in ("Condition.wait", "Event.wait", "Semaphore.acquire")


def _category(stack: list[dict[str, Any]]) -> str:
    for frame in reversed(stack):
        file, name = frame.get("file") or "", frame.get("name") or ""
        for label, part, func in CATEGORIES:
            if part in file and (not func or func == name):
                return label
    return "other"


def summarize_speedscope(path: Path, top: int = 20) -> dict[str, Any]:
    """Busy time (seconds of samples whose leaf is not a known wait) by thread, category, and
    function (self and total)."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    self_w: dict[tuple[str, str], float] = defaultdict(float)
    total_w: dict[tuple[str, str], float] = defaultdict(float)
    cats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    busy: dict[str, float] = defaultdict(float)
    idle: dict[str, float] = defaultdict(float)

    def key(i: int) -> tuple[str, str]:
        f = frames[i]
        file = f.get("file") or ""
        short = file.split("site-packages/")[-1].split("/work/main/")[-1].split("lib/python3.11/")[-1]
        return f.get("name") or "?", short

    tids: dict[int, str] = {}
    for prof in doc["profiles"]:
        thread = prof.get("name", "?")  # 'Thread 11834 "otelgw-map_0"'
        thread = thread.split('"')[1] if thread.count('"') >= 2 else thread
        parts = prof.get("name", "").split()
        if len(parts) > 1 and parts[1].isdigit():
            tids[int(parts[1])] = thread
        weights = prof.get("weights") or [1] * len(prof["samples"])
        for stack, w in zip(prof["samples"], weights, strict=False):
            if not stack:
                continue
            if _is_idle(frames[stack[-1]], thread):
                idle[thread] += w
                continue
            busy[thread] += w
            self_w[key(stack[-1])] += w
            for k in {key(i) for i in stack}:
                total_w[k] += w
            cats[_category([frames[i] for i in stack])][thread] += w

    grand = sum(busy.values())

    def pct(w: float) -> float:
        return round(100 * w / grand, 1) if grand else 0.0

    by_total = sorted(cats.items(), key=lambda kv: -sum(kv[1].values()))
    return {
        "tids": tids,
        "busy_s": round(grand, 2),
        "threads": [(t, round(busy[t], 2), round(idle.get(t, 0.0), 2)) for t in sorted(busy, key=lambda t: -busy[t])],
        "categories": [(c, round(sum(per.values()), 2), pct(sum(per.values())),
                        {t: round(w, 2) for t, w in sorted(per.items(), key=lambda kv: -kv[1])})
                       for c, per in by_total],
        "self": [(f"{n} ({f})", round(w, 2), pct(w))
                 for (n, f), w in sorted(self_w.items(), key=lambda kv: -kv[1])[:top]],
        "total": [(f"{n} ({f})", round(w, 2), pct(w))
                  for (n, f), w in sorted(total_w.items(), key=lambda kv: -kv[1])[:top]],
    }


def print_profile(summary: dict[str, Any], out: Any) -> None:
    print(f"\nprofile: {summary['busy_s']} s of busy samples over all Python threads (known waits excluded; "
          "time waiting for the GIL counts as busy; chDB's native threads are not sampled)", file=out)
    print("  thread                       busy s   idle s", file=out)
    for name, b, i in summary["threads"]:
        print(f"    {name:<26} {b:7.2f}  {i:7.2f}", file=out)
    print("  by category (leaf-most matching frame):   s     %   threads", file=out)
    for name, sec, p, per in summary["categories"]:
        threads = ", ".join(f"{t} {w}" for t, w in list(per.items())[:2])
        print(f"    {name:<38} {sec:6.2f} {p:5.1f}   {threads}", file=out)
    print("  top functions by self time:", file=out)
    for name, sec, p in summary["self"]:
        print(f"    {sec:6.2f} s {p:5.1f}%  {name}", file=out)
    print("  top functions by total time:", file=out)
    for name, sec, p in summary["total"]:
        print(f"    {sec:6.2f} s {p:5.1f}%  {name}", file=out)


# -- load --------------------------------------------------------------------------------------


@dataclass
class SendStats:
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed_spans: int = 0
    rejected_spans: int = 0
    requests_ok: int = 0
    spans_ok: int = 0
    first_send: float = 0.0
    last_answer: float = 0.0


class Sender:
    """Sends one request until it is accepted: retried on 503 / UNAVAILABLE and transport errors
    with capped exponential backoff, given up on any other answer."""

    def __init__(self, args: argparse.Namespace, gw: Gateway, stats: SendStats) -> None:
        self.args = args
        self.gw = gw
        self.stats = stats
        self.session: aiohttp.ClientSession | None = None
        self.channel: grpc.aio.Channel | None = None
        self.call: Any = None

    async def __aenter__(self) -> Sender:
        if self.args.transport == "http":
            connector = aiohttp.TCPConnector(limit=self.args.concurrency)
            self.session = aiohttp.ClientSession(connector=connector,
                                                 timeout=aiohttp.ClientTimeout(total=self.args.request_timeout))
            self.url = f"http://127.0.0.1:{self.gw.http_port}/v1/traces"
        else:
            self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.gw.grpc_port}", options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ])
            self.call = self.channel.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.session is not None:
            await self.session.close()
        if self.channel is not None:
            await self.channel.close()

    async def _attempt(self, body: bytes) -> tuple[str, bytes]:
        """('ok', response) | ('retry', reason) | ('fail', reason)."""
        if self.session is not None:
            try:
                async with self.session.post(self.url, data=body,
                                             headers={"Content-Type": "application/x-protobuf"}) as r:
                    payload = await r.read()
                    if r.status == 200:
                        return "ok", payload
                    if r.status in (429, 502, 503, 504):
                        return "retry", f"HTTP {r.status}".encode()
                    return "fail", f"HTTP {r.status}: {payload[:200]!r}".encode()
            except (TimeoutError, aiohttp.ClientError) as exc:
                return "retry", f"{type(exc).__name__}".encode()
        try:
            payload = await self.call(body, timeout=self.args.request_timeout)
            return "ok", payload
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        grpc.StatusCode.DEADLINE_EXCEEDED):
                return "retry", f"grpc {code.name}".encode()
            return "fail", f"grpc {code.name}: {exc.details()}".encode()

    async def send(self, body: bytes, spans: int) -> None:
        st = self.stats
        wait = self.args.retry_wait
        for attempt in range(1, self.args.max_attempts + 1):
            t = time.perf_counter()
            outcome, detail = await self._attempt(body)
            st.latencies.append(time.perf_counter() - t)
            if outcome == "ok":
                st.requests_ok += 1
                st.spans_ok += spans
                st.last_answer = time.perf_counter()
                if detail:
                    resp = ExportTraceServiceResponse.FromString(detail)
                    st.rejected_spans += resp.partial_success.rejected_spans
                return
            st.errors[detail.decode(errors="replace")[:120]] += 1
            if outcome == "fail" or attempt == self.args.max_attempts:
                st.failed_spans += spans
                st.last_answer = time.perf_counter()
                return
            st.retries += 1
            await asyncio.sleep(wait * (0.5 + random.random()))
            wait = min(wait * 2, 2.0)


@dataclass
class Landing:
    landed_s: float | None = None  # inferences >= target
    all_tables_s: float | None = None  # inferences, spans and messages all in
    status: dict[str, Any] = field(default_factory=dict)
    polls: int = 0
    poll_errors: int = 0


def spans_target(status: dict[str, Any], spans: int) -> float:
    """Span rows to wait for. With tail sampling (pipeline.sampler in the status) only kept traces
    write span rows, after their decision wait: every bench span is its own trace, so once
    kept + dropped traces reach `spans` the kept count is the target; until then, not landed."""
    sampler = status.get("pipeline", {}).get("sampler")
    if not sampler:
        return spans
    kept = sampler.get("traces_kept", 0)
    return kept if kept + sampler.get("traces_dropped", 0) >= spans else math.inf


async def poll_landing(api: str, target: dict[str, int], t0: float, deadline: float, landing: Landing,
                       done_sending: asyncio.Event, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.perf_counter() < deadline and proc.poll() is None:
            try:
                async with session.get(api + "/api/v1/status") as r:
                    status = await r.json()
                landing.status = status
                landing.polls += 1
                rows = status["writer"]["rows_written"]
                now = time.perf_counter() - t0
                if landing.landed_s is None and rows.get("inferences", 0) >= target["inferences"] and (
                        target["inferences"] or rows.get("spans", 0) >= spans_target(status, target["spans"])):
                    landing.landed_s = now
                if (landing.landed_s is not None and landing.all_tables_s is None
                        and rows.get("spans", 0) >= spans_target(status, target["spans"])
                        and rows.get("messages", 0) >= target["messages"]):
                    landing.all_tables_s = now
                if landing.all_tables_s is not None and done_sending.is_set():
                    return
            except (TimeoutError, aiohttp.ClientError, ValueError, KeyError):
                landing.poll_errors += 1
            await asyncio.sleep(0.1)


async def run_load(args: argparse.Namespace, gw: Gateway, requests: list[bytes | None],
                   counts: list[int]) -> tuple[SendStats, Landing, float, float]:
    stats = SendStats()
    landing = Landing()
    messages_per_span = 3  # system + user in, assistant out
    genai = args.spans - round(args.batch * args.plain_share) * (args.spans // args.batch)
    target = {"inferences": genai, "spans": args.spans, "messages": genai * messages_per_span}
    done_sending = asyncio.Event()
    indices = iter(range(len(requests)))

    async def worker(sender: Sender) -> None:
        for i in indices:  # one shared iterator: each request is sent by exactly one worker
            body = requests[i]
            assert body is not None
            await sender.send(body, counts[i])
            requests[i] = None  # free it: a 1M-span run holds ~1 GB of requests

    async with Sender(args, gw, stats) as sender:
        t0 = time.perf_counter()
        stats.first_send = t0
        deadline = t0 + args.timeout
        poller = asyncio.create_task(poll_landing(f"http://127.0.0.1:{gw.api_port}", target, t0, deadline,
                                                  landing, done_sending, gw.proc))
        workers = [asyncio.create_task(worker(sender)) for _ in range(args.concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), timeout=args.timeout)
        except TimeoutError:
            log(f"sending did not finish within --timeout {args.timeout}s")
            for w in workers:
                w.cancel()
        send_s = (stats.last_answer or time.perf_counter()) - t0
        done_sending.set()
        if stats.failed_spans:
            # Requests given up on never land: wait for what was accepted.
            for k in target:
                target[k] -= round(stats.failed_spans * (1 - args.plain_share if k != "spans" else 1)
                                   * (messages_per_span if k == "messages" else 1))
        await poller
    return stats, landing, send_s, t0


# -- main --------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))  # nearest rank
    return round(sorted_values[i] * 1000, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=200_000, help="spans to send (default 200000)")
    p.add_argument("--batch", type=int, default=512, help="spans per request (default 512)")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent senders (default 4)")
    p.add_argument("--transport", choices=("http", "grpc"), default="http")
    p.add_argument("--templates", type=int, default=64,
                   help="distinct pre-built batches (content varies between them; ids are always fresh)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plain-share", type=float, default=0.0,
                   help="share of each request's spans that are plain (non-GenAI) spans, 0 to 1 (default 0); "
                        "with a share, 'landed' waits for the spans too")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line on stdout")
    p.add_argument("--timeout", type=float, default=900, help="seconds for sending + landing (default 900)")
    p.add_argument("--startup-timeout", type=float, default=120)
    p.add_argument("--shutdown-timeout", type=float, default=120,
                   help="seconds after SIGTERM before the gateway is killed")
    p.add_argument("--request-timeout", type=float, default=120, help="seconds for one request attempt")
    p.add_argument("--retry-wait", type=float, default=0.05,
                   help="first wait before retrying a 503 / UNAVAILABLE (doubles, capped at 2 s)")
    p.add_argument("--max-attempts", type=int, default=200, help="attempts per request before giving up")
    p.add_argument("--env", action="append", default=[], metavar="OTELGW_NAME=VALUE",
                   help="extra gateway setting (repeatable); OTELGW_* from the environment pass through too")
    p.add_argument("--otelgw", default=str(DEFAULT_OTELGW), help="the otelgw executable")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (chDB data, gateway log)")
    p.add_argument("--without-rollups", action="store_true",
                   help="drop the analytics rollup views first (schema/006), to measure what they cost")
    p.add_argument("--profile", action="store_true", help="record the gateway with py-spy while loading")
    p.add_argument("--summarize", metavar="SPEEDSCOPE_JSON",
                   help="only print the summary of an earlier py-spy speedscope file, then exit")
    p.add_argument("--profile-format", choices=("speedscope", "flamegraph", "raw"), default="speedscope")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames too)")
    args = p.parse_args(argv)
    if args.spans <= 0 or args.batch <= 0 or args.concurrency <= 0:
        p.error("--spans, --batch and --concurrency must be positive")
    if not 0.0 <= args.plain_share <= 1.0:
        p.error("--plain-share must be between 0 and 1")
    if args.plain_share and args.spans < args.batch:
        p.error("--plain-share needs --spans of at least one --batch")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        print_profile(summarize_speedscope(Path(args.summarize)), sys.stdout)
        return 0
    t_build = time.perf_counter()
    if args.plain_share:
        args.spans -= args.spans % args.batch
        requests: list[bytes | None] = list(build_mixed_requests(args.spans, args.batch, args.templates, args.seed,
                                                                 args.plain_share))
    else:
        requests = list(build_requests(args.spans, args.batch, args.templates, args.seed))
        check_requests(requests, args.batch)  # type: ignore[arg-type]
    counts = [args.batch] * (args.spans // args.batch) + ([args.spans % args.batch] if args.spans % args.batch else [])
    payload_bytes = sum(len(r) for r in requests if r)
    log(f"built {len(requests)} requests, {args.spans} spans, {payload_bytes / 2**20:.0f} MiB "
        f"({payload_bytes / args.spans:.0f} B/span) in {time.perf_counter() - t_build:.1f}s")

    workdir = Path(tempfile.mkdtemp(prefix="otelgw-bench-", dir="/tmp"))
    gw: Gateway | None = None
    sampler: RssSampler | None = None
    profiler: tuple[subprocess.Popen, Path] | None = None
    ok = False
    try:
        t_start = time.monotonic()
        try:
            gw = start_gateway(args, workdir)
        except RuntimeError as exc:
            log(str(exc))
            return 2
        startup_s = time.monotonic() - t_start
        pid = gw.proc.pid
        log(f"gateway pid {pid} healthy in {startup_s:.1f}s (http :{gw.http_port}, grpc :{gw.grpc_port}, "
            f"api :{gw.api_port}), log {gw.log_path}")
        sampler = RssSampler(pid)
        sampler.start()
        rss_idle_kib = proc_status(pid).get("VmRSS", 0)
        if args.profile:
            profiler = start_profiler(args, pid)
        cpu0 = proc_cpu_s(pid) or 0.0
        workers0 = children_cpu_s(pid)
        threads0 = proc_thread_cpu(pid)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        stats, landing, send_s, _ = asyncio.run(run_load(args, gw, requests, counts))
        cpu1 = proc_cpu_s(pid) or cpu0
        workers1 = children_cpu_s(pid)
        workers_cpu = sum(cpu - workers0.get(child, 0.0) for child, cpu in workers1.items())
        threads_cpu = thread_cpu_delta(threads0, proc_thread_cpu(pid))
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        profile_path: Path | None = None
        if profiler is not None:
            profile_path = profiler[1] if stop_profiler(*profiler) else None
        try:  # a final snapshot: every table's writes for the last round
            final_status = http_get_json(gw.api + "/api/v1/status")
        except (urllib.error.URLError, OSError, ValueError):
            final_status = landing.status
        rss_end_kib = proc_status(pid).get("VmRSS", 0)
        exit_code, shutdown_s, killed = stop_gateway(gw, args.shutdown_timeout)
        sampler.stop()
        problems, problem_lines = log_problems(gw.log_path)

        lat = sorted(stats.latencies)
        sent_spans = stats.spans_ok
        landed_s = landing.all_tables_s if args.plain_share else landing.landed_s
        writer = final_status.get("writer", {})
        pipeline = final_status.get("pipeline", {})
        result = {
            "transport": args.transport,
            "spans": args.spans,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "requests": len(counts),
            "payload_mib": round(payload_bytes / 2**20, 1),
            "startup_s": round(startup_s, 2),
            "send_s": round(send_s, 2),
            "spans_accepted": sent_spans,
            "spans_per_s_sent": round(sent_spans / send_s) if send_s > 0 else None,
            "landed_s": round(landed_s, 2) if landed_s is not None else None,
            "spans_per_s_landed": round(args.spans / landed_s) if landed_s else None,
            "all_tables_landed_s": round(landing.all_tables_s, 2) if landing.all_tables_s is not None else None,
            "latency_ms": {"p50": percentile(lat, 0.50), "p90": percentile(lat, 0.90),
                           "p99": percentile(lat, 0.99), "max": round(lat[-1] * 1000, 1) if lat else None},
            "attempts": len(lat),
            "retries": stats.retries,
            "errors": dict(stats.errors),
            "failed_spans": stats.failed_spans,
            "rejected_spans": stats.rejected_spans,
            "rss_idle_mib": round(rss_idle_kib / 1024, 1),
            "rss_peak_mib": round(sampler.peak_kib / 1024, 1),
            "rss_hwm_mib": round(sampler.hwm_kib / 1024, 1),
            "rss_end_mib": round(rss_end_kib / 1024, 1),
            "rss_timeline_mib": sampler.timeline_mib(),
            "gateway_cpu_s": round(cpu1 - cpu0, 1),
            "workers_cpu_s": round(workers_cpu, 1),
            "rss_total_peak_mib": round(sampler.total_peak_kib / 1024, 1),
            "spans_per_cpu_s": round(sent_spans / (cpu1 - cpu0 + workers_cpu)) if cpu1 - cpu0 + workers_cpu else None,
            "mapping": pipeline.get("mapping"),
            "client_cpu_s": round(client_cpu, 1),
            "gateway_thread_cpu_s": threads_cpu,
            "rows_written": writer.get("rows_written", {}),
            "writer": {k: writer.get(k) for k in ("flushes", "insert_errors", "dead_letter_rows", "last_error")},
            "pipeline": {k: pipeline.get(k) for k in ("requests", "items_accepted", "items_rejected", "overloaded",
                                                      "map_errors")},
            "sampler": {k: (pipeline.get("sampler") or {}).get(k) for k in ("traces_kept", "traces_dropped")}
            if pipeline.get("sampler") else None,
            "shutdown_exit_code": exit_code,
            "shutdown_s": round(shutdown_s, 2),
            "shutdown_killed": killed,
            "log_problems": problems,
            "profile": str(profile_path) if profile_path else None,
            "overrides": {k: v for k, v in gw.env.items()
                          if k not in ("OTELGW_OTLP_HTTP_ADDR", "OTELGW_OTLP_GRPC_ADDR", "OTELGW_API_ADDR",
                                       "OTELGW_DATA_DIR")
                          and not (k == "OTELGW_CLICKHOUSE_DSN" and v.startswith(f"chdb://{workdir}"))
                          and not (k == "OTELGW_LOG_FORMAT" and v == "text")},
        }
        out = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON line alone
        summary = None
        if profile_path and args.profile_format == "speedscope":
            try:
                summary = summarize_speedscope(profile_path)
                names = summary["tids"]
                for row in result["gateway_thread_cpu_s"]["busiest"]:
                    tid = int(row[0].rsplit("/", 1)[1])
                    if tid in names:
                        row[0] = f"{names[tid]}/{tid}"
            except (OSError, ValueError, KeyError) as exc:
                log(f"could not summarise {profile_path}: {exc}")
        print_block(result, problem_lines, out)
        if summary is not None:
            print_profile(summary, out)
            result["profile_summary"] = {"busy_s": summary["busy_s"], "threads": summary["threads"],
                                         "categories": [c[:3] for c in summary["categories"]]}
        if args.json:
            print(json.dumps(result), flush=True)
        ok = landed_s is not None and not stats.failed_spans and exit_code == 0
        return 0 if ok else 1
    finally:
        if gw is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait(10)
        if profiler is not None and profiler[0].poll() is None:
            profiler[0].kill()
        if sampler is not None:
            sampler.stop()
        if args.keep or not ok:
            log(f"kept {workdir} (gateway.log, chDB data)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def print_block(r: dict[str, Any], problem_lines: list[str], out: Any) -> None:
    lat = r["latency_ms"]
    landed = (f"{r['spans_per_s_landed']:,} spans/s (inferences >= {r['spans']:,} after {r['landed_s']} s; "
              f"all tables after {r['all_tables_landed_s']} s)" if r["landed_s"] is not None
              else "NOT LANDED within --timeout")
    lines = [
        "",
        "=== otelgw ingest benchmark ===",
        f"transport        {r['transport']}",
        f"spans            {r['spans']:,} in {r['requests']:,} requests ({r['payload_mib']} MiB protobuf)",
        f"batch            {r['batch']}",
        f"concurrency      {r['concurrency']}",
        f"send duration    {r['send_s']} s",
        f"sent             {r['spans_per_s_sent']:,} spans/s ({r['spans_accepted']:,} spans accepted)"
        if r["spans_per_s_sent"] else "sent             -",
        f"landed           {landed}",
        f"latency ms       p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}  "
        f"({r['attempts']:,} attempts)",
        f"retries          {r['retries']:,}" + (f"  errors {r['errors']}" if r["errors"] else ""),
        f"failed/rejected  {r['failed_spans']:,} spans not accepted, "
        f"{r['rejected_spans']:,} rejected (partial success)",
        f"gateway RSS      peak {r['rss_peak_mib']} MiB (VmHWM {r['rss_hwm_mib']}), idle {r['rss_idle_mib']}, "
        f"after landing {r['rss_end_mib']}",
        f"RSS over time    {r['rss_timeline_mib']} MiB (peak per 1/8 of the run, startup to exit)",
        f"CPU seconds      gateway {r['gateway_cpu_s']}, mapping workers {r['workers_cpu_s']}, benchmark client "
        f"{r['client_cpu_s']} ({r['spans_per_cpu_s']:,} spans per gateway+workers CPU-second)",
        f"RSS with workers peak {r['rss_total_peak_mib']} MiB (gateway + worker processes, summed per sample)",
        "gateway threads  CPU s by name: " + ", ".join(f"{n} {c}" for n, c in r["gateway_thread_cpu_s"]["by_name"]),
        "                 busiest: " + ", ".join(f"{n} {c}" for n, c in r["gateway_thread_cpu_s"]["busiest"]),
        "rows written     " + ", ".join(f"{k} {v:,}" for k, v in r["rows_written"].items()),
        f"writer           flushes {r['writer']['flushes']}, insert errors {r['writer']['insert_errors']}, "
        f"dead-letter rows {r['writer']['dead_letter_rows']}"
        + (f", last error {r['writer']['last_error']!r}" if r["writer"].get("last_error") else ""),
        f"pipeline         overloaded {r['pipeline']['overloaded']}, map errors {r['pipeline']['map_errors']}, "
        f"accepted {r['pipeline']['items_accepted']}",
        *([f"tail sampling    span rows of {r['sampler']['traces_kept']:,} traces kept, "
           f"{r['sampler']['traces_dropped']:,} dropped (inferences and messages are never sampled)"]
          if r.get("sampler") else []),
        f"startup          {r['startup_s']} s to /healthz",
        f"shutdown         SIGTERM -> exit code {r['shutdown_exit_code']} in {r['shutdown_s']} s"
        + (" (KILLED after timeout)" if r["shutdown_killed"] else ""),
        f"gateway log      {r['log_problems']} warning/error lines",
    ]
    if r["overrides"]:
        lines.append(f"settings         {r['overrides']}")
    if r["profile"]:
        lines.append(f"profile          {r['profile']}")
    lines += [f"  | {line}" for line in problem_lines]
    print("\n".join(lines), file=out, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
