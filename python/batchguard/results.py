"""Typed results: what a run reports while it runs and when it ends."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, overload

from ._checks import check_count
from ._native import ActiveBatch
from ._report.model import build
from ._report.text import render_text
from ._stored import REPORT_SAMPLE
from .steering import ConcurrencyLimit, RetriesOverBudget

if TYPE_CHECKING:
    # A default for the checker only (typing.TypeVar takes one from Python 3.13): a bare
    # `BatchReport` annotation means BatchReport[Any], as it did before the class was generic.
    from typing_extensions import TypeVar

    from ._report.patterns import FailurePattern
    from ._report.rules import RecommendationRule
    from ._run.failures import Failures
    from .dlq.base import DeadLetter
    from .validation.issues import ValidationSummary

    R = TypeVar("R", default=Any)
else:
    from typing import TypeVar

    R = TypeVar("R")

__all__ = ["ActiveBatch", "BatchProgress", "BatchReport", "BatchStats", "FinishedBatches", "RecordError",
           "RunStatus"]

RunStatus = str
"""One of "complete", "partial_success", "failed", "aborted"."""


@dataclass(frozen=True, slots=True)
class RecordError:
    """One dead-lettered record, as the report lists it."""

    record_index: int
    record_id: Any
    error_type: str
    error_message: str
    error_class: str
    stage: str
    attempts: int
    """How many tries the record had."""
    batch_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_index": self.record_index,
            "record_id": self.record_id,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "error_class": self.error_class,
            "stage": self.stage,
            "attempts": self.attempts,
            "batch_index": self.batch_index,
        }


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One batch, once every record in it is final (or the run stopped)."""

    batch_index: int
    size: int
    succeeded: int
    failed: int
    retries: int
    duration_s: float
    pending: int = 0

    @property
    def compensated(self) -> int:
        """Records of the batch that succeeded and were undone (``compensate=``): the rest of
        ``size`` once succeeded, failed and pending are counted."""
        return self.size - self.succeeded - self.failed - self.pending

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_index": self.batch_index,
            "size": self.size,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "duration_s": self.duration_s,
            "pending": self.pending,
            "compensated": self.compensated,
        }


BatchTally = tuple[int, int, int, int, int, float, int]
"""A finished batch as the recorder keeps it: BatchStats' fields, in their order."""


