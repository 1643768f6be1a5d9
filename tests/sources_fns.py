"""Callbacks the sources tests run through ``batchguard run s3://... --fn sources_fns:...``.

``write`` is the idempotent output a real job writes: each record once into the SQLite file
named by SOURCES_SINK (table ``done``, INSERT OR IGNORE by the record's ``n``), and each call
counted (table ``calls``). A record whose ``n`` is a multiple of 7 fails for good. With
SOURCES_SLOW set, each call sleeps that many seconds, so a test can kill the run mid-way.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

FAIL_EVERY = 7


def _sink() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ["SOURCES_SINK"], timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS done (n INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE IF NOT EXISTS calls (n INTEGER)")
    return conn


_conn: sqlite3.Connection | None = None


def write(record: dict[str, Any]) -> int:
    global _conn
    if _conn is None:
        _conn = _sink()
    n = int(record["n"])
    _conn.execute("INSERT INTO calls VALUES (?)", (n,))
    slow = float(os.environ.get("SOURCES_SLOW", "0"))
    if slow:
        time.sleep(slow)
    if n % FAIL_EVERY == 0:
        raise ValueError(f"record {n} is rejected")
    _conn.execute("INSERT OR IGNORE INTO done VALUES (?)", (n,))
    return n


def keep(record: Any) -> Any:
    return record
