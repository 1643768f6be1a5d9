"""``batchguard jobs retry-failed`` refuses a job that is still running (issue 10/11 leftover, LF1
item 4): the job's lock is held by a live process, so the error names the job and the holder, as
``batchguard rollback`` does, and nothing is replayed. Real SQLite and PostgreSQL stores, the
holder a real process."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchguard import RetryPolicy, run_batches
from batchguard._replay_claims import Claims, swapper
from batchguard.cli import main
from batchguard.dlq.base import select
from batchguard.jobs import job_status, open_job_store

FNS = '''
CALLS = []
def fixed(record):
    with open("calls.log", "a") as log:
        print(record, file=log)
    return record
'''

HOLDER = '''
import sys
from batchguard.jobs import open_job_store
store = open_job_store(sys.argv[1])
with store.claim(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
'''


def _fail_odd(record: int) -> int:
    if record % 2:
        raise ValueError(f"odd {record}")
    return record


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    base = request.getfixturevalue("postgres_url")
    return str(base)


@pytest.fixture
def holder(store_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A job with 5 dead letters, whose lock a live process holds (as a running job does)."""
    job = f"guard-{uuid.uuid4().hex[:8]}"
    run_batches(range(10), _fail_odd, batch_size=5, job=job, store=store_url,
                retry=RetryPolicy(max_attempts=1))
    assert job_status(job, store=store_url).failed == 5
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store_url, job], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    try:
        yield job, proc
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=60)
        proc.stdout.close()


def test_retry_failed_refuses_a_job_whose_lock_a_live_process_holds(
        holder: tuple[str, subprocess.Popen[str]], store_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job, proc = holder
    (tmp_path / "guardfns.py").write_text(FNS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("guardfns", None)
    result = CliRunner().invoke(main, ["jobs", "retry-failed", job, "--fn", "guardfns:fixed", "--store",
                                       store_url, "-q"])
    assert result.exit_code != 0, result.output
    message = result.output
    assert f"job {job!r} is running" in message, message
    # The holder: the process id for a SQLite store's lock file, the server session's client
    # process for PostgreSQL's advisory lock (the same process here: it runs on this machine).
    assert f"pid {proc.pid}" in message, message
    assert not (tmp_path / "calls.log").exists()  # nothing was replayed
    assert job_status(job, store=store_url).failed == 5


def test_retry_failed_runs_once_the_holder_has_ended(
        holder: tuple[str, subprocess.Popen[str]], store_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job, proc = holder
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)
    (tmp_path / "guardfns.py").write_text(FNS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("guardfns", None)
    result = CliRunner().invoke(main, ["jobs", "retry-failed", job, "--fn", "guardfns:fixed", "--store",
                                       store_url, "-q"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "calls.log").read_text().split()) == 5
    assert job_status(job, store=store_url).failed == 0


def test_retry_failed_leaves_entries_another_replay_holds_until_reclaim(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A replay that was killed holding claims on the job's entries (claimed, never given back).
    job = f"held-{uuid.uuid4().hex[:8]}"
    run_batches(range(10), _fail_odd, batch_size=5, job=job, store=store_url, retry=RetryPolicy(max_attempts=1))
    with open_job_store(store_url) as store, store.open_default_dlq() as dlq:
        held, _ = Claims(swapper(dlq), "run-killed", by="cron", lease_s=600.0, reclaim=False,
                         view=select({"job_id": job}, "open")).take(dlq.list(job_id=job, limit=2))
        assert len(held) == 2
    (tmp_path / "guardfns.py").write_text(FNS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("guardfns", None)
    args = ["jobs", "retry-failed", job, "--fn", "guardfns:fixed", "--store", store_url, "-q"]
    first = CliRunner().invoke(main, args)
    assert "2 matching dead letters are held by another running replay" in first.output, first.output
    assert "--reclaim" in first.output and job_status(job, store=store_url).failed == 2
    second = CliRunner().invoke(main, [*args, "--reclaim"])
    assert second.exit_code == 0, second.output
    assert job_status(job, store=store_url).failed == 0
    assert len((tmp_path / "calls.log").read_text().split()) == 5  # each record once
