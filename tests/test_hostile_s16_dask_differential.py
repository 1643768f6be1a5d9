"""Hostile differential tests of a run on Dask whose batches go out in groups (issue 11 item 3),
against the same run locally, on a real LocalCluster of 2 worker processes.

``fn`` is fast here, so after the first batches (sent alone) the driver groups the most it may
(up to 64 batches a task): random failure plans over lists and generators (unknown length: no
shrinking at the end), ``batch_size=1``, a batch larger than the input, an input shorter than
one group, and jittered retries must give a local run's status, counts, values in input order,
per-batch rows and DLQ entries with their attempts. A run that stops (a FATAL error inside a
group, a rate budget) cannot be the local run record for record (batches run at once on two
workers), but it must account for every record once and keep each value its record's.
"""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import batchguard
from batchguard import Classifier, ErrorClass, RetryPolicy
from batchguard.dlq import DeadLetter, SqliteDLQ
from dask_cluster import dask_client

__all__ = ["dask_client"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(400)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

KINDS = ("ok", "ok", "ok", "ok", "bad", "down", "flaky")


def by_plan(record: tuple[str, int, str, int]) -> int:
    """``(token, i, kind, tries_needed)``: "ok" returns ``i * 7``; "bad" raises ValueError
    (PERMANENT); "down" raises ConnectionError every time (retried until its attempts run out);
    "flaky" raises ConnectionError until its call number ``tries_needed`` (calls counted per
    process and token); "fatal" raises PermissionError (FATAL under :data:`CLASSIFIER`)."""
    token, i, kind, needed = record
    if kind == "bad":
        raise ValueError(f"record {i} is malformed")
    if kind == "down":
        raise ConnectionError(f"service refused record {i}")
    if kind == "fatal":
        raise PermissionError(f"credentials revoked at record {i}")
    if kind == "flaky":
        key = (token, i)
        _calls[key] = _calls.get(key, 0) + 1
        if _calls[key] < needed:
            raise ConnectionError(f"flaky record {i}, call {_calls[key]}")
    return i * 7


_calls: dict[tuple[str, int], int] = {}

CLASSIFIER = Classifier.default().with_rule(PermissionError, ErrorClass.FATAL)


def _plan(seed: int, n: int) -> list[tuple[str, int, str, int]]:
    rng = random.Random(seed)
    token = uuid.uuid4().hex
    return [(token, i, rng.choice(KINDS), rng.randint(1, 4)) for i in range(n)]


def _facts(entry: DeadLetter) -> tuple[Any, ...]:
    return (entry.record_index, entry.record_id, entry.batch_index, entry.error_class, entry.error_type,
            entry.error_message, [(a.attempt, a.error_type, a.error_message, a.delay_s) for a in entry.attempts])


def _run(records: Any, executor: Any, tmp: Path, **options: Any) -> tuple[Any, ...]:
    dlq = SqliteDLQ(tmp / f"{uuid.uuid4().hex}.db")
    try:
        report = batchguard.run_batches(records, by_plan, dlq=dlq, executor=executor, **options)
        entries = sorted(_facts(e) for e in dlq.list(run_id=report.run_id, status="all"))
    finally:
        dlq.close()
    return (report.status, report.total, report.success_count, report.failure_count, report.pending_count,
            report.retry_count, report.dlq_count, report.successful,
            [(b.batch_index, b.size, b.succeeded, b.failed, b.retries) for b in report.batches], entries)


def _twice(plan: list[tuple[str, int, str, int]], shape: str) -> Iterator[Any]:
    """The same records for the local run and the cluster's, each with a token of its own (a
    flaky record's calls are counted per token)."""
    for token in (uuid.uuid4().hex, uuid.uuid4().hex):
        records = [(token, i, kind, needed) for _, i, kind, needed in plan]
        yield records if shape == "list" else (record for record in records)


@pytest.mark.parametrize(("seed", "n", "batch_size", "shape", "jitter"), [
    (1, 400, 1, "list", "none"),
    (2, 500, 4, "generator", "full"),
    (3, 300, 13, "list", "decorrelated"),
    (4, 700, 2, "generator", "equal"),
    (5, 9, 2, "list", "full"),       # shorter than one group
    (6, 50, 10_000, "generator", "none"),  # one batch larger than the input
])
def test_a_random_failure_plan_runs_on_the_cluster_as_locally(
        dask_client: Any, tmp_path: Path, seed: int, n: int, batch_size: int, shape: str, jitter: str) -> None:
    plan = _plan(seed, n)
    retry = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.003, jitter=jitter, seed=seed)
    local_records, remote_records = _twice(plan, shape)
    local = _run(local_records, None, tmp_path, batch_size=batch_size, retry=retry)
    remote = _run(remote_records, dask_client, tmp_path, batch_size=batch_size, retry=retry)
    assert remote == local


@pytest.mark.parametrize("shape", ["list", "generator"])
def test_a_fatal_error_inside_a_group_stops_the_run_and_accounts_for_every_record(
        dask_client: Any, tmp_path: Path, shape: str) -> None:
    plan = _plan(7, 3000)
    plan = [(token, i, "ok" if kind == "fatal" else kind, needed) for token, i, kind, needed in plan]
    plan[1800] = (plan[1800][0], 1800, "fatal", 1)  # far enough in for the tasks to be groups
    retry = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002, jitter="none")
    _, remote_records = _twice(plan, shape)
    dlq = SqliteDLQ(tmp_path / "fatal.db")
    report = batchguard.run_batches(remote_records, by_plan, batch_size=5, retry=retry, classifier=CLASSIFIER,
                                    dlq=dlq, executor=dask_client)
    try:
        assert report.status == "aborted"
        fatal = [e for e in dlq.list(run_id=report.run_id) if e.record_index == 1800]
        assert [(e.error_class, e.error_type) for e in fatal] == [("fatal", "PermissionError")]
        assert report.success_count + report.failure_count + report.pending_count == report.total
        assert report.pending_count > 0  # batches queued behind the fatal one were not run
        # Each batch in the report once, whole: its rows add up to the run's counts.
        rows = [(b.batch_index, b.size, b.succeeded, b.failed) for b in report.batches]
        assert len({row[0] for row in rows}) == len(rows)
        assert sum(row[2] for row in rows) == report.success_count
        assert sum(row[3] for row in rows) == report.failure_count == report.dlq_count
        # The values are those of the records that succeeded, in input order.
        assert report.successful == sorted(report.successful)
        assert all(value % 7 == 0 and plan[value // 7][2] in ("ok", "flaky") for value in report.successful)
    finally:
        dlq.close()


def test_a_rate_budget_stops_the_run_and_accounts_for_every_record(dask_client: Any, tmp_path: Path) -> None:
    plan = _plan(8, 3000)
    # Clean for the first 1000 records (grouping sets in), then one in three is bad.
    plan = [(token, i, "ok" if i < 1000 or i % 3 else "bad", 1) for token, i, _, _ in plan]
    local_records, remote_records = _twice(plan, "list")
    local = batchguard.run_batches(local_records, by_plan, batch_size=5,
                                   retry=RetryPolicy(max_attempts=1), max_failures=0.1)
    report = batchguard.run_batches(remote_records, by_plan, batch_size=5, retry=RetryPolicy(max_attempts=1),
                                    max_failures=0.1, executor=dask_client)
    assert report.status == local.status == "aborted"
    assert report.success_count + report.failure_count + report.pending_count == 3000
    assert report.failure_count / (report.success_count + report.failure_count) > 0.1
    assert report.successful == sorted(report.successful)
