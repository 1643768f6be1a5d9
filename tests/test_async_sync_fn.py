"""Issue 7, defect 16: a sync fn given to ``arun_batches`` (or a sync bulk fn anywhere) never
runs on the caller's event loop, gets ``concurrency`` threads of its own (not asyncio's default
pool of min(32, cpus + 4)), and cancelling the ``arun_batches`` task stops the run: no new call
starts, the calls in flight finish and are recorded, what was dead-lettered is in the DLQ, and
CancelledError reaches the caller.

Issue 8, item 3: a sync bulk fn runs on the sync drivers (inline, or threads), not through
asyncio, under ``arun_batches`` too: as a per-record sync fn does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import MemoryDLQ, RetryPolicy
from helpers_contract import ENGINES


class Gauge:
    """Counts calls, and how many run at once (the peak), from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.running = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


async def _count_ticks(ticks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        ticks.append(time.monotonic())
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_a_sync_fn_at_concurrency_1_leaves_the_callers_loop_free(engine: str, bulk: bool) -> None:
    windows: list[tuple[float, float]] = []

    def slow(arg: Any) -> Any:
        started = time.monotonic()
        time.sleep(0.3)
        windows.append((started, time.monotonic()))
        return arg

    async def main() -> Any:
        ticks: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_count_ticks(ticks, stop))
        await asyncio.sleep(0)
        try:
            report = await batchguard.arun_batches([1] if not bulk else [1, 2], slow, bulk=bulk,
                                                   batch_size=2, concurrency=1, engine=engine)
        finally:
            stop.set()
            await ticker
        return report, ticks

    report, ticks = asyncio.run(main())
    assert report.status == "complete"
    ((started, ended),) = windows
    during = [t for t in ticks if started < t < ended]
    # The loop ticks every 5 ms when it is free: ~60 in 0.3 s; 0 when fn blocks it.
    assert len(during) > 10, f"the loop ticked {len(during)} times during a 0.3 s sync call"


def _sleepy(gauge: Gauge, seconds: float) -> Any:
    def fn(arg: Any) -> Any:
        gauge.enter()
        try:
            time.sleep(seconds)
            return arg
        finally:
            gauge.leave()
    return fn


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_arun_batches_with_a_sync_fn_reaches_its_concurrency(engine: str, bulk: bool) -> None:
    gauge = Gauge()

    async def main() -> Any:
        return await batchguard.arun_batches(range(32), _sleepy(gauge, 0.3), bulk=bulk, batch_size=1,
                                             concurrency=16, engine=engine)

    report = asyncio.run(main())
    assert report.successful == list(range(32))
    assert gauge.peak == 16


