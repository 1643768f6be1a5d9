"""The SQLite DLQ schema of the release before the shared-traceback rows (issue 11 item 5):
a status column and whole entries in their JSON, copied literally, for the tests that open a
file that release wrote (tests/test_dlq_sqlite_rows.py, tests/test_hostile_s16_sqlite_rows.py)."""

from __future__ import annotations

__all__ = ["PREVIOUS_SCHEMA"]

PREVIOUS_SCHEMA = (
    """CREATE TABLE dead_letters (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL,
        job_id TEXT,
        stage TEXT NOT NULL,
        error_class TEXT NOT NULL,
        error_type TEXT NOT NULL,
        entry TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open'
    )""",
    "CREATE INDEX dead_letters_run_id ON dead_letters (run_id)",
    "CREATE INDEX dead_letters_job_id ON dead_letters (job_id) WHERE job_id IS NOT NULL",
    "CREATE INDEX dead_letters_error_type ON dead_letters (error_type)",
    "CREATE INDEX dead_letters_closed ON dead_letters (status, seq) WHERE status <> 'open'",
)
