"""Hostile tests of a run on Dask whose batches go out in groups (issue 11 item 3): a worker
SIGKILLed in the middle of a group, on a real LocalCluster of 2 worker processes.

The kill lands while a worker runs a task of several batches (the run's first batches, back
alone, made the next tasks groups): Dask runs the whole task again on the other worker (or the
restarted one). Whatever the DLQ (written by the workers to Redis or PostgreSQL, or by the
driver to SQLite) and with a job's checkpoints, the run must be a local run's: the same
status, counts, values in input order, entries (with their attempts) and per-batch report,
one entry per dead record, every batch checkpointed once with its own counts.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard.dlq import DeadLetter, SqliteDLQ
from batchguard.dlq.urls import open_dlq
from batchguard.jobs import SqliteJobStore
from dask_cluster import WORKERS, dask_client, slow_planned, worker_pids

__all__ = ["dask_client"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(400)

RETRY = RetryPolicy(max_attempts=3, base_delay=0.002, max_delay=0.01, jitter="full", seed=17)
N, BATCH = 720, 6


def _facts(entry: DeadLetter) -> tuple[Any, ...]:
    """What an entry says about its record wherever it was built (not its run, time or file)."""
    return (entry.record_index, entry.record_id, entry.batch_index, entry.payload, entry.error_class,
            entry.error_type, entry.error_message,
            [(a.attempt, a.error_type, a.error_message, a.delay_s) for a in entry.attempts])


def _report_facts(report: batchguard.BatchReport[Any]) -> tuple[Any, ...]:
    return (report.status, report.total, report.success_count, report.failure_count, report.pending_count,
            report.retry_count, report.dlq_count, report.successful,
            [(b.batch_index, b.size, b.succeeded, b.failed, b.retries) for b in report.batches])


def _killer(client: Any, killed: list[int]) -> Any:
    """An ``on_progress`` that SIGKILLs a worker once 4 batches are back: the tasks out then hold
    groups of batches (the first batches went out alone and measured)."""

    def kill(progress: batchguard.BatchProgress) -> None:
        if not killed and progress.batches_completed >= 4:
            pids = sorted(worker_pids(client).values())
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    return kill


@pytest.fixture(params=["redis", "postgresql", "sqlite"])
def dlq_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A DLQ URL: Redis and PostgreSQL are written by the workers, SQLite by the driver."""
    token = uuid.uuid4().hex[:10]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dlq.db'}"
        return
    base = request.getfixturevalue(f"{request.param}_url" if request.param == "redis" else "postgres_url")
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}key_prefix=bg-h2-{token}" if request.param == "redis" else f"{base}{sep}table=bg_h2_{token}"
    yield url
    dlq = open_dlq(url)
    try:
        dlq.remove([entry.id for entry in dlq.list(status="all")])
    finally:
        dlq.close()


def test_a_worker_killed_inside_a_group_gives_a_local_runs_report_and_entries(
        dask_client: Any, dlq_url: str, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    records = [(token, i) for i in range(N)]
    local_dlq = SqliteDLQ(tmp_path / "local.db")
    local = batchguard.run_batches([(token + "-local", i) for i in range(N)], slow_planned, batch_size=BATCH,
                                   retry=RETRY, dlq=local_dlq)
    local_entries = sorted(_facts(e) for e in local_dlq.list(run_id=local.run_id))
    local_dlq.close()
    killed: list[int] = []
    try:
        remote = batchguard.run_batches(records, slow_planned, batch_size=BATCH, retry=RETRY, dlq=dlq_url,
                                        executor=dask_client, on_progress=_killer(dask_client, killed))
    finally:
        dask_client.wait_for_workers(WORKERS, timeout=180)
    assert killed
    assert _report_facts(remote) == _report_facts(local)
    dlq = open_dlq(dlq_url)
    try:
        # Payloads name their own run's token: compare the rest, and the payloads' indexes.
        entries = dlq.list(run_id=remote.run_id)
        assert dlq.count(status="all") == len(entries) == remote.dlq_count
        assert sorted(_facts(e)[:3] + _facts(e)[4:] for e in entries) == [
            facts[:3] + facts[4:] for facts in local_entries]
    finally:
        dlq.close()


def test_a_jobs_checkpoints_are_each_batch_once_after_a_worker_died_inside_a_group(
        dask_client: Any, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    killed: list[int] = []
    try:
        report = batchguard.run_batches([(token, i) for i in range(N)], slow_planned, batch_size=BATCH,
                                        retry=RETRY, job="h2-kill", store=store, executor=dask_client,
                                        on_progress=_killer(dask_client, killed))
    finally:
        dask_client.wait_for_workers(WORKERS, timeout=180)
    assert killed and report.status == "partial_success" and report.pending_count == 0
    with SqliteJobStore(tmp_path / "jobs.db") as opened:
        state = opened.get("h2-kill")
        assert state is not None and state.status == "completed"
        assert state.batches_done == N // BATCH
        assert (state.succeeded, state.failed) == (report.success_count, report.failure_count)
        dlq = opened.open_default_dlq()
        try:
            entries = dlq.list(job_id="h2-kill", status="all")
            assert len(entries) == len({e.record_index for e in entries}) == report.failure_count
        finally:
            dlq.close()