class FinishedBatches(Sequence[BatchStats]):
    """The batches a snapshot lists as finished (``BatchProgress.finished``): a sequence of
    :class:`BatchStats`, each built when it is read. A snapshot after a thousand short batches
    then costs one slice, not a thousand objects, on the run's thread; a display that draws
    the newest rows and the totals (:meth:`totals`) builds only those rows."""

    __slots__ = ("_tallies",)

    def __init__(self, tallies: Sequence[BatchTally] = ()) -> None:
        self._tallies = tuple(tallies)

    def __len__(self) -> int:
        return len(self._tallies)

    @overload
    def __getitem__(self, index: int) -> BatchStats: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[BatchStats, ...]: ...
    def __getitem__(self, index: int | slice) -> BatchStats | tuple[BatchStats, ...]:
        if isinstance(index, slice):
            return tuple(BatchStats(*tally) for tally in self._tallies[index])
        return BatchStats(*self._tallies[index])

    def __iter__(self) -> Iterator[BatchStats]:
        for tally in self._tallies:
            yield BatchStats(*tally)

    def totals(self) -> tuple[int, int, int, int]:
        """(the highest batch index, succeeded, failed, retries) over these batches, without
        building them; the index is -1 when there are none."""
        # One plain loop: it allocates nothing per batch (zip(*tallies) would make an iterator
        # per batch, and a thousand allocations at a run's end set off a collection of the
        # young generation, which by then holds the run's whole list of values).
        newest, succeeded, failed, retries = -1, 0, 0, 0
        for index, _, ok, bad, retried, _, _ in self._tallies:
            newest = max(newest, index)
            succeeded += ok
            failed += bad
            retries += retried
        return newest, succeeded, failed, retries

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FinishedBatches):
            return self._tallies == other._tallies
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._tallies)

    def __repr__(self) -> str:
        return f"FinishedBatches({list(self)!r})"


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """A snapshot of a run in progress, handed to ``on_progress`` (at most every 0.1 s, and at
    every batch end), and once more when the run ends (``final``).

    ``batches`` and ``finished`` are what a per-batch display draws: the open batches with their
    counts, and the batches finished since the previous snapshot with their final stats (each
    finished batch is in exactly one snapshot's ``finished``). They are built only when a
    snapshot is taken, never per record. :mod:`batchguard.progress` has ready displays.
    """

    batches_completed: int
    batches_total: int | None
    """None when the total is unknown (a generator, without ``total=``)."""
    current_batch_index: int
    records_processed: int
    succeeded: int
    failed: int
    retrying: int
    in_flight: int
    queued: int
    elapsed_s: float
    total: int | None
    """The records the run takes on: the input's length, or the ``total=`` the caller gave for
    a generator (raised to the records read so far if the input turns out longer)."""
    breaker_state: str = "closed"
    batches: tuple[ActiveBatch, ...] = ()
    """The batches not finished yet, in batch order (:class:`batchguard.ActiveBatch`)."""
    finished: Sequence[BatchStats] = ()
    """The batches finished since the previous snapshot, in the order they finished (a
    :class:`FinishedBatches` from the engines: each row is built when it is read)."""
    batch_size: int = 0
    final: bool = False
    """The run has ended: this is the last snapshot (not sent when the run raised)."""
    input_done: bool = False
    """On the final snapshot: the input ran out and no record was left pending (not an aborted
    run), so the run is 100 % complete even when its total was never known."""
    concurrency_limit: int | None = None
    """With ``concurrency=Adaptive(...)``: calls that may be in flight now (None: fixed)."""

    @property
    def avg_time_per_record(self) -> float:
        return self.elapsed_s / self.records_processed if self.records_processed else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the average pace so far; None when the total is unknown."""
        if self.total is None or not self.records_processed:
            return None
        if self.final:
            return 0.0
        return max(0, self.total - self.records_processed) * self.avg_time_per_record

    @property
    def percent_complete(self) -> float:
        """0 to 100: records final of the total (never above 100, whatever ``total=`` said);
        without a total, 0 until the final snapshot of a run that read its whole input (100)."""
        if self.total:
            return min(100.0, 100.0 * self.records_processed / self.total)
        if self.batches_total:
            return min(100.0, 100.0 * self.batches_completed / self.batches_total)
        # No total (a generator without total=): unknown until the input has run out.
        return 100.0 if self.total == 0 or self.input_done else 0.0

    @property
    def has_errors(self) -> bool:
        return self.failed > 0

    @property
    def rate(self) -> float:
        """Records finished per second so far."""
        return self.records_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


_VIEWS: Final = frozenset({"batches", "dead_letters", "errors", "failed", "errors_by_type"})
"""BatchReport's cached properties."""


