"""The native engine runs a sync bulk fn on its threaded driver (``_native.run(bulk=True)``, one
worker at concurrency 1) with the same outcomes and the same bulk calls as the reference engine,
which runs it on its own sync drivers (``reference/bulk.py``: inline at concurrency 1, worker
threads at N); neither goes through asyncio."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

import batchguard
from batchguard import MemoryDLQ, RetryPolicy, _native
from batchguard._run.execute import _report, recorder_for
from batchguard._run.plan import make_plan


def _bulk_fn(bad: set[int], calls: list[int], short_at: int | None) -> Any:
    lock = threading.Lock()

    def fn(records: list[int]) -> list[int]:
        with lock:
            calls.append(len(records))
        if any(r in bad for r in records):
            raise ValueError(f"poison among {len(records)}")
        if short_at is not None and short_at in records and len(records) > 1:
            return [r * 2 for r in records][:-1]  # one result short: BulkResultError
        return [r * 2 for r in records]

    return fn


def _native_bulk(records: list[int], fn: Any, **options: Any) -> batchguard.BatchReport:
    plan = make_plan(records, fn, bulk=True, **options)
    recorder = recorder_for(plan, None, None, None)
    outcome = _native.run(plan.records, plan.fn, plan.config, plan.classifier, recorder, plan.total,
                          bulk=True)
    return _report(plan, recorder, outcome, frozenset())


def _outcome(report: batchguard.BatchReport) -> tuple[Any, ...]:
    return (report.status, report.success_count, report.failure_count, report.pending_count,
            report.successful, [(e.record_index, e.error_type) for e in report.errors])


@pytest.mark.parametrize("trial", range(12))
def test_the_threaded_bulk_driver_matches_the_reference_engine_record_for_record_and_call_for_call(
        trial: int) -> None:
    rng = random.Random(trial)
    n = rng.randint(0, 300)
    bad = set(rng.sample(range(n), min(n, rng.randint(0, 6))))
    short_at = rng.choice([None, rng.randint(0, n - 1) if n else None])
    options: dict[str, Any] = dict(concurrency=rng.choice([1, 2, 4, 8]), batch_size=rng.choice([1, 7, 32, 100]),
                   retry=RetryPolicy(max_attempts=rng.choice([1, 2, 3]), base_delay=0.0))
    calls_reference: list[int] = []
    # The reference engine runs a sync bulk fn on its own sync drivers (reference/bulk.py).
    expected = batchguard.run_batches(list(range(n)), _bulk_fn(bad, calls_reference, short_at),
                                      bulk=True, engine="python", **options)
    calls_native: list[int] = []
    got = _native_bulk(list(range(n)), _bulk_fn(bad, calls_native, short_at), **options)
    assert _outcome(got) == _outcome(expected)
    if options["concurrency"] == 1:  # one group at a time: the same calls in the same order
        assert calls_native == calls_reference
    else:
        assert sorted(calls_native) == sorted(calls_reference)


def test_poison_rows_are_found_by_bisection_within_the_bound() -> None:
    bad = set(range(0, 10_000, 500))  # 20 poison rows
    calls: list[int] = []
    report = _native_bulk(list(range(10_000)), _bulk_fn(bad, calls, None), concurrency=4,
                          batch_size=1000, retry=RetryPolicy(max_attempts=1))
    assert report.failure_count == 20 and report.success_count == 9_980
    assert len(calls) <= 2 * 20 * 14 + 1  # 2·k·log2(n) + 1


@pytest.mark.parametrize("stop", [KeyboardInterrupt, asyncio.CancelledError])
def test_an_interrupt_in_a_bulk_call_stops_the_run_and_flushes_the_dead_letters(
        stop: type[BaseException]) -> None:
    def fn(records: list[int]) -> list[int]:
        if 150 in records:
            raise stop()
        if 3 in records:
            raise ValueError("bad")
        return records

    dlq = MemoryDLQ()
    with pytest.raises(stop):
        # One worker: batch 0 (record 3) is bisected before batch 3 (record 150) starts.
        _native_bulk(list(range(300)), fn, concurrency=1, batch_size=50, dlq=dlq,
                     retry=RetryPolicy(max_attempts=1))
    assert [entry.record_index for entry in dlq.list()] == [3]
