"""A sync fn under an async caller: it never runs on the event loop.

``arun_batches`` runs a per-record sync fn on the threaded drivers, on a thread of its own
(:func:`in_thread_until_cancelled`, stopped through a :class:`StopSignal` when the awaiting task
is cancelled); the async driver awaits a sync bulk fn (or a sync fn of an async run) through
:class:`SyncCalls`, a pool of the run's own threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .._async import Reraised, _absorb_cancel, _retrieve
from ..reference import call_timed

__all__ = ["RunCancelled", "StopSignal", "SyncCalls", "in_thread_until_cancelled"]

T = TypeVar("T")


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
            if isinstance(error, StopIteration):  # a coroutine cannot raise it as itself
                raise Reraised(error)
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
