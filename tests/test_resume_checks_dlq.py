"""Resuming a job checks that its DLQ still holds the dead letters the job store counted.

Issue 7, defect 4: a DLQ file emptied or replaced between a kill and a resume went unnoticed:
the job said failed=455 while the DLQ held 309. Now a resume compares the store's count of
dead-lettered records (of finished batches, kept up to date by replays that tell the store)
with the DLQ's entries of the job, and refuses to run, naming the job, the DLQ and both counts,
when the DLQ holds fewer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest

from batchguard import JobConflictError, RetryPolicy, job_status, replay, run_batches
from batchguard.dlq import JsonlDLQ, SqliteDLQ
from helpers_contract import ENGINES
from helpers_jobs import Work

ONCE = RetryPolicy(max_attempts=1)
Engine = Literal["native", "python"]
CHILD = Path(__file__).with_name("kill_resume_child.py")


@pytest.fixture
def name() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


def empty_sqlite_dlq(path: Path) -> None:
    """Replace the SQLite DLQ file by a new, empty one, as a cleanup script or a restore might."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    SqliteDLQ(path).close()


def empty_jsonl_dlq(path: Path) -> None:
    os.truncate(path, 0)


DLQS = {
    "sqlite": ("sqlite:///{}", "dead.db", empty_sqlite_dlq),
    "jsonl": ("jsonl:///{}", "dead.jsonl", empty_jsonl_dlq),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", sorted(DLQS))
def test_a_resume_refuses_a_dlq_emptied_after_the_job_stopped(
        tmp_path: Path, name: str, kind: str, engine: Engine) -> None:
    template, filename, empty = DLQS[kind]
    store, dlq = f"sqlite:///{tmp_path / 'jobs.db'}", template.format(tmp_path / filename)
    run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=store, dlq=dlq,
                retry=ONCE, engine=engine)
    assert job_status(name, store=store).failed == 5
    empty(tmp_path / filename)

    work = Work()
    with pytest.raises(JobConflictError) as caught:
        run_batches(range(100), work, batch_size=10, job=name, store=store, dlq=dlq, retry=ONCE,
                    engine=engine)
    assert work.calls == []  # refused before any record ran
    message = str(caught.value)
    for part in (repr(name), str(tmp_path / filename), "5 dead-lettered", "holds 0", "force=True"):
        assert part in message, (part, message)
    assert job_status(name, store=store).status == "aborted"  # the job is left as it was

    # force=True is one way out: the job restarts from scratch with this DLQ.
    run_batches(range(100), Work(), batch_size=10, job=name, store=store, dlq=dlq, retry=ONCE,
                engine=engine, force=True)
    state = job_status(name, store=store)
    assert (state.status, state.succeeded, state.failed) == ("completed", 90, 10)


def test_a_resume_pointed_at_another_dlq_says_which_one_the_job_used(tmp_path: Path, name: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=store,
                dlq=f"sqlite:///{tmp_path / 'first.db'}", retry=ONCE)
    with pytest.raises(JobConflictError, match=r"first\.db") as caught:
        run_batches(range(100), Work(), batch_size=10, job=name, store=store,
                    dlq=f"sqlite:///{tmp_path / 'second.db'}", retry=ONCE)
    assert "second.db" in str(caught.value)
    # The right DLQ resumes the job.
    run_batches(range(100), Work(), batch_size=10, job=name, store=store,
                dlq=f"sqlite:///{tmp_path / 'first.db'}", retry=ONCE)
    assert job_status(name, store=store).status == "completed"


