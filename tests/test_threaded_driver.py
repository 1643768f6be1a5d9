"""The threaded native driver under the conditions that broke it before: Python code that runs
while objects die (``__del__``), and cancellation in the middle of a bulk bisection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

import batchguard
from batchguard import RetryPolicy

_DEL_RELEASES_THE_GIL = textwrap.dedent("""
    import time, batchguard

    class ReleasesTheGil:
        def __del__(self):
            time.sleep(0.002)  # a __del__ that blocks: it gives the GIL to another thread

    def fn(record):
        doomed = ReleasesTheGil()  # dies with the traceback of the exception below
        raise ValueError(record)

    # More failures than the 100 whose tracebacks a run keeps: the rest are stripped, which
    # frees those frames, which runs __del__.
    report = batchguard.run_batches(list(range(400)), fn, concurrency=4, batch_size=50)
    assert report.failure_count == 400, report.failure_count
    print("ok")
""")


def test_a_del_that_releases_the_gil_while_tracebacks_are_stripped_cannot_deadlock() -> None:
    # In a subprocess with a deadline: a regression would hang, and must fail instead.
    done = subprocess.run([sys.executable, "-c", _DEL_RELEASES_THE_GIL], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_bisection_interrupted_halfway_leaves_no_record_in_flight(engine: str) -> None:
    calls: list[int] = []

    async def bulk(rows: list[int]) -> list[int]:
        calls.append(len(rows))
        if len(rows) == 4 and 0 in rows:
            raise KeyboardInterrupt  # during the first half of the bisection
        if 5 in rows:
            raise ValueError("poison")
        return rows

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(list(range(8)), bulk, bulk=True, batch_size=8, engine=engine,
                               retry=RetryPolicy(max_attempts=1))
    assert calls[:2] == [8, 4], "the whole batch failed, then its first half was tried"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("engine", ["python", "native"])
def test_an_interrupted_bisection_keeps_the_conservation_law(engine: str) -> None:
    dlq = batchguard.MemoryDLQ()

    async def bulk(rows: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if rows == [0, 1]:
            raise KeyboardInterrupt  # two levels down: [2, 3] and [4..7] are still untouched
        if 1 in rows:
            raise ValueError("poison")
        return rows

    with pytest.raises(KeyboardInterrupt):
        # Two workers: the other one waits for the untouched halves to finish, so they must
        # leave the in-flight count (abandoned: pending), or it waits forever.
        batchguard.run_batches(list(range(8)) + list(range(100, 108)), bulk, bulk=True,
                               batch_size=8, concurrency=2, engine=engine, dlq=dlq,
                               retry=RetryPolicy(max_attempts=1))
    # Nothing after the interrupt was dead-lettered, and nothing was lost in flight: the run
    # returned (it did not wait forever for the untouched half).
    assert dlq.count() == 0
