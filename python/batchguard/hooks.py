"""Lifecycle hooks: ``run_batches(..., hooks=...)`` tells your code what the run is doing.

``hooks`` is any object with some of these methods, or a :class:`Hooks` of keyword callables:

* ``on_retry(record, attempt, error, delay)``: a record's try number ``attempt`` (1-based)
  failed with ``error`` and will be tried again after ``delay`` seconds;
* ``on_dead_letter(entry)``: a record was dead-lettered (the :class:`~batchguard.DeadLetter`
  as the DLQ stores it);
* ``on_breaker(old, new)``: the circuit breaker moved ("closed", "open", "half_open");
* ``on_batch_complete(stats)``: a batch ended (its :class:`~batchguard.BatchStats`);
* ``on_run_end(report)``: the run's :class:`~batchguard.BatchReport`.

They are called on the thread that called ``run_batches``, in the order things happened,
when the engine hands a finished batch over (a batch's retries, then its dead letters, then
the batch itself). A hook that raises is logged once (per hook and run), counted in
``report.hook_errors``, and otherwise ignored: the record it was about is still
dead-lettered or retried as if no hook were there. Only ``on_retry`` costs the engine anything,
and only when it is set: the engine then keeps each scheduled retry for the hook.

Every run has the same lifecycle, whatever it does: ``run_started`` (below), then its events,
then ``on_run_end`` with the report the caller gets (``report.validation`` included), then
``run_closed(None)``; a run that raises skips ``on_run_end`` and ends with
``run_closed(error)``. A run with nothing left to do (``run_batches(..., job=)`` or ``batchguard
run --job`` on a finished job) runs no record but starts and ends all the same, with a report
of zero records whose ``skipped_batches`` counts the job's batches. (``batchguard jobs resume``
of a finished job makes no run: it says so and exits.) A dry-run or a sample is no such run: it
calls no hook.

An adapter that needs more than these (``batchguard.metrics``, ``batchguard.alerts``) may also
have ``run_started(run_id, stage, job_id)``, ``observe_retry(event)`` (the
:class:`~batchguard._native.RetryEvent`, with its error class), ``observe_counters(counters)``
(the engine's counters at each hand-over), ``observe_progress(progress)`` (each
:class:`~batchguard.BatchProgress` snapshot: with it, the run takes snapshots, every 0.1 s,
as it does for ``on_progress``) and ``run_closed(error)`` (called once when the run is over,
after ``on_run_end``, or instead of it with the exception the run raises: Ctrl-C, a failing
DLQ; where an adapter stops its threads). An ``alert_failures`` attribute, read after
``run_closed``, is added to ``report.alert_failures``. An adapter that never reads the DLQ
says so with ``reads_dlq = False``: a run whose targets all do keeps writing an SQLite DLQ
in the background (a user's hooks may read it at a batch's end, where its entries are stored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._native import BatchEvent, BreakerEvent, Counters, DeadRecord, RetryEvent
from .dlq.base import DeadLetter
from .errors import ConfigTypeError
from .results import BatchProgress, BatchReport, BatchStats

__all__ = ["HOOK_NAMES", "HookDispatch", "Hooks", "ProgressTee", "check_hooks", "wants_retries"]

logger = logging.getLogger("batchguard")

HOOK_NAMES: Final = ("on_retry", "on_dead_letter", "on_breaker", "on_batch_complete", "on_run_end")
"""The public hooks, in the order :class:`Hooks` takes them."""
_OBSERVER_NAMES: Final = ("run_started", "observe_retry", "observe_counters", "observe_progress",
                           "run_closed")
_RETRY_NAMES: Final = ("on_retry", "observe_retry")


@dataclass(frozen=True)
class Hooks:
    """Hooks as keyword callables: ``Hooks(on_retry=print, on_run_end=notify)``."""

    on_retry: Callable[[Any, int, BaseException, float], Any] | None = None
    on_dead_letter: Callable[[DeadLetter], Any] | None = None
    on_breaker: Callable[[str, str], Any] | None = None
    on_batch_complete: Callable[[BatchStats], Any] | None = None
    on_run_end: Callable[[BatchReport[Any]], Any] | None = None


def _methods(target: object) -> dict[str, Callable[..., Any]]:
    """``target``'s hooks that are set, by name."""
    found: dict[str, Callable[..., Any]] = {}
    for name in HOOK_NAMES + _OBSERVER_NAMES:
        method = getattr(target, name, None)
        if method is not None:
            found[name] = method
    return found


def check_hooks(hooks: object, what: str = "hooks") -> None:
    """ConfigTypeError (a TypeError) unless ``hooks`` has at least one hook, and each one it has is callable."""
    found = _methods(hooks)
    if not found:
        raise ConfigTypeError(f"{what} must have at least one of {', '.join(HOOK_NAMES)} "
                        f"(a batchguard.Hooks, or an object with those methods), "
                        f"got {type(hooks).__name__}")
    for name, method in found.items():
        if not callable(method):
            raise ConfigTypeError(f"{what}.{name} must be callable, got {type(method).__name__}")


