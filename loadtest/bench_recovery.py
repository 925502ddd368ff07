#!/usr/bin/env python3
"""Recovery benchmarks for the write-ahead log: replay after a crash, and the drain after a store
outage. Each runs real `otelgw serve` subprocesses fed the same OTel GenAI chat spans as
bench_ingest.py (over OTLP/HTTP, retrying 503 as an exporter would).

    .venv/bin/python loadtest/bench_recovery.py crash                  # 200k spans, SIGKILL, replay
    .venv/bin/python loadtest/bench_recovery.py outage                 # 1M spans into a 60 s outage
    .venv/bin/python loadtest/bench_recovery.py outage --spans 200000 --outage-s 30 --json

crash   The gateway runs on a fresh chDB directory with OTELGW_BATCH_ROWS=100000000 and
        OTELGW_FLUSH_INTERVAL_MS=600000, so the writer never flushes and every record stays
        pending in the WAL. N spans are sent until all are acknowledged (durable), the gateway is
        SIGKILLed, and a new one (default batch/flush settings) starts on the same chDB and data
        directories. Timed from that restart: /healthz, /ready 200, and
        pipeline.wal.pending_records == 0 (the replay). After a SIGTERM the store is queried
        from a separate process: count() and uniqExact(span_id) of inferences must be N.
outage  The store is tests/chserver.py (the ClickHouse HTTP interface served by chDB) and the
        gateway uses OTELGW_CLICKHOUSE_DSN=server.dsn("otelgw"). Once the gateway is ready the
        server is stopped (SIGTERM); N spans are sent and must all be acknowledged into the WAL
        (OTELGW_WAL_MAX_BYTES 4 GiB by default; free disk is checked first); the server stays
        down --outage-s seconds counted from the stop (longer if sending takes longer), then
        starts again on the same directory and port. Timed from that restart: the first rows
        written, pending_records == 0 and /ready 200 (the drain). The gateway's RSS is sampled
        every 200 ms during the outage and the drain. The store is queried through the server.

Tail sampling (on by default): a record whose spans wait for a sampling decision is not
checkpointed, so pending_records reaches 0 only after the sampler's decision wait (10 s by
default) past the last span, and /ready's `replayed` with it; span rows are those of kept traces
(the store check then wants every inference and message once and no span row twice).

What the timings include: a restart's time counts the process start (imports, migrations), and a
drain's the writer's retry backoff (0.2 s doubling to 30 s, with jitter) still running when the
store comes back: "first rows" shows how much of the drain was that wait. The WAL is read back
from the page cache (nothing drops it). CPU used on the machine by processes outside the
benchmark during the timed phases is reported ("foreign CPU"), since a 2-core box is easily
disturbed.

Gateway settings: OTELGW_* from the environment and --env KEY=VALUE override the benchmark's
defaults (the hold settings above apply to the crashed gateway only). Every phase has a timeout;
the gateways and the server are killed if they outlive it and the temp dir is removed (kept with
--keep, or after a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_ingest as bi  # noqa: E402  (the payloads, the sender and /proc helpers)

GIB = 1024**3
TICKS = os.sysconf("SC_CLK_TCK")
HOLD_SETTINGS = {"OTELGW_BATCH_ROWS": "100000000", "OTELGW_FLUSH_INTERVAL_MS": "600000"}
log = bi.log


# -- processes ---------------------------------------------------------------------------------


def gateway_settings(args: argparse.Namespace, workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    settings = {
        "OTELGW_CLICKHOUSE_DSN": f"chdb://{workdir / 'chdb'}",
        "OTELGW_DATA_DIR": str(workdir / "data"),
        "OTELGW_LOG_FORMAT": "text",
        "OTELGW_WAL_MAX_BYTES": str(args.wal_max_bytes),
        **extra,
    }
    settings.update({k: v for k, v in os.environ.items() if k.startswith("OTELGW_")})
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("OTELGW_"):
            raise SystemExit(f"--env {item!r}: expected OTELGW_NAME=VALUE")
        settings[key] = value
    return settings


def launch(args: argparse.Namespace, workdir: Path, settings: dict[str, str], log_name: str) -> bi.Gateway:
    """Start `otelgw serve` on fresh ports without waiting for it."""
    otelgw = Path(args.otelgw)
    if not otelgw.exists():
        raise SystemExit(f"{otelgw} not found: run `make install` in {bi.REPO}")
    http_port, grpc_port, api_port = bi.free_port(), bi.free_port(), bi.free_port()
    settings = {**settings, "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{http_port}",
                "OTELGW_OTLP_GRPC_ADDR": f"127.0.0.1:{grpc_port}", "OTELGW_API_ADDR": f"127.0.0.1:{api_port}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update(settings)
    log_path = workdir / log_name
    with open(log_path, "wb") as log_fh:  # the child keeps its own descriptor
        proc = subprocess.Popen([str(otelgw), "serve"], env=env, stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(workdir), start_new_session=True)
    return bi.Gateway(proc, workdir, log_path, http_port, grpc_port, api_port, settings)


def get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(HTTP status, JSON body); (0, None) if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def wait_for(gw: bi.Gateway, what: str, predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Seconds until predicate() is true; RuntimeError on timeout or if the gateway exits."""
    t0 = time.monotonic()
    while not predicate():
        if gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gw.proc.returncode} waiting for {what}:\n{bi.tail(gw.log_path)}")
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"gateway not {what} within {timeout}s:\n{bi.tail(gw.log_path)}")
        time.sleep(interval)
    return time.monotonic() - t0


