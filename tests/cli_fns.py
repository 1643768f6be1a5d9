"""Callbacks the CLI tests name with --fn (tests/ is put on PYTHONPATH or is the cwd)."""

from __future__ import annotations

import os
import time
from typing import Any


def echo(record: Any) -> Any:
    return record


def fail_odd(record: dict[str, Any]) -> dict[str, Any]:
    if int(record["id"]) % 2:
        raise ValueError(f"odd id {record['id']}")
    return record


def fatal_when_asked(record: dict[str, Any]) -> dict[str, Any]:
    """Fatal at the id in $BG_FATAL_AT (the first run of a job), fine without it."""
    if str(record["id"]) == os.environ.get("BG_FATAL_AT"):
        raise MemoryError("simulated out of memory")
    return record


def slow(record: Any) -> Any:
    time.sleep(0.01)
    return record


async def async_echo(record: Any) -> Any:
    return record


not_callable = 42
