"""`otelgw data` (issue 10; being built)."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(command: Any) -> None:
    """Register the subcommand; `command(name, help)` returns its argparse parser."""
    command("data", "data (not built yet)")


def run(args: argparse.Namespace, cfg: Any) -> int:
    print("otelgw data: not built yet")
    return 1
