"""Driving ``async def`` callbacks: N worker coroutines on one event loop.

Each worker asks the run for work, awaits the user's coroutine inline (no Task per record,
the cheapest way asyncio can run a coroutine) and reports the outcome. The run object is the
native engine's ``AsyncRun`` or :class:`ReferenceAsyncRun`, the reference engine's twin with
the same methods, so both engines share this driver and every scheduling decision stays the
scheduler's.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from ._native import RunSummary
from ._outcome import deliver
from .errors import BulkResultError
from .reference import DONE, FEED, Scheduler, Wait, Work, _Classify, call_timed, feed

__all__ = ["ReferenceAsyncRun", "RunCancelled", "StopSignal", "SyncCalls", "drive", "in_thread_until_cancelled",
           "loop_factory"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``run_batches`` creates for an async callback: uvloop when installed
    (its timers and scheduling are C, not Python), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class SyncCalls:
    """A sync fn as the async driver awaits it: every call runs on a thread of a pool of the
    run's own, sized to its concurrency, so the caller's loop stays free and ``concurrency``
    calls really run at once (asyncio's default pool stops at min(32, cpus + 4)).

    A thread cannot be cancelled, so a call that is in flight when the run is cancelled runs
    to its end and its outcome is recorded (drive stops the run before it cancels a worker, so
    nothing new starts meanwhile). A call past ``timeout`` is timed on its thread as the
    threaded drivers time it: its value is discarded and it counts as a TimeoutError.
    """

    __slots__ = ("_fn", "_pool", "_timeout")

    def __init__(self, fn: Callable[[Any], Any], concurrency: int, timeout: float | None) -> None:
        self._fn = fn
        self._timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency,
                                                           thread_name_prefix="batchguard-sync")

    async def __call__(self, arg: Any) -> Any:
        future = asyncio.get_running_loop().run_in_executor(self._pool, _call_on_thread, self._fn,
                                                            arg, self._timeout)
        while True:
            try:
                value, error = await asyncio.shield(future)
                break
            except asyncio.CancelledError:
                if future.cancelled():
                    raise
                # The run is stopping and this call cannot be: wait for it (see the class doc).
                _absorb_cancel()
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no reference cycle through this frame
        return value

    def close(self) -> None:
        """Let the pool's threads exit once idle (never blocks: every call has returned by then)."""
        self._pool.shutdown(wait=False)


def _call_on_thread(fn: Callable[[Any], Any], arg: Any,
                    timeout: float | None) -> tuple[Any, BaseException | None]:
    """``call_timed`` on a pool thread, its exception returned, not raised: run_in_executor
    replaces an exception whose type is exactly ``TimeoutError`` (``socket.timeout``, and
    concurrent.futures.TimeoutError is the same class) with a new one, which would drop its
    attributes (``retry_after``, ``response``) and the traceback of the user's code; it turns
    ``concurrent.futures.CancelledError`` into ``asyncio.CancelledError``; and a CancelledError
    the fn raised would read as the awaiting task's own cancellation (absorbed, then awaited
    again: a hang)."""
    try:
        return call_timed(fn, arg, timeout), None
    except BaseException as exc:  # noqa: BLE001 - raised again, on the loop, by SyncCalls.__call__
        return None, exc


def _absorb_cancel() -> None:
    """Take back a cancel request of the current task that it must outlive (it waits for work
    that cannot be stopped): its later awaits then run instead of being cancelled again."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


class RunCancelled(BaseException):
    """Raised inside a sync run whose ``arun_batches`` task was cancelled. A BaseException, so
    the engines treat it as an interrupt: no new record starts, the calls in flight finish, the
    dead letters are flushed, and it is re-raised."""


class StopSignal:
    """Stops a sync run that another thread drives, from the event loop's thread.

    Once set, the run's next fn call raises :class:`RunCancelled` instead of starting, and so
    does its next progress report: the engines report progress while they wait (a retry's
    backoff, an open breaker, the rate limit), when no call would start to notice.
    """

    __slots__ = ("_event", "_reported")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reported = False

    def set(self) -> None:
        self._event.set()

    def guard(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        is_set = self._event.is_set

        def guarded(record: Any) -> Any:
            if is_set():
                raise RunCancelled("the arun_batches task was cancelled: the run stops")
            return fn(record)
        return guarded

    def guard_progress(self, on_progress: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
        def report(progress: Any) -> None:
            # Raised once: the report that comes with the final flush goes through.
            if self._event.is_set() and not self._reported:
                self._reported = True
                raise RunCancelled("the arun_batches task was cancelled: the run stops")
            if on_progress is not None:
                on_progress(progress)
        return report


async def in_thread_until_cancelled(body: Callable[[StopSignal], T]) -> T:
    """``body(stop)`` on a thread of its own, awaited without blocking the loop. When the
    awaiting task is cancelled, ``stop`` is set and the run is waited for (further cancels
    too: the calls in flight cannot be stopped, and what they leave must reach the DLQ); then
    the CancelledError propagates, unless stopping raised an error of its own (a DLQ that
    could not store), which wins."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    stop = StopSignal()

    def target() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (body(stop), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(_settle, done, *outcome)
        except RuntimeError:  # the loop was closed under the run (a second Ctrl-C): nobody waits
            pass

    threading.Thread(target=target, name="batchguard-arun", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        if done.done():  # finished as it was cancelled: nothing left to stop
            _retrieve(done)
            raise
        stop.set()
        while not done.done():
            try:
                await asyncio.wait((done,))
            except asyncio.CancelledError:
                _absorb_cancel()
        error = _retrieve(done)
        if error is not None and not isinstance(error, RunCancelled):
            raise error from None
        raise


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _retrieve(future: asyncio.Future[Any]) -> BaseException | None:
    """The future's exception, if any (so asyncio does not log it as never retrieved)."""
    return None if future.cancelled() else future.exception()


class _Wakeup:
    """Idle workers wait here until an outcome arrives or their timer fires."""

    __slots__ = ("_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[asyncio.Future[None]] = []

    async def wait(self, timeout: float | None) -> None:
        future = self._loop.create_future()
        self._waiting.append(future)
        timer = None if timeout is None else self._loop.call_later(timeout, _resolve, future)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()

    def wake(self) -> None:
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for future in waiting:
                _resolve(future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Deadlines:
    """Per-attempt timeouts for one run. Every attempt has the same timeout, so deadlines
    expire in the order attempts start: one FIFO and one timer serve them all (a timer per
    attempt costs a heap push and leaves a cancelled handle behind on asyncio's loop).

    An entry is ``[deadline, task, cancelling_before, state]``; state 0 running, 1 finished,
    2 expired (the task was cancelled for it).
    """

    __slots__ = ("_loop", "_queue", "_timer", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self.timeout = timeout
        self._queue: collections.deque[list[Any]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any]) -> list[Any]:
        deadline = self._loop.time() + self.timeout
        entry: list[Any] = [deadline, task, task.cancelling(), 0]
        self._queue.append(entry)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)
        return entry

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        queue = self._queue
        while queue:
            entry = queue[0]
            if entry[3] == 0 and entry[0] > now:
                self._timer = self._loop.call_at(entry[0], self._expire)
                return
            queue.popleft()
            if entry[3] == 0:
                entry[3] = 2
                entry[1].cancel()

    def late(self, entry: list[Any]) -> bool:
        deadline: float = entry[0]
        return self._loop.time() > deadline

    def overran(self, entry: list[Any]) -> None:
        """The attempt returned past its deadline (it ignored its cancellation, or blocked the
        loop): as for a sync attempt, its value is discarded and it counts as a TimeoutError."""
        task = entry[1]
        if entry[3] == 2 and task.cancelling() > entry[2]:
            task.uncancel()
        raise TimeoutError(f"the attempt took longer than {self.timeout} s (the timeout) and "
                           "ignored its cancellation; its result was discarded")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def _call_with_deadline(fn: Callable[[Any], Awaitable[Any]], arg: Any,
                              deadlines: _Deadlines) -> Any:
    """``await fn(arg)`` within the run's timeout: past it the attempt is cancelled and counts
    as a TimeoutError; one that ignores its cancellation (or blocks the loop past its deadline)
    has its value discarded and counts as a TimeoutError too, as a sync attempt does."""
    task = asyncio.current_task()
    assert task is not None
    entry = deadlines.start(task)
    try:
        value = await fn(arg)
    except asyncio.CancelledError:
        if entry[3] == 2 and task.uncancel() <= entry[2]:
            raise TimeoutError(f"the attempt took longer than {deadlines.timeout} s (the timeout) "
                               "and was cancelled") from None
        raise
    finally:
        if entry[3] == 0:
            entry[3] = 1
    if entry[3] == 2 or deadlines.late(entry):
        deadlines.overran(entry)
    return value


# Idle workers look again at least this often (the scheduler's timers are re-read then).
_MAX_IDLE = 0.05


async def _call(fn: Callable[[Any], Awaitable[Any]], arg: Any, deadlines: _Deadlines | None) -> Any:
    if deadlines is None:
        return await fn(arg)
    return await _call_with_deadline(fn, arg, deadlines)


async def _bisect(run: Any, fn: Callable[[Any], Awaitable[Any]], group: list[tuple[int, Any]],
                  timeout: _Deadlines | None) -> None:
    """Run a group in one bulk call; when it raises, run its halves, and so on, until each
    failing record stands alone and is reported (classified) by itself. For k bad records in
    n this makes about 2·k·log2(n) + 1 calls."""
    try:
        results = await _call(fn, [record for _, record in group], timeout)
    except Exception as exc:  # noqa: BLE001 - bisect to find the records that cause it
        if len(group) == 1:
            run.fail(group[0][0], exc)
            return
        if run.stopping():  # no new call once the run stops: the group stays pending
            for index, _ in group:
                run.abandon(index)
            return
        middle = len(group) // 2
        try:
            await _bisect(run, fn, group[:middle], timeout)
        except BaseException:
            for index, _ in group[middle:]:  # never started: they stay pending, not in flight
                run.abandon(index)
            raise
        if not run.stopping():
            await _bisect(run, fn, group[middle:], timeout)
        else:
            for index, _ in group[middle:]:
                run.abandon(index)
        return
    except BaseException:
        for index, _ in group:
            run.abandon(index)
        raise
    if not isinstance(results, (list, tuple)) or len(results) != len(group):
        got = f"{len(results)} results" if isinstance(results, (list, tuple)) else type(results).__name__
        error = BulkResultError(f"the bulk fn returned {got} for {len(group)} records; it must "
                                "return a list with one result per record, in order")
        for index, _ in group:
            run.fail(index, error)
        return
    for (index, _), value in zip(group, results):
        run.succeed(index, value)


async def drive(run: Any, records: Iterator[Any], fn: Callable[[Any], Awaitable[Any]],
                concurrency: int, batch_size: int, timeout: float | None,
                bulk: bool = False) -> RunSummary | Scheduler:
    """Run every record through ``fn`` with up to ``concurrency`` coroutines in flight (with
    ``bulk``, up to ``concurrency`` bulk calls, each on a batch or a bisected part of one)."""
    loop = asyncio.get_running_loop()
    wakeup = _Wakeup(loop)
    stop: list[BaseException] = []
    deadlines = None if timeout is None else _Deadlines(loop, timeout)

    def halt(exc: BaseException) -> None:
        run.interrupt()
        stop.append(exc)
        wakeup.wake()

    async def between(work: Any) -> bool:
        """Handle what next_work/next_group said when it is not work; True: this worker ends."""
        if work == "feed":
            try:
                run.feed(list(itertools.islice(records, batch_size)))
            except BaseException as exc:  # the input itself failed: stop, and re-raise it
                halt(exc)
                return True
            wakeup.wake()
            return False
        if work == "done":
            wakeup.wake()
            return True
        await wakeup.wait(_MAX_IDLE if work is None else min(work, _MAX_IDLE))
        return False

    async def bulk_worker() -> None:
        while True:
            work = run.next_group(batch_size)
            if type(work) is list:
                try:
                    await _bisect(run, fn, work, deadlines)
                except BaseException as exc:
                    halt(exc)
                    return
                wakeup.wake()
            elif await between(work):
                return

    async def worker() -> None:
        next_work, succeed, fail = run.next_work, run.succeed, run.fail
        task = asyncio.current_task()
        assert task is not None
        while True:
            work = next_work()
            if type(work) is tuple:
                index, record = work
                try:
                    if deadlines is None:
                        value = await fn(record)
                    else:
                        # _call_with_deadline, inlined: a coroutine frame per record is most of
                        # what a timeout costs on a fast loop.
                        entry = deadlines.start(task)
                        try:
                            value = await fn(record)
                        except asyncio.CancelledError:
                            if entry[3] == 2 and task.uncancel() <= entry[2]:
                                raise TimeoutError(f"the attempt took longer than {timeout} s (the "
                                                   "timeout) and was cancelled") from None
                            raise
                        finally:
                            if entry[3] == 0:
                                entry[3] = 1
                        if entry[3] == 2 or loop.time() > entry[0]:
                            deadlines.overran(entry)
                except BaseException as exc:  # noqa: BLE001 - the run decides what it means
                    if fail(index, exc):
                        stop.append(exc)
                        wakeup.wake()
                        return
                else:
                    succeed(index, value)
                wakeup.wake()
            elif await between(work):
                return

    body = bulk_worker if bulk else worker
    workers = [asyncio.ensure_future(body()) for _ in range(concurrency)]
    gathered = asyncio.gather(*workers)
    # Once the shield below is cancelled it no longer looks at the gather, which then ends with
    # the cancelled workers' CancelledError: retrieved here, or asyncio logs it as never retrieved.
    gathered.add_done_callback(_retrieve)
    try:
        try:
            # Shielded: cancelling the run must stop it (below) before its workers are cancelled,
            # or a worker that has to wait for its sync call would take new work meanwhile.
            await asyncio.shield(gathered)
        finally:
            if deadlines is not None:
                deadlines.close()
    except BaseException:
        run.interrupt()
        for task in workers:
            task.cancel()
        await _wait_for_workers(workers)
        run.finish()
        raise
    outcome: RunSummary | Scheduler = run.finish()
    if stop:
        # Out of the closure cell the workers share, so the traceback does not keep them alive.
        error = stop.pop()
        stop.clear()
        raise error
    return outcome


async def _wait_for_workers(workers: list[asyncio.Task[None]]) -> None:
    """Wait until every (cancelled) worker has ended, however often the waiting task is itself
    cancelled meanwhile: a sync call in flight cannot be stopped, and the run must be finished
    after it so that what was dead-lettered reaches the DLQ. A further cancel is passed on to
    the workers still running (an async call that ignored the first gets another)."""
    pending = {worker for worker in workers if not worker.done()}
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            _absorb_cancel()
            for worker in pending:
                worker.cancel()
    for worker in workers:  # retrieved, so that asyncio does not log them as never retrieved
        if not worker.cancelled():
            worker.exception()


class ReferenceAsyncRun:
    """The reference engine behind the same interface as the native ``AsyncRun``."""

    def __init__(self, scheduler: Scheduler, classify: _Classify, sink: Any) -> None:
        self._scheduler = scheduler
        self._classify = classify
        self._sink = sink
        self._in_flight: dict[int, Work] = {}
        self._interval = scheduler.config.progress_interval
        self._next_progress = time.monotonic() + self._interval

    def next_work(self) -> Any:
        work = self._scheduler.next_work(time.monotonic())
        if type(work) is Work:
            self._in_flight[work.index] = work
            return (work.index, work.record)
        if work is FEED:
            return "feed"
        if work is DONE:
            return "done"
        assert isinstance(work, Wait)
        return None if work.until is None else max(0.0, work.until - time.monotonic())

    def next_group(self, limit: int) -> Any:
        group = self._scheduler.next_group(time.monotonic(), limit)
        if type(group) is Work:
            group = [group]
        if type(group) is list:
            for work in group:
                self._in_flight[work.index] = work
            return [(work.index, work.record) for work in group]
        if group is FEED:
            return "feed"
        if group is DONE:
            return "done"
        assert isinstance(group, Wait)
        return None if group.until is None else max(0.0, group.until - time.monotonic())

    def feed(self, batch: list[Any]) -> None:
        feed(self._scheduler, batch, time.monotonic())
        self._report()

    def succeed(self, index: int, value: Any) -> None:
        self._scheduler.succeed(self._in_flight.pop(index), value, time.monotonic())
        self._report()

    def fail(self, index: int, exc: BaseException) -> bool:
        work = self._in_flight.pop(index)
        if not isinstance(exc, Exception):
            self._scheduler.abandon(work, time.monotonic())
            self._scheduler.interrupt()
            self._report()
            return True
        error_class = self._classify(exc)
        self._scheduler.fail(work, error_class, exc, self._classify.retry_after(exc, error_class),
                             time.monotonic(), time.time())
        self._report()
        return False

    def abandon(self, index: int) -> None:
        self._scheduler.abandon(self._in_flight.pop(index), time.monotonic())

    def interrupt(self) -> None:
        self._scheduler.interrupt()

    def stopping(self) -> bool:
        return self._scheduler.stopping

    def _report(self) -> None:
        scheduler = self._scheduler
        if scheduler.events:
            deliver(self._sink, scheduler.events, scheduler.counters())
            self._next_progress = time.monotonic() + self._interval
        elif time.monotonic() >= self._next_progress:
            self._sink.progress(scheduler.counters())
            self._next_progress = time.monotonic() + self._interval

    def finish(self) -> Scheduler:
        scheduler = self._scheduler
        for work in self._in_flight.values():
            scheduler.abandon(work, time.monotonic())
        self._in_flight.clear()
        scheduler.close(time.monotonic())
        if scheduler.events:
            deliver(self._sink, scheduler.events, scheduler.counters())
        return scheduler