@pytest.mark.parametrize("engine", ENGINES)
def test_run_batches_with_a_sync_bulk_fn_reaches_its_concurrency(engine: str) -> None:
    gauge = Gauge()
    report = batchguard.run_batches(range(32), _sleepy(gauge, 0.3), bulk=True, batch_size=1,
                                    concurrency=16, engine=engine)
    assert report.status == "complete"
    assert gauge.peak == 16


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_cancelling_arun_batches_with_a_sync_fn_stops_the_run(engine: str, concurrency: int, bulk: bool) -> None:
    gauge = Gauge()
    dead: list[int] = []
    dead_lock = threading.Lock()

    def one(record: int) -> int:
        if record % 7 == 3:
            with dead_lock:
                dead.append(record)
            raise ValueError(f"bad record {record}")
        return record

    def fn(arg: Any) -> Any:
        gauge.enter()
        try:
            time.sleep(0.01)
            if not bulk:
                return one(arg)
            if len(arg) == 1:
                return [one(arg[0])]
            if any(r % 7 == 3 for r in arg):
                raise ValueError("a bad record in this group")  # bisected
            return list(arg)
        finally:
            gauge.leave()

    dlq = MemoryDLQ()
    total = 2000

    async def main() -> tuple[int, int]:
        task = asyncio.create_task(batchguard.arun_batches(
            range(total), fn, bulk=bulk, batch_size=4, concurrency=concurrency, engine=engine,
            dlq=dlq, retry=RetryPolicy(max_attempts=1)))
        while gauge.calls < 20 and not task.done():  # done: it failed, and awaiting it says why
            await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        running_at_return = gauge.running
        calls_at_return = gauge.calls
        await asyncio.sleep(0.3)
        assert gauge.calls == calls_at_return, "calls kept starting after the cancelled run returned"
        return running_at_return, calls_at_return

    running, calls = asyncio.run(main())
    assert running == 0, "arun_batches returned while a call of the run was still in flight"
    assert calls < 20 + 4 * concurrency + 8, f"{calls} calls: the run did not stop when cancelled"
    # Every record whose call failed (the calls in flight included) reached the DLQ, once.
    assert sorted(e.record_index for e in dlq.list()) == sorted(dead)
    assert all(e.error_type == "ValueError" for e in dlq.list())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_sync_fn_in_arun_batches_keeps_the_timeout_contract(engine: str, bulk: bool) -> None:
    # A thread cannot be killed: a late call runs to its end and counts as a TimeoutError.
    def one(record: int) -> int:
        if record == 1:
            time.sleep(0.1)
        return record

    def fn(arg: Any) -> Any:
        return [one(record) for record in arg] if bulk else one(arg)

    dlq = MemoryDLQ()

    async def main() -> Any:
        return await batchguard.arun_batches(range(3), fn, bulk=bulk, batch_size=1, timeout=0.05,
                                             concurrency=2, engine=engine, dlq=dlq,
                                             retry=RetryPolicy(max_attempts=1))

    report = asyncio.run(main())
    assert report.successful == [0, 2]
    (entry,) = dlq.list()
    assert (entry.record_index, entry.error_type) == (1, "TimeoutError")
    assert "discarded" in entry.error_message


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_cancelling_a_sync_run_that_waits_on_a_retry_stops_it_promptly(engine: str, concurrency: int) -> None:
    # Every record fails RECOVERABLE and parks for a 30 s backoff: no call starts to notice the
    # cancel, so the run must notice it while it waits.
    gauge = Gauge()

    def fn(record: int) -> int:
        gauge.enter()
        gauge.leave()
        raise ConnectionError(f"down for record {record}")

    dlq = MemoryDLQ()

    async def main() -> float:
        task = asyncio.create_task(batchguard.arun_batches(
            range(8), fn, concurrency=concurrency, engine=engine, dlq=dlq, batch_size=4,
            retry=RetryPolicy(max_attempts=3, base_delay=30.0, max_delay=30.0, jitter="none")))
        while gauge.calls < 8 and not task.done():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    took = asyncio.run(main())
    # Far below the 30 s backoff it would wait without noticing (a bound against a hang, not a
    # speed test: the run notices within about a second).
    assert took < 15.0, f"the cancelled run took {took:.1f} s to stop"
    assert gauge.calls == 8  # no retry ran
    assert dlq.count() == 0  # the parked records are pending, not dead-lettered


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_a_sync_fn_runs_on_the_sync_engine_not_through_the_loop(engine: str, concurrency: int,
                                                                bulk: bool) -> None:
    # Per record or bulk, arun_batches runs a sync fn on the sync drivers, as run_batches does,
    # not one loop-to-thread hop per call (per record that cost ~100 us a record): no call may
    # run on the loop's thread or on a thread of an executor the loop hands calls to (asyncio's
    # default pool, or the pool a sync bulk fn used to get). Checked by thread, not by wall
    # time, which a loaded machine stretches.
    threads: set[str] = set()
    loop_threads: set[str] = set()

    def fn(arg: Any) -> Any:
        threads.add(threading.current_thread().name)
        return arg

    async def main() -> Any:
        loop_threads.add(threading.current_thread().name)
        return await batchguard.arun_batches(range(2_000), fn, bulk=bulk, batch_size=10,
                                             concurrency=concurrency, engine=engine)

    report = asyncio.run(main())
    assert report.success_count == 2_000
    assert threads and not threads & loop_threads, threads
    assert not {t for t in threads if t.startswith(("asyncio_", "batchguard-sync"))}, threads


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_a_second_cancel_while_the_run_stops_still_flushes_the_dead_letters(engine: str, bulk: bool) -> None:
    # The first cancel stops the run; the calls in flight take a while to finish. Cancelling
    # again meanwhile (an outer timeout, an impatient caller) must not skip the final flush of
    # the unfinished batch's dead letters.
    gauge = Gauge()

    def fn(arg: Any) -> Any:
        gauge.enter()
        try:
            time.sleep(0.1)
            raise ValueError(f"bad {arg}")
        finally:
            gauge.leave()

    dlq = MemoryDLQ()
    # Per record: 2 calls in flight in a batch of 10. Bulk: [0..3] fails, [0, 1] fails, [0] is
    # dead-lettered, and [1] is in flight; [2, 3] never start.
    in_flight_at_cancel = 4 if bulk else 2

    async def main() -> None:
        task = asyncio.create_task(batchguard.arun_batches(
            range(100), fn, bulk=bulk, batch_size=4 if bulk else 10, concurrency=1 if bulk else 2,
            engine=engine, dlq=dlq, retry=RetryPolicy(max_attempts=1)))
        while gauge.calls < in_flight_at_cancel and not task.done():
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.sleep(0.03)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert gauge.running == 0
    assert gauge.calls == in_flight_at_cancel
    assert sorted(e.record_index for e in dlq.list()) == [0, 1]


