"""A finished async run is garbage: nothing keeps its records or recorder alive
(issue 7 defect 8).

A failed record's exception holds a traceback, whose frames hold the worker coroutines, which
hold the run object: a reference cycle. The native ``AsyncRun`` must let the garbage
collector see its references (``__traverse__``/``__clear__``), or every async run with
failures leaks its recorder and every record it read.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

import batchguard
from batchguard import MemoryDLQ, RetryPolicy
from helpers_contract import ENGINES

both = pytest.mark.parametrize("engine", ENGINES)


class Record:
    __slots__ = ("__weakref__", "index")

    def __init__(self, index: int) -> None:
        self.index = index


async def _fails_on_odd(record: Record) -> int:
    await asyncio.sleep(0)
    if record.index % 2:
        raise ValueError(f"odd {record.index}")
    return record.index


async def _retried_then_fails(record: Record) -> int:
    raise ConnectionError(f"down {record.index}")  # RECOVERABLE: retried, then dead-lettered


def _collected(refs: list[weakref.ref[Record]]) -> int:
    gc.collect()
    return sum(ref() is None for ref in refs)


@both
@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("dlq", [None, "memory"])
def test_an_async_run_with_failures_is_collected(engine: str, concurrency: int, dlq: str | None) -> None:
    records = [Record(i) for i in range(40)]
    refs = [weakref.ref(r) for r in records]
    report = asyncio.run(batchguard.arun_batches(
        records, _fails_on_odd, engine=engine, concurrency=concurrency, batch_size=8,
        retry=RetryPolicy(max_attempts=1), dlq=MemoryDLQ() if dlq else None))
    assert report.failure_count == 20
    del report, records
    assert _collected(refs) == len(refs), "records of a finished async run are still alive"


@both
def test_an_async_run_with_retried_failures_is_collected(engine: str) -> None:
    records = [Record(i) for i in range(10)]
    refs = [weakref.ref(r) for r in records]
    report = batchguard.run_batches(records, _retried_then_fails, engine=engine, concurrency=3,
                                    retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    assert report.failure_count == 10 and report.retry_count == 10
    del report, records
    assert _collected(refs) == len(refs)


@both
def test_an_async_run_stopped_by_an_error_is_collected(engine: str) -> None:
    """The run object is cleared even when it ends with an error, records in flight included."""
    records = [Record(i) for i in range(30)]
    refs = [weakref.ref(r) for r in records]

    async def fn(record: Record) -> int:
        await asyncio.sleep(0)
        if record.index == 12:
            raise SystemExit(3)
        if record.index % 3 == 0:
            raise ValueError("bad")
        return record.index

    with pytest.raises(SystemExit):
        asyncio.run(batchguard.arun_batches(records, fn, engine=engine, concurrency=4, batch_size=5,
                                            retry=RetryPolicy(max_attempts=1)))
    del records
    assert _collected(refs) == len(refs)
