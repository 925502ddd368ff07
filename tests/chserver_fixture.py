"""Pytest fixtures for the chDB-backed ClickHouse HTTP test double (see chserver.py).

Import the ones a test module needs; pytest finds fixtures imported into a module:

    from chserver_fixture import chserver, chserver_factory  # noqa: F401

- `chserver`: one server per test module on a fresh data dir and a free port.
- `chserver_factory`: `make(path=None, **kwargs) -> ChServer`, started, for tests that kill,
  restart or reuse a data dir; every server it made is stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chserver import ChServer


@pytest.fixture(scope="module")
def chserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChServer]:
    server = ChServer(tmp_path_factory.mktemp("chserver") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chserver_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ChServer]]:
    servers: list[ChServer] = []

    def make(path: str | Path | None = None, **kwargs: Any) -> ChServer:
        server = ChServer(path or tmp_path_factory.mktemp("chserver") / "data", **kwargs)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
