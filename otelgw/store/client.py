"""Open ClickHouse clients from a DSN: `chdb://PATH[?database=DB]` or `http(s)://…/DB`.

clickhouse-connect serves both through one `Client` API. Clients are per thread: a chDB handle
and an HTTP session are not meant to be shared across threads, and the writer thread and the
query threads each need their own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

T = TypeVar("T")

_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class StoreError(RuntimeError):
    pass


def quote_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    if not name or not set(name) <= _IDENT_OK:
        raise StoreError(f"database name {name!r} must be letters, digits and underscores")
    return f"`{name}`"


class DSN:
    """A parsed DSN. chDB paths are made absolute here, because clickhouse-connect only reads
    `chdb:///absolute/path` and would take `./data/otelgw` as host and database."""

    def __init__(self, dsn: str) -> None:
        self.raw = dsn
        if dsn.startswith("chdb:"):
            self.embedded = True
            rest = dsn[len("chdb:"):]
            rest = rest[2:] if rest.startswith("//") else rest
            path, _, query = rest.partition("?")
            params = {k: v[0] for k, v in parse_qs(query).items()}
            self.database = params.pop("database", "default") or "default"
            if path in ("", "memory", ":memory:"):
                self.path = ":memory:"
            else:
                self.path = os.path.abspath(os.path.expanduser(path))
            self._params = params
        elif dsn.startswith(("http://", "https://")):
            self.embedded = False
            parsed = urlparse(dsn)
            if not parsed.hostname:
                raise StoreError(f"DSN {dsn!r} has no host")
            self.database = parsed.path.strip("/").split("/")[0] or "default"
            self.path = ""
            self._params = {}
        else:
            raise StoreError(f"DSN {dsn!r} must start with chdb:// or http(s)://")
        quote_ident(self.database)

    def client_dsn(self, with_database: bool) -> str:
        if self.embedded:
            params = dict(self._params)
            if with_database:
                params["database"] = self.database
            query = f"?{urlencode(params)}" if params else ""
            return f"chdb://{self.path}{query}"
        parsed = urlparse(self.raw)
        path = f"/{self.database}" if with_database else ""
        return parsed._replace(path=path).geturl()

    def redacted(self) -> str:
        parsed = urlparse(self.raw)
        if parsed.password:
            return self.raw.replace(f":{parsed.password}@", ":***@")
        return self.raw


def server_timeouts(seconds: float) -> dict[str, Any]:
    """Driver options for a client that gives up on a ClickHouse server silent for `seconds`
    (the driver's default waits 300 s)."""
    return {"connect_timeout": min(10.0, seconds), "send_receive_timeout": seconds}


class ClientFactory:
    """Hands each thread its own client on the configured database, creating it once."""

    def __init__(self, dsn: DSN, settings: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None) -> None:
        """`settings`: ClickHouse session settings; `options`: the driver's own (timeouts)."""
        self.dsn = dsn
        self._settings = settings or {}
        self._options = options or {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []
        self._database_ready = False

    def _open(self, with_database: bool) -> Client:
        if self.dsn.embedded and self.dsn.path != ":memory:":
            os.makedirs(self.dsn.path, exist_ok=True)
        options = {} if self.dsn.embedded else self._options  # (chDB warns about HTTP options)
        try:
            return clickhouse_connect.get_client(dsn=self.dsn.client_dsn(with_database), settings=self._settings,
                                                 **options)
        except Exception as exc:  # driver errors vary by transport; name the store either way
            raise StoreError(f"cannot connect to ClickHouse at {self.dsn.redacted()}: {exc}") from exc

    def ensure_database(self) -> None:
        with self._lock:
            if self._database_ready:
                return
            admin = self._open(with_database=False)
            try:
                admin.command(f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.dsn.database)}")
            finally:
                admin.close()
            self._database_ready = True

    def get(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            self.ensure_database()
            client = self._open(with_database=True)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(this thread's client, *args)`; a failure drops the client, so the next call
        reconnects instead of reusing a broken connection."""
        try:
            return fn(self.get(), *args)
        except Exception:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop this thread's client (after a transport error) so the next call reconnects."""
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                pass
