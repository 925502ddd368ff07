"""Locate the data shipped with otelgw: convention tables (semconv/) and migrations (schema/).

In a wheel they are the packages `otelgw.semconv_tables` and `otelgw.schema_sql`; in a source
checkout (editable install, or running from the tree) they are the top-level folders.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _folder(package: str, repo_dir: str) -> Path:
    local = _REPO_ROOT / repo_dir
    if local.is_dir():
        return local
    return Path(str(resources.files(package)))


def semconv_dir() -> Path:
    return _folder("otelgw.semconv_tables", "semconv")


def schema_dir() -> Path:
    return _folder("otelgw.schema_sql", "schema")