def wants_retries(*targets: object) -> bool:
    """Does any of ``targets`` listen to retries? Only then does the engine collect them."""
    return any(getattr(t, name, None) is not None for t in targets if t is not None
               for name in _RETRY_NAMES)


class HookDispatch:
    """A run's hook targets (the user's hooks, a metrics adapter), each method looked up once.

    Called only from the recorder, on the caller's thread. ``errors`` counts the hooks that
    raised; each (target, hook) that raises is logged once per run.
    """

    def __init__(self, targets: Sequence[object]) -> None:
        self._calls: dict[str, list[tuple[int, Callable[..., Any]]]] = {
            name: [] for name in HOOK_NAMES + _OBSERVER_NAMES}
        for number, target in enumerate(targets):
            for name, method in _methods(target).items():
                self._calls[name].append((number, method))
        self.errors = 0
        self._logged: set[tuple[int, str]] = set()
        self.wants_dead_letters = bool(self._calls["on_dead_letter"])
        self.wants_progress = bool(self._calls["observe_progress"])
        self.reads_dlq = any(getattr(target, "reads_dlq", True) is not False for target in targets)
        """Some target may read the DLQ at a batch's end: its dead letters are stored first."""
        """A target watches progress: the run needs snapshots even without ``on_progress``."""
        self._targets = tuple(targets)
        self._closed = False

    def _call(self, name: str, *args: Any) -> None:
        for number, method in self._calls[name]:
            try:
                method(*args)
            except Exception as exc:  # a broken hook must never cost a record
                self.errors += 1
                if (number, name) not in self._logged:
                    self._logged.add((number, name))
                    logger.error("hook %s raised %s: %s (logged once; the run goes on, "
                                 "report.hook_errors counts every failure)", name,
                                 type(exc).__name__, exc, exc_info=exc)

    def run_started(self, run_id: str, stage: str, job_id: str | None) -> None:
        self._call("run_started", run_id, stage, job_id)

    def event(self, event: BatchEvent | BreakerEvent | RetryEvent,
              dead_letter: Callable[[DeadRecord], DeadLetter]) -> None:
        """Pass one engine event on; ``dead_letter`` builds a dead record's entry."""
        if isinstance(event, RetryEvent):
            self._call("on_retry", event.record, event.attempt, event.error, event.delay)
            self._call("observe_retry", event)
        elif isinstance(event, BatchEvent):
            self.dead_letters(event, dead_letter)
            if self._calls["on_batch_complete"]:
                self._call("on_batch_complete", BatchStats(
                    event.index, event.size, event.succeeded, event.failed, event.retries,
                    event.duration, event.pending))
        else:
            self._call("on_breaker", event.from_state, event.to_state)

    def dead_letters(self, event: BatchEvent, dead_letter: Callable[[DeadRecord], DeadLetter]) -> None:
        """``on_dead_letter`` for each of the batch's dead records (and only that: an aborted
        run's failed undos are dead-lettered after its batches ended)."""
        if event.dead and self.wants_dead_letters:
            for record in event.dead:
                self._call("on_dead_letter", dead_letter(record))

    def counters(self, counters: Counters) -> None:
        self._call("observe_counters", counters)

    def run_end(self, report: BatchReport[Any]) -> None:
        self._call("on_run_end", report)

    def progress(self, snapshot: BatchProgress) -> None:
        self._call("observe_progress", snapshot)

    def run_closed(self, error: BaseException | None) -> None:
        """The run is over (``error``: what it raises, or None): each target's ``run_closed``,
        once, however many ways the run's end reaches here."""
        if self._closed:
            return
        self._closed = True
        self._call("run_closed", error)

    @property
    def alert_failures(self) -> int:
        """The targets' undelivered notices (their ``alert_failures``), once closed."""
        return sum(int(getattr(target, "alert_failures", 0)) for target in self._targets)


class ProgressTee:
    """The ``on_progress`` of a run whose hook targets watch progress: each snapshot goes to
    them (:meth:`HookDispatch.progress`), then to the caller's ``on_progress``, if any.

    It asks for a snapshot at every batch end only when the caller's callback does: a target
    alone is served by the snapshots every 0.1 s (and the hand-over's counters).
    """

    def __init__(self, hooks: HookDispatch, on_progress: Callable[[BatchProgress], Any] | None) -> None:
        self._hooks = hooks
        self._on_progress = on_progress
        self.progress_every_batch = (on_progress is not None and
                                     getattr(on_progress, "progress_every_batch", True) is not False)

    def __call__(self, snapshot: BatchProgress) -> None:
        self._hooks.progress(snapshot)
        if self._on_progress is not None:
            self._on_progress(snapshot)
