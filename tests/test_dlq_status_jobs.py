"""Entry statuses and resumable jobs (issue 9 item 4): skipping (resolving) a job's dead
letters does not make its DLQ look emptied, and a job's replayed entries stay for the audit
trail while the job's totals move."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from batchguard import RetryPolicy, job_status, replay, run_batches
from batchguard.dlq import SqliteDLQ, open_dlq
from helpers_jobs import Work

ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
def name() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("kind", ["sqlite", "jsonl"])
def test_a_job_whose_entries_were_skipped_resumes(tmp_path: Path, name: str, kind: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    dlq = f"sqlite:///{tmp_path / 'dead.db'}" if kind == "sqlite" else f"jsonl:///{tmp_path / 'dead.jsonl'}"
    run_batches(range(100), Work(fatal_at=55), batch_size=10, job=name, store=store, dlq=dlq, retry=ONCE)
    assert job_status(name, store=store).failed == 5
    with open_dlq(dlq) as queue:  # type: ignore[attr-defined]
        skipped = [e.id for e in queue.list(job_id=name, limit=3)]
        assert queue.resolve(skipped, "known bad rows, reported upstream") == 3

    work = Work()
    run_batches(range(100), work, batch_size=10, job=name, store=store, dlq=dlq, retry=ONCE)
    assert sorted(work.calls) == list(range(50, 100))
    state = job_status(name, store=store)
    # Skipped records are still failed ones: resolving triages an entry, it does not run it.
    assert (state.status, state.succeeded, state.failed) == ("completed", 90, 10)
    with open_dlq(dlq) as queue:  # type: ignore[attr-defined]
        assert queue.count(job_id=name, status="resolved") == 3
        assert queue.count(job_id=name) == 7


def test_a_job_replay_marks_entries_replayed_in_the_stores_transaction(tmp_path: Path, name: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"  # the job's DLQ is in the same file by default
    run_batches(range(50), Work(), batch_size=10, job=name, store=store, retry=ONCE)
    assert job_status(name, store=store).failed == 5
    report = replay(store, lambda x: x, retry=ONCE, job_id=name)
    assert report.replayed == 5 and report.jobs_updated == (name,)
    state = job_status(name, store=store)
    assert (state.succeeded, state.failed) == (50, 0)
    with SqliteDLQ(tmp_path / "jobs.db") as queue:
        assert (queue.count(job_id=name), queue.count(job_id=name, status="replayed")) == (0, 5)