def test_a_sync_run_outliving_its_closed_loop_ends_quietly() -> None:
    # A second Ctrl-C closes the loop under a run still on its thread: when the run ends there
    # is nobody to tell, and that must not be an exception in the thread.
    finished = threading.Event()
    errors: list[Any] = []
    previous_hook = threading.excepthook
    threading.excepthook = errors.append

    def fn(record: int) -> int:
        time.sleep(0.1)
        finished.set()
        return record

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(batchguard.arun_batches([1], fn, engine="python"))
        loop.run_until_complete(asyncio.sleep(0.02))
        loop.close()
        assert finished.wait(2)
        time.sleep(0.1)
    finally:
        threading.excepthook = previous_hook
    assert errors == []
    del task


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_cancelling_a_sync_bulk_job_mid_bisection_leaves_the_group_pending(
        tmp_path: Path, engine: str, concurrency: int) -> None:
    # The bulk call on batch 2 ([20..29]) is in flight when the task is cancelled; it then
    # raises, and the first call of its bisection is stopped before it starts (RunCancelled
    # inside the run): no record of that batch is dead-lettered or checkpointed, the job is
    # aborted, and its resume runs that batch again (and the ones never started), not the
    # finished ones.
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    in_flight, release = threading.Event(), threading.Event()
    first_calls: list[list[int]] = []
    lock = threading.Lock()

    def first(records: list[int]) -> list[int]:
        with lock:
            first_calls.append(list(records))
        if 25 in records:
            if len(records) < 10:
                raise AssertionError(f"a bisection call started after the cancel: {records}")
            in_flight.set()
            release.wait(10)
            raise ValueError("a bad record in this group")  # would be bisected
        if records[0] > 25:
            time.sleep(0.2)  # concurrency 3: the later batches are still in flight at the cancel
        return [2 * r for r in records]

    retry = RetryPolicy(max_attempts=1)

    async def cancelled_run() -> None:
        task = asyncio.create_task(batchguard.arun_batches(
            range(100), first, bulk=True, batch_size=10, concurrency=concurrency, engine=engine,
            retry=retry, job="bulk-cut", store=store))
        while not in_flight.is_set() and not task.done():
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.sleep(0.1)  # the run is told to stop before the call in flight returns
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled_run())
    status = batchguard.job_status("bulk-cut", store=store)
    assert status.status == "aborted"
    started = sorted(r for call in first_calls for r in call)
    assert 25 in started and started == sorted(set(started))  # no record ran twice
    # Batches 0 and 1 finished; 2 did not (its group stayed pending), nor any never started.
    assert status.batches_done == len({r // 10 for r in started}) - 1
    assert status.succeeded == 10 * status.batches_done and status.failed == 0

    second: list[int] = []

    def again(records: list[int]) -> list[int]:
        with lock:
            second.extend(records)
        return [2 * r for r in records]

    resumed = asyncio.run(batchguard.arun_batches(
        range(100), again, bulk=True, batch_size=10, concurrency=concurrency, engine=engine,
        retry=retry, job="bulk-cut", store=store))
    assert 20 in second and 25 in second
    assert sorted(second) == [r for r in range(100) if r // 10 not in
                              {b for b in range(10) if b != 2 and b * 10 in started}]
    assert resumed.failure_count == 0
    assert batchguard.job_status("bulk-cut", store=store).status == "completed"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_sync_bulk_fn_raising_a_cancelled_error_of_its_own_under_arun(engine: str,
                                                                       concurrency: int) -> None:
    # As under run_batches (tests/test_hostile_bulk_cancelled_error.py): asyncio's CancelledError
    # stops the run and reaches the caller; concurrent.futures' (an Exception) is a failure.
    import concurrent.futures

    def raising(error: type[BaseException]) -> Any:
        def bulk(records: list[int]) -> list[int]:
            if 5 in records:
                raise error("the fn's own cancellation")
            return list(records)
        return bulk

    async def main(error: type[BaseException]) -> Any:
        return await batchguard.arun_batches(range(20), raising(error), bulk=True, engine=engine,
                                             concurrency=concurrency, batch_size=10)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main(asyncio.CancelledError))
    report = asyncio.run(main(concurrent.futures.CancelledError))
    assert (report.success_count, report.failure_count, report.pending_count) == (19, 1, 0)
    assert report.errors[0].error_type == "CancelledError"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per-record"])
def test_a_stop_iteration_out_of_a_sync_run_under_arun_is_raised_not_a_hang(engine: str,
                                                                            bulk: bool) -> None:
    # run_batches raises what the run raised (here on_progress's StopIteration). A future
    # refuses a StopIteration, which left the awaiting task waiting forever; a coroutine cannot
    # raise one (PEP 479): the caller gets a RuntimeError with the StopIteration as its cause.
    def progress(_: Any) -> None:
        raise StopIteration("progress went wrong")

    def fn(arg: Any) -> Any:
        return arg

    with pytest.raises(StopIteration, match="progress went wrong"):
        batchguard.run_batches(range(20), fn, bulk=bulk, engine=engine, on_progress=progress)

    async def main() -> Any:
        return await asyncio.wait_for(batchguard.arun_batches(
            range(20), fn, bulk=bulk, engine=engine, on_progress=progress), 20)

    with pytest.raises(RuntimeError, match="StopIteration: progress went wrong") as raised:
        asyncio.run(main())
    assert isinstance(raised.value.__cause__, StopIteration)
