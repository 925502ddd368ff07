"""Web UI benchmark in a real browser: seed N inferences (`otelgw seed`), start `otelgw serve`,
and time in Debian chromium (Playwright) from navigation to the inference list's first row.

    .venv/bin/python loadtest/bench_ui.py --inferences 10000000 [--reuse DIR] [--keep] [--json]

Figures (p50 / p95 over --repeat navigations):
  cold        a new browser context (empty cache) opening / (the default view, last 24 h), first row visible
  warm 30d    the same context opening the last 30 days (assets cached: immutable), first row visible
  1000 rows   /?range=90d&limit=1000, until the 1000th row is in the DOM
Also the JS + CSS shipped, gzipped, as the browser downloads it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import finish, free_port, pct, wait_healthy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def summary(label: str, times: list[float], results: dict[str, Any]) -> None:
    results[label] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(pct(times, 0.95), 1)}
    print(f"{label:40s} p50 {results[label]['p50_ms']:7.1f} ms   p95 {results[label]['p95_ms']:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inferences", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--reuse")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="otelgw-bench-ui-"))
    otelgw = str(ROOT / ".venv" / "bin" / "otelgw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update({"OTELGW_CLICKHOUSE_DSN": f"chdb://{workdir / 'chdb'}", "OTELGW_DATA_DIR": str(workdir / "data"),
                "OTELGW_LOG_FORMAT": "text", "OTELGW_LOG_LEVEL": "WARNING"})
    results: dict[str, Any] = {"inferences": args.inferences} if not args.reuse else {"reused": str(workdir)}
    if not args.reuse:
        subprocess.run([otelgw, "seed", "--inferences", str(args.inferences), "--days", str(args.days)], env=env,
                       check=True)
    port = free_port()
    env.update({"OTELGW_API_ADDR": f"127.0.0.1:{port}", "OTELGW_OTLP_HTTP_ADDR": "", "OTELGW_OTLP_GRPC_ADDR": ""})
    proc = subprocess.Popen([otelgw, "serve"], env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            cold, warm, thousand = [], [], []
            transferred = 0
            for i in range(args.repeat + 1):  # the first round warms the server side
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                sizes: list[int] = []
                page.on("response", lambda r, sizes=sizes: sizes.append(
                    int(r.headers.get("content-length", "0") or 0)) if "/assets/" in r.url else None)
                started = time.perf_counter()
                page.goto(f"{base}/")
                page.locator('[data-testid="inference-row"]').first.wait_for(timeout=60_000)
                first = (time.perf_counter() - started) * 1000
                started = time.perf_counter()
                page.goto(f"{base}/?range=30d")
                page.locator('[data-testid="inference-row"]').first.wait_for(timeout=60_000)
                second = (time.perf_counter() - started) * 1000
                started = time.perf_counter()
                page.goto(f"{base}/?range=90d&limit=1000")
                page.locator('[data-testid="inference-row"]').nth(999).wait_for(timeout=60_000)
                rows = (time.perf_counter() - started) * 1000
                if i:
                    cold.append(first)
                    warm.append(second)
                    thousand.append(rows)
                transferred = sum(sizes)
                context.close()
            browser.close()
        summary("cold: / to the first row (24 h)", cold, results)
        summary("warm: /?range=30d to the first row", warm, results)
        summary("1000 rows in the DOM (90 days)", thousand, results)
        results["assets_transferred_bytes"] = transferred
        print(f"assets transferred (gzip): {transferred / 1024:.1f} KiB")
    finally:
        finish(proc, workdir, args)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
