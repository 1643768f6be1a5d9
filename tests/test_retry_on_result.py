"""``RetryPolicy(retry_on_result=...)`` (issue 10 item 2): a returned value the predicate rejects
(an empty page, a "pending" status) is retried as a RECOVERABLE failure, and dead-lettered with
ResultRejected (the value's repr in its message) when its attempts run out. Both engines; a
sync fn (inline and threaded), an ``async def`` fn and a bulk fn.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import batchguard
from batchguard import Classifier, ErrorClass, MemoryDLQ, ResultRejected, RetryPolicy
from helpers_contract import ENGINES


def pending(value: Any) -> bool:
    return value == {"status": "pending"}


class Job:
    """Record r answers "pending" for its first ``r`` calls, then "done"."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self._lock = threading.Lock()

    def status(self, record: int) -> dict[str, Any]:
        with self._lock:
            n = self.calls[record] = self.calls.get(record, 0) + 1
        return {"status": "pending"} if n <= record else {"status": "done", "id": record}

    def __call__(self, record: int) -> dict[str, Any]:
        return self.status(record)


POLICY = RetryPolicy(max_attempts=3, base_delay=0.0, jitter="none", retry_on_result=pending)


def _check(report: Any, job: Job, dlq: MemoryDLQ) -> None:
    assert job.calls == {0: 1, 1: 2, 2: 3, 3: 3, 4: 3}
    assert report.successful == [{"status": "done", "id": r} for r in range(3)]
    assert report.retry_count == 1 + 2 + 2 + 2
    entries = sorted(dlq.list(), key=lambda e: e.record_index)
    assert [e.record_index for e in entries] == [3, 4]
    for entry in entries:
        assert entry.error_type == "ResultRejected"
        assert entry.error_class == "recoverable"
        assert entry.error_message == "retry_on_result rejected the value fn returned: {'status': 'pending'}"
        assert len(entry.attempts) == 3


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_rejected_value_is_retried_then_dead_lettered(engine: str, concurrency: int) -> None:
    job, dlq = Job(), MemoryDLQ()
    report = batchguard.run_batches(range(5), job, engine=engine, concurrency=concurrency, retry=POLICY, dlq=dlq)
    _check(report, job, dlq)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_async_fns_value_is_judged_too(engine: str) -> None:
    job, dlq = Job(), MemoryDLQ()

    async def fn(record: int) -> dict[str, Any]:
        await asyncio.sleep(0)
        return job.status(record)

    report = batchguard.run_batches(range(5), fn, engine=engine, concurrency=2, retry=POLICY, dlq=dlq)
    _check(report, job, dlq)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bulk_fns_rejected_value_is_narrowed_down_to_its_record(engine: str) -> None:
    """One rejected value fails the call; bisection finds the record, whose own retries the
    policy counts (its neighbours are called again by the bisection, as for an exception)."""
    calls: list[list[int]] = []

    def fn(records: list[int]) -> list[Any]:
        calls.append(list(records))
        return [[] if r == 2 else [r] for r in records]

    empty = RetryPolicy(max_attempts=2, base_delay=0.0, retry_on_result=lambda v: v == [])
    report = batchguard.run_batches(range(4), fn, engine=engine, bulk=True, batch_size=4, retry=empty)
    assert report.successful == [[0], [1], [3]]
    assert [(e.record_index, e.error_type, e.attempts) for e in report.errors] == [(2, "ResultRejected", 2)]
    assert [2] in calls


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rejection_can_have_a_policy_of_its_own(engine: str) -> None:
    job = Job()
    retry = batchguard.RetryPolicies(default=POLICY, by_error={ResultRejected: RetryPolicy(max_attempts=5,
                                                                                           base_delay=0.0)})
    report = batchguard.run_batches(range(5), job, engine=engine, retry=retry)
    assert job.calls == {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}
    assert report.success_count == 5


@pytest.mark.parametrize("engine", ENGINES)
def test_the_users_rule_for_a_rejection_wins(engine: str) -> None:
    """A classifier that says a rejected value is PERMANENT: it is not retried."""
    job = Job()
    classifier = Classifier.default().with_rule(ResultRejected, ErrorClass.PERMANENT)
    report = batchguard.run_batches(range(3), job, engine=engine, retry=POLICY, classifier=classifier)
    assert job.calls == {0: 1, 1: 1, 2: 1}
    assert [e.error_class for e in report.errors] == ["permanent", "permanent"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_predicate_that_raises_fails_the_attempt_with_its_error(engine: str) -> None:
    def broken(value: Any) -> bool:
        raise TypeError("cannot judge this value")

    report = batchguard.run_batches([1], lambda r: r, engine=engine,
                                    retry=RetryPolicy(base_delay=0.0, retry_on_result=broken))
    assert [(e.error_type, e.error_class, e.attempts) for e in report.errors] == [("TypeError", "permanent", 1)]


def test_a_long_rejected_value_is_shortened_in_the_message() -> None:
    error = ResultRejected("x" * 1000)
    assert len(str(error)) < 260
    assert error.value_repr.endswith("...")


class Counted:
    """An item whose repr is counted."""

    reprs = 0

    def __repr__(self) -> str:
        Counted.reprs += 1
        return "Counted()"


def test_a_large_rejected_value_is_not_repr_d_whole() -> None:
    """ResultRejected built the value's whole repr, then kept 200 characters: a rejected page
    of 100,000 items cost a 1 MB string (and 100,000 __repr__ calls) per attempt."""
    Counted.reprs = 0
    error = ResultRejected([Counted() for _ in range(100_000)])
    assert Counted.reprs < 100
    assert str(error).startswith("retry_on_result rejected the value fn returned: [Counted(), Counted(), ")
    assert len(error.value_repr) <= 200
    assert ResultRejected({"status": "pending"}).value_repr == "{'status': 'pending'}"
