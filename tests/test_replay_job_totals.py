"""A replay that clears a job's dead letters moves them to the job's succeeded total.

Issue 7, defect 14: all 10 entries of a job were replayed successfully and the DLQ was empty,
yet ``job_status`` still said failed=10. A replay now updates the job store of the entries it
removes: the store given as ``replay(..., store=)`` (``dlq retry --store``), or by default the
DLQ's own database when it holds the job store (where a job keeps its dead letters when it is
given no ``dlq``). Only entries of finished (checkpointed) batches were counted in the job's
totals, so only those move; an unfinished batch reruns on resume and is counted then.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner

from batchguard import RetryPolicy, job_status, replay, run_batches
from batchguard.cli import main
from batchguard.dlq import JsonlDLQ, PostgresDLQ, SqliteDLQ
from batchguard.jobs import JobStoreUnavailableError, SqliteJobStore
from helpers_contract import ENGINES

ONCE = RetryPolicy(max_attempts=1)
Engine = Literal["native", "python"]


def fails_on_3(x: int) -> int:
    if x % 10 == 3:
        raise ValueError(f"bad record {x}")
    return x


def fixed(x: int) -> int:
    return x


def fixed_but_13(x: int) -> int:
    if x == 13:
        raise ValueError("13 is still bad")
    return x


@pytest.fixture
def name() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


def totals(job: str, store: str) -> tuple[str, int, int, int]:
    state = job_status(job, store=store)
    return state.status, state.succeeded, state.failed, state.batches_done


def batch_rows(path: Path, job: str) -> list[tuple[int, int, int]]:
    with SqliteJobStore(path) as store:
        return [(int(b), int(s), int(f)) for b, s, f in store._query(
            "SELECT batch_index, succeeded, failed FROM job_batches WHERE job = ? ORDER BY batch_index",
            (job,))]


@pytest.mark.parametrize("engine", ENGINES)
def test_replaying_a_jobs_default_dlq_moves_its_entries_to_succeeded(
        tmp_path: Path, name: str, engine: Engine) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(100), fails_on_3, batch_size=10, job=name, store=store, retry=ONCE, engine=engine)
    assert totals(name, store) == ("completed", 90, 10, 10)

    report = replay(store, fixed, retry=ONCE, engine=engine)  # the job's DLQ is the store's file

    assert (report.removed, report.kept) == (10, 0)
    with SqliteDLQ(tmp_path / "jobs.db") as dlq:
        assert dlq.count(job_id=name) == 0
    assert totals(name, store) == ("completed", 100, 0, 10)
    assert batch_rows(tmp_path / "jobs.db", name) == [(b, 10, 0) for b in range(10)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_partial_replay_moves_only_the_entries_that_left_the_dlq(
        tmp_path: Path, name: str, engine: Engine) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(100), fails_on_3, batch_size=10, job=name, store=store, retry=ONCE, engine=engine)
    report = replay(store, fixed_but_13, retry=ONCE, engine=engine, job_id=name)
    assert (report.removed, report.kept) == (9, 1)
    assert totals(name, store) == ("completed", 99, 1, 10)
    with SqliteDLQ(tmp_path / "jobs.db") as dlq:
        assert [e.record_index for e in dlq.list(job_id=name)] == [13]


def test_a_separate_dlq_updates_the_store_named_by_store(tmp_path: Path, name: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    dlq_url = f"jsonl:///{tmp_path / 'dead.jsonl'}"
    run_batches(range(50), fails_on_3, batch_size=10, job=name, store=store, dlq=dlq_url, retry=ONCE)
    assert totals(name, store) == ("completed", 45, 5, 5)

    replay(dlq_url, fixed, retry=ONCE, store=store)

    with JsonlDLQ(tmp_path / "dead.jsonl") as dlq:
        assert dlq.count() == 0
    assert totals(name, store) == ("completed", 50, 0, 5)


def test_entries_of_an_unfinished_batch_do_not_move_and_the_resume_counts_right(
        tmp_path: Path, name: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"

    def stops_at_55(x: int) -> int:
        if x == 55:
            raise MemoryError("fatal")
        return fails_on_3(x)

    run_batches(range(100), stops_at_55, batch_size=10, job=name, store=store, retry=ONCE)
    # Batches 0-4 are done (5 failures counted); batch 5 left entries for 53 and 55, uncounted.
    assert totals(name, store) == ("aborted", 45, 5, 5)
    report = replay(store, fixed, retry=ONCE)
    assert report.removed == 7
    assert totals(name, store) == ("aborted", 50, 0, 5)  # only the 5 counted ones moved

    run_batches(range(100), fails_on_3, batch_size=10, job=name, store=store, retry=ONCE)
    state = job_status(name, store=store)
    with SqliteDLQ(tmp_path / "jobs.db") as dlq:
        left = dlq.count(job_id=name)
    assert (state.status, state.succeeded, state.failed, left) == ("completed", 95, 5, 5)
    assert state.succeeded + state.failed == state.total


def test_a_store_update_that_fails_leaves_the_entries_in_the_dlq(tmp_path: Path, name: str) -> None:
    # Same database: the removals and the totals commit in one transaction or not at all. The
    # store's update is made to fail for real, by a trigger in the database.
    import sqlite3

    path = tmp_path / "jobs.db"
    store = f"sqlite:///{path}"
    run_batches(range(30), fails_on_3, batch_size=10, job=name, store=store, retry=ONCE)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON job_batches "
                   "BEGIN SELECT RAISE(ABORT, 'store update refused (test trigger)'); END")
    with pytest.raises(JobStoreUnavailableError, match="test trigger"):
        replay(store, fixed, retry=ONCE)
    with SqliteDLQ(path) as dlq:
        assert dlq.count(job_id=name) == 3  # the removal rolled back with the totals
    assert totals(name, store) == ("completed", 27, 3, 3)

    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("DROP TRIGGER refuse")
    replay(store, fixed, retry=ONCE)
    assert totals(name, store) == ("completed", 30, 0, 3)


def test_cli_dlq_retry_updates_the_job(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(20)))
    runner = CliRunner()
    runner.invoke(main, ["run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--job", name,
                         "--max-attempts", "1", "-q"], catch_exceptions=False)
    assert totals(name, "sqlite:///batchguard.db")[1:3] == (10, 10)

    retried = runner.invoke(main, ["dlq", "retry", "--fn", "cli_fns:echo", "--job", name,
                                   "--max-attempts", "1", "-q"], catch_exceptions=False)
    assert retried.exit_code == 0, retried.output
    assert totals(name, "sqlite:///batchguard.db")[1:3] == (20, 0)
    assert f"Job {name!r}" in retried.output and "20 succeeded, 0 dead-lettered" in retried.output


def test_cli_dlq_retry_with_store_updates_a_job_with_a_separate_dlq(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(20)))
    runner = CliRunner()
    runner.invoke(main, ["run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--job", name, "--store",
                         "sqlite:///jobs.db", "--dlq", "jsonl:///dead.jsonl", "--max-attempts", "1",
                         "-q"], catch_exceptions=False)
    assert totals(name, "sqlite:///jobs.db")[1:3] == (10, 10)
    retried = runner.invoke(main, ["dlq", "retry", "--fn", "cli_fns:echo", "--dlq", "jsonl:///dead.jsonl",
                                   "--store", "sqlite:///jobs.db", "--max-attempts", "1", "-q"],
                            catch_exceptions=False)
    assert retried.exit_code == 0, retried.output
    assert totals(name, "sqlite:///jobs.db")[1:3] == (20, 0)


@pytest.mark.postgres
def test_replaying_a_postgres_jobs_dlq_moves_its_entries(postgres_url: str, name: str) -> None:
    run_batches(range(40), fails_on_3, batch_size=10, job=name, store=postgres_url, retry=ONCE)
    assert totals(name, postgres_url) == ("completed", 36, 4, 4)
    with PostgresDLQ(postgres_url) as dlq:
        report = replay(dlq, fixed, retry=ONCE, job_id=name)
        assert dlq.count(job_id=name) == 0
    assert report.removed == 4
    assert totals(name, postgres_url) == ("completed", 40, 0, 4)


def test_a_dlq_file_without_a_job_store_is_left_without_one(tmp_path: Path) -> None:
    # A table of the user's that happens to be called "jobs" is not a job store.
    import sqlite3

    path = tmp_path / "dead.db"
    run_batches(range(20), fails_on_3, dlq=f"sqlite:///{path}", retry=ONCE)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)")
    db.close()
    report = replay(f"sqlite:///{path}", fixed, retry=ONCE)
    assert (report.removed, report.jobs_updated) == (2, ())
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert "job_batches" not in tables
