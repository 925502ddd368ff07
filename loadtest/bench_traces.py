"""Trace store benchmark (Tempo API): seed N traces of S spans with `otelgw seed --traces`,
start `otelgw serve`, and time trace by id (v2 JSON), TraceQL search with a GenAI attribute
filter over 24 h, and tag names/values.

    .venv/bin/python loadtest/bench_traces.py --traces 200000 --spans-per-trace 50 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[float, Any]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, json.loads(body)


def figure(label: str, times: list[float], results: dict[str, Any]) -> None:
    ordered = sorted(times)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    results[label] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1)}
    print(f"{label:46s} p50 {statistics.median(times):7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=200_000)
    parser.add_argument("--spans-per-trace", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="otelgw-bench-traces-"))
    otelgw = str(ROOT / ".venv" / "bin" / "otelgw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update({"OTELGW_CLICKHOUSE_DSN": f"chdb://{workdir / 'chdb'}", "OTELGW_DATA_DIR": str(workdir / "data"),
                "OTELGW_LOG_FORMAT": "text", "OTELGW_LOG_LEVEL": "WARNING"})
    results: dict[str, Any] = {"traces": args.traces, "spans": args.traces * args.spans_per_trace}
    started = time.monotonic()
    subprocess.run([otelgw, "seed", "--inferences", "1000", "--traces", str(args.traces), "--spans-per-trace",
                    str(args.spans_per_trace), "--days", "1"], env=env, check=True, timeout=3600)
    results["seed_s"] = round(time.monotonic() - started, 1)
    print(f"seeded {results['spans']:,} spans in {results['seed_s']} s")
    api = free_port()
    env.update({"OTELGW_API_ADDR": f"127.0.0.1:{api}", "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                "OTELGW_OTLP_GRPC_ADDR": f"127.0.0.1:{free_port()}"})
    gateway = subprocess.Popen([otelgw, "serve"], env=env)
    base = f"http://127.0.0.1:{api}"
    try:
        for _ in range(600):
            try:
                get(f"{base}/healthz")
                break
            except OSError:
                time.sleep(0.1)
        now = int(time.time())
        window = {"start": str(now - 86_400), "end": str(now + 60)}
        # Trace ids as the seed makes them: ask ClickHouse through the search API for some.
        _, found = get(f"{base}/api/search?" + urllib.parse.urlencode({"q": "{}", "limit": "200", **window}))
        ids = [t["traceID"] for t in found["traces"]]
        rng = random.Random(1)
        get(f"{base}/api/v2/traces/{ids[0]}")
        times = [get(f"{base}/api/v2/traces/{rng.choice(ids)}")[0] for _ in range(args.repeat)]
        figure(f"trace by id, v2 JSON ({args.spans_per_trace} spans)", times, results)
        queries = ['{ span.gen_ai.request.model = "gpt-4o" && span.gen_ai.usage.output_tokens > 1000 }',
                   '{ span.gen_ai.request.model = "claude-sonnet-4" }',
                   '{ status = error && span.gen_ai.operation.name = "chat" }']
        for query in queries:
            url = f"{base}/api/search?" + urllib.parse.urlencode({"q": query, "limit": "20", **window})
            get(url)
            times = [get(url)[0] for _ in range(max(args.repeat // 5, 5))]
            figure(f"search 24h: {query[:34]}", times, results)
        for label, path in (("tags v2", "/api/v2/search/tags"), ("tag values (model)",
                                                                  "/api/v2/search/tag/span.gen_ai.request.model/values")):
            url = f"{base}{path}?" + urllib.parse.urlencode(window)
            get(url)
            times = [get(url)[0] for _ in range(max(args.repeat // 5, 5))]
            figure(label, times, results)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
