"""The gateways writing to one database (`gateways` table, schema/011): each registers its
write-ahead-log id with its host and log directory and refreshes it while it runs. A gateway
whose log id is live under another host or directory was started from a copied data directory:
its insert tokens would collide with the other's and ClickHouse would drop one side's blocks as
duplicates, silently, so it refuses to start instead."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

HEARTBEAT_S = 10.0
LIVE_S = 45.0  # a gateway not seen for this long is gone (crashed, or stopped)


class DuplicateWalId(RuntimeError):
    pass


class GatewayRegistry:
    def __init__(self, wal_id: str, wal_dir: str) -> None:
        self.wal_id = wal_id
        self.host = socket.gethostname()
        self.wal_dir = os.path.abspath(wal_dir)
        self.pid = os.getpid()
        self.started_at = datetime.now(UTC)

    def check(self, client: Client) -> None:
        rows = client.query(
            "SELECT host, wal_dir, max(seen_at) AS seen FROM gateways WHERE wal_id = {w:String} "
            "AND seen_at > now64(3) - toIntervalSecond({live:UInt32}) GROUP BY host, wal_dir",
            parameters={"w": self.wal_id, "live": int(LIVE_S)}).result_rows
        for host, wal_dir, _ in rows:
            if (host, wal_dir) != (self.host, self.wal_dir):
                raise DuplicateWalId(
                    f"write-ahead log id {self.wal_id} is in use by a live gateway on {host} ({wal_dir}): this data "
                    "directory is a copy of another gateway's. Give it a new id (delete wal/id in the copy) or start "
                    "it with its own data directory; two gateways with one id drop each other's inserts as duplicates")

    def heartbeat(self, client: Client) -> None:
        now = datetime.now(UTC)
        client.insert("gateways", [[self.wal_id, self.host, self.wal_dir, self.pid, self.started_at, now]],
                      column_names=["wal_id", "host", "wal_dir", "pid", "started_at", "seen_at"])
