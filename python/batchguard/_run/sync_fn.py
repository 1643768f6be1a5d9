"""A sync fn under an async caller: it never runs on the event loop.

``arun_batches`` runs a sync fn, per record or bulk, on the sync drivers as ``run_batches``
does, from a thread of its own (:func:`in_thread_until_cancelled`), stopped through a
:class:`StopSignal` when the awaiting task is cancelled.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .._async import _absorb_cancel, _retrieve

__all__ = ["RunCancelled", "StopSignal", "in_thread_until_cancelled"]

T = TypeVar("T")


class RunCancelled(BaseException):
    """Raised inside a sync run whose ``arun_batches`` task was cancelled. A BaseException, so
    the engines treat it as an interrupt: no new record starts, the calls in flight finish, the
    dead letters are flushed, and it is re-raised."""


class StopSignal:
    """Stops a sync run that another thread drives, from the event loop's thread.

    Once set, the run's next fn call (per record, or a bulk call on a group) raises
    :class:`RunCancelled` instead of starting, and so does its next progress report: the
    engines report progress while they wait (a retry's backoff, an open breaker, the rate
    limit), when no call would start to notice.
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
            raise error from error.__cause__  # not chained to the cancel, its own cause kept
        raise


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if isinstance(error, StopIteration):
        # A future refuses it (TypeError, and the awaiting task would wait forever) and a
        # coroutine cannot raise it (PEP 479): handed on as a coroutine hands it on.
        error = _as_runtime_error(error)
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _as_runtime_error(error: StopIteration) -> RuntimeError:
    """What PEP 479 makes of a StopIteration raised out of a coroutine, the original chained."""
    wrapped = RuntimeError(f"the run raised StopIteration: {error}")
    wrapped.__cause__ = error
    return wrapped
