"""The reference engine behind the async driver: the twin of the native ``AsyncRun``."""

from __future__ import annotations

import time
from typing import Any

from .._outcome import deliver
from ..reference import DONE, FEED, Scheduler, Wait, Work, _Classify, feed
from ..steering import is_overload

__all__ = ["ReferenceAsyncRun"]


class ReferenceAsyncRun:
    """The reference engine behind the same interface as the native ``AsyncRun``."""

    def __init__(self, scheduler: Scheduler, classify: _Classify, sink: Any) -> None:
        self._scheduler = scheduler
        self._classify = classify
        self._sink = sink
        self._in_flight: dict[int, Work] = {}
        # When each call in flight started, for a breaker that counts slow calls (None otherwise).
        self._slow_s = scheduler.slow_call_s
        self._started: dict[int, float] | None = {} if self._slow_s is not None else None
        self._interval = scheduler.config.progress_interval
        self._next_progress = time.monotonic() + self._interval

    def next_work(self) -> Any:
        work = self._scheduler.next_work(time.monotonic())
        if type(work) is Work:
            self._in_flight[work.index] = work
            if self._started is not None:
                self._started[work.index] = time.monotonic()
            return (work.index, work.record)
        return _no_work(work)

    def next_group(self, limit: int) -> Any:
        group = self._scheduler.next_group(time.monotonic(), limit)
        if type(group) is Work:
            group = [group]
        if type(group) is list:
            for work in group:
                self._in_flight[work.index] = work
                if self._started is not None:
                    self._started[work.index] = time.monotonic()
            return [(work.index, work.record) for work in group]
        return _no_work(group)

    @property
    def times_calls(self) -> bool:
        """Are calls timed (a breaker that counts slow calls)? Only then does a bulk driver
        call :meth:`restart_timing`."""
        return self._started is not None

    def restart_timing(self, indices: list[int]) -> None:
        """Bulk mode: a call of these in-flight records starts now (a bisection's half, after a
        failed call of the whole): each is timed from now, by the call that decides it."""
        if self._started is not None:
            now = time.monotonic()
            for index in indices:
                self._started[index] = now

    def feed(self, batch: list[Any]) -> None:
        feed(self._scheduler, batch, time.monotonic())
        self._report()

    def _slow(self, index: int) -> bool:
        """Was the call ``index`` slower than ``slow_call_s`` (forgetting when it started)?"""
        if self._started is None or self._slow_s is None:
            return False
        started = self._started.pop(index, None)
        return started is not None and time.monotonic() - started > self._slow_s

    def succeed(self, index: int, value: Any) -> None:
        if self._slow(index):
            self._scheduler.slow_call()
        self._scheduler.succeed(self._in_flight.pop(index), value, time.monotonic())
        self._report()

    def fail(self, index: int, exc: BaseException) -> bool:
        work = self._in_flight.pop(index)
        slow = self._slow(index)
        if not isinstance(exc, Exception):
            self._scheduler.abandon(work, time.monotonic())
            self._scheduler.interrupt()
            self._report()
            return True
        try:
            error_class = self._classify(exc)
            retry_after = self._classify.retry_after(exc, error_class)
        except BaseException:
            # Classifying was interrupted (a KeyboardInterrupt from the classifier, a
            # ``status_code`` or a ``retry_after``): as the native AsyncRun does, the record is
            # pending and the run stops before the error propagates, so no worker starts a
            # new call meanwhile.
            self._scheduler.abandon(work, time.monotonic())
            self._scheduler.interrupt()
            self._report()
            raise
        if self._scheduler.adapts and is_overload(exc):
            self._scheduler.overloaded(work)
        if slow:
            self._scheduler.slow_call()
        self._scheduler.fail(work, error_class, exc, retry_after, time.monotonic(), time.time())
        self._report()
        return False

    def abandon(self, index: int) -> None:
        self._slow(index)
        self._scheduler.abandon(self._in_flight.pop(index), time.monotonic())

    def interrupt(self) -> None:
        self._scheduler.interrupt()

    def stopping(self) -> bool:
        return self._scheduler.stopping

    def _report(self) -> None:
        scheduler = self._scheduler
        # With now, the open batches are counted too: only for a snapshot someone reads, at
        # every batch end or (progress_every_batch false) once one is due.
        wants = getattr(self._sink, "on_progress", True) is not None
        every = bool(getattr(self._sink, "progress_every_batch", True))
        now = time.monotonic()
        due = now >= self._next_progress
        if scheduler.events:
            snapshot = wants and (every or due)
            deliver(self._sink, scheduler.events, scheduler.counters(now if snapshot else None))
            if due or every:
                self._next_progress = time.monotonic() + self._interval
        elif due:
            self._sink.progress(scheduler.counters(now if wants else None))
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


def _no_work(signal: Any) -> Any:
    """What the native ``AsyncRun`` answers when there is no work to hand out: "feed", "done",
    or how long to wait (None: until something finishes)."""
    if signal is FEED:
        return "feed"
    if signal is DONE:
        return "done"
    assert isinstance(signal, Wait)
    return None if signal.until is None else max(0.0, signal.until - time.monotonic())