def kill_quietly(gw: bi.Gateway | None) -> None:
    if gw is not None and gw.proc.poll() is None:
        gw.proc.kill()
        gw.proc.wait(10)


def wal(status: dict[str, Any] | None) -> dict[str, Any]:
    return (status or {}).get("pipeline", {}).get("wal", {})


def writer(status: dict[str, Any] | None) -> dict[str, Any]:
    return (status or {}).get("writer", {})


# -- measuring ---------------------------------------------------------------------------------


class RssWindow(threading.Thread):
    """The gateway's VmRSS every `interval` s, timestamped, so phases can be cut out later."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(name="rss", daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic, KiB)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            st = bi.proc_status(self.pid)
            if not st:
                return
            self.samples.append((time.monotonic(), st.get("VmRSS", 0)))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)

    def peak_mib(self, start: float = 0.0, end: float = float("inf")) -> float | None:
        values = [kib for t, kib in self.samples if start <= t <= end]
        return round(max(values) / 1024, 1) if values else None


def _tree_cpu() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, command name, CPU seconds) for every process, threads included."""
    out: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


class ForeignCpu:
    """CPU seconds used by processes that are not this benchmark or its descendants, between
    start() and stop(): other work on the machine that competes with the measurement. Processes
    that start and end between two snapshots are missed (their CPU shows in neither)."""

    def __init__(self) -> None:
        self._before: dict[int, tuple[int, str, float]] = {}
        self.seconds = 0.0
        self.top: list[tuple[str, float]] = []
        self.wall = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._before = _tree_cpu()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        after = _tree_cpu()
        self.wall = time.monotonic() - self._t0
        mine = {os.getpid()}
        changed = True
        while changed:  # descendants: children of anything already ours
            changed = False
            for pid, (ppid, _, _) in after.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    changed = True
        by_name: dict[str, float] = {}
        for pid, (_, name, cpu) in after.items():
            if pid in mine:
                continue
            delta = cpu - self._before[pid][2] if pid in self._before else cpu  # new: all of it is ours to count
            if delta > 0:
                by_name[name] = by_name.get(name, 0.0) + delta
        self.seconds = round(sum(by_name.values()), 1)
        self.top = [(n, round(c, 1)) for n, c in sorted(by_name.items(), key=lambda kv: -kv[1])[:4] if c >= 0.5]

    def describe(self) -> dict[str, Any]:
        return {"cpu_s": self.seconds, "wall_s": round(self.wall, 1), "top": self.top}


@dataclass
class Timeline:
    """Times (s from the restart) at which each milestone was first seen."""

    healthz_s: float | None = None
    ready_s: float | None = None
    first_rows_s: float | None = None
    all_rows_s: float | None = None  # every expected inference row written
    drained_s: float | None = None  # pending_records == 0
    replayed_s: float | None = None  # status pipeline.replayed true
    polls: int = 0
    last_status: dict[str, Any] = field(default_factory=dict)
    last_ready: Any = None


