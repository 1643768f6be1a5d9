"""Compensation: undoing what a run did (``run_batches(..., compensate=undo)``).

``compensate=undo`` is ``undo(record, value)``: it reverses what ``fn(record)`` did when it
returned ``value`` (deletes the row it inserted, cancels the order it placed). It runs:

* with ``atomic_batches=True``, when a batch ends with any record dead-lettered: the batch's
  succeeded records are undone, newest record (highest input position) first, and the batch
  counts as failed as a whole: each undone record is *compensated* and its DLQ entry
  (:class:`~batchguard.errors.BatchRolledBack`, stage the run's) names the record that failed
  and its error, so the whole batch can be replayed once the cause is fixed;
* with ``on_abort="compensate"``, when the run aborts (a FATAL error, a breaker abort, the
  error budget): every record this run succeeded on is undone, newest batch first.

An undo is retried as the run's calls are (its ``retry`` policy, its classifier); one that still
fails is dead-lettered at stage ``"compensate"`` with :class:`~batchguard.errors.CompensationFailed`
and the payload ``{"record": record, "value": value}``, so nothing is silently half-done. Every
record ends in one of four states: ``report.total == success_count + failure_count +
compensated_count + pending_count``.

Both engines run the same code: a run with compensation (or ``keep_outcomes``) has the engine
hand each batch's successes (input positions and values) with the batch's end, reads its input
through a copy to know the record at each position, and the recorder calls
:class:`RunCompensation` at each batch's end, on the thread that called ``run_batches``. Records
are matched to their values by input position, so the same object at many positions (``[row] *
1000``, small ints, None) is undone with each position's own value; a run without these
keywords pays nothing.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from ._checks import check_flag, shown
from ._error_class import ErrorClass
from ._native import BatchEvent, DeadRecord, FailedAttempt
from ._run.entries import COMPENSATE_STAGE
from .errors import BatchRolledBack, CompensationFailed, ConfigError, ConfigTypeError
from .policies import BackoffState, Classifier, RetryPolicy

__all__ = ["COMPENSATE_STAGE", "ON_ABORT", "Compensation", "Outcome", "RunCompensation", "SuccessLog", "Undoer",
           "check_compensation", "check_undo"]

ON_ABORT: Final = ("stop", "compensate")
"""What a run does when it aborts: "stop" leaves what it did; "compensate" undoes it."""

Undo = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Compensation:
    """A run's compensation settings, checked (:func:`check_compensation`)."""

    undo: Undo | None
    """``compensate(record, value)``; None with ``keep_outcomes`` alone."""
    atomic_batches: bool = False
    on_abort: Literal["stop", "compensate"] = "stop"
    keep_outcomes: bool = False
    """Hand each batch's succeeded records and values to the run's outcome sink (a job's store)."""

    @property
    def keeps_run(self) -> bool:
        """Whether every succeeded record of the run is kept until it ends (to undo on abort)."""
        return self.on_abort == "compensate"


def check_compensation(compensate: Any, atomic_batches: Any, on_abort: Any, keep_outcomes: Any, *,
                       is_coroutine: Callable[[Any], bool]) -> Compensation | None:
    """The run's :class:`Compensation`, or None when none of its keywords is set; each error
    names its keyword."""
    check_flag("atomic_batches", atomic_batches)
    check_flag("keep_outcomes", keep_outcomes)
    if not isinstance(on_abort, str) or on_abort not in ON_ABORT:
        raise (ConfigError if isinstance(on_abort, str) else ConfigTypeError)(
            f"on_abort must be one of {', '.join(map(repr, ON_ABORT))}; got {shown(on_abort)}")
    if compensate is None:
        if atomic_batches:
            raise ConfigError("atomic_batches=True needs compensate=undo(record, value): it is what "
                              "rolls a failed batch's succeeded records back")
        if on_abort == "compensate":
            raise ConfigError('on_abort="compensate" needs compensate=undo(record, value): it is '
                              "what undoes the run's records")
        return Compensation(None, keep_outcomes=True) if keep_outcomes else None
    check_undo("compensate", compensate)
    if is_coroutine(compensate):
        raise ConfigTypeError("compensate must be a plain function: it runs at a batch's end on the "
                              f"thread that handles batch ends, never awaited, and {shown(compensate)} "
                              "is an async def function")
    if not atomic_batches and on_abort == "stop":
        raise ConfigError('compensate= is used with atomic_batches=True or on_abort="compensate"; '
                          "with neither it would never run")
    return Compensation(compensate, atomic_batches, "compensate" if on_abort == "compensate" else "stop",
                        keep_outcomes)


