"""Resumable jobs: checkpoints, resume, conflicts, status, and the crash-safe commit paths.

SQLite and PostgreSQL stores, both engines where the engine matters. Real servers only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from batchguard import (
    BatchProgress,
    BatchStats,
    ConfigError,
    JobConflictError,
    JobError,
    MemoryDLQ,
    RetryPolicy,
    job_status,
    list_jobs,
    run_batches,
)
from batchguard.dlq import JsonlDLQ, PostgresDLQ, SqliteDLQ
from batchguard.jobs import (
    JobNotFoundError,
    JobStatus,
    JobStore,
    JobStoreUnavailableError,
    PostgresJobStore,
    SqliteJobStore,
    fingerprint_records,
    open_job_store,
)
from batchguard.jobs.sql import SqlJobStore
from helpers_jobs import Work, held_elsewhere

ONCE = RetryPolicy(max_attempts=1)
Engine = Literal["native", "python"]
ENGINES = ["native", "python"]


def failing(n: int) -> set[int]:
    return {x for x in range(n) if x % 10 == 3}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def name() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


def dlq_indices(dlq: Any, job: str) -> list[int]:
    return sorted(e.record_index for e in dlq.list(job_id=job))


def store_dlq(store_url: str) -> SqliteDLQ:
    return SqliteDLQ(store_url.removeprefix("sqlite:///"))


# ---------------------------------------------------------------------------- the basics


@pytest.mark.parametrize("engine", ENGINES)
def test_a_new_job_checkpoints_every_batch_and_completes(store_url: str, name: str, engine: Engine) -> None:
    report = run_batches(range(100), Work(), batch_size=10, job=name, store=store_url,
                         retry=ONCE, engine=engine)
    assert (report.status, report.total, report.success_count, report.failure_count) == (
        "partial_success", 100, 90, 10)
    assert report.job_id == name and report.skipped_batches == 0
    state = job_status(name, store=store_url)
    assert (state.status, state.total, state.succeeded, state.failed, state.batches_done) == (
        "completed", 100, 90, 10, 10)
    assert state.progress == 1.0 and state.percent_complete == 100.0 and state.runs == 1
    assert state.finished_at is not None and state.error is None and not state.active
    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
        rows = db.execute("SELECT batch_index, size, succeeded, failed FROM job_batches "
                          "WHERE job = ? ORDER BY batch_index", (name,)).fetchall()
    assert rows == [(b, 10, 9, 1) for b in range(10)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_stopped_by_a_fatal_error_resumes_where_it_stopped(
        store_url: str, name: str, engine: Engine) -> None:
    first = run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=store_url,
                        retry=ONCE, engine=engine)
    assert first.status == "aborted" and first.stopped_reason == "fatal"
    stopped = job_status(name, store=store_url)
    assert (stopped.status, stopped.batches_done, stopped.succeeded, stopped.failed) == (
        "aborted", 5, 45, 5)
    assert "fatal" in (stopped.error or "") and stopped.progress == 0.5

    work = Work()
    second = run_batches(range(100), work, batch_size=10, job=name, store=store_url, retry=ONCE,
                         engine=engine)
    assert second.skipped_batches == 5
    assert (second.total, second.success_count, second.failure_count, second.pending_count) == (50, 45, 5, 0)
    assert sorted(work.calls) == list(range(50, 100))  # finished batches never ran again
    done = job_status(name, store=store_url)
    assert (done.status, done.succeeded, done.failed, done.batches_done, done.runs) == (
        "completed", 90, 10, 10, 2)
    with store_dlq(store_url) as dlq:
        assert dlq_indices(dlq, name) == sorted(failing(100))


def test_a_completed_job_does_not_run_again(store_url: str, name: str) -> None:
    run_batches(range(30), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    work = Work()
    again = run_batches(range(30), work, batch_size=10, job=name, store=store_url, retry=ONCE)
    assert work.calls == []
    assert (again.status, again.total, again.skipped_batches, again.job_id) == ("complete", 0, 3, name)
    assert job_status(name, store=store_url).runs == 1


def test_force_reruns_a_completed_job_from_scratch(store_url: str, name: str) -> None:
    run_batches(range(30), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    work = Work()
    again = run_batches(range(30), work, batch_size=10, job=name, store=store_url, retry=ONCE, force=True)
    assert sorted(work.calls) == list(range(30)) and again.skipped_batches == 0
    state = job_status(name, store=store_url)
    assert (state.status, state.succeeded, state.failed, state.runs) == ("completed", 27, 3, 2)
    with store_dlq(store_url) as dlq:
        assert dlq_indices(dlq, name) == [3, 13, 23]


def test_force_accepts_new_input_and_drops_entries_of_records_that_now_succeed(
        store_url: str, name: str) -> None:
    run_batches(range(30), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    run_batches(range(30), lambda x: x, batch_size=10, job=name, store=store_url, force=True)
    with store_dlq(store_url) as dlq:
        assert dlq.count(job_id=name) == 0
    assert job_status(name, store=store_url).failed == 0


# ---------------------------------------------------------------------------- conflicts


@pytest.mark.parametrize(("change", "message"), [
    ({"records": list(range(1, 101))}, "different input"),
    ({"records": list(range(101))}, "started on 100 records, this input has 101"),
    ({"batch_size": 20}, "batch_size=10"),
    ({"stage": "load"}, "stage='process'"),
])
@pytest.mark.parametrize("finished", [False, True], ids=["aborted", "completed"])
def test_different_input_under_the_same_name_is_a_conflict(
        store_url: str, name: str, change: dict[str, Any], message: str, finished: bool) -> None:
    run_batches(range(100), Work(fatal_at=None if finished else 55), batch_size=10, job=name,
                store=store_url, retry=ONCE)
    args: dict[str, Any] = {"batch_size": 10, "stage": "process", **change}
    records = args.pop("records", list(range(100)))
    work = Work()
    with pytest.raises(JobConflictError, match=message) as caught:
        run_batches(records, work, job=name, store=store_url, retry=ONCE, **args)
    assert "force=True" in str(caught.value)
    assert work.calls == []  # refused before any record ran
    assert isinstance(caught.value, ValueError)


def test_the_same_input_as_a_generator_resumes_a_job_started_from_a_list(store_url: str, name: str) -> None:
    run_batches(list(range(100)), Work(fatal_at=55), batch_size=10, job=name, store=store_url, retry=ONCE)
    report = run_batches((x for x in range(100)), Work(), batch_size=10, job=name, store=store_url,
                         retry=ONCE)
    assert report.skipped_batches == 5
    assert job_status(name, store=store_url).status == "completed"


def test_a_generator_job_learns_its_total_when_it_completes(store_url: str, name: str) -> None:
    run_batches((x for x in range(25)), Work(fatal_at=17), batch_size=10, job=name, store=store_url,
                retry=ONCE)
    stopped = job_status(name, store=store_url)
    assert stopped.total is None and stopped.progress is None and stopped.batches_total is None
    run_batches((x for x in range(25)), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    done = job_status(name, store=store_url)
    assert (done.total, done.batches_total, done.progress) == (25, 3, 1.0)


def test_fingerprint_is_the_same_in_every_process_for_sets_and_objects() -> None:
    code = textwrap.dedent("""
        from batchguard.jobs import fingerprint_records
        class Thing:
            pass
        print(fingerprint_records([{"tags": {"a", "b", "c", "d"}, "b": 1, "a": b"x"}, Thing(), 1.5]))
    """)
    prints = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(prints) == 1
    assert fingerprint_records([{"a": 1, "b": 2}]) == fingerprint_records([{"b": 2, "a": 1}])
    assert fingerprint_records([1, 2]) != fingerprint_records([2, 1])


# ---------------------------------------------------------------------------- status


def test_job_status_shows_the_running_job_and_its_progress(store_url: str, name: str) -> None:
    seen: list[JobStatus] = []

    def watch(progress: BatchProgress) -> None:
        if progress.batches_completed in (3, 6) and len(seen) < 2:
            seen.append(job_status(name, store=store_url))

    run_batches(range(100), Work(), batch_size=10, job=name, store=store_url, retry=ONCE, on_progress=watch)
    assert seen, "on_progress was not called at batch ends"
    assert all(s.status == "running" and s.active for s in seen)
    assert all(0 < s.batches_done < 10 and s.processed == 10 * s.batches_done for s in seen)
    done = job_status(name, store=store_url)
    data = done.to_dict()
    assert {"batch_id", "status", "total", "processed", "failed", "progress"} <= set(data)
    assert (data["batch_id"], data["progress"], data["total"], data["failed"]) == (name, 1.0, 100, 10)
    json.dumps(data)


def test_list_jobs_returns_every_job_most_recent_first(store_url: str) -> None:
    for job in ("first", "second"):
        run_batches(range(5), lambda x: x, job=job, store=store_url)
        time.sleep(0.01)
    assert [s.name for s in list_jobs(store_url)] == ["second", "first"]


def test_an_unknown_job_raises_job_not_found(store_url: str) -> None:
    with pytest.raises(JobNotFoundError, match="no job named 'ghost'"):
        job_status("ghost", store=store_url)


def test_success_rate_below_the_threshold_marks_the_job_failed(store_url: str, name: str) -> None:
    report = run_batches(range(20), Work(), batch_size=10, job=name, store=store_url, retry=ONCE,
                         success_threshold=0.95)
    assert report.status == "failed"
    state = job_status(name, store=store_url)
    assert state.status == "failed" and "below the threshold" in (state.error or "")
    work = Work()
    run_batches(range(20), work, batch_size=10, job=name, store=store_url, retry=ONCE, success_threshold=0.95)
    assert work.calls == []  # every batch is done: nothing to resume


# ---------------------------------------------------------------------------- crash safety


@pytest.fixture
def fail_checkpoint_of_batch(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make the checkpoint commit of one batch raise, as a crash between two writes would."""

    def arm(batch_index: int) -> None:
        original = SqlJobStore._mark_done

        def mark_done(self: SqlJobStore, cur: Any, job: str, run_id: str, stats: Any) -> None:
            if stats.batch_index == batch_index:
                raise OSError("disk gone (simulated)")
            original(self, cur, job, run_id, stats)

        monkeypatch.setattr(SqlJobStore, "_mark_done", mark_done)

    return arm