def watch_recovery(gw: bi.Gateway, t0: float, timeout: float, interval: float, expect_rows: int,
                   rows_before: int = 0, need_ready: bool = True) -> Timeline:
    """Poll /healthz, /ready and /api/v1/status until pending_records == 0 and /ready is 200."""
    tl = Timeline()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gw.proc.returncode} during recovery:\n{bi.tail(gw.log_path)}")
        now = lambda: round(time.monotonic() - t0, 2)  # noqa: E731
        if tl.healthz_s is None:
            code, _ = get(gw.api + "/healthz", timeout=2)
            if code == 200:
                tl.healthz_s = now()
            else:
                time.sleep(interval)
                continue
        code, status = get(gw.api + "/api/v1/status", timeout=5)
        if code == 200 and status:
            tl.polls += 1
            tl.last_status = status
            rows = writer(status).get("rows_written", {}).get("inferences", 0)
            if tl.first_rows_s is None and rows > rows_before:
                tl.first_rows_s = now()
            if tl.all_rows_s is None and rows >= rows_before + expect_rows:
                tl.all_rows_s = now()
            if tl.drained_s is None and wal(status).get("pending_records", 1) == 0:
                tl.drained_s = now()
            if tl.replayed_s is None and status.get("pipeline", {}).get("replayed"):
                tl.replayed_s = now()
        if tl.ready_s is None:
            code, body = get(gw.api + "/ready", timeout=5)
            tl.last_ready = body
            if code == 200:
                tl.ready_s = now()
        if tl.drained_s is not None and (tl.ready_s is not None or not need_ready):
            return tl
        time.sleep(interval)
    return tl


async def send_all(args: argparse.Namespace, gw: bi.Gateway, requests: list[bytes | None],
                   counts: list[int]) -> tuple[bi.SendStats, float]:
    """Send every request (retrying 503) from --concurrency senders; (stats, seconds)."""
    stats = bi.SendStats()
    indices = iter(range(len(requests)))

    async def worker(sender: bi.Sender) -> None:
        for i in indices:
            body = requests[i]
            assert body is not None
            await sender.send(body, counts[i])
            requests[i] = None

    async with bi.Sender(args, gw, stats) as sender:
        t0 = time.perf_counter()
        stats.first_send = t0
        workers = [asyncio.create_task(worker(sender)) for _ in range(args.concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), timeout=args.timeout)
        except TimeoutError:
            log(f"sending did not finish within --timeout {args.timeout}s")
            for w in workers:
                w.cancel()
    return stats, (stats.last_answer or time.perf_counter()) - t0


def latency_ms(stats: bi.SendStats) -> dict[str, float | None]:
    lat = sorted(stats.latencies)
    return {"p50": bi.percentile(lat, 0.5), "p99": bi.percentile(lat, 0.99),
            "max": round(lat[-1] * 1000, 1) if lat else None}


_QUERY = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
out = {}
for name, sql in json.loads(sys.argv[2]).items():
    out[name] = [list(r) for r in client.query(sql).result_rows]
