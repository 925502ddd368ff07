#!/usr/bin/env python3
"""One front process with mapping workers vs several gateway processes sharing the OTLP port
(`reuse_port`, SO_REUSEPORT), on one machine, against one ClickHouse server (issue 11: "measure
both and say why you chose one").

The store is the ClickHouse-HTTP test double (`tests/chserver.py`: chDB behind the HTTP
interface), because SO_REUSEPORT gateways need one store and an embedded chDB directory has one
owner. Variants (each on a fresh double and fresh gateways, same requests):

    front    one gateway, `workers` mapping processes (default 2): the shipped design
    reuse    `--gateways` gateway processes (default 2) on the same OTLP/HTTP port, each mapping
             on a thread (`workers=1`) or with `--reuse-workers` processes

Load: the load generator's GenAI chat spans (bench_ingest's), 512 a request, `--concurrency`
senders, each request on a new connection (the kernel spreads connections, not requests, over
the processes; keep-alive connections would pin a sender to one of them). Landed: from the first
request until the gateways' `rows_written.inferences` sum to the spans sent. CPU: the gateways,
their workers and the double, from /proc. Tail sampling and secret masking as configured by
default (on).

    .venv/bin/python loadtest/bench_reuse_port.py [--spans 100000] [--gateways 2] [--only reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "loadtest"))

import aiohttp  # noqa: E402
import bench_ingest  # noqa: E402
from chserver import ChServer  # noqa: E402

OTELGW = ROOT / ".venv" / "bin" / "otelgw"


def tree_cpu_s(pid: int) -> float:
    """The process's CPU and its children's (mapping workers), from /proc."""
    own = bench_ingest.proc_cpu_s(pid) or 0.0
    return own + sum(bench_ingest.children_cpu_s(pid).values())


def tree_rss_mib(pid: int) -> float:
    pids = [pid, *bench_ingest.child_pids(pid)]
    return sum(bench_ingest.proc_status(p).get("VmRSS", 0) for p in pids) / 1024


def start_gateways(work: Path, server: ChServer, count: int, workers: int, reuse: bool,
                   extra: dict[str, str]) -> tuple[list[tuple[subprocess.Popen[bytes], int]], int]:
    """([(process, API port)], the OTLP/HTTP port they share), every one ready."""
    http = bench_ingest.free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    started = []
    for n in range(count):
        api = bench_ingest.free_port()
        env = {**base, "OTELGW_CLICKHOUSE_DSN": server.dsn("otelgw_bench"), "OTELGW_DATA_DIR": str(work / f"gw{n}"),
               "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{http}", "OTELGW_OTLP_GRPC_ADDR": "",
               "OTELGW_API_ADDR": f"127.0.0.1:{api}", "OTELGW_LOG_FORMAT": "text",
               "OTELGW_WORKERS": str(workers), "OTELGW_REUSE_PORT": "true" if reuse else "false", **extra}
        (work / f"gw{n}").mkdir(parents=True)
        with open(work / f"gw{n}.log", "wb") as log:
            proc = subprocess.Popen([str(OTELGW), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=str(work), start_new_session=True)
        started.append((proc, api))
        if n == 0:  # the first one migrates the store; the others find it current
            wait_ready(proc, api, work / "gw0.log")
    for n, (proc, api) in enumerate(started):
        wait_ready(proc, api, work / f"gw{n}.log")
    return started, http


def wait_ready(proc: subprocess.Popen[bytes], api: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited with {proc.returncode}:\n{bench_ingest.tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api}/ready", timeout=2):
                return  # 200: every listener bound, the log replayed
        except OSError:  # refused, or 503 (HTTPError) while starting
            pass
        time.sleep(0.2)
    raise SystemExit(f"gateway not ready:\n{bench_ingest.tail(log)}")


def written(apis: list[int]) -> int:
    total = 0
    for api in apis:
        status = bench_ingest.http_get_json(f"http://127.0.0.1:{api}/api/v1/status", timeout=5)
        total += status["writer"]["rows_written"].get("inferences", 0)
    return total


async def load(http: int, requests: list[bytes], concurrency: int, latencies: list[float]) -> float:
    """Sends every request (retrying 503s), each on a new connection; returns the first send's time."""
    url = f"http://127.0.0.1:{http}/v1/traces"
    pending = iter(requests)
    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def sender() -> None:
            for body in pending:
                wait = 0.05
                while True:
                    started = time.perf_counter()
                    try:
                        async with session.post(url, data=body,
                                                headers={"Content-Type": "application/x-protobuf"}) as r:
                            await r.read()
                            status = r.status
                    except (TimeoutError, aiohttp.ClientError):
                        status = 0
                    latencies.append(time.perf_counter() - started)
                    if status == 200:
                        break
                    if status not in (0, 429, 503):
                        raise SystemExit(f"HTTP {status}")
                    await asyncio.sleep(wait * (0.5 + random.random()))
                    wait = min(wait * 2, 2.0)

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return t0


