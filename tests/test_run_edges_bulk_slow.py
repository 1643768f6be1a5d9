"""Slow calls of a bulk fn (issue 10 item 6, leftover): ``CircuitBreaker(slow_call_s=...)`` with
``bulk=True`` times each bulk call, and every record whose outcome that call decides (its value,
or its failure once it stands alone) counts as a slow call when the call took longer than
``slow_call_s``. The breaker's window counts records, so a slow call of n records is n slow
calls. Sync bulk fns were never timed (on either engine); async ones were timed from when
their group was taken, so a bisection's fast calls counted the failed calls before them.

Both engines, sync and async: the slow calls here sleep three times ``slow_call_s`` and the fast
ones return at once. ``slow_call_s`` is 0.2 s, not the 0.05 s of tests/test_slow_call.py: a bulk
call counts once per record, so one fast call held up by a loaded machine would be four slow
calls, enough to open the breaker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import batchguard
from batchguard import CircuitBreaker, RetryPolicy

ENGINES = ("native", "python")
SLOW_S = 0.2


def _breaker() -> CircuitBreaker:
    # Failures alone never open it (threshold 1.0 over 4 calls with at most one failure).
    return CircuitBreaker(failure_rate_threshold=1.0, window=4, minimum_calls=4, open_duration=0.2,
                          half_open_calls=1, slow_call_s=SLOW_S, slow_call_rate_threshold=0.5)


def _bulk(slow: Any, kind: str) -> Any:
    """A bulk fn that raises for record 0 and sleeps 3 x SLOW_S on the calls ``slow(batch)``."""
    def values(batch: list[int]) -> list[int]:
        if 0 in batch:
            raise ValueError("record 0 is bad")
        return [record * 10 for record in batch]

    if kind == "sync":
        def fn(batch: list[int]) -> list[int]:
            if slow(batch):
                time.sleep(3 * SLOW_S)
            return values(batch)
        return fn

    async def afn(batch: list[int]) -> list[int]:
        if slow(batch):
            await asyncio.sleep(3 * SLOW_S)
        return values(batch)
    return afn


def _run(slow: Any, kind: str, engine: str, records: range, concurrency: int = 1) -> Any:
    return batchguard.run_batches(records, _bulk(slow, kind), bulk=True, engine=engine, batch_size=4,
                                  concurrency=concurrency, breaker=_breaker(), retry=RetryPolicy(max_attempts=1))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("concurrency", [1, 2])
def test_slow_bulk_calls_open_the_breaker(engine: str, kind: str, concurrency: int) -> None:
    # Records 1..12 in batches of four; the first batch's call is slow: four slow calls.
    report = _run(lambda batch: 1 in batch, kind, engine, range(1, 13), concurrency)
    assert report.successful == [record * 10 for record in range(1, 13)]
    assert report.breaker_trips >= 1
    assert ("closed", "open") in [(old, new) for _, old, new in report.breaker_events]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_fast_bulk_calls_leave_the_breaker_closed(engine: str, kind: str) -> None:
    report = _run(lambda batch: False, kind, engine, range(1, 41))
    assert report.breaker_trips == 0 and report.breaker_events == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_record_is_timed_by_the_call_that_decided_it(engine: str, kind: str) -> None:
    """[0, 1, 2, 3] fails in one slow call, then its halves and quarters run fast: 0 fails alone,
    1, 2 and 3 succeed. The calls that decided them were fast, so none is a slow call."""
    report = _run(lambda batch: len(batch) > 2, kind, engine, range(4))
    assert report.successful == [10, 20, 30]
    assert report.failure_count == 1
    assert report.breaker_events == [], "the failed whole call's time was counted against its halves"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_both_engines_open_the_breaker_alike(kind: str) -> None:
    """The same calls, slow and fast, give the same breaker transitions on both engines."""
    def slow(batch: list[int]) -> bool:
        return batch[0] in (1, 9)  # the 1st and 3rd batches' calls

    seen = []
    for engine in ENGINES:
        report = _run(slow, kind, engine, range(1, 25))
        seen.append(([(old, new) for _, old, new in report.breaker_events], report.breaker_trips,
                     report.successful))
    assert seen[0] == seen[1]
    assert seen[0][1] >= 1