print(json.dumps(out, default=str))
"""

STORE_QUERIES = {
    "inferences": "SELECT count(), uniqExact(span_id) FROM {db}inferences",
    "spans": "SELECT count(), uniqExact(span_id) FROM {db}spans",
    "messages": "SELECT count() FROM {db}messages",
}


def query_store(dsn: str, db_prefix: str = "") -> dict[str, list[int]]:
    """count() / uniqExact() per table, in a separate process (chDB: one data dir per process)."""
    queries = {k: v.format(db=db_prefix) for k, v in STORE_QUERIES.items()}
    out = subprocess.run([sys.executable, "-c", _QUERY, dsn, json.dumps(queries)], capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        raise RuntimeError(f"store query failed: {out.stderr[-2000:]}")
    return {k: [int(x) for x in v[0]] for k, v in json.loads(out.stdout).items()}


def store_ok(counts: dict[str, list[int]], spans: int, status: dict[str, Any]) -> bool:
    """Every inference and message once; every span row once too, unless the gateway reports a
    sampler that dropped some (span rows may then be fewer, never doubled)."""
    dropped = (status.get("pipeline", {}).get("sampler") or {}).get("traces_dropped", 0)
    kept_spans = counts["spans"][0] == counts["spans"][1] and (
        counts["spans"][0] == spans or (dropped > 0 and counts["spans"][0] < spans))
    return counts["inferences"] == [spans, spans] and counts["messages"] == [3 * spans] and kept_spans


# Warnings a store outage is expected to produce: the writer's retries, the HTTP driver's own and
# the API key refresh.
OUTAGE_NOISE = ("insert failed", "urllib3.connectionpool", "Unexpected Http Driver Exception",
                "could not refresh API keys")


def log_summary(paths: list[Path]) -> dict[str, Any]:
    """Warning/error lines of the gateway logs (those an outage explains counted apart), the
    replay lines and torn-tail truncations."""
    problems, noise, lines = 0, 0, []
    replay_lines, torn = [], 0
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for ln in text.splitlines():
            if "replaying write-ahead log" in ln:
                replay_lines.append(f"{path.name}: {ln[:300]}")
            if any(w in ln for w in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")):
                if any(n in ln for n in OUTAGE_NOISE):
                    noise += 1
                else:
                    problems += 1
                    lines.append(f"{path.name}: {ln[:300]}")
        torn += text.count("torn or corrupt tail")
    return {"problems": problems, "outage_warnings": noise, "problem_lines": lines[:12], "replay_lines": replay_lines,
            "torn_tails": torn}


def check_disk(path: Path, spans: int, payload_bytes: int) -> None:
    """The WAL holds the protobuf once; the store's parts are smaller than that, merges add some."""
    need = int(payload_bytes * 1.1) + payload_bytes + GIB
    free = shutil.disk_usage(path).free
    log(f"disk: {free / GIB:.1f} GiB free under {path}, about {need / GIB:.1f} GiB needed for {spans:,} spans")
    if free < need:
        raise SystemExit(f"not enough free disk under {path}: {free / GIB:.1f} GiB < {need / GIB:.1f} GiB")


