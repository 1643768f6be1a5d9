"""The threaded native driver under the conditions that broke it before: Python code that runs
while objects die (``__del__``), and cancellation in the middle of a bulk bisection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

import batchguard
from batchguard import BatchProgress, RetryPolicy

_DEL_RELEASES_THE_GIL = textwrap.dedent("""
    import time, batchguard

    deleted = 0

    class ReleasesTheGil:
        def __del__(self):
            global deleted
            deleted += 1
            time.sleep(0.002)  # a __del__ that blocks: it gives the GIL to another thread

    def fn(record):
        doomed = ReleasesTheGil()  # dies with the traceback of the exception below
        raise ValueError(record)

    # More failures than the 100 whose tracebacks a run keeps: the rest are stripped, which
    # frees those frames, which runs __del__.
    report = batchguard.run_batches(list(range(400)), fn, concurrency=4, batch_size=50)
    deleted_during_run = deleted
    assert report.successful == [], report.successful
    assert sorted(e.record_index for e in report.errors) == list(range(400)), report.errors
    assert {e.error_type for e in report.errors} == {"ValueError"}, report.errors_by_type
    kept = sum(entry.traceback is not None for entry in report.dead_letters)
    # The scenario really happened: every traceback past the kept ones was stripped during the
    # run, and each stripping ran a __del__ that released the GIL.
    assert (kept, deleted_during_run) == (100, 300), (kept, deleted_during_run)
    print("ok")
""")


def test_a_del_that_releases_the_gil_while_tracebacks_are_stripped_cannot_deadlock() -> None:
    # In a subprocess with a deadline: a regression would hang, and must fail instead.
    done = subprocess.run([sys.executable, "-c", _DEL_RELEASES_THE_GIL], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


class _Progress:
    """Every progress snapshot, with how many bulk calls had been made when it was taken."""

    def __init__(self, calls: list[list[int]]) -> None:
        self._calls = calls
        self.snapshots: list[tuple[int, BatchProgress]] = []

    def __call__(self, progress: BatchProgress) -> None:
        self.snapshots.append((len(self._calls), progress))

    def final(self) -> BatchProgress:
        """The snapshot the run reported as it stopped: taken after the last call."""
        assert self.snapshots, "the run reported no progress"
        calls_then, progress = self.snapshots[-1]
        assert calls_then == len(self._calls), "no snapshot was taken after the interrupt"
        return progress


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_bisection_interrupted_halfway_leaves_no_record_in_flight(engine: str) -> None:
    calls: list[list[int]] = []
    progress = _Progress(calls)
    dlq = batchguard.MemoryDLQ()

    async def bulk(rows: list[int]) -> list[int]:
        calls.append(list(rows))
        if len(rows) == 4 and 0 in rows:
            raise KeyboardInterrupt  # during the first half of the bisection
        if 5 in rows:
            raise ValueError("poison")
        return rows

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(list(range(8)), bulk, bulk=True, batch_size=8, engine=engine, dlq=dlq,
                               retry=RetryPolicy(max_attempts=1), on_progress=progress)
    # The whole batch failed, then its first half was tried and interrupted; the second half
    # (with the poison record) never started.
    assert calls == [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3]]
    assert dlq.list() == [], "an interrupted or untouched record was dead-lettered"
    final = progress.final()
    # Neither half is left in flight: all 8 records are pending (not succeeded, not failed).
    assert (final.in_flight, final.queued, final.retrying) == (0, 0, 0), final
    assert (final.succeeded, final.failed, final.records_processed, final.total) == (0, 0, 0, 8), final


# A regression here hangs the run (a worker waits forever for records left in flight), and
# the engine's own interrupt handling would absorb the signal method's timeout: the thread
# method ends the process instead, so the hang fails here and does not stall the whole suite.
@pytest.mark.timeout(30, method="thread")
@pytest.mark.parametrize("engine", ["python", "native"])
def test_an_interrupted_bisection_keeps_the_conservation_law(engine: str) -> None:
    calls: list[list[int]] = []
    returned: list[int] = []
    progress = _Progress(calls)
    dlq = batchguard.MemoryDLQ()

    async def bulk(rows: list[int]) -> list[int]:
        calls.append(list(rows))
        await asyncio.sleep(0)
        if rows == [0, 1]:
            raise KeyboardInterrupt  # two levels down: [2, 3] and [4..7] are still untouched
        if 1 in rows:
            raise ValueError("poison")
        returned.extend(rows)
        return rows

    records = list(range(8)) + list(range(100, 108))
    with pytest.raises(KeyboardInterrupt):
        # Two workers: the other one waits for the untouched halves to finish, so they must
        # leave the in-flight count (abandoned: pending), or it waits forever.
        batchguard.run_batches(records, bulk, bulk=True, batch_size=8, concurrency=2, engine=engine,
                               dlq=dlq, retry=RetryPolicy(max_attempts=1), on_progress=progress)
    # The first batch bisected down to [0, 1] and stopped there; the second ran once, whole.
    assert [rows for rows in calls if rows[0] < 100] == [list(range(8)), [0, 1, 2, 3], [0, 1]]
    assert [rows for rows in calls if rows[0] >= 100] == [list(range(100, 108))]
    # Conservation: each of the 16 records succeeded (the second batch), was dead-lettered
    # (none: nothing after the interrupt is) or is pending (the whole first batch), and the run
    # returned with none of them in flight.
    dead_lettered = [entry.record_index for entry in dlq.list()]
    final = progress.final()
    assert sorted(returned) == list(range(100, 108))
    assert dead_lettered == []
    assert (final.succeeded, final.failed) == (len(returned), len(dead_lettered)), final
    assert (final.in_flight, final.queued, final.retrying) == (0, 0, 0), final
    pending = final.total - final.records_processed
    assert (final.total, pending) == (len(records), 8), final
    assert final.succeeded + len(dead_lettered) + pending == len(records)
