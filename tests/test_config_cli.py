"""Configuration (env, TOML, validation) and the CLI: serve, migrate, version, SIGTERM, restart."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from otlp_client import get_json, post_otlp

from otelgw.config import ConfigError, load_config
from otelgw.pipeline.mapper import derived_inference_id

OTELGW = [sys.executable, "-m", "otelgw"]


def test_defaults() -> None:
    cfg = load_config(env={})
    assert cfg.clickhouse_dsn == "chdb://./data/otelgw"
    assert (cfg.otlp_grpc_addr, cfg.otlp_http_addr, cfg.api_addr) == ("0.0.0.0:4317", "0.0.0.0:4318", "127.0.0.1:3200")
    assert cfg.max_request_bytes == 20 * 1024 * 1024


def test_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "otelgw.toml"
    path.write_text('batch_rows = 10\nflush_interval_ms = 50\nlog_level = "DEBUG"\n')
    cfg = load_config(str(path), env={"OTELGW_BATCH_ROWS": "20", "HOME": "/root"})
    assert (cfg.batch_rows, cfg.flush_interval_ms, cfg.log_level) == (20, 50, "DEBUG")


def test_every_error_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('batch_rowz = 1\nmax_inflight_requests = "many"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={"OTELGW_FLUSH_INTERVAL_MS": "soon", "OTELGW_NOPE": "1",
                                    "OTELGW_API_ADDR": "localhost", "OTELGW_CLICKHOUSE_DSN": "mysql://x"})
    text = str(caught.value)
    for name in ("batch_rowz", "max_inflight_requests", "OTELGW_FLUSH_INTERVAL_MS", "OTELGW_NOPE", "api_addr",
                 "clickhouse_dsn"):
        assert name in text, name


def test_workers_and_cluster_settings_are_checked() -> None:
    for value, expected in (("-1", "workers: must be 0 (one per CPU) to 256"), ("257", "workers: must be 0"),
                            ("two", "OTELGW_WORKERS")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_config(None, env={"OTELGW_WORKERS": value})
    with pytest.raises(ConfigError, match="clickhouse_cluster: needs a ClickHouse server DSN"):
        load_config(None, env={"OTELGW_CLICKHOUSE_CLUSTER": "c1"})
    assert load_config(None, env={"OTELGW_WORKERS": "3"}).workers == 3
    # The open segment is never deleted: a limit under two segments refused every request for good.
    with pytest.raises(ConfigError, match="wal_max_bytes: at least twice wal_segment_bytes"):
        load_config(None, env={"OTELGW_WAL_MAX_BYTES": str(2**20)})
    for value in ("0", "0.5", "3601"):
        with pytest.raises(ConfigError, match="clickhouse_insert_timeout_s: must be 1 to 3600 seconds"):
            load_config(None, env={"OTELGW_CLICKHOUSE_INSERT_TIMEOUT_S": value})
    assert load_config(None, env={"OTELGW_CLICKHOUSE_INSERT_TIMEOUT_S": "15"}).clickhouse_insert_timeout_s == 15
    for value in ("-1", "10001"):
        with pytest.raises(ConfigError, match="fold_wait_ms: must be between 0 and 10000"):
            load_config(None, env={"OTELGW_FOLD_WAIT_MS": value})
    assert load_config(None, env={"OTELGW_FOLD_WAIT_MS": "0"}).fold_wait_ms == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELGW_")}
    env.update({
        "OTELGW_CLICKHOUSE_DSN": "chdb://./store",  # relative: resolved against the working directory
        "OTELGW_DATA_DIR": str(tmp_path / "data"),
        "OTELGW_OTLP_GRPC_ADDR": f"127.0.0.1:{_free_port()}",
        "OTELGW_OTLP_HTTP_ADDR": f"127.0.0.1:{_free_port()}",
        "OTELGW_API_ADDR": f"127.0.0.1:{_free_port()}",
        "OTELGW_TAIL_SAMPLING": "false",
        **extra,
    })
    return env


def test_cli_version_and_bad_config(tmp_path: Path) -> None:
    out = subprocess.run([*OTELGW, "version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("otelgw ")
    out = subprocess.run([*OTELGW, "serve"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env=_env(tmp_path, OTELGW_BATCH_ROWS="-5", OTELGW_TYPO="1"))
    assert out.returncode == 2
    assert "batch_rows" in out.stderr and "OTELGW_TYPO: unknown setting" in out.stderr


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    env = _env(tmp_path)

    def migrate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*OTELGW, "migrate", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=env)

    # An init container's check before anything migrated: pending, nothing applied.
    check = migrate("--check")
    assert check.returncode == 3 and "pending: 001_core_tables" in check.stderr, check.stderr
    started = time.monotonic()
    waited = migrate("--wait", "1")
    assert waited.returncode == 3 and "waiting for: 001_core_tables" in waited.stderr
    assert time.monotonic() - started >= 1
    first = subprocess.run([*OTELGW, "migrate"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert first.returncode == 0 and "001_core_tables" in first.stdout, first.stderr
    second = subprocess.run([*OTELGW, "migrate"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert second.returncode == 0 and "schema is current" in second.stdout
    assert (tmp_path / "store").is_dir()
    assert migrate("--wait", "30").returncode == 0
    alone = migrate("--require-api-key")  # means nothing without --check/--wait: refused, nothing applied
    assert alone.returncode == 2 and "--require-api-key goes with --check or --wait" in alone.stderr
    keyless = migrate("--check", "--require-api-key")
    assert keyless.returncode == 3 and "an active API key" in keyless.stderr
    created = subprocess.run([*OTELGW, "keys", "create", "--role", "admin"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    assert migrate("--check", "--require-api-key").returncode == 0


def _wait_ready(api: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "gateway exited"
        try:
            if get_json(f"{api}/ready", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")


def test_sigterm_flushes_and_restart_keeps_data(tmp_path: Path) -> None:
    # A long flush interval: rows are still buffered when SIGTERM arrives, so they land only
    # because shutdown flushes them.
    env = _env(tmp_path, OTELGW_FLUSH_INTERVAL_MS="600000", OTELGW_BATCH_ROWS="1000000")
    http = f"http://{env['OTELGW_OTLP_HTTP_ADDR']}"
    api = f"http://{env['OTELGW_API_ADDR']}"
    proc = subprocess.Popen([*OTELGW, "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(api, proc)
        spans = [{"traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "chat m", "startTimeUnixNano": "1",
                  "endTimeUnixNano": "2", "attributes": [
                      {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                      {"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]} for i in range(1, 51)]
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
        assert post_otlp(http, "traces", body, "json").status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        stderr = proc.stderr.read()
        assert '"flushed":true' in stderr and '"inferences":50' in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    restarted = subprocess.Popen([*OTELGW, "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(api, restarted)
        for i in (1, 25, 50):
            status, row = get_json(f"{api}/api/v1/metrics/inferences/{derived_inference_id(f'{i:032x}', f'{i:016x}')}")
            assert status == 200 and row["overview"]["span_id"] == f"{i:016x}"
        status, snapshot = get_json(f"{api}/api/v1/status")
        assert status == 200
        restarted.send_signal(signal.SIGINT)
        assert restarted.wait(60) == 0
    finally:
        if restarted.poll() is None:
            restarted.kill()


def test_keys_cli(tmp_path: Path) -> None:
    env = _env(tmp_path)
    created = subprocess.run([*OTELGW, "keys", "create", "--project", "alpha", "--role", "editor", "--ingest"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("otgw_") and "keep it now" in created.stderr
    key_id = key.split("_")[1]
    listed = subprocess.run([*OTELGW, "keys", "list"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=env)
    assert listed.returncode == 0 and key_id in listed.stdout and "editor\tingest\talpha\tactive" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout  # the secret (which may hold "_") is never shown again
    revoked = subprocess.run([*OTELGW, "keys", "revoke", key_id], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path, env=env)
    assert revoked.returncode == 0
    listed = subprocess.run([*OTELGW, "keys", "list"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=env)
    assert "revoked" in listed.stdout
    unknown = subprocess.run([*OTELGW, "keys", "revoke", "000000000000"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env=env)
    assert unknown.returncode == 1 and "no key" in unknown.stderr
    bad = subprocess.run([*OTELGW, "keys", "create", "--role", "owner"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # `--project ""` printed projects=* although the key was scoped to the project "".
    empty = subprocess.run([*OTELGW, "keys", "create", "--project", "", "--role", "viewer"], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path, env=env)
    assert empty.returncode == 2 and "must be 1 to 128 printable characters" in empty.stderr


def test_a_command_on_a_store_a_gateway_holds_says_so(tmp_path: Path) -> None:
    """An embedded store is one process's: `otelgw keys list` beside a running gateway printed
    the driver's traceback; now one line naming the store, exit 1."""
    from gateway_process import GatewayProcess

    gateway = GatewayProcess(tmp_path / "gw", workers="1")
    try:
        gateway.start()
        done = subprocess.run([*OTELGW, "keys", "list"], capture_output=True, text=True, timeout=120,
                              env=gateway.env)
        assert done.returncode == 1, (done.returncode, done.stderr[-500:])
        # (chDB prints its own line first.)
        assert "\notelgw: cannot connect to ClickHouse at chdb://" in done.stderr
        assert "is a gateway running on it?" in done.stderr and "Traceback" not in done.stderr
    finally:
        assert gateway.terminate() == 0
