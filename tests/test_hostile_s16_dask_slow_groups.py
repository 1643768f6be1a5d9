"""Hostile tests of grouped tasks when ``fn``'s time changes under the driver (issue 11 item 3).

The driver sizes a task from the batches back so far: first batches that take no time make the
next tasks the most batches a task may hold (64). When the later records are slow, such a task
held a worker for 64 slow batches (minutes at a second a record) during which the driver heard
nothing of them: no progress, no checkpoint, a driver killed then lost all of that work. A task
now stops starting batches once it has run :data:`~batchguard.executors.grouping.MAX_TASK_SECONDS`
and returns what it ran; the driver sends the rest of its batches again as a task of their own.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard._run.config import EngineConfig
from batchguard.dlq import SqliteDLQ
from batchguard.executors import BatchTask, run_group
from batchguard.policies import Classifier
from dask_cluster import dask_client

__all__ = ["dask_client"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(400)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_after(record: tuple[int, int, float]) -> int:
    """``(i, fast_until, seconds)``: ``i * 3`` at once before ``fast_until``, after ``seconds``
    from there on; ValueError for every ``i % 17 == 3``."""
    i, fast_until, seconds = record
    if i >= fast_until:
        time.sleep(seconds)
    if i % 17 == 3:
        raise ValueError(f"bad {i}")
    return i * 3


def _task(index: int, size: int, seconds: float) -> BatchTask:
    first = index * size
    return BatchTask(run_id=f"slow-{uuid.uuid4().hex[:6]}", job_id=None, batch_index=index, first_index=first,
                     records=[(i, 0, seconds) for i in range(first, first + size)], fn=slow_after,
                     config=EngineConfig(batch_size=size, concurrency=1, retry=RetryPolicy(max_attempts=1),
                                         breaker=None, max_failures=None, seed=1),
                     classifier=Classifier(), stage="process", id_of=None, pickle_payloads=False, bulk=False)


def test_a_task_stops_starting_batches_once_it_ran_its_time() -> None:
    # 64 batches of 0.05 s; a task of 0.12 s runs three at the most (more load: fewer).
    tasks = [_task(index, 1, 0.05) for index in range(64)]
    outcomes = run_group(tasks, max_seconds=0.12)
    assert 1 <= len(outcomes) <= 3
    assert [o.stats.batch_index for o in outcomes] == list(range(len(outcomes)))
    assert run_group(tasks[:2], max_seconds=0.0)[0].stats.batch_index == 0  # the first always runs


@pytest.mark.parametrize("shape", ["generator"])  # a list takes the same resend path (CI time)
def test_records_that_turn_slow_inside_big_groups_run_once_each_as_locally(
        dask_client: Any, tmp_path: Path, shape: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="batchguard")
    # The first 300 records take no time (tasks of dozens of batches follow), the rest 50 ms.
    n, fast_until, batch_size = 540, 300, 3
    records = [(i, fast_until, 0.05) for i in range(n)]
    runs = {}
    for where, executor, concurrency in (("local", None, 4), ("cluster", dask_client, 1)):
        dlq = SqliteDLQ(tmp_path / f"{where}.db")
        given = list(records) if shape == "list" else (r for r in records)
        report = batchguard.run_batches(given, slow_after, batch_size=batch_size, retry=RetryPolicy(max_attempts=1),
                                        dlq=dlq, executor=executor, concurrency=concurrency)
        runs[where] = (report.status, report.success_count, report.failure_count, report.pending_count,
                       report.successful, [(b.batch_index, b.size, b.succeeded, b.failed) for b in report.batches],
                       sorted((e.record_index, e.batch_index, e.error_message) for e in dlq.list(run_id=report.run_id)))
        dlq.close()
    assert runs["cluster"] == runs["local"]
    # Tasks sized on the fast records ran out of time on the slow ones and came back part-run.
    assert any("go out again" in record.getMessage() for record in caplog.records)