def check_undo(keyword: str, undo: Any) -> None:
    """ConfigTypeError, naming ``keyword``, unless ``undo`` can be called as
    ``undo(record, value)``: a wrong one would fail only when a batch is undone, every time."""
    if not callable(undo):
        raise ConfigTypeError(f"{keyword} must be callable as undo(record, value), got "
                              f"{type(undo).__name__} {shown(undo)}")
    try:
        signature = inspect.signature(undo)
    except (TypeError, ValueError):  # a builtin without one: it is called as it is
        return
    try:
        signature.bind(None, None)
    except TypeError as exc:
        raise ConfigTypeError(f"{keyword} is called as undo(record, value), and {shown(undo)} cannot be: "
                              f"{exc}") from None


class Outcome(NamedTuple):
    """A succeeded record: its input position, the record, and what ``fn`` returned."""

    position: int
    record: Any
    value: Any


class SuccessLog:
    """The records of the batches still open, by input position, and what each call returned.

    :meth:`records` gives the engine the input through :func:`itertools.tee`; :meth:`take`, on
    the recorder's thread, reads a finished batch's records from its own copy (items the engine
    has read, from the tee's buffer, never the input itself) and pairs each success the engine
    names (its input position and value: the run hands values with each batch's end,
    ``EngineConfig.values_per_batch``) with the record at that position. Positions, not
    identities: the same object may stand at many positions (``[row] * 1000``, small ints,
    interned strings, None) and each gets its own call's value. Nothing is per record in the
    workers: a run pays for this only when it compensates or keeps outcomes.
    """

    def __init__(self, batch_size: int, skip_batches: frozenset[int]) -> None:
        self._batch_size = batch_size
        self._skip = skip_batches
        self._mine: Iterator[Any] = iter(())
        self._pulled = 0  # positions read from our copy of the input
        self._chunks: dict[int, list[Any]] = {}  # batch -> its records, read and not yet taken

    def records(self, records: Iterable[Any]) -> Iterator[Any]:
        """The input as the engine reads it; :meth:`take` reads the same records from a copy."""
        theirs, self._mine = itertools.tee(records)
        return theirs

    def _read_to(self, end: int) -> None:
        """Read our copy of the input up to position ``end`` (the engine has read that far: only
        the tee's buffer is read, never the input), into per-batch chunks."""
        size = self._batch_size
        while self._pulled < end:
            batch = self._pulled // size
            want = min(end, (batch + 1) * size) - self._pulled
            chunk = list(itertools.islice(self._mine, want))
            if batch not in self._skip:
                self._chunks.setdefault(batch, []).extend(chunk)
            self._pulled += len(chunk)
            if len(chunk) < want:
                return

    def take(self, batch: int, size: int, indices: Sequence[int], values: Sequence[Any], *,
             wanted: bool = True) -> list[Outcome]:
        """Batch ``batch``'s succeeded records, in input order: ``indices`` are the positions
        ``fn`` succeeded on (the engine's, in record order) and ``values`` what it returned.
        The batch's records are forgotten. ``wanted=False``: nothing will read them (a batch
        that ended whole, nothing kept): they are only forgotten."""
        first = batch * self._batch_size
        self._read_to(first + size)
        chunk = self._chunks.pop(batch, [])
        if not wanted:
            return []
        return [Outcome(index, chunk[index - first], value)
                for index, value in zip(indices, values, strict=True)]


class _Undone(NamedTuple):
    compensated: list[Outcome]
    failed: list[DeadRecord]
    """Each undo that still failed, as a dead record of stage "compensate"."""


