"""A PostgreSQL job store whose connection the server drops mid-run fails with a
JobStoreUnavailableError naming the store, as the SQLite store does (hostile tester, issue 7
defect 5), not with a bare ``psycopg.errors.AdminShutdown: terminating connection due to
administrator command`` that names nothing; and the job resumes to the right totals."""

from __future__ import annotations

import threading
import uuid

import pytest

import batchguard
from batchguard.jobs import JobStoreUnavailableError

psycopg = pytest.importorskip("psycopg")


def test_connection_dropped_mid_run_is_a_job_store_error(postgres_url: str) -> None:
    job = f"hostile-{uuid.uuid4().hex[:8]}"
    started = threading.Event()
    dropped = threading.Event()

    def fn(record: int) -> int:
        if record == 120 and not dropped.is_set():
            started.set()
            dropped.wait(5)
        if record % 3 == 0:
            raise ValueError("bad")
        return record

    def drop_connections() -> None:
        started.wait(5)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE pid <> pg_backend_pid() AND datname = current_database()")
        dropped.set()

    killer = threading.Thread(target=drop_connections)
    killer.start()
    try:
        with pytest.raises(JobStoreUnavailableError, match=r"PostgreSQL job store .*terminating"):
            batchguard.run_batches(range(300), fn, job=job, store=postgres_url, batch_size=50)
    finally:
        killer.join()
    report = batchguard.run_batches(range(300), fn, job=job, store=postgres_url, batch_size=50)
    assert report.skipped_batches == 2
    status = batchguard.job_status(job, store=postgres_url)
    assert (status.status, status.succeeded, status.failed) == ("completed", 200, 100)
