"""Named SQL queries, kept in .sql files beside this module (`-- name: x` starts each one).
Values are always bound as ClickHouse query parameters (`{name:Type}`), never formatted in."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(resource: str) -> dict[str, str]:
    text = (resources.files(__package__) / f"{resource}.sql").read_text()
    queries: dict[str, str] = {}
    name = ""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            if name:
                queries[name] = "\n".join(lines).strip().rstrip(";")
            name, lines = line.split(":", 1)[1].strip(), []
        elif name:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries
