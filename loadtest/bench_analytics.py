"""Analytics and /metrics benchmark: seed N inferences with `otelgw seed` (the rollup views fill
as the rows go in), start `otelgw serve` on them, and time POST /observability/analytics and
GET /metrics.

    .venv/bin/python loadtest/bench_analytics.py --inferences 10000000 --days 30 [--reuse DIR] [--json]
    .venv/bin/python loadtest/bench_analytics.py --inferences 10000000 --days 365

Figures (p50 / p95 of --repeat requests, after one warm-up):
  30-day hourly   request_count, latency, ttft, output_token, cost grouped by model, topk 5
  1-year daily    the same metrics, grouped by model, topk 5
  7-day hourly    the same, grouped by model and project, no topk, deltas and gaps on
  /metrics        after spans of --models distinct models (x 3 projects) went through OTLP/HTTP
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import call, finish, free_port, timed, wait_healthy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["request_count", "latency", "ttft", "output_token", "cost"]


def _kv(key: str, value: str | int) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
    return kv


def model_spans(models: int, projects: int = 3, per_model: int = 4) -> list[bytes]:
    """OTLP requests with `per_model` GenAI spans for each of `models` models in each project."""
    now = time.time_ns()
    requests = []
    for project in range(projects):
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        resource.resource.attributes.extend([_kv("service.name", "bench"), _kv("project.id", f"project-{project}")])
        scope = resource.scope_spans.add()
        for m in range(models):
            for i in range(per_model):
                span = scope.spans.add()
                span.trace_id = os.urandom(16)
                span.span_id = os.urandom(8)
                span.name = f"chat model-{m}"
                span.start_time_unix_nano = now - 2_000_000_000
                span.end_time_unix_nano = now - 2_000_000_000 + (100 + 300 * i) * 1_000_000
                span.attributes.extend([_kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", "openai"),
                                        _kv("gen_ai.request.model", f"model-{m}"),
                                        _kv("gen_ai.usage.input_tokens", 100), _kv("gen_ai.usage.output_tokens", 20)])
                if i % 2:
                    span.status.code = 2
        requests.append(request.SerializeToString())
    return requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inferences", type=int, default=1_000_000)
    parser.add_argument("--projects", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--models", type=int, default=200, help="distinct models for the /metrics figure")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--reuse", help="a directory seeded by an earlier run (skips seeding)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded directory")
    parser.add_argument("--optimize", action="store_true",
                        help="OPTIMIZE ... FINAL the rollups before serving: the state background merges reach")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="otelgw-bench-analytics-"))
    otelgw = str(ROOT / ".venv" / "bin" / "otelgw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update({"OTELGW_CLICKHOUSE_DSN": f"chdb://{workdir / 'chdb'}", "OTELGW_DATA_DIR": str(workdir / "data"),
                "OTELGW_LOG_FORMAT": "text", "OTELGW_LOG_LEVEL": "WARNING",
                "OTELGW_METRICS_MAX_MODELS": str(max(args.models, 200))})
    results: dict[str, Any] = {"inferences": args.inferences, "days": args.days} if not args.reuse else \
        {"reused": str(workdir)}
    if not args.reuse:
        started = time.monotonic()
        subprocess.run([otelgw, "seed", "--inferences", str(args.inferences), "--projects", str(args.projects),
                        "--days", str(args.days), "--no-messages"], env=env, check=True)
        results["seed_s"] = round(time.monotonic() - started, 1)
        print(f"seeded {args.inferences} inferences over {args.days} days in {results['seed_s']} s")
    if args.optimize:
        started = time.monotonic()
        merge = "; ".join(f"c.command('OPTIMIZE TABLE {t} FINAL')"
                          for t in ("inference_stats_1m", "inference_stats_1h", "inference_stats_1d"))
        subprocess.run([sys.executable, "-c", "from otelgw.store.client import DSN, ClientFactory; "
                        f"c = ClientFactory(DSN({env['OTELGW_CLICKHOUSE_DSN']!r})).get(); {merge}"], check=True)
        results["optimize_s"] = round(time.monotonic() - started, 1)
        print(f"rollups merged in {results['optimize_s']} s")
    api_port, http_port = free_port(), free_port()
    env.update({"OTELGW_API_ADDR": f"127.0.0.1:{api_port}", "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{http_port}",
                "OTELGW_OTLP_GRPC_ADDR": ""})
    proc = subprocess.Popen([otelgw, "serve"], env=env, start_new_session=True)
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_healthy(api)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

        def analytics(days: int, unit: str, groups: list[str], topk: int | None) -> Any:
            body = {"metrics": METRICS, "from_date": (now - timedelta(days=days)).isoformat(),
                    "to_date": now.isoformat(), "frequency_unit": unit, "group_by": groups, "topk": topk}
            return lambda: call(f"{api}/observability/analytics", body)

        answer = timed("30-day hourly, 5 metrics, by model, top 5", analytics(30, "hour", ["model"], 5),
                       args.repeat, results)
        results["30d_hourly_buckets"] = len(answer["items"])
        timed("1-year daily, 5 metrics, by model, top 5", analytics(365, "day", ["model"], 5), args.repeat, results)
        timed("7-day hourly, 5 metrics, by model and project", analytics(7, "hour", ["model", "project"], None),
              args.repeat, results)

        for body in model_spans(args.models):
            request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/traces", data=body,
                                             headers={"Content-Type": "application/x-protobuf"})
            urllib.request.urlopen(request, timeout=60).read()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, status = call(f"{api}/api/v1/status")
            if status["inference_series"]["models"] >= min(args.models, 200):
                break
            time.sleep(0.2)

        def scrape() -> tuple[float, bytes]:
            started = time.perf_counter()
            with urllib.request.urlopen(f"{api}/metrics", timeout=60) as response:
                body = response.read()
            return (time.perf_counter() - started) * 1000, body

        text = timed(f"/metrics with {args.models} models x 3 projects", scrape, args.repeat, results)
        lines = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
        results["metrics_samples"] = len(lines)
        results["metrics_bytes"] = len(text)
        print(f"/metrics: {len(lines)} samples, {len(text)} bytes")
    finally:
        finish(proc, workdir, args)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
