"""`otelgw serve` as a real subprocess on free ports, for tests that kill, restart or measure
the process itself; and queries against a chDB directory from a separate process (chDB allows
one data directory per process, and the test process already has its own)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from otlp_client import get_json

OTELGW = [sys.executable, "-m", "otelgw"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayProcess:
    def __init__(self, workdir: Path, **settings: str) -> None:
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
        self.env.update({
            "OTELGW_CLICKHOUSE_DSN": f"chdb://{workdir / 'chdb'}",
            "OTELGW_DATA_DIR": str(workdir / "data"),
            "OTELGW_OTLP_GRPC_ADDR": f"127.0.0.1:{free_port()}",
            "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "OTELGW_API_ADDR": f"127.0.0.1:{free_port()}",
            "OTELGW_LOG_FORMAT": "json",
            "OTELGW_TAIL_SAMPLING": "false",
            # As in conftest: test gateways run the native fast path unless told otherwise.
            "OTELGW_FAST_PATH": os.environ.get("OTELGW_TEST_FAST_PATH", "auto"),
            # Likewise worker inserts, wherever a test points a gateway at a ClickHouse server.
            "OTELGW_WORKER_INSERTS": os.environ.get("OTELGW_TEST_WORKER_INSERTS", "auto"),
            **{f"OTELGW_{k.upper()}": str(v) for k, v in settings.items()},
        })
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"

    @property
    def http_url(self) -> str:
        return f"http://{self.env['OTELGW_OTLP_HTTP_ADDR']}"

    @property
    def grpc_target(self) -> str:
        return self.env["OTELGW_OTLP_GRPC_ADDR"]

    @property
    def api_url(self) -> str:
        return f"http://{self.env['OTELGW_API_ADDR']}"

    def start(self, wait_ready: bool = True, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115  (owned by the child)
        self.proc = subprocess.Popen(OTELGW + ["serve"], cwd=self.workdir, env=self.env, stdout=log, stderr=log)
        log.close()
        if wait_ready:
            self.wait(lambda: self.ready(), timeout, "ready")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            return get_json(f"{self.api_url}/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def healthy(self) -> bool:
        try:
            return get_json(f"{self.api_url}/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def status(self) -> dict[str, Any]:
        return get_json(f"{self.api_url}/api/v1/status", timeout=5)[1]

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway not {what} within {timeout}s: {self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 120) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __del__(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


_QUERY = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
print(json.dumps(list(client.query(sys.argv[2]).named_results()), default=str))
"""


def chdb_query(path: Path, sql: str) -> list[dict[str, Any]]:
    """Run one query on a chDB directory the test process does not own (the gateway is stopped)."""
    out = subprocess.run([sys.executable, "-c", _QUERY, f"chdb://{path}", sql], capture_output=True, text=True,
                         timeout=120)
    if out.returncode:
        raise AssertionError(out.stderr[-2000:])
    return json.loads(out.stdout)
