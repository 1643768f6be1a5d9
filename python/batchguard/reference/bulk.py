"""Bulk mode on the reference drivers (twin of ``src/bindings/bulk.rs``): a sync fn that takes
a list of records (``bulk=True``) runs one group (a batch, or a retry) per call, inline at
concurrency 1 and on the worker threads at concurrency N, instead of going through asyncio.

The semantics are ``batchguard._async._bisect``'s: a group runs in one call; when the call
raises, its halves run, and so on, until each failing record stands alone and is classified
by itself (about 2·k·log2(n) + 1 calls for k bad records in n). A call that returns anything
but a list or tuple with one result per record fails every record of the group with
:class:`~batchguard.errors.BulkResultError`. Once the run is stopping, no new call starts: the
rest of the group stays pending.

With a breaker that counts slow calls (``slow_call_s``), each call is timed, and each record
whose outcome a call decides (its value, or its failure once it stands alone) is a slow call
when that call took longer than ``slow_call_s``: a failed call's time is not held against the
halves that run after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import BulkResultError
from .scheduler import Scheduler
from .work import Work


class Classify(Protocol):
    """What the drivers classify a failure with (``drivers._Classify``)."""

    def __call__(self, exc: BaseException) -> Any: ...

    def retry_after(self, exc: BaseException, error_class: Any) -> float | None: ...


class Guard(Protocol):
    """The scheduler's lock, held around every scheduler call; ``notify_all`` wakes whoever
    waits for an outcome (a ``threading.Condition``, or :data:`UNLOCKED` inline)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None: ...

    def notify_all(self) -> None: ...


class _Unlocked:
    """The inline driver's guard: one thread, nothing to lock or wake."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        return None

    def notify_all(self) -> None:
        return None


UNLOCKED: Guard = _Unlocked()


class Groups:
    """Runs the groups a driver takes with ``Scheduler.next_group``: ``call(records)`` is one
    (timed) bulk call; every outcome is handed back to the scheduler under ``guard``, never
    while the user's fn or the classifier runs."""

    __slots__ = ("_call", "_classify", "_clock", "_guard", "_scheduler", "_slow_s")

    def __init__(self, scheduler: Scheduler, call: Callable[[list[Any]], Any], classify: Classify,
                 clock: Callable[[], float], guard: Guard = UNLOCKED) -> None:
        self._scheduler = scheduler
        self._call = call
        self._classify = classify
        self._clock = clock
        self._guard = guard
        self._slow_s = scheduler.slow_call_s  # calls are timed only then

    def _was_slow(self, started: float) -> bool:
        return self._slow_s is not None and self._clock() - started > self._slow_s

    def run(self, group: list[Work]) -> None:
        """Run ``group`` in one call, bisecting on failure. Every record of the group is handed
        back to the scheduler before this returns; an interrupt (a BaseException that is not
        an Exception) leaves the unfinished records pending and is raised again."""
        started = self._clock() if self._slow_s is not None else 0.0
        try:
            values = self._call([work.record for work in group])
        except Exception as exc:  # noqa: BLE001 - bisect to find the records that cause it
            if len(group) == 1:
                self._fail_each(group, exc, self._was_slow(started))
                return
            # Bisected below, out of this block: the halves' errors do not chain to this one.
        except BaseException:
            self._abandon(group)
            raise
        else:
            self._hand_back_values(group, values, self._was_slow(started))
            return
        if self._stopping():  # no new call once the run stops: the group stays pending
            self._abandon(group)
            return
        middle = len(group) // 2
        first, second = group[:middle], group[middle:]
        try:
            self.run(first)
        except BaseException:
            self._abandon(second)  # never started: pending, not in flight
            raise
        if self._stopping():
            self._abandon(second)
            return
        self.run(second)

    def _hand_back_values(self, group: list[Work], returned: Any, slow: bool) -> None:
        """The call returned (``slow``: past ``slow_call_s``): one value per record, in order,
        or every record fails with ``BulkResultError``."""
        if not isinstance(returned, (list, tuple)) or len(returned) != len(group):
            got = (f"{len(returned)} results" if isinstance(returned, (list, tuple))
                   else type(returned).__name__)
            error = BulkResultError(f"the bulk fn returned {got} for {len(group)} records; it must "
                                    "return a list with one result per record, in order")
            self._fail_each(group, error, slow)
            return
        scheduler, clock = self._scheduler, self._clock
        with self._guard:
            for work, value in zip(group, returned, strict=True):  # lengths checked above
                if slow:  # each record of a slow call is a slow call of the breaker's window
                    scheduler.slow_call()
                scheduler.succeed(work, value, clock())
            self._guard.notify_all()

    def _fail_each(self, group: list[Work], error: Exception, slow: bool) -> None:
        """Every record of ``group`` failed with ``error`` in one call (``slow``: past
        ``slow_call_s``): each is classified and handed back (retried or dead-lettered) on its
        own. A classifier interrupted by a KeyboardInterrupt stops the run: that record and the
        rest of the group are pending."""
        scheduler, classify, clock = self._scheduler, self._classify, self._clock
        for position, work in enumerate(group):
            try:
                error_class = classify(error)
                retry_after = classify.retry_after(error, error_class)
            except BaseException:
                self._abandon(group[position:])
                raise
            with self._guard:
                if slow:
                    scheduler.slow_call()
                scheduler.fail(work, error_class, error, retry_after, clock(), time.time())
                self._guard.notify_all()

    def _abandon(self, group: list[Work]) -> None:
        """Records that never ran (or whose call was interrupted) stay pending."""
        if not group:
            return
        scheduler, clock = self._scheduler, self._clock
        with self._guard:
            for work in group:
                scheduler.abandon(work, clock())
            self._guard.notify_all()

    def _stopping(self) -> bool:
        with self._guard:
            return self._scheduler.stopping