def run(variant: str, args: argparse.Namespace, requests: list[bytes], spans: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"otelgw-reuse-{variant}-"))
    server = ChServer(work / "clickhouse").start()
    assert server.proc is not None
    extra = dict(item.split("=", 1) for item in args.env)
    count, workers = (1, args.front_workers) if variant == "front" else (args.gateways, args.reuse_workers)
    procs, http = start_gateways(work, server, count, workers, variant == "reuse", extra)
    apis = [api for _, api in procs]
    try:
        cpu0 = {p.pid: tree_cpu_s(p.pid) for p, _ in procs}
        server_cpu0 = bench_ingest.proc_cpu_s(server.proc.pid) or 0.0
        latencies: list[float] = []
        peak_rss = 0.0

        async def main() -> float:
            nonlocal peak_rss
            task = asyncio.create_task(load(http, list(requests), args.concurrency, latencies))
            while not task.done():
                peak_rss = max(peak_rss, sum(tree_rss_mib(p.pid) for p, _ in procs))
                await asyncio.sleep(0.2)
            return await task

        t0 = asyncio.run(main())
        sent_s = time.perf_counter() - t0
        while written(apis) < spans:
            if time.perf_counter() - t0 > args.timeout:
                raise SystemExit(f"{variant}: not landed within {args.timeout}s ({written(apis)} of {spans})")
            peak_rss = max(peak_rss, sum(tree_rss_mib(p.pid) for p, _ in procs))
            time.sleep(0.05)
        landed_s = time.perf_counter() - t0
        gateway_cpu = sum(tree_cpu_s(p.pid) - cpu0[p.pid] for p, _ in procs)
        server_cpu = (bench_ingest.proc_cpu_s(server.proc.pid) or 0.0) - server_cpu0
        shares = [bench_ingest.http_get_json(f"http://127.0.0.1:{api}/api/v1/status")["writer"]["rows_written"]
                  .get("inferences", 0) for api in apis]
        latencies.sort()
        return {"variant": variant, "processes": count, "workers": workers, "landed_spans_s": spans / landed_s,
                "send_s": sent_s, "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                "gateway_cpu_s": gateway_cpu, "server_cpu_s": server_cpu, "peak_rss_mib": peak_rss,
                "shares": shares}
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=8, help="senders, each request on a new connection")
    p.add_argument("--gateways", type=int, default=2, help="processes sharing the port in the reuse variant")
    p.add_argument("--front-workers", type=int, default=2, help="mapping workers of the one front process")
    p.add_argument("--reuse-workers", type=int, default=1, help="workers per process in the reuse variant")
    p.add_argument("--only", choices=("front", "reuse"), help="run one variant")
    p.add_argument("--env", action="append", default=[], metavar="OTELGW_NAME=VALUE", help="for every gateway")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    requests = bench_ingest.build_requests(args.spans, 512, 64, 1)
    spans = args.spans  # the last request holds the remainder
    size = sum(len(r) for r in requests) / spans
    print(f"=== {spans:,} GenAI spans ({size:,.0f} B), 512 a request, {args.concurrency} senders, "
          f"a new connection per request, ClickHouse-HTTP test double ===")
    print(f"{'variant':<34} {'landed/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'gw CPU s':>9} {'CH CPU s':>9} "
          f"{'µs/span gw':>10} {'RSS MiB':>8}  inferences per process")
    for variant in ([args.only] if args.only else ["front", "reuse"]):
        r = run(variant, args, requests, spans)
        label = (f"front: 1 process, {r['workers']} workers" if variant == "front"
                 else f"reuse_port: {r['processes']} processes x {r['workers']} workers")
        print(f"{label:<34} {r['landed_spans_s']:>9,.0f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} "
              f"{r['gateway_cpu_s']:>9.1f} {r['server_cpu_s']:>9.1f} {1e6 * r['gateway_cpu_s'] / spans:>10.1f} "
              f"{r['peak_rss_mib']:>8,.0f}  {r['shares']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
