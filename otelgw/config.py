"""Gateway configuration: one msgspec Struct, read from an optional TOML file and `OTELGW_*`.

Precedence is defaults < TOML file < environment, as with the OTel Collector's `--set`. Every
problem is collected and reported at once, each naming the key the user wrote, so a typo in
a deployment fails at start instead of being ignored.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

ENV_PREFIX = "OTELGW_"
MIB = 1024 * 1024


class ConfigError(ValueError):
    """Raised with every configuration problem found, one per line."""


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Where rows go: chdb://PATH (embedded, relative paths resolved against the working
    # directory) or http(s)://user:pass@host:8123/db (a ClickHouse server).
    clickhouse_dsn: str = "chdb://./data/otelgw"
    # With a ClickHouse server: how long an insert (the writer's, or a worker's) waits without a
    # byte from the server before it is given up and retried under the same deduplication token.
    # The server keeps a slow insert alive with progress headers every max(10, this - 5) s, so
    # values under ~15 s can cut off inserts that are only slow. chDB ignores it.
    clickhouse_insert_timeout_s: float = 60.0
    # Where the gateway keeps its own files: the write-ahead log and dead-letter files.
    data_dir: str = "./data"
    # The write-ahead log's directory; empty means DATA_DIR/wal.
    wal_dir: str = ""
    # Group commit window: appends within it share one fsync. "0" fsyncs each append,
    # "off" never fsyncs (unsafe: a power loss can lose acknowledged data).
    wal_fsync_ms: int | str = 10
    # Disk the log may use; past it requests get 503 / RESOURCE_EXHAUSTED until the store
    # catches up.
    wal_max_bytes: int = 2 * 1024 * MIB
    wal_segment_bytes: int = 64 * MIB
    # OTLP/gRPC listen address; empty disables the listener.
    otlp_grpc_addr: str = "0.0.0.0:4317"
    # OTLP/HTTP listen address; empty disables the listener.
    otlp_http_addr: str = "0.0.0.0:4318"
    # Query API, health and readiness.
    api_addr: str = "127.0.0.1:3200"
    # Let several gateway processes on one machine listen on the same OTLP ports (SO_REUSEPORT:
    # the kernel spreads connections over them). Off: a taken OTLP port is an error at start, as
    # in the OTel Collector (gRPC would otherwise share the port silently). Needs a server DSN:
    # the processes must write into one store. Each keeps its own api_addr (/metrics, /ready).
    reuse_port: bool = False
    # Serve the API without keys on a non-loopback address (with no key created, the API is
    # anonymous; by default only on loopback).
    allow_anonymous: bool = False
    # Largest accepted request body after decompression, in bytes.
    max_request_bytes: int = 20 * MIB
    # Rows per table that trigger a flush to ClickHouse.
    batch_rows: int = 50_000
    # Longest time a row waits in the writer before it is flushed.
    flush_interval_ms: int = 1000
    # How long the consumer waits for more trace requests after a small read (under 1 MiB)
    # before mapping them, so that one call traced twice and sent a span a request (a
    # SimpleSpanProcessor) folds into one inference; 0 = no wait. Under load, reads fill a chunk
    # without waiting.
    fold_wait_ms: int = 100
    # Requests being read, decoded or made durable at once, overall and per connection;
    # past either, 503 / UNAVAILABLE. Bounds the memory held by request bodies.
    max_inflight_requests: int = 64
    max_inflight_per_connection: int = 16
    # Spans (or log records, data points) per second one project may send; 0 = no limit.
    # Past it, 429 / RESOURCE_EXHAUSTED with a retry delay.
    project_rate_limit: float = 0.0
    # Encoded bytes the writer may hold before the mapper waits for a flush.
    writer_max_bytes: int = 128 * MIB
    # Attempts for an insert ClickHouse rejects as bad data before the bad rows are isolated and
    # dead-lettered. A store that is down is retried for as long as it takes.
    insert_attempts: int = 5
    # Hostile-input limits, applied as the OTel SDK applies its own: attributes past the count
    # are dropped (and counted in otelgw.dropped_attributes), longer values truncated with a marker.
    max_attributes_per_span: int = 256
    max_attribute_chars: int = 65_536
    max_message_chars: int = 1_048_576
    log_level: str = "INFO"
    # JSON log lines (structured) or plain text for a terminal.
    log_format: str = "json"
    # A user pricing table merged over semconv/pricing.toml.
    pricing_file: str = ""
    # Tail sampling of trace detail (span rows; inferences are never sampled). Policies from
    # SAMPLING_FILE (TOML, see docs/sampling.md), else the defaults: errors, slow (> 2 s),
    # negative evaluations, 10% of the rest.
    tail_sampling: bool = True
    sampling_file: str = ""
    # Longest input/output preview stored on an inference row, in characters.
    preview_chars: int = 512
    # Longest attribute value kept in an inference row's attributes map.
    attribute_value_max_chars: int = 16_384
    # Seconds SIGTERM may take to flush before the process exits anyway.
    shutdown_timeout_s: float = 30.0
    # Masking at ingest (docs/privacy.md): secrets always; PII when on (or per project in the
    # masking file); HMAC key for the attributes a project hashes.
    mask_pii: bool = False
    masking_file: str = ""
    mask_hmac_key: str = ""
    # Encrypts the request bytes in write-ahead-log segments at rest (AES-256-GCM); at least 16
    # characters. A log written with a key needs the same key to replay.
    wal_encryption_key: str = ""
    # Label values /metrics keeps per label of the inference_* series; later ones read `other`.
    metrics_max_models: int = 200
    metrics_max_projects: int = 100
    metrics_max_providers: int = 50
    # Processes that map logged requests to rows (decode again, map, mask, encode): 0 = one per
    # CPU the process may use (affinity, cgroup quota); 1 maps on a thread of the gateway process.
    # Receiving, the log, sampling and writing stay in the gateway process (docs/scaling.md).
    workers: int = 0
    # The ClickHouse cluster (remote_servers name) the store runs on, for a clustered store:
    # migrations, retention TTLs and erasure deletes then go ON CLUSTER to the local tables
    # (docs/scaling.md). Empty: one server, or embedded chDB.
    clickhouse_cluster: str = ""
    # The native fast path: ClickHouse writes the rows of plain (non-GenAI) spans from the request
    # bytes (docs/scaling.md). auto: on with an embedded chDB store; off (the default): the Python
    # mapper writes every row. Off by default because on this project's measurements it costs
    # more than it saves (docs/performance.md, issue 11).
    fast_path: str = "off"
    # With a ClickHouse server DSN and worker processes, each worker inserts the rows it mapped
    # (all but tail-sampled spans) itself, instead of sending them back for the gateway process to
    # insert: the gateway process is one gateway's ceiling (docs/scaling.md). auto: on with a
    # server DSN and workers > 1; off (the default): the gateway process's writer inserts
    # everything. Off by default: measured, it saves the gateway process ~19% of its CPU but
    # workers wait on their inserts and ClickHouse gets smaller, more frequent inserts (~10%
    # more server CPU; docs/performance.md).
    worker_inserts: str = "off"
    # With worker_inserts on, only mapping chunks of at least this many request bytes are inserted
    # by their worker; smaller ones (below saturation) go to the writer, whose one-second flushes
    # make fewer, larger inserts.
    worker_insert_min_bytes: int = 4 * 1024 * 1024

    def validate(self) -> list[str]:
        errors: list[str] = []
        if not (self.clickhouse_dsn.startswith("chdb:") or self.clickhouse_dsn.startswith(("http://", "https://"))):
            errors.append(f"clickhouse_dsn: {self.clickhouse_dsn!r} must start with chdb://, http:// or https://")
        for name in ("otlp_grpc_addr", "otlp_http_addr", "api_addr"):
            value = getattr(self, name)
            if value and parse_addr(value) is None:
                errors.append(f"{name}: {value!r} is not HOST:PORT")
        for name in ("max_request_bytes", "batch_rows", "flush_interval_ms", "writer_max_bytes", "insert_attempts",
                     "preview_chars", "attribute_value_max_chars", "wal_max_bytes", "wal_segment_bytes",
                     "max_inflight_requests", "max_inflight_per_connection", "max_attributes_per_span",
                     "max_attribute_chars", "max_message_chars", "metrics_max_models", "metrics_max_projects",
                     "metrics_max_providers", "worker_insert_min_bytes"):
            if getattr(self, name) <= 0:
                errors.append(f"{name}: must be greater than 0")
        if not 0 <= self.fold_wait_ms <= 10_000:
            errors.append("fold_wait_ms: must be between 0 and 10000")
        if self.clickhouse_cluster and not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", self.clickhouse_cluster):
            errors.append(f"clickhouse_cluster: {self.clickhouse_cluster!r} must be a cluster name "
                          "(letters, digits, _ . -)")
        if self.clickhouse_cluster and self.clickhouse_dsn.startswith("chdb:"):
            errors.append("clickhouse_cluster: needs a ClickHouse server DSN (http:// or https://), not chdb://")
        if self.reuse_port and self.clickhouse_dsn.startswith("chdb:"):
            errors.append("reuse_port: gateways sharing the OTLP ports must write into one store: needs a "
                          "ClickHouse server DSN (http:// or https://); an embedded chDB directory has one owner")
        if self.fast_path not in ("auto", "off"):
            errors.append(f"fast_path: {self.fast_path!r} is not auto or off")
        if self.fast_path == "auto" and re.search(r"[*?{}\[\]:']", str(Path(self.data_dir).resolve())):
            # ClickHouse reads the fast path's files by a glob under data_dir.
            errors.append("fast_path: data_dir must not contain * ? { } [ ] : or ' (ClickHouse globs its files)")
        if self.worker_insert_min_bytes > 8 * 1024 * 1024:
            errors.append("worker_insert_min_bytes: at most 8388608 (the largest mapping chunk)")
        if self.worker_inserts not in ("auto", "off"):
            errors.append(f"worker_inserts: {self.worker_inserts!r} is not auto or off")
        if not 0 <= self.workers <= 256:
            errors.append("workers: must be 0 (one per CPU) to 256")
        if self.project_rate_limit < 0:
            errors.append("project_rate_limit: must be 0 (off) or more")
        fsync = str(self.wal_fsync_ms).strip().lower()
        if fsync != "off" and not (fsync.isdigit() and int(fsync) <= 10_000):
            errors.append(f"wal_fsync_ms: {self.wal_fsync_ms!r} must be milliseconds (0 to 10000) or off")
        if not 1 <= self.clickhouse_insert_timeout_s <= 3600:
            errors.append("clickhouse_insert_timeout_s: must be 1 to 3600 seconds")
        if 0 < self.wal_max_bytes < 2 * self.wal_segment_bytes:
            # The open segment is never deleted: one segment filling the limit refuses every
            # request for good.
            errors.append(f"wal_max_bytes: at least twice wal_segment_bytes ({2 * self.wal_segment_bytes})")
        if self.shutdown_timeout_s <= 0:
            errors.append("shutdown_timeout_s: must be greater than 0")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            errors.append(f"log_level: {self.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        if self.log_format not in ("json", "text"):
            errors.append(f"log_format: {self.log_format!r} is not json or text")
        if self.pricing_file and not Path(self.pricing_file).is_file():
            errors.append(f"pricing_file: {self.pricing_file!r} does not exist")
        if self.wal_encryption_key and len(self.wal_encryption_key) < 16:
            errors.append("wal_encryption_key: must be at least 16 characters")
        if self.masking_file and not Path(self.masking_file).is_file():
            errors.append(f"masking_file: {self.masking_file!r} does not exist")
        if self.sampling_file and not Path(self.sampling_file).is_file():
            errors.append(f"sampling_file: {self.sampling_file!r} does not exist")
        return errors


def fast_path_on(cfg: Config) -> bool:
    """The fast path reads request files from the gateway's disk, so it needs the embedded store;
    with a server the gateway would have to send the bytes (measured, not built: docs/scaling.md)."""
    return cfg.fast_path == "auto" and cfg.clickhouse_dsn.startswith("chdb:")


def worker_inserts_on(cfg: Config, workers: int) -> bool:
    """Workers insert their own rows only into a server: one process owns an embedded chDB."""
    return (cfg.worker_inserts == "auto" and workers > 1 and not cfg.clickhouse_dsn.startswith("chdb:")
            and not fast_path_on(cfg))


def wal_fsync(cfg: Config) -> int | None:
    """The group-commit window in ms, or None when fsync is off."""
    value = str(cfg.wal_fsync_ms).strip().lower()
    return None if value == "off" else int(value)


def parse_addr(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    return host.strip("[]") or "0.0.0.0", int(port)


_FIELDS = {f.name: f for f in msgspec.structs.fields(Config)}


def _from_env(env: Mapping[str, str], errors: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in _FIELDS:
            errors.append(f"{key}: unknown setting")
            continue
        values[name] = raw
    return values


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the TOML file at `path`, then `OTELGW_*` from `env` (os.environ)."""
    env = os.environ if env is None else env
    errors: list[str] = []
    merged: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                from_file = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, value in from_file.items():
            if key not in _FIELDS:
                errors.append(f"{path}: {key}: unknown setting")
            else:
                merged[key] = value
    merged.update(_from_env(env, errors))
    # Convert field by field so that every malformed value is reported, not just the first.
    good: dict[str, Any] = {}
    for name, value in merged.items():
        field = _FIELDS[name]
        try:
            good[name] = msgspec.convert(value, field.type, strict=False)
        except msgspec.ValidationError as exc:
            errors.append(f"{ENV_PREFIX}{name.upper()} / {name}: {exc}: {value!r}")
    cfg = Config(**good)
    errors.extend(cfg.validate())
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return cfg