def prepare(args: argparse.Namespace) -> tuple[list[bytes | None], list[int], int]:
    t = time.perf_counter()
    requests: list[bytes | None] = list(bi.build_requests(args.spans, args.batch, args.templates, args.seed))
    counts = [args.batch] * (args.spans // args.batch) + ([args.spans % args.batch] if args.spans % args.batch else [])
    bi.check_requests(requests, args.batch)  # type: ignore[arg-type]
    payload = sum(len(r) for r in requests if r)
    log(f"built {len(requests)} requests, {args.spans:,} spans, {payload / 2**20:.0f} MiB in "
        f"{time.perf_counter() - t:.1f}s")
    return requests, counts, payload


def overrides(settings: dict[str, str], workdir: Path) -> dict[str, str]:
    skip = ("OTELGW_OTLP_HTTP_ADDR", "OTELGW_OTLP_GRPC_ADDR", "OTELGW_API_ADDR", "OTELGW_DATA_DIR",
            "OTELGW_LOG_FORMAT")
    return {k: v for k, v in settings.items() if k not in skip and str(workdir) not in v}


# -- crash -------------------------------------------------------------------------------------


def run_crash(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    requests, counts, payload = prepare(args)
    check_disk(workdir, args.spans, payload)
    first: bi.Gateway | None = None
    second: bi.Gateway | None = None
    try:
        hold = gateway_settings(args, workdir, HOLD_SETTINGS)
        first = launch(args, workdir, hold, "gateway-1.log")
        wait_for(first, "healthy", lambda: get(first.api + "/healthz", 2)[0] == 200, args.startup_timeout)
        log(f"gateway 1 pid {first.proc.pid} healthy; sending {args.spans:,} spans (writer held: {HOLD_SETTINGS})")
        stats, send_s = asyncio.run(send_all(args, first, requests, counts))
        if stats.failed_spans or stats.spans_ok != args.spans:
            raise RuntimeError(f"not every span was acknowledged: {stats.spans_ok:,} ok, {stats.failed_spans:,} "
                               f"failed, errors {dict(stats.errors)}")
        _, before = get(first.api + "/api/v1/status")
        wal_before = wal(before)
        log(f"all {args.spans:,} spans acknowledged in {send_s:.1f}s; WAL pending {wal_before.get('pending_records')} "
            f"records, {wal_before.get('bytes', 0) / 2**20:.0f} MiB; rows written "
            f"{writer(before).get('rows_written', {}).get('inferences')}; SIGKILL")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)

        restart = gateway_settings(args, workdir, {})
        foreign = ForeignCpu()
        foreign.start()
        t0 = time.monotonic()
        second = launch(args, workdir, restart, "gateway-2.log")
        rss = RssWindow(second.proc.pid)
        rss.start()
        cpu0 = 0.0  # the new process starts at 0
        tl = watch_recovery(second, t0, args.timeout, args.poll_interval, args.spans)
        cpu1 = bi.proc_cpu_s(second.proc.pid) or 0.0
        foreign.stop()
        rss.stop()
        final = tl.last_status
        exit_code, shutdown_s, killed = bi.stop_gateway(second, args.shutdown_timeout)
        stored = query_store(f"chdb://{workdir / 'chdb'}")
        replay_s = tl.drained_s
        pending = wal_before.get("pending_records")
        return {
            "mode": "crash",
            "spans": args.spans,
            "requests": len(counts),
            "payload_mib": round(payload / 2**20, 1),
            "send_s": round(send_s, 2),
            "send_latency_ms": latency_ms(stats),
            "retries": stats.retries,
            "before_kill": {"pending_records": pending, "wal_mib": round(wal_before.get("bytes", 0) / 2**20, 1),
                            "durable_seq": wal_before.get("durable_seq"),
                            "checkpoint_seq": wal_before.get("checkpoint_seq"),
                            "consumed_seq": wal_before.get("consumed_seq"),
                            "rows_written": writer(before).get("rows_written", {}).get("inferences")},
            "healthz_s": tl.healthz_s,
            "ready_s": tl.ready_s,
            "first_rows_s": tl.first_rows_s,
            "all_rows_s": tl.all_rows_s,
            "replayed_s": tl.replayed_s,
            "replay_s": replay_s,
            "replay_spans_per_s": round(args.spans / replay_s) if replay_s else None,
            "replay_spans_per_s_after_healthz": (round(args.spans / (replay_s - tl.healthz_s))
                                                 if replay_s and tl.healthz_s is not None else None),
            "rows_written_after_restart": writer(final).get("rows_written", {}),
            "writer": {k: writer(final).get(k) for k in ("flushes", "insert_errors", "dead_letter_rows",
                                                         "last_error")},
            "map_errors": final.get("pipeline", {}).get("map_errors"),
            "rss_peak_mib": rss.peak_mib(),
            "gateway_cpu_s": round(cpu1 - cpu0, 1),
            "foreign_cpu": foreign.describe(),
            "store": stored,
            "store_ok": store_ok(stored, args.spans, final),
            "traces_dropped": (final.get("pipeline", {}).get("sampler") or {}).get("traces_dropped", 0),
            "shutdown_exit_code": exit_code,
            "shutdown_s": round(shutdown_s, 2),
            "shutdown_killed": killed,
            "log": log_summary([first.log_path, second.log_path]),
            "settings_crashed": overrides(hold, workdir),
            "settings_restart": overrides(restart, workdir),
        }
    finally:
        kill_quietly(first)
        kill_quietly(second)


# -- outage ------------------------------------------------------------------------------------


def run_outage(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from chserver import ChServer

    requests, counts, payload = prepare(args)
    check_disk(workdir, args.spans, payload)
    if payload * 1.05 > args.wal_max_bytes:
        raise SystemExit(f"--wal-max-bytes {args.wal_max_bytes} is too small for {payload} bytes of requests")
    server = ChServer(workdir / "clickhouse")
    gw: bi.Gateway | None = None
    rss: RssWindow | None = None
    try:
        server.start()
        settings = gateway_settings(args, workdir, {"OTELGW_CLICKHOUSE_DSN": server.dsn("otelgw")})
        gw = launch(args, workdir, settings, "gateway.log")
        wait_for(gw, "ready", lambda: get(gw.api + "/ready", 2)[0] == 200, args.startup_timeout)
        log(f"chserver :{server.port} and gateway pid {gw.proc.pid} ready; stopping the server")
        rss = RssWindow(gw.proc.pid)
        rss.start()
        t_stop = time.monotonic()
        server.stop()
        not_ready_s = wait_for(gw, "not ready", lambda: get(gw.api + "/ready", 2)[0] == 503, 60)
        t_send = time.monotonic()
        stats, send_s = asyncio.run(send_all(args, gw, requests, counts))
        if stats.failed_spans or stats.spans_ok != args.spans:
            raise RuntimeError(f"not every span was acknowledged: {stats.spans_ok:,} ok, {stats.failed_spans:,} "
                               f"failed, errors {dict(stats.errors)}")
        sent_at = time.monotonic() - t_stop
        log(f"all {args.spans:,} spans acknowledged in {send_s:.1f}s (server down since {sent_at:.1f}s); "
            f"keeping it down until {max(args.outage_s, sent_at):.0f}s")
        time.sleep(max(0.0, t_stop + args.outage_s - time.monotonic()))
        _, during = get(gw.api + "/api/v1/status")
        _, ready_during = get(gw.api + "/ready")
        wal_during = wal(during)
        rows_before = writer(during).get("rows_written", {}).get("inferences", 0)

        foreign = ForeignCpu()
        foreign.start()
        cpu0 = bi.proc_cpu_s(gw.proc.pid) or 0.0
        t0 = time.monotonic()
        outage_s = t0 - t_stop
        server.start()
        server_start_s = time.monotonic() - t0
        log(f"server back after {outage_s:.1f}s outage (started in {server_start_s:.1f}s); WAL backlog "
            f"{wal_during.get('bytes', 0) / 2**20:.0f} MiB, {wal_during.get('pending_records')} records")
        tl = watch_recovery(gw, t0, args.timeout, args.poll_interval, args.spans, rows_before=rows_before)
        t_end = time.monotonic()
        cpu1 = bi.proc_cpu_s(gw.proc.pid) or cpu0
        foreign.stop()
        rss.stop()
        final = tl.last_status
        exit_code, shutdown_s, killed = bi.stop_gateway(gw, args.shutdown_timeout)
        stored = query_store(server.dsn("otelgw"))
        done = max(x for x in (tl.drained_s, tl.ready_s) if x is not None) if tl.drained_s is not None else None
        write_s = done - tl.first_rows_s if done is not None and tl.first_rows_s is not None else None
        return {
            "mode": "outage",
            "spans": args.spans,
            "requests": len(counts),
            "payload_mib": round(payload / 2**20, 1),
            "not_ready_after_stop_s": round(not_ready_s, 2),
            "send_started_s": round(t_send - t_stop, 2),
            "send_s": round(send_s, 2),
            "send_spans_per_s": round(args.spans / send_s) if send_s > 0 else None,
            "send_latency_ms": latency_ms(stats),
            "retries": stats.retries,
            "errors": dict(stats.errors),
            "outage_s": round(outage_s, 1),
            "backlog": {"wal_mib": round(wal_during.get("bytes", 0) / 2**20, 1),
                        "pending_records": wal_during.get("pending_records"),
                        "rows_written_before": rows_before,
                        "insert_errors": writer(during).get("insert_errors"),
                        "writer_buffered_mib": round(writer(during).get("buffered_bytes", 0) / 2**20, 1),
                        "ready": ready_during},
            "server_start_s": round(server_start_s, 2),
            "first_rows_s": tl.first_rows_s,
            "all_rows_s": tl.all_rows_s,
            "drained_s": tl.drained_s,
            "ready_s": tl.ready_s,
            "recovered_s": done,
            "drain_spans_per_s": round(args.spans / tl.drained_s) if tl.drained_s else None,
            "drain_spans_per_s_writing": round(args.spans / write_s) if write_s else None,
            "rss_peak_outage_mib": rss.peak_mib(t_stop, t0),
            "rss_peak_drain_mib": rss.peak_mib(t0, t_end),
            "rss_before_outage_mib": rss.samples and round(rss.samples[0][1] / 1024, 1),
            "gateway_cpu_drain_s": round(cpu1 - cpu0, 1),
            "foreign_cpu": foreign.describe(),
            "rows_written": writer(final).get("rows_written", {}),
            "writer": {k: writer(final).get(k) for k in ("flushes", "insert_errors", "dead_letter_rows")},
            "map_errors": final.get("pipeline", {}).get("map_errors"),
            "store": stored,
            "store_ok": store_ok(stored, args.spans, final),
            "traces_dropped": (final.get("pipeline", {}).get("sampler") or {}).get("traces_dropped", 0),
            "shutdown_exit_code": exit_code,
            "shutdown_s": round(shutdown_s, 2),
            "shutdown_killed": killed,
            "log": log_summary([gw.log_path]),
            "settings": overrides(settings, workdir),
        }
    finally:
        if rss is not None:
            rss.stop()
        kill_quietly(gw)
        server.stop()


# -- output ------------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value} s"


def print_block(r: dict[str, Any], out: Any) -> None:
    st = r["store"]
    store = (f"inferences {st['inferences'][0]:,} ({st['inferences'][1]:,} unique), spans {st['spans'][0]:,} "
             f"({st['spans'][1]:,} unique), messages {st['messages'][0]:,} -> "
             + ("OK" if r["store_ok"] else f"MISMATCH (expected {r['spans']:,} / {3 * r['spans']:,})")
             + (f" (a sampler dropped {r['traces_dropped']:,} traces)" if r.get("traces_dropped") else ""))
    lat = r["send_latency_ms"]
    lines = ["", f"=== otelgw recovery benchmark: {r['mode']} ===",
             f"spans            {r['spans']:,} in {r['requests']:,} requests ({r['payload_mib']} MiB protobuf)"]
    if r["mode"] == "crash":
        b = r["before_kill"]
        lines += [
            f"send             {r['send_s']} s to acknowledge all, latency p50 {lat['p50']} p99 {lat['p99']} ms, "
            f"retries {r['retries']}",
            f"at SIGKILL       WAL {b['wal_mib']} MiB, {b['pending_records']} records pending "
            f"(durable {b['durable_seq']}, checkpoint {b['checkpoint_seq']}, consumed {b['consumed_seq']}), "
            f"inferences written {b['rows_written']}",
            f"restart          /healthz {fmt_s(r['healthz_s'])}, first rows {fmt_s(r['first_rows_s'])}, "
            f"all {r['spans']:,} inferences {fmt_s(r['all_rows_s'])}, /ready 200 {fmt_s(r['ready_s'])}",
            f"replay           pending_records 0 after {fmt_s(r['replay_s'])} -> "
            f"{r['replay_spans_per_s'] or 0:,} spans/s from the restart "
            f"({r['replay_spans_per_s_after_healthz'] or 0:,} from /healthz)",
            f"gateway          RSS peak {r['rss_peak_mib']} MiB, CPU {r['gateway_cpu_s']} s; writer "
            f"{r['writer']}, map errors {r['map_errors']}",
        ]
    else:
        b = r["backlog"]
        lines += [
            f"outage           store stopped; /ready 503 after {r['not_ready_after_stop_s']} s; down {r['outage_s']} s",
            f"send             {r['send_s']} s into the WAL ({r['send_spans_per_s']:,} spans/s), latency p50 "
            f"{lat['p50']} p99 {lat['p99']} ms, retries {r['retries']}" + (f" {r['errors']}" if r["errors"] else ""),
            f"backlog          WAL {b['wal_mib']} MiB, {b['pending_records']} records pending, insert errors "
            f"{b['insert_errors']}, writer buffer {b['writer_buffered_mib']} MiB, inferences written "
            f"{b['rows_written_before']}",
            f"restart          server up in {r['server_start_s']} s; first rows written {fmt_s(r['first_rows_s'])}, "
            f"all {r['spans']:,} inferences {fmt_s(r['all_rows_s'])}",
            f"drain            pending_records 0 after {fmt_s(r['drained_s'])}, /ready 200 after {fmt_s(r['ready_s'])}"
            f" -> {r['drain_spans_per_s'] or 0:,} spans/s from the restart "
            f"({r['drain_spans_per_s_writing'] or 0:,} from the first rows)",
            f"gateway RSS      peak {r['rss_peak_outage_mib']} MiB during the outage, {r['rss_peak_drain_mib']} MiB "
            f"during the drain (before: {r['rss_before_outage_mib']} MiB); drain CPU {r['gateway_cpu_drain_s']} s",
            f"writer           {r['writer']}, map errors {r['map_errors']}",
        ]
    fc = r["foreign_cpu"]
    lines += [
        f"store            {store}",
        f"foreign CPU      {fc['cpu_s']} s by other processes over {fc['wall_s']} s" + (f" {fc['top']}" if fc["top"]
                                                                                       else ""),
        f"shutdown         SIGTERM -> exit code {r['shutdown_exit_code']} in {r['shutdown_s']} s"
        + (" (KILLED after timeout)" if r["shutdown_killed"] else ""),
        f"gateway log      {r['log']['problems']} warning/error lines, {r['log']['torn_tails']} torn tails"
        + (f" ({r['log']['outage_warnings']} more from retrying the store)" if r["log"]["outage_warnings"] else ""),
    ]
    lines += [f"  | {line}" for line in r["log"]["replay_lines"] + r["log"]["problem_lines"]]
    settings = r.get("settings") or r.get("settings_restart")
    if r["mode"] == "crash":
        lines.append(f"settings         crashed {r['settings_crashed']}, restart {r['settings_restart']}")
    elif settings:
        lines.append(f"settings         {settings}")
    print("\n".join(lines), file=out, flush=True)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("crash", "outage"))
    p.add_argument("--spans", type=int, default=None, help="spans to send (default: crash 200000, outage 1000000)")
    p.add_argument("--outage-s", type=float, default=60, help="outage length from the server's stop (default 60)")
    p.add_argument("--wal-max-bytes", type=int, default=4 * GIB, help="OTELGW_WAL_MAX_BYTES (default 4 GiB)")
    p.add_argument("--batch", type=int, default=512, help="spans per request (default 512)")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent senders (default 4)")
    p.add_argument("--transport", choices=("http", "grpc"), default="http")
    p.add_argument("--templates", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the results as one JSON line on stdout")
    p.add_argument("--timeout", type=float, default=900, help="seconds for sending, and again for recovering")
    p.add_argument("--startup-timeout", type=float, default=120)
    p.add_argument("--shutdown-timeout", type=float, default=120)
    p.add_argument("--request-timeout", type=float, default=120)
    p.add_argument("--retry-wait", type=float, default=0.05)
    p.add_argument("--max-attempts", type=int, default=200)
    p.add_argument("--poll-interval", type=float, default=0.05, help="seconds between status polls while recovering")
    p.add_argument("--env", action="append", default=[], metavar="OTELGW_NAME=VALUE",
                   help="extra gateway setting (repeatable); OTELGW_* from the environment pass through too")
    p.add_argument("--otelgw", default=str(bi.DEFAULT_OTELGW), help="the otelgw executable")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    p.add_argument("--tmp", default="/tmp", help="where the temp dir goes (default /tmp)")
    args = p.parse_args(argv)
    if args.spans is None:
        args.spans = 200_000 if args.mode == "crash" else 1_000_000
    if args.spans <= 0 or args.batch <= 0 or args.concurrency <= 0:
        p.error("--spans, --batch and --concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=f"otelgw-recovery-{args.mode}-", dir=args.tmp))
    ok = False
    try:
        try:
            result = (run_crash if args.mode == "crash" else run_outage)(args, workdir)
        except RuntimeError as exc:
            log(str(exc))
            return 2
        print_block(result, sys.stderr if args.json else sys.stdout)
        if args.json:
            print(json.dumps(result), flush=True)
        ok = result["store_ok"] and result["shutdown_exit_code"] == 0 and (
            result.get("replay_s") is not None or result.get("recovered_s") is not None)
        return 0 if ok else 1
    finally:
        if args.keep or not ok:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
