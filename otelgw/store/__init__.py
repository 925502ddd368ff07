"""ClickHouse storage: one client path for embedded chDB and a ClickHouse server."""