class Undoer:
    """Runs ``undo(record, value)`` with the run's retry policy and classifier."""

    def __init__(self, undo: Undo, retry: RetryPolicy, classifier: Classifier, seed: int,
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        self._undo = undo
        self._retry = retry
        self._classifier = classifier
        self._seed = seed
        self._sleep = sleep

    def _policy_for(self, exc: BaseException, error_class: ErrorClass) -> RetryPolicy:
        """The policy a call failing with ``exc`` would be retried under: ``retry=``'s policy for
        its error (``RetryPolicies``, a mapping; the classifier carries the run's table), else
        the run's one policy."""
        table = self._classifier.retry_table
        index_for, policies = getattr(table, "index_for", None), getattr(table, "policies", None)
        if index_for is None or policies is None:
            return self._retry
        try:
            policy = policies[index_for(exc, error_class)]
        except Exception:  # noqa: BLE001 - a key predicate that raises: as the engines, the default
            return self._retry
        return policy if isinstance(policy, RetryPolicy) else self._retry

    def _classify(self, exc: BaseException) -> ErrorClass:
        try:
            return self._classifier.classify(exc)
        except Exception:  # noqa: BLE001 - as for a call: a classifier that raises makes it PERMANENT
            return ErrorClass.PERMANENT

    def undo_all(self, outcomes: Sequence[Outcome], batch: Callable[[int], int],
                 undone: _Undone | None = None) -> _Undone:
        """Undo each of ``outcomes`` in the order given; ``batch(index)`` is a record's batch.

        ``undone``: what an interrupted call of this already did (its first outcomes): the
        rest is undone into it, the interrupted undo again (an undo must bear being repeated)."""
        undone = _Undone([], []) if undone is None else undone
        for outcome in outcomes[len(undone.compensated) + len(undone.failed):]:
            failed = self.undo_one(outcome, batch(outcome.position))
            if failed is None:
                undone.compensated.append(outcome)
            else:
                undone.failed.append(failed)
        return undone

    def undo_one(self, outcome: Outcome, batch: int) -> DeadRecord | None:
        """None once ``undo`` returned; else the dead record of its failed tries."""
        attempts: list[FailedAttempt] = []
        backoff: BackoffState | None = None
        backoff_policy: RetryPolicy | None = None  # the policy ``backoff`` follows
        while True:
            try:
                self._undo(outcome.record, outcome.value)
            except Exception as exc:  # noqa: BLE001 - an undo's failure is dead-lettered, never lost
                error_class = self._classify(exc)
                wrapped = CompensationFailed(f"compensate(record, value) of record {outcome.position} "
                                             f"failed: {type(exc).__name__}: {_message(exc)}")
                wrapped.__cause__ = exc
                wrapped.__traceback__ = exc.__traceback__
                policy = self._policy_for(exc, error_class)
                last = len(attempts) + 1 >= policy.max_attempts or not error_class.retryable
                delay: float | None = None
                if not last:
                    if error_class is ErrorClass.RECOVERABLE:
                        if backoff is None or backoff_policy is not policy:
                            backoff, backoff_policy = BackoffState(policy, outcome.position, self._seed), policy
                        delay = backoff.next_delay()
                    else:
                        delay = 0.0
                attempts.append(FailedAttempt(attempt=len(attempts) + 1, at=time.time(), error=wrapped,
                                              delay=delay))
                if delay is None:
                    return DeadRecord(record_index=outcome.position, batch_index=batch,
                                      record={"record": outcome.record, "value": outcome.value},
                                      error_class=str(error_class), attempts=attempts)
                if delay > 0:
                    self._sleep(delay)
            else:
                return None


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__
        return f"<unprintable {type(exc).__name__}>"


def _rolled_back(batch: int, undone: Sequence[Outcome], because: str) -> list[DeadRecord]:
    """The dead records of ``undone`` records (a :class:`BatchRolledBack` saying ``because``),
    each with its record as the payload to replay."""
    now = time.time()
    return [DeadRecord(record_index=outcome.position, batch_index=batch, record=outcome.record,
                       error_class=str(ErrorClass.RECOVERABLE),
                       attempts=[FailedAttempt(attempt=1, at=now, error=BatchRolledBack(because), delay=None)])
            for outcome in undone]


def _cause(dead: Sequence[DeadRecord]) -> tuple[int, BaseException]:
    first = min(dead, key=lambda record: record.record_index)
    return first.record_index, first.attempts[-1].error


class RunCompensation:
    """One run's compensation: the recorder hands it each batch's end, and the run's end.

    Counts what it did (``compensated``, ``undo_failed``) for the report. The engine hands each
    batch's successful values with its end (``EngineConfig.values_per_batch``, which
    :func:`~batchguard._run.execute.execute` sets for such a run); with ``keep_values`` (``results="keep"``)
    they are kept here, less the undone ones, for the report's ``successful``."""

    def __init__(self, spec: Compensation, *, batch_size: int, skip_batches: frozenset[int],
                 retry: RetryPolicy, classifier: Classifier, seed: int, keep_values: bool = True) -> None:
        self.spec = spec
        self.log = SuccessLog(batch_size, skip_batches)
        self._batch_size = batch_size
        self._undoer = None if spec.undo is None else Undoer(spec.undo, retry, classifier, seed)
        self._kept: dict[int, list[Outcome]] = {}  # batch -> its succeeded records (on_abort)
        self._interrupted: tuple[int, list[Outcome], _Undone] | None = None
        """The batch whose rollback an interrupt (Ctrl-C in an undo) cut short, until it is done."""
        self.compensated = 0
        self.undo_failed = 0
        self.rolled_back = 0
        """The compensated records of rolled-back atomic batches (each has a DLQ entry)."""
        # batch -> its successes' (positions, values) as it ended, for ``successful`` (None:
        # results= other than "keep", the run keeps no values)
        self._values: dict[int, tuple[list[int], list[Any]]] | None = {} if keep_values else None
        self._unsucceeded: set[int] = set()  # positions an abort's undos took from ``successful``
        self.undone_on_abort: dict[int, list[int]] = {}
        """Batch -> the positions an abort undid in it (a job's store forgets their outcomes)."""
        self.interrupted: BaseException | None = None
        """What interrupted an abort's undos (:meth:`run_ended`), raised once they are handled."""
        self.reopen_on_abort: list[int] = []
        """The batches an abort undid whole (a job's store reopens them: a resume runs them)."""

    def records(self, records: Iterable[Any]) -> Iterator[Any]:
        """The input a run with compensation runs on (its records are read again from a copy)."""
        return self.log.records(records)

    def _batch_of(self, index: int) -> int:
        return index // self._batch_size

    def batch_end(self, event: BatchEvent, own: BatchEvent) -> tuple[BatchEvent, list[Outcome]]:
        """The batch as it ends once compensated, and its succeeded records (what a job keeps
        with ``keep_outcomes``: none when it was rolled back). ``own`` is the batch as the
        engine ended it: its ``indices`` / ``values`` are ``fn``'s own successes (``event``'s
        may also hold fallback values, where no call ran and nothing is to undo)."""
        dead = list(event.dead or ())
        interrupted = self._interrupted
        if interrupted is not None and interrupted[0] == event.index:
            # Handed over again after an interrupt cut its rollback short: go on where it stopped.
            succeeded, undone = interrupted[1], interrupted[2]
        else:
            if own.indices is None or own.values is None:
                raise RuntimeError("compensation needs each batch's values from the engine "
                                   "(EngineConfig.values_per_batch)")
            # A batch that ended whole needs its outcomes only when they are kept (on_abort,
            # keep_outcomes); building them costs a tuple a record.
            wanted = bool(dead and self.spec.atomic_batches) or self.spec.keeps_run or self.spec.keep_outcomes
            succeeded = self.log.take(event.index, event.size, own.indices, own.values, wanted=wanted)
            undone = _Undone([], [])
        if not (dead and self.spec.atomic_batches and succeeded and self._undoer is not None):
            if self.spec.keeps_run and succeeded:
                self._kept[event.index] = succeeded
            self._keep_values(event)
            return event, succeeded
        failed_at, error = _cause(dead)
        self._interrupted = (event.index, succeeded, undone)
        self._undoer.undo_all(succeeded[::-1], self._batch_of, undone)
        self._interrupted = None
        because = (f"batch {event.index} was rolled back (atomic_batches): record {failed_at} "
                   f"failed with {type(error).__name__}: {_message(error)}")
        rolled_back = _rolled_back(event.index, undone.compensated, because)
        self._count(event.index, undone)
        self.rolled_back += len(rolled_back)
        every = sorted([*dead, *rolled_back, *undone.failed], key=lambda record: record.record_index)
        indices, values = event.indices, event.values
        if indices is not None and values is not None:
            # A batch's values for a results sink (results= other than "keep"): the undone
            # records' leave; a fallback's value (no call ran, nothing to undo) stays.
            gone = {outcome.position for outcome in succeeded}
            kept = [(i, v) for i, v in zip(indices, values, strict=True) if i not in gone]
            indices, values = [i for i, _ in kept], [v for _, v in kept]
        event = BatchEvent(index=event.index, size=event.size,
                           succeeded=event.succeeded - len(succeeded),
                           failed=event.failed + len(undone.failed), retries=event.retries,
                           duration=event.duration, pending=event.pending, dead=every,
                           indices=indices, values=values)
        self._keep_values(event)
        return event, []

    def _keep_values(self, event: BatchEvent) -> None:
        if self._values is not None and event.indices is not None and event.values is not None:
            # The engine's lists, new for each batch end and never changed after: kept as they are.
            self._values[event.index] = (event.indices, event.values)

    def _count(self, batch: int, undone: _Undone) -> None:
        self.compensated += len(undone.compensated)
        self.undo_failed += len(undone.failed)
        self._unsucceeded.update(outcome.position for outcome in undone.compensated)
        self._unsucceeded.update(dead.record_index for dead in undone.failed)

    def run_ended(self, stop_reason: str | None) -> Iterator[BatchEvent]:
        """At the run's end: with ``on_abort="compensate"`` and an aborted run, undo every
        record the run succeeded on, newest batch first. Yields, as each batch is undone (for
        the recorder to record it at once: a kill then loses at most the batch being undone),
        its event: the undos that failed (to dead-letter, with the undone records of a batch
        not undone whole), with ``succeeded`` as the records it undid.

        An interrupt (Ctrl-C) inside an undo: that batch is still undone to its end (the
        interrupted undo again: an undo must bear being repeated), so a job reopens it whole;
        no later batch is undone, and the interrupt is kept in :attr:`interrupted`, for the
        recorder to raise once these events are handled."""
        kept, self._kept = self._kept, {}
        if stop_reason is None or not self.spec.keeps_run or self._undoer is None:
            return
        for batch in sorted(kept, reverse=True):
            outcomes = kept[batch]
            undone = _Undone([], [])
            try:
                self._undoer.undo_all(outcomes[::-1], self._batch_of, undone)
            except BaseException as interrupt:  # noqa: BLE001 - Ctrl-C (an undo's own errors are Exceptions)
                self.interrupted = interrupt
                self._undoer.undo_all(outcomes[::-1], self._batch_of, undone)
            self._count(batch, undone)
            self.undone_on_abort[batch] = [outcome.position for outcome in undone.compensated]
            dead = list(undone.failed)
            if undone.failed:
                # Not undone whole: running the batch again would redo the records whose undo
                # failed, so it stays done and each record that was undone gets an entry to
                # replay (as a rolled-back atomic batch's records do).
                failed_at, error = _cause(undone.failed)
                because = (f"undone when the run aborted (on_abort=\"compensate\"), but batch {batch} could not "
                           f"be undone whole (the undo of record {failed_at} failed: {_message(error)}): "
                           "replay this record to redo it")
                dead += _rolled_back(batch, undone.compensated, because)
                self.rolled_back += len(undone.compensated)
            else:
                self.reopen_on_abort.append(batch)
            yield BatchEvent(index=batch, size=len(outcomes), succeeded=len(undone.compensated),
                             failed=len(undone.failed), retries=0, duration=0.0, pending=0,
                             dead=sorted(dead, key=lambda record: record.record_index))
            if self.interrupted is not None:
                return

    def successful(self, values: list[Any]) -> list[Any]:
        """The report's ``successful``: with ``keep_values``, every batch's values as it ended,
        in input order, less those an abort undid (``values``, the engine's, is then empty:
        it handed them with each batch); else ``values`` as they are."""
        if self._values is None:
            return values
        gone = self._unsucceeded
        return [value for batch in sorted(self._values)
                for index, value in zip(*self._values[batch], strict=True) if index not in gone]
