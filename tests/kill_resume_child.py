"""The job that tests/test_kill_resume.py runs in a subprocess and kills with SIGKILL.

argv: STORE_URL DLQ_URL|- SINK_PATH JOB RECORDS BATCH_SIZE CONCURRENCY ENGINE

The callback records every call in the sink (table ``calls``, one row per call: how often
``fn`` really ran) and each success once (table ``done``, INSERT OR IGNORE by record id: the
idempotent write a real job would do). Records with id % 11 == 0 fail for good.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time

import batchguard

FAIL_EVERY = 11

store_url, dlq_url, sink_path, job = sys.argv[1:5]
records, batch_size, concurrency = (int(v) for v in sys.argv[5:8])
engine = sys.argv[8]
local = threading.local()


def sink() -> sqlite3.Connection:
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(sink_path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL: a commit survives the process being killed (it is in the OS's cache), which
        # is all this test kills; only power loss would need FULL.
        conn.execute("PRAGMA synchronous = NORMAL")
        local.conn = conn
    return conn


def fn(record: dict[str, int]) -> int:
    rid = record["id"]
    time.sleep(0.0001)
    conn = sink()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO calls (record_id) VALUES (?)", (rid,))
    if rid % FAIL_EVERY:
        conn.execute("INSERT OR IGNORE INTO done (record_id) VALUES (?)", (rid,))
    conn.execute("COMMIT")
    if rid % FAIL_EVERY == 0:
        raise ValueError(f"record {rid} is invalid")
    return rid


setup = sqlite3.connect(sink_path, timeout=60)
setup.execute("PRAGMA journal_mode = WAL")
setup.execute("CREATE TABLE IF NOT EXISTS calls (record_id INTEGER NOT NULL)")
setup.execute("CREATE TABLE IF NOT EXISTS done (record_id INTEGER PRIMARY KEY)")
setup.commit()
setup.close()

report = batchguard.run_batches(
    [{"id": i} for i in range(records)], fn, batch_size=batch_size, concurrency=concurrency,
    retry=batchguard.RetryPolicy(max_attempts=1), job=job, store=store_url,
    dlq=None if dlq_url == "-" else dlq_url, engine=engine)  # type: ignore[arg-type]
print(json.dumps({"status": report.status, "total": report.total,
                  "skipped_batches": report.skipped_batches}), flush=True)