@dataclass(frozen=True)
class BatchReport(Generic[R]):
    """The complete result of a run.

    ``report.total == report.success_count + report.failure_count + report.compensated_count
    + report.pending_count`` always holds: every record ends succeeded, dead-lettered,
    compensated (succeeded, then undone by ``compensate=``) or pending. ``errors``, ``failed``,
    ``dead_letters`` and the error aggregates are built from the engine's compact failure log
    the first time they are read, so a failure-heavy run
    pays for them only if someone looks.

    With a durable DLQ (anything but the in-memory default and :class:`MemoryDLQ`), the report
    keeps the counts and the first 1000 dead letters in record order, never all of them:
    ``summary()``, ``to_dict()``, ``errors_by_type`` and ``errors[:1000]`` never touch the DLQ.
    ``errors``, ``failed`` and ``dead_letters`` are then read-only sequences whose ``len()`` is
    the failure count and whose items past the first 1000 are read back from the DLQ one batch
    at a time, in record order, when reached (a queue the run opened from a URL is closed when
    the run ends, and opened again for such a read). Entries removed from the DLQ since the run
    (replayed, say) cannot be read back: reaching them raises :class:`DLQError`.
    """

    run_id: str
    status: RunStatus
    total: int
    success_count: int
    failure_count: int
    pending_count: int
    retry_count: int
    successful: list[R]
    """What ``fn`` returned for each record that succeeded, in input order; empty when the run's
    ``results=`` was "drop" or a sink (the values went there, as each batch ended)."""
    duration_s: float
    breaker_trips: int
    dlq_count: int
    stage: str = "process"
    job_id: str | None = None
    stopped_reason: str | None = None
    """Why the run stopped early: "fatal", "max_failures", "breaker_abort", or None."""
    skipped_batches: int = 0
    """Batches a resumed job had already finished, and so did not run again."""
    breaker_events: list[tuple[float, str, str]] = field(default_factory=list)
    """(seconds since start, old state, new state) for every circuit-breaker transition."""
    validation: ValidationSummary | None = None
    """With ``validate=``: how many records were blocked (dead-lettered at stage "validate",
    ``fn`` never called) and how many ran with warnings (``batchguard.validation``)."""
    success_threshold: float | None = None
    """The run's ``success_threshold``: the status is "failed" when the success rate is below it."""
    max_failures: int | float | None = None
    """The run's ``max_failures`` (a count, or a 0..1 rate): past it the run stopped."""
    hook_errors: int = 0
    """How many times a lifecycle hook (``hooks=``, ``metrics=``) raised; each is logged once."""
    alert_failures: int = 0
    """Alert notices (``alerts=``, :mod:`batchguard.alerts`) that were not delivered: a webhook
    that gave up, a ``notify`` callable that raised. Each is logged."""
    compensated_count: int = 0
    """Records that succeeded and were then undone by ``compensate=`` (a rolled-back atomic
    batch, an aborted run with ``on_abort="compensate"``); neither succeeded nor failed. A
    rolled-back batch's undone records also have DLQ entries (``BatchRolledBack``), so
    ``dlq_count`` and ``errors`` count them too."""
    fallback_count: int = 0
    """Records that failed for good and succeeded with their retry policy's ``fallback``
    value instead of being dead-lettered (``RetryPolicy(fallback=...)``); counted in
    ``success_count``, their values in ``successful``. The errors they stand in for are logged
    (``fallback_used`` on logger "batchguard")."""
    concurrency_limit: ConcurrencyLimit | None = None
    """With ``concurrency=Adaptive(...)``: the limit at the end, its peak and its lowest."""
    retries_over_budget: RetriesOverBudget | None = None
    """With ``retry_budget=``: retries that waited for it, records it dead-lettered."""
    entries_carry_run: ClassVar[bool] = True
    """Whether the DLQ entries of this report's failures carry its ``run_id`` / ``job_id``, so
    its printed commands can select them by ``--run-id`` / ``--job``. False for a replay, which
    writes each failure back into the entry it replayed (that keeps its first run's ids)."""
    _failures: Failures | None = field(default=None, repr=False, compare=False)
    _batch_events: list[tuple[Any, ...]] = field(default_factory=list, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled without the views built when read (a durable DLQ's lazy sequences hold its open
        # queue): the copy builds them again from _failures, which pickles as lists.
        return {key: value for key, value in self.__dict__.items() if key not in _VIEWS}

    @cached_property
    def batches(self) -> list[BatchStats]:
        """Per-batch statistics, in batch order (built when first read)."""
        return sorted((BatchStats(*event) for event in self._batch_events),
                      key=lambda b: b.batch_index)

    @cached_property
    def dead_letters(self) -> Sequence[DeadLetter]:
        """The DLQ entries of this run's dead-lettered records (in input order).

        A list; with a durable DLQ, a lazy read-only sequence (see the class docstring)."""
        return [] if self._failures is None else self._failures.dead_letters()

    @cached_property
    def errors(self) -> Sequence[RecordError]:
        """One :class:`RecordError` per dead-lettered record, in input order.

        A list; with a durable DLQ, a lazy read-only sequence (see the class docstring)."""
        return [] if self._failures is None else self._failures.record_errors()

    @cached_property
    def failed(self) -> Sequence[Any]:
        """The records that were dead-lettered, in input order (a ``repr`` payload stands for
        a record JSON could not hold).

        A list; with a durable DLQ, a lazy read-only sequence (see the class docstring)."""
        return [] if self._failures is None else self._failures.records()

    @cached_property
    def errors_by_type(self) -> dict[str, int]:
        """Exception type name -> how many records were dead-lettered with it (most first)."""
        if self._failures is None:
            return {}
        return dict(self._failures.type_counts().most_common())

    def patterns(self, *, rules: Sequence[RecommendationRule] | None = None) -> tuple[FailurePattern, ...]:
        """Every dead-lettered record of the run grouped by failure pattern (error type, class,
        HTTP status, message template), most frequent first, each with a count, its share,
        example record ids and a recommendation from ``rules`` (default:
        ``batchguard.triage.DEFAULT_RULES``; see :mod:`batchguard.triage` to extend it).

        Counted over all of them, not a sample, in bounded memory (a durable DLQ's as they
        were sent), so it never reads the DLQ back."""
        if self._failures is None:
            return ()
        return self._failures.pattern_counter().patterns(rules)

    @property
    def most_common_error(self) -> str | None:
        by_type = self.errors_by_type
        return next(iter(by_type)) if by_type else None

    @property
    def success_rate(self) -> float:
        """Succeeded / total (1.0 for an empty input)."""
        return self.success_count / self.total if self.total else 1.0

    @property
    def throughput(self) -> float:
        """Records finished (succeeded or dead-lettered) per second."""
        finished = self.success_count + self.failure_count
        return finished / self.duration_s if self.duration_s > 0 else math.inf if finished else 0.0

    def to_dict(self, *, include_values: bool = False,
                max_errors: int | None = REPORT_SAMPLE) -> dict[str, Any]:
        """A JSON-ready summary; ``include_values`` adds the successful values too.

        ``errors`` lists the first ``max_errors`` errors in input order (``None``: all of them,
        which reads every entry back from a durable DLQ) and ``errors_omitted`` how many more
        there are: the DLQ holds every one. The default stays within the report's in-memory
        sample, so a run with millions of failures gives a small dict, fast.
        """
        if max_errors is not None:
            check_count("max_errors", max_errors, minimum=0, maximum=sys.maxsize)
        shown = self.errors if max_errors is None else self.errors[:max_errors]
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "status": self.status,
            "stopped_reason": self.stopped_reason,
            "stage": self.stage,
            "total": self.total,
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "pending_count": self.pending_count,
            "compensated_count": self.compensated_count,
            "fallback_count": self.fallback_count,
            "retry_count": self.retry_count,
            "success_rate": self.success_rate,
            "duration_s": self.duration_s,
            "throughput": self.throughput,
            "errors_by_type": self.errors_by_type,
            "most_common_error": self.most_common_error,
            "breaker_trips": self.breaker_trips,
            "dlq_count": self.dlq_count,
            "skipped_batches": self.skipped_batches,
            "hook_errors": self.hook_errors,
            "alert_failures": self.alert_failures,
            "batches": [b.to_dict() for b in self.batches],
            "errors": [e.to_dict() for e in shown],
            "errors_omitted": len(self.errors) - len(shown),
        }
        if self.concurrency_limit is not None:
            data["concurrency_limit"] = self.concurrency_limit.to_dict()
        if self.retries_over_budget is not None:
            data["retries_over_budget"] = self.retries_over_budget.to_dict()
        if include_values:
            data["successful"] = list(self.successful)
        return data

    def summary(self, *, max_errors: int = 10, rules: Sequence[RecommendationRule] | None = None) -> str:
        """The final report as a person reads it, listing the first ``max_errors`` failures.

        ``rules``: the recommendation rule table of its failure patterns (see :meth:`patterns`).
        The ``batchguard`` command prints the same report (with where its dead letters are)."""
        return render_text(build(self, max_samples=max_errors, rules=rules))

    def to_json(self, *, max_errors: int = 10, rules: Sequence[RecommendationRule] | None = None) -> dict[str, Any]:
        """The final report as JSON-safe data: what ``summary()`` says, as fields.

        Status and headline, counts and rates, what the run was judged against, the error
        types, every failure pattern with its recommendation (``rules``, see :meth:`patterns`),
        the first ``max_errors`` failed records and the next steps. ``to_dict()`` is the
        complete record of the run (every batch, up to 1000 errors); this is its report.
        """
        check_count("max_errors", max_errors, minimum=0, maximum=sys.maxsize)
        return build(self, max_samples=max_errors, rules=rules).to_json()

    def __str__(self) -> str:
        return self.summary()
