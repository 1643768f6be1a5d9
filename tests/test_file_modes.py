"""Files that hold records are created 0600, directories 0700 (issue 7, defect 19).

Records often carry personal data: the SQLite DLQ (and the -wal/-shm files SQLite creates next
to it), the JSONL DLQ, exports and the SQLite job store must not be readable by other users,
whatever the (usual, permissive) umask; a stricter umask still applies on top.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchguard import RetryPolicy, SqliteJobStore, run_batches
from batchguard.dlq import JsonlDLQ, SqliteDLQ

ONCE = RetryPolicy(max_attempts=1)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=lambda m: f"umask-{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def fail_odd(n: int) -> int:
    if n % 2:
        raise ValueError(f"odd {n}")
    return n


def test_a_run_with_a_sqlite_dlq_creates_the_database_and_its_wal_and_shm_0600(umask: int, tmp_path: Path) -> None:
    db = tmp_path / "dead.db"
    with SqliteDLQ(db) as dlq:
        run_batches(range(20), fail_odd, dlq=dlq, retry=ONCE)
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(f.exists() for f in files)
        assert [mode(f) for f in files] == [0o600] * 3


def test_a_run_with_a_jsonl_dlq_url_creates_the_file_0600(umask: int, tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    run_batches(range(20), fail_odd, dlq=f"jsonl:///{path}", retry=ONCE)
    assert mode(path) == 0o600


def test_a_job_creates_its_sqlite_store_0600(umask: int, tmp_path: Path) -> None:
    store = tmp_path / "jobs.db"
    with SqliteJobStore(store) as jobs:  # kept open: SQLite removes -wal and -shm at the last close
        run_batches(range(20), fail_odd, job="private", store=jobs, retry=ONCE)
        side = [Path(f"{store}{suffix}") for suffix in ("-wal", "-shm", "-joblock")]
        assert [mode(f) for f in (store, *side)] == [0o600] * 4


def test_an_export_is_0600(umask: int, tmp_path: Path) -> None:
    with JsonlDLQ(tmp_path / "dead.jsonl") as dlq:
        run_batches(range(4), fail_odd, dlq=dlq, retry=ONCE)
        assert dlq.export(tmp_path / "out.jsonl") == 2
    assert mode(tmp_path / "out.jsonl") == 0o600


def test_a_stricter_umask_still_applies(tmp_path: Path) -> None:
    old = os.umask(0o277)  # owner may not write: 0o600 & ~0o277 == 0o400
    try:
        with JsonlDLQ(tmp_path / "dead.jsonl") as dlq:
            os.umask(old)  # the queue file exists: the rest of the run needs no stricter mask
            run_batches(range(4), fail_odd, dlq=dlq, retry=ONCE)
            os.umask(0o277)
            assert dlq.export(tmp_path / "out.jsonl") == 2
    finally:
        os.umask(old)
    assert (mode(tmp_path / "dead.jsonl"), mode(tmp_path / "out.jsonl")) == (0o400, 0o400)


def test_an_existing_file_keeps_the_mode_its_owner_chose(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    path.touch()
    path.chmod(0o640)
    with JsonlDLQ(path) as dlq:
        run_batches(range(4), fail_odd, dlq=dlq, retry=ONCE)
    assert mode(path) == 0o640


def test_the_demo_creates_its_directory_0700_and_its_files_0600(tmp_path: Path) -> None:
    where = tmp_path / "a" / "demo"
    done = subprocess.run([sys.executable, "-m", "batchguard", "demo", "--records", "200", "--dir",
                           str(where), "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    assert (mode(tmp_path / "a"), mode(where), mode(where / "demo.db")) == (0o700, 0o700, 0o600)
    data = [f for f in where.iterdir() if f.suffix == ".jsonl"]
    assert data and [mode(f) for f in data] == [0o600] * len(data)
