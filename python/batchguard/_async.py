"""Driving ``async def`` callbacks: N worker coroutines on one event loop.

Each worker asks the run for work, awaits the user's coroutine inline (no Task per record,
the cheapest way asyncio can run a coroutine) and reports the outcome. The run object is the
native engine's ``AsyncRun`` or :class:`ReferenceAsyncRun`, the reference engine's twin with
the same methods, so both engines share this driver and every scheduling decision stays the
scheduler's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .reference import DONE, FEED, Scheduler, Wait, Work, _Classify, feed, retry_after_of

__all__ = ["ReferenceAsyncRun", "drive", "loop_factory"]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``run_batches`` creates for an async callback: uvloop when installed
    (its timers and scheduling are C, not Python), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


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


# Idle workers look again at least this often (the scheduler's timers are re-read then).
_MAX_IDLE = 0.05


async def drive(run: Any, records: Iterator[Any], fn: Callable[[Any], Awaitable[Any]],
                concurrency: int, batch_size: int, timeout: float | None) -> tuple[Any, ...]:
    """Run every record through ``fn`` with up to ``concurrency`` coroutines in flight."""
    loop = asyncio.get_running_loop()
    wakeup = _Wakeup(loop)
    stop: list[BaseException] = []

    async def worker() -> None:
        next_work, succeed, fail = run.next_work, run.succeed, run.fail
        while True:
            work = next_work()
            if type(work) is tuple:
                index, record = work
                try:
                    if timeout is None:
                        value = await fn(record)
                    else:
                        async with asyncio.timeout(timeout):
                            value = await fn(record)
                except BaseException as exc:  # noqa: BLE001 - the run decides what it means
                    if fail(index, exc):
                        stop.append(exc)
                        wakeup.wake()
                        return
                else:
                    succeed(index, value)
                wakeup.wake()
            elif work == "feed":
                try:
                    run.feed(list(itertools.islice(records, batch_size)))
                except BaseException as exc:
                    run.interrupt()
                    stop.append(exc)
                    wakeup.wake()
                    return
                wakeup.wake()
            elif work == "done":
                wakeup.wake()
                return
            else:
                await wakeup.wait(_MAX_IDLE if work is None else min(work, _MAX_IDLE))

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        run.interrupt()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        run.finish()
        raise
    outcome = run.finish()
    if stop:
        raise stop[0]
    return outcome


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
        self._scheduler.fail(work, error_class, exc, retry_after_of(exc, error_class),
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
            events, scheduler.events = scheduler.events, []
            self._sink.events(events, scheduler.counters())
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
            events, scheduler.events = scheduler.events, []
            self._sink.events(events, scheduler.counters())
        return scheduler
