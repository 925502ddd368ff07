#!/usr/bin/env python3
"""Side by side with a peer: the same load as `bench_ingest.py` (its 1.5 KB OTel GenAI chat spans,
512 a request, OTLP/HTTP protobuf) sent to Arize Phoenix, timed until every span is in Phoenix's
store (its SQLite `spans` table, polled every 0.5 s).

    .venv/bin/python loadtest/bench_peer_phoenix.py --phoenix /path/to/venv/bin/phoenix [--spans 10240]

Phoenix is not a dependency of otelgw: install it in a venv of its own (`python3 -m venv
/tmp/phoenix && /tmp/phoenix/bin/pip install arize-phoenix`) and pass its `phoenix` executable.
Without one the script says so and exits 0. Phoenix runs with a fresh working directory and its
defaults (SQLite).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ingest  # noqa: E402


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (Phoenix may start helpers)."""
    return (bench_ingest.proc_cpu_s(pid) or 0.0) + sum(bench_ingest.children_cpu_s(pid).values())


def send_all(url: str, requests: list[bytes], concurrency: int, latencies: list[float]) -> None:
    queue = list(reversed(requests))
    lock = threading.Lock()

    def sender() -> None:
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            while True:
                started = time.perf_counter()
                try:
                    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
                    with urllib.request.urlopen(request, timeout=300) as response:
                        response.read()
                    latencies.append(time.perf_counter() - started)
                    break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.2)  # retry, as an exporter would

    threads = [threading.Thread(target=sender) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phoenix", default=shutil.which("phoenix") or "", help="the phoenix executable")
    p.add_argument("--spans", type=int, default=10_240)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()
    if not args.phoenix or not Path(args.phoenix).exists():
        print("no Phoenix here (pass --phoenix PATH); nothing measured")
        return 0
    requests = bench_ingest.build_requests(args.spans, args.batch, 16, 1)
    spans = len(requests) * args.batch
    work = Path(tempfile.mkdtemp(prefix="phoenix-peer-"))
    port, grpc_port = bench_ingest.free_port(), bench_ingest.free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work), "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(grpc_port)}
    log = open(work / "phoenix.log", "wb")  # noqa: SIM115  (owned by the child)
    proc = subprocess.Popen([args.phoenix, "serve"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("Phoenix did not start:", (work / "phoenix.log").read_text()[-2000:])
                    return 1
                time.sleep(0.5)
        cpu0, started = tree_cpu_s(proc.pid), time.monotonic()
        latencies: list[float] = []
        send_all(f"http://127.0.0.1:{port}/v1/traces", requests, args.concurrency, latencies)
        sent_s = time.monotonic() - started
        db = sqlite3.connect(f"file:{work / 'phoenix.db'}?mode=ro", uri=True)
        peak_rss, landed = 0.0, 0
        while landed < spans and time.monotonic() - started < args.timeout:
            time.sleep(0.5)
            landed = db.execute("SELECT count(*) FROM spans").fetchone()[0]
            peak_rss = max(peak_rss, bench_ingest.proc_status(proc.pid).get("VmRSS", 0) / 1024)
        landed_s = time.monotonic() - started
        cpu = tree_cpu_s(proc.pid) - cpu0
        latencies.sort()
        print(f"=== Arize Phoenix ({args.phoenix}) ===")
        print(f"spans            {spans:,} in {len(requests)} requests, {args.concurrency} senders")
        print(f"sent             {spans / sent_s:,.0f} spans/s ({sent_s:.1f} s)")
        print(f"landed           {landed / landed_s:,.0f} spans/s ({landed:,} of {spans:,} after {landed_s:.1f} s)")
        print(f"request p50/p99  {latencies[len(latencies) // 2] * 1000:.0f} / "
              f"{latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000:.0f} ms")
        print(f"CPU              {cpu:.1f} s = {spans / max(cpu, 1e-9):,.0f} spans per CPU-second")
        print(f"peak RSS         {peak_rss:,.0f} MiB")
        return 0 if landed >= spans else 1
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