def test_the_default_dlq_is_the_store_file_and_commits_with_the_checkpoint(
        store_url: str, name: str, fail_checkpoint_of_batch: Callable[[int], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fail_checkpoint_of_batch(2)
    with pytest.raises(OSError, match="simulated"):
        run_batches(range(50), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    with store_dlq(store_url) as dlq:
        # Batch 2's entries rolled back with its checkpoint: neither is there.
        assert dlq_indices(dlq, name) == [3, 13]
    state = job_status(name, store=store_url)
    assert (state.status, state.batches_done) == ("aborted", 2) and "simulated" in (state.error or "")

    monkeypatch.undo()
    run_batches(range(50), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    with store_dlq(store_url) as dlq:
        assert dlq_indices(dlq, name) == [3, 13, 23, 33, 43]
    assert job_status(name, store=store_url).failed == 5


def test_a_separate_dlq_gets_the_entries_before_the_checkpoint(
        store_url: str, name: str, tmp_path: Path, fail_checkpoint_of_batch: Callable[[int], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    dlq_url = f"jsonl:///{tmp_path / 'dead.jsonl'}"
    fail_checkpoint_of_batch(2)
    with pytest.raises(OSError, match="simulated"):
        run_batches(range(50), Work(), batch_size=10, job=name, store=store_url, retry=ONCE, dlq=dlq_url)
    with JsonlDLQ(tmp_path / "dead.jsonl") as dlq:
        assert dlq_indices(dlq, name) == [3, 13, 23]  # sent first, then the commit failed
    assert job_status(name, store=store_url).batches_done == 2

    monkeypatch.undo()
    work = Work()
    run_batches(range(50), work, batch_size=10, job=name, store=store_url, retry=ONCE, dlq=dlq_url)
    assert sorted(work.calls) == list(range(20, 50))  # batch 2 reran: at-least-once
    with JsonlDLQ(tmp_path / "dead.jsonl") as dlq:
        assert dlq_indices(dlq, name) == [3, 13, 23, 33, 43]  # resent, not duplicated


def test_records_that_succeed_on_resume_leave_the_dlq(store_url: str, name: str) -> None:
    # Run 1 stops inside batch 5: 51 and 53 are dead-lettered there, the batch is not done.
    run_batches(range(100), Work(fatal_at=55, also_fail=frozenset({51})), batch_size=10, job=name,
                store=store_url, retry=ONCE)
    with store_dlq(store_url) as dlq:
        assert {51, 53, 55} <= set(dlq_indices(dlq, name))
    # Run 2: 51 and 55 succeed now, 53 still fails.
    run_batches(range(100), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    with store_dlq(store_url) as dlq:
        assert dlq_indices(dlq, name) == sorted(failing(100))
    state = job_status(name, store=store_url)
    assert (state.succeeded, state.failed) == (90, 10)


def test_keyboard_interrupt_marks_the_job_aborted_and_resume_finishes_it(store_url: str, name: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_batches(range(60), Work(interrupt_at=42), batch_size=10, job=name, store=store_url, retry=ONCE)
    state = job_status(name, store=store_url)
    assert state.status == "aborted" and "KeyboardInterrupt" in (state.error or "")
    assert state.batches_done <= 4
    run_batches(range(60), Work(), batch_size=10, job=name, store=store_url, retry=ONCE)
    with store_dlq(store_url) as dlq:
        assert dlq_indices(dlq, name) == sorted(failing(60))
    assert job_status(name, store=store_url).status == "completed"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_resume_with_a_gap_in_the_finished_batches_runs_only_the_missing_ones(
        tmp_path: Path, name: str, engine: Engine) -> None:
    # With concurrency > 1, batch k+1 can be checkpointed before batch k: a crash then leaves
    # a gap, and the resume must run exactly the batches that are not done.
    store_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(300), Work(fatal_at=0), batch_size=50, job=name, store=store_url, retry=ONCE)
    with SqliteJobStore(tmp_path / "jobs.db") as store, store.open_default_dlq() as dlq:  # type: ignore[attr-defined]
        for batch in (1, 3):
            # No failures in them: a failed count needs its entries in the DLQ to resume.
            store.commit_batch(name, "run-earlier", BatchStats(batch, 50, 50, 0, 0, 0.1), [], dlq, [])
    work = Work(slow=0.0002)
    report = run_batches(range(300), work, batch_size=50, concurrency=4, job=name, store=store_url,
                         retry=ONCE, engine=engine)
    assert report.skipped_batches == 2
    assert sorted(work.calls) == [x for x in range(300) if x // 50 in (0, 2, 4, 5)]
    assert job_status(name, store=store_url).status == "completed"


def test_a_memory_dlq_is_refused_for_a_job(store_url: str, name: str) -> None:
    with pytest.raises(ConfigError, match="MemoryDLQ would lose them"):
        run_batches(range(5), lambda x: x, job=name, store=store_url, dlq=MemoryDLQ())


# ---------------------------------------------------------------------------- one run at a time


def test_a_job_cannot_run_twice_at_once_in_one_process(store_url: str, name: str) -> None:
    errors: list[BaseException] = []

    def nested(x: int) -> int:
        if x == 0:
            try:
                run_batches(range(3), lambda y: y, job=name, store=store_url)
            except JobError as exc:
                errors.append(exc)
        return x

    run_batches(range(3), nested, job=name, store=store_url)
    assert len(errors) == 1 and "already running" in str(errors[0])


def check_one_process_at_a_time(store_url: str, job: str) -> None:
    run_batches(range(20), Work(fatal_at=15), batch_size=10, job=job, store=store_url, retry=ONCE)
    assert not job_status(job, store=store_url).active
    with held_elsewhere(store_url, job):
        assert job_status(job, store=store_url).active
        work = Work()
        with pytest.raises(JobError, match="already running in another process"):
            run_batches(range(20), work, batch_size=10, job=job, store=store_url, retry=ONCE)
        assert work.calls == []
    # The holder is gone (a crash would release the lock the same way): the job resumes.
    assert not job_status(job, store=store_url).active
    run_batches(range(20), Work(), batch_size=10, job=job, store=store_url, retry=ONCE)
    assert job_status(job, store=store_url).status == "completed"


def test_a_job_held_by_another_process_is_refused_and_shown_active(store_url: str, name: str) -> None:
    check_one_process_at_a_time(store_url, name)


# ---------------------------------------------------------------------------- stores and URLs


def test_open_job_store_follows_the_sqlalchemy_url_convention(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_job_store("sqlite:///relative.db") as store:  # type: ignore[attr-defined]
        assert isinstance(store, SqliteJobStore)
    assert (tmp_path / "relative.db").exists()
    with open_job_store(f"sqlite:///{tmp_path / 'abs.db'}") as store:  # type: ignore[attr-defined]
        assert store.path == tmp_path / "abs.db"
    assert isinstance(store, JobStore)


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://x", "has scheme 'ftp'"),
    ("jobs.db", "has no scheme"),
    ("sqlite://host/x.db", "has a host"),
    ("sqlite:///", "names no file"),
    ("sqlite:///:memory:", "must outlive the process"),
    ("sqlite:///x.db?mode=ro", "no query parameters"),
])
def test_open_job_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_job_store(url)


def test_open_job_store_refuses_a_path_object_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="write it as a URL"):
        open_job_store(tmp_path / "x.db")  # type: ignore[arg-type]


def test_a_store_object_is_used_as_is_and_left_open(tmp_path: Path, name: str) -> None:
    with SqliteJobStore(tmp_path / "jobs.db") as store:
        run_batches(range(5), lambda x: x, job=name, store=store)
        assert store.get(name) is not None  # still open
        assert [s.name for s in list_jobs(store)] == [name]


def test_an_unopenable_sqlite_store_raises_job_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(JobStoreUnavailableError, match="cannot open the SQLite job store"):
        SqliteJobStore(tmp_path / "missing-dir" / "jobs.db")


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_postgres_job_resumes_and_commits_entries_with_the_checkpoint(
        postgres_url: str, name: str, fail_checkpoint_of_batch: Callable[[int], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    with PostgresJobStore(postgres_url) as store:
        with store.open_default_dlq() as dlq:  # type: ignore[attr-defined]
            assert store._joined(dlq) is dlq
    fail_checkpoint_of_batch(2)
    with pytest.raises(OSError, match="simulated"):
        run_batches(range(100), Work(), batch_size=10, job=name, store=postgres_url, retry=ONCE)
    with PostgresDLQ(postgres_url) as dlq:
        assert dlq_indices(dlq, name) == [3, 13]  # batch 2 rolled back with its checkpoint
    monkeypatch.undo()
    first = run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=postgres_url,
                        retry=ONCE)
    assert first.status == "aborted" and first.skipped_batches == 2
    assert job_status(name, store=postgres_url).batches_done == 5
    work = Work()
    second = run_batches(range(100), work, batch_size=10, job=name, store=postgres_url, retry=ONCE)
    assert second.skipped_batches == 5 and sorted(work.calls) == list(range(50, 100))
    state = job_status(name, store=postgres_url)
    assert (state.status, state.succeeded, state.failed, state.runs) == ("completed", 90, 10, 3)
    with PostgresDLQ(postgres_url) as dlq:
        assert dlq_indices(dlq, name) == sorted(failing(100))
    assert name in [s.name for s in list_jobs(postgres_url)]


@pytest.mark.postgres
def test_postgres_job_refuses_different_input_and_a_second_process(postgres_url: str, name: str) -> None:
    check_one_process_at_a_time(postgres_url, name)
    with pytest.raises(JobConflictError, match="different input"):
        run_batches(range(1, 21), Work(), batch_size=10, job=name, store=postgres_url, retry=ONCE)
    with pytest.raises(JobNotFoundError):
        job_status(f"{name}-missing", store=postgres_url)


@pytest.mark.postgres
def test_postgres_store_with_a_table_prefix_keeps_its_own_tables(postgres_url: str, name: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}_"
    url = f"{postgres_url}?table_prefix={prefix}"
    run_batches(range(5), lambda x: x, job=name, store=url)
    assert [s.name for s in list_jobs(url)] == [name]
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {prefix}jobs").fetchone()  # type: ignore[misc]
        assert n == 1
        conn.execute(f"DROP TABLE {prefix}jobs, {prefix}job_batches")


def test_an_unreachable_postgres_store_fails_fast_without_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(JobStoreUnavailableError) as caught:
        PostgresJobStore("postgresql://app:s3cret@127.0.0.1:1/jobs")
    assert time.monotonic() - started < 10
    assert "127.0.0.1:1/jobs" in str(caught.value) and "s3cret" not in str(caught.value)
    assert isinstance(caught.value, ConnectionError)
