"""Driving ``async def`` callbacks: N worker coroutines on one event loop.

Each worker asks the run for work, awaits the user's coroutine inline (no Task per record,
the cheapest way asyncio can run a coroutine) and reports the outcome. The run object is the
native engine's ``AsyncRun`` or ``_run.reference_async.ReferenceAsyncRun``, the reference
engine's twin with the same methods, so both engines share this driver and every scheduling
decision stays the scheduler's. Only an ``async def`` fn comes here: a sync one, per record
or bulk, runs on the sync drivers, under an async caller too (``_run.sync_fn``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ._native import RunSummary
from .errors import BulkResultError
from .reference import Scheduler

__all__ = ["drive", "loop_factory"]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``run_batches`` creates for an async callback: uvloop when installed
    (its timers and scheduling are C, not Python), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _absorb_cancel() -> None:
    """Take back a cancel request of the current task that it must outlive (it waits for work
    that cannot be stopped): its later awaits then run instead of being cancelled again."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _retrieve(future: asyncio.Future[Any]) -> BaseException | None:
    """The future's exception, if any (so asyncio does not log it as never retrieved)."""
    return None if future.cancelled() else future.exception()


class _Wakeup:
    """Idle workers wait here until an outcome arrives or their timer fires."""

    __slots__ = ("_loop", "_waiting")

    @property
    def waiting(self) -> bool:
        """Is a worker idle?"""
        return bool(self._waiting)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Oldest first; a worker leaves it when its own timer wakes it, so none piles up.
        self._waiting: collections.OrderedDict[asyncio.Future[None], None] = collections.OrderedDict()

    async def wait(self, timeout: float | None) -> None:
        future = self._loop.create_future()
        self._waiting[future] = None
        timer = None if timeout is None else self._loop.call_later(timeout, _resolve, future)
        try:
            await future
        finally:
            self._waiting.pop(future, None)
            if timer is not None:
                timer.cancel()

    def wake(self) -> None:
        """Wake every idle worker (new input, the run's end, a stop)."""
        if self._waiting:
            waiting, self._waiting = self._waiting, collections.OrderedDict()
            for future in waiting:
                _resolve(future)

    def wake_one(self) -> None:
        """Wake the idle worker that waited longest. An outcome frees one call's room, and a
        worker that then takes work wakes the next in turn: waking all of them for each outcome
        cost one poll per idle worker per record, and with concurrency=Adaptive(max=1024) held
        at a limit of 10 most of the 1024 workers are idle."""
        while self._waiting:
            future, _ = self._waiting.popitem(last=False)
            if not future.done():
                future.set_result(None)
                return


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
                  timeout: _Deadlines | None, timed: bool = False) -> None:
    """Run a group in one bulk call; when it raises, run its halves, and so on, until each
    failing record stands alone and is reported (classified) by itself. For k bad records in
    n this makes about 2·k·log2(n) + 1 calls. ``timed`` (the run counts slow calls): each
    record is timed by the call that decides it, so each call restarts its records' timing."""
    if timed:
        run.restart_timing([index for index, _ in group])
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
            await _bisect(run, fn, group[:middle], timeout, timed)
        except BaseException:
            for index, _ in group[middle:]:  # never started: they stay pending, not in flight
                run.abandon(index)
            raise
        if not run.stopping():
            await _bisect(run, fn, group[middle:], timeout, timed)
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
    for (index, _), value in zip(group, results, strict=True):  # lengths checked above
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
            except BaseException as exc:  # noqa: BLE001 - the input itself failed: stop, and re-raise it
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
        timed = run.times_calls
        while True:
            work = run.next_group(batch_size)
            if type(work) is list:
                try:
                    await _bisect(run, fn, work, deadlines, timed)
                except BaseException as exc:  # noqa: BLE001 - stops the run, re-raised by drive
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
                if wakeup.waiting:
                    wakeup.wake_one()  # there may be more work: pass the wake on
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
                wakeup.wake_one()
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
            # or a worker whose call ignores its cancellation would take new work meanwhile.
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
    cancelled meanwhile: a call in flight may ignore its cancellation (or block in sync code),
    and the run must be finished after it so that what was dead-lettered reaches the DLQ. A
    further cancel is passed on to the workers still running (an async call that ignored the
    first gets another)."""
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
