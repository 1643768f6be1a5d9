"""Idle worker threads of the reference engine wait to be woken, not on a short poll (issue 11
item 6, leftover): with ``concurrency=Adaptive(max=1024)`` and a sync fn, the adaptive limit keeps
most of the 1024 threads idle, and each woke every progress interval (0.1 s) to ask the scheduler
for work it would not get: about 10,000 asks per second of run, ~2.5 s of CPU for a run whose fn
only sleeps. The native engine parks them until an outcome gives one something to do.

Counted, not timed: how often workers ask the scheduler for work (``Scheduler.next_work``),
against a bound that holds on a loaded machine too, because it grows with the run's wall time
at the rate of the safety-net recheck (one ask per idle worker per second), ten times slower
than the old poll.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import batchguard
from batchguard import Adaptive
from batchguard.reference import drivers
from batchguard.reference.scheduler import Scheduler

RECORDS = 300
MAX = 1024
NAP_S = 0.2


@pytest.mark.timeout(120)
def test_idle_reference_workers_do_not_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = [0]
    lock = threading.Lock()
    real = Scheduler.next_work

    def counting(self: Scheduler, now: float) -> Any:
        with lock:
            asked[0] += 1
        return real(self, now)

    monkeypatch.setattr(Scheduler, "next_work", counting)

    def nap(record: int) -> int:
        time.sleep(NAP_S)
        return record

    started = time.monotonic()
    cpu = time.process_time()
    report = batchguard.run_batches(range(RECORDS), nap, engine="python", concurrency=Adaptive(max=MAX),
                                    batch_size=100)
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu
    assert report.successful == list(range(RECORDS))
    # Per record: the ask that takes it, the wake its outcome makes, the wake passed on when it
    # was taken, the wake its batch's read made (at most four); plus each worker's first and
    # last ask, plus the safety-net recheck of every idle worker once per IDLE_RECHECK_S. The
    # old poll asked MAX / 0.1 s times per second.
    bound = 4 * RECORDS + 2 * MAX + MAX * (wall / drivers.IDLE_RECHECK_S + 1)
    assert asked[0] <= bound, (f"{asked[0]} asks for work in {wall:.2f} s (bound {bound:.0f}; "
                               f"{cpu:.2f} s of CPU): idle workers are polling")


def test_a_retry_timer_still_wakes_an_idle_worker() -> None:
    """Workers waiting for a retry's delay wake when it is due, not a recheck later."""
    failed: set[int] = set()

    def once(record: int) -> int:
        if record not in failed:
            failed.add(record)
            raise ConnectionError("try again")
        return record

    started = time.monotonic()
    report = batchguard.run_batches(range(4), once, engine="python", concurrency=4,
                                    retry=batchguard.RetryPolicy(max_attempts=2, base_delay=0.01, jitter="none"))
    assert report.successful == [0, 1, 2, 3]
    assert time.monotonic() - started < 60  # never a hang; the contract tests check the timing