def test_entries_removed_by_hand_from_the_default_dlq_are_reported(tmp_path: Path, name: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=store, retry=ONCE)
    with SqliteDLQ(tmp_path / "jobs.db") as dlq:
        dlq.remove([e.id for e in dlq.list(job_id=name, limit=3)])
        assert dlq.count(job_id=name) == 4  # 2 of the finished batches and 53, 55 of the stopped one
    with pytest.raises(JobConflictError, match="holds 4") as caught:
        run_batches(range(100), Work(), batch_size=10, job=name, store=store, retry=ONCE)
    assert "5 dead-lettered" in str(caught.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_resume_after_a_replay_that_told_the_store_runs(tmp_path: Path, name: str, engine: Engine) -> None:
    store, dlq = f"sqlite:///{tmp_path / 'jobs.db'}", f"jsonl:///{tmp_path / 'dead.jsonl'}"
    run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=store, dlq=dlq,
                retry=ONCE, engine=engine)
    replay(dlq, lambda x: x, retry=ONCE, store=store, engine=engine)  # every entry leaves the DLQ
    with JsonlDLQ(tmp_path / "dead.jsonl") as queue:
        assert queue.count() == 0
    assert job_status(name, store=store).failed == 0

    work = Work()
    run_batches(range(100), work, batch_size=10, job=name, store=store, dlq=dlq, retry=ONCE, engine=engine)
    assert sorted(work.calls) == list(range(50, 100))
    state = job_status(name, store=store)
    assert (state.status, state.succeeded, state.failed) == ("completed", 95, 5)


def test_a_job_killed_by_sigkill_then_its_dlq_emptied_is_refused_on_resume(tmp_path: Path, name: str) -> None:
    # A real process, killed mid-run with SIGKILL, as in the report.
    store, dead = f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "dead.db"
    sink = tmp_path / "sink.db"
    with subprocess.Popen([sys.executable, str(CHILD), store, f"sqlite:///{dead}", str(sink), name,
                           "2000", "50", "1", "native"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if job_failed(tmp_path / "jobs.db", name) >= 20:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    counted = job_status(name, store=store).failed
    assert counted >= 20
    empty_sqlite_dlq(dead)

    def fn(record: dict[str, Any]) -> int:
        raise AssertionError("no record may run")

    with pytest.raises(JobConflictError) as caught:
        run_batches([{"id": i} for i in range(2000)], fn, batch_size=50, job=name, store=store,
                    dlq=f"sqlite:///{dead}", retry=ONCE)
    assert f"{counted} dead-lettered" in str(caught.value) and "holds 0" in str(caught.value)


def job_failed(path: Path, job: str) -> int:
    try:
        # mode=rw: never create the file (an empty store file is refused as not batchguard's).
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)) as conn:
            row = conn.execute("SELECT failed FROM jobs WHERE name = ?", (job,)).fetchone()
    except sqlite3.OperationalError:
        return 0
    return 0 if row is None else int(row[0])


FNS = '''
import os

def odd_fails(record):
    if str(record["id"]) == os.environ.get("BG_FATAL_AT"):
        raise MemoryError("simulated out of memory")
    if int(record["id"]) % 2:
        raise ValueError(f"odd id {record['id']}")
    return record
'''


def test_cli_jobs_resume_refuses_an_emptied_dlq_with_exit_code_2(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from batchguard.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "resume_fns.py").write_text(FNS)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(40)))
    runner = CliRunner()
    runner.invoke(main, ["run", "in.jsonl", "--fn", "resume_fns:odd_fails", "--job", name,
                         "--dlq", "jsonl:///dead.jsonl", "--batch-size", "10", "--max-attempts", "1",
                         "-q"], env={"BG_FATAL_AT": "25"}, catch_exceptions=False)
    assert job_status(name, store="sqlite:///batchguard.db").failed == 10
    empty_jsonl_dlq(tmp_path / "dead.jsonl")

    resumed = runner.invoke(main, ["jobs", "resume", name, "--dlq", "jsonl:///dead.jsonl", "-q"],
                            catch_exceptions=False)
    assert resumed.exit_code == 2, resumed.output
    assert "10 dead-lettered" in resumed.output and "holds 0" in resumed.output
    assert job_status(name, store="sqlite:///batchguard.db").status == "aborted"


@pytest.mark.postgres
def test_a_postgres_job_whose_dead_letters_were_deleted_is_refused_on_resume(postgres_url: str, name: str) -> None:
    from batchguard.dlq import PostgresDLQ

    run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=postgres_url, retry=ONCE)
    assert job_status(name, store=postgres_url).failed == 5
    with PostgresDLQ(postgres_url) as dlq, dlq.transaction() as cur:
        cur.execute(f"DELETE FROM {dlq.table} WHERE job_id = %s", (name,))
    work = Work()
    with pytest.raises(JobConflictError, match="holds 0") as caught:
        run_batches(range(100), work, batch_size=10, job=name, store=postgres_url, retry=ONCE)
    assert work.calls == [] and "5 dead-lettered" in str(caught.value)
