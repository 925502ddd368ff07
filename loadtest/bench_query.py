"""Query API benchmark: seed N inferences with `otelgw seed` (messages and feedback included),
start `otelgw serve` on them, and time the API the way people use it.

    .venv/bin/python loadtest/bench_query.py --inferences 10000000 [--reuse DIR] [--json]

Figures: listing (24 h window, two filters, each sort key), first page with no filter over 30
days, detail (waterfall + model percentiles), a cursor page deep in the result vs the first,
CSV export rows/s. Each listing figure is the p50 / p95 of --repeat requests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: Any = None, timeout: float = 120) -> tuple[float, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data else "GET")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, json.loads(payload) if payload[:1] in (b"{", b"[") else payload


def wait_healthy(base: str) -> None:
    for _ in range(600):
        try:
            if call(f"{base}/healthz", timeout=2)[1]:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{base} did not become healthy")


def finish(gateway: subprocess.Popen, workdir: Path, args: argparse.Namespace) -> None:
    """Stop the gateway and drop the seeded directory unless it was reused or is kept."""
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(120)
    if not args.reuse and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif args.keep:
        print(f"kept {workdir}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(label: str, fn: Any, repeat: int, results: dict[str, Any]) -> Any:
    times, last = [], None
    fn()  # warm-up (first query compiles, caches marks)
    for _ in range(repeat):
        elapsed, last = fn()
        times.append(elapsed)
    results[label] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(pct(times, 0.95), 1),
                      "max_ms": round(max(times), 1)}
    print(f"{label:48s} p50 {results[label]['p50_ms']:7.1f} ms   p95 {results[label]['p95_ms']:7.1f} ms")
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inferences", type=int, default=1_000_000)
    parser.add_argument("--projects", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--reuse", help="a directory seeded by an earlier run (skips seeding)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="otelgw-bench-query-"))
    otelgw = [str(ROOT / ".venv" / "bin" / "otelgw")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update({"OTELGW_CLICKHOUSE_DSN": f"chdb://{workdir / 'chdb'}", "OTELGW_DATA_DIR": str(workdir / "data"),
                "OTELGW_LOG_FORMAT": "text", "OTELGW_LOG_LEVEL": "WARNING"})
    results: dict[str, Any] = {"inferences": args.inferences}
    if not args.reuse:
        started = time.monotonic()
        subprocess.run([*otelgw, "seed", "--inferences", str(args.inferences), "--projects", str(args.projects),
                        "--days", str(args.days)], env=env, check=True, timeout=3600)
        results["seed_s"] = round(time.monotonic() - started, 1)
        print(f"seeded {args.inferences:,} inferences in {results['seed_s']} s")
    api_port = free_port()
    env.update({"OTELGW_API_ADDR": f"127.0.0.1:{api_port}", "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                "OTELGW_OTLP_GRPC_ADDR": f"127.0.0.1:{free_port()}"})
    gateway = subprocess.Popen([*otelgw, "serve"], env=env)
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_healthy(base)
        now = time.time()
        day = {"from_date": str(now - 86400), "to_date": str(now + 60)}
        month = {"from_date": str(now - args.days * 86400), "to_date": str(now + 60)}
        listing = f"{base}/api/v1/metrics/inferences/list"
        for sort_by in ("timestamp", "tokens", "latency", "cost", "ttft"):
            body = {**day, "project_id": "project-0", "is_success": True, "sort_by": sort_by, "limit": 50}
            timed(f"list 24h, project + is_success, sort {sort_by}", lambda b=body: call(listing, b), args.repeat,
                  results)
        body = {**day, "model": "gpt-4o", "provider": "openai", "limit": 50}
        timed("list 24h, model + provider", lambda: call(listing, body), args.repeat, results)
        first = timed("list 30 days, no filter, first page", lambda: call(listing, {**month, "limit": 50}),
                      args.repeat, results)
        ids = [item["inference_id"] for item in first["items"]]
        counter = iter(range(10**9))
        timed("detail (waterfall + model p50/p95 24h)",
              lambda: call(f"{base}/api/v1/metrics/inferences/{ids[next(counter) % len(ids)]}"), args.repeat, results)
        # Walk 100 cursor pages of 100, then time the deep page against the first.
        cursor, body = None, {**month, "limit": 100, "sort_by": "timestamp"}
        for _ in range(100):
            _, page = call(listing, {**body, **({"cursor": cursor} if cursor else {})})
            cursor = page["next_cursor"]
        deep = {**body, "cursor": cursor}
        timed("cursor page 101 (rows 10,001-10,100), 30 days", lambda: call(listing, deep), args.repeat, results)
        timed("offset page 101, 30 days", lambda: call(listing, {**body, "offset": 10_000}), args.repeat, results)
        export_body = json.dumps({**day, "format": "csv"}).encode()
        request = urllib.request.Request(f"{base}/api/v1/metrics/inferences/export", data=export_body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        started = time.perf_counter()
        rows = size = 0
        with urllib.request.urlopen(request, timeout=3600) as response:
            while chunk := response.read(1 << 20):
                rows += chunk.count(b"\n")
                size += len(chunk)
        elapsed = time.perf_counter() - started
        rows -= 1  # header
        results["export_csv"] = {"rows": rows, "seconds": round(elapsed, 2), "rows_per_s": round(rows / elapsed),
                                 "mib": round(size / 2**20, 1)}
        print(f"{'CSV export, 24 h window':48s} {rows:,} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s")
    finally:
        finish(gateway, workdir, args)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
