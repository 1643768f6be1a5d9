"""The driver's recorder: batches that come back from workers with their entries built.

:class:`ExecutorRecorder` is the ordinary :class:`~batchguard._outcome.RunRecorder` (the same
sinks, checkpoints, progress, log lines and report) fed with
:class:`~batchguard.executors.task.BatchOutcome` objects instead of engine events: a batch's
entries were built on its worker, where its exceptions and tracebacks are, so the recorder
persists them as they are rather than building them again. Without a durable DLQ the report
keeps them in an :class:`EntryFailures`.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from .._native import BatchEvent, BreakerEvent, Counters
from .._outcome import RunRecorder
from .._report.patterns import PatternCounter
from .._report.types import bounded_type_counts
from .._run.failures import Failures, MemoryFailures, count_patterns
from ..dlq.base import DeadLetter
from ..results import RecordError
from .task import BatchOutcome

__all__ = ["EntryFailures", "ExecutorRecorder"]


class EntryFailures(Failures):
    """A run's dead letters kept in memory as their entries, with the records themselves (the
    executor's workers built the entries; their exceptions stayed there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entries: list[tuple[DeadLetter, Any]] = []
        self._sorted = True

    def add(self, dead: Any, entries: Sequence[DeadLetter]) -> None:
        """``dead``: the batch's failed records, in the order of ``entries``."""
        self._entries.extend(zip(entries, dead, strict=True))
        self._count += len(entries)
        self._sorted = False

    def _in_order(self) -> list[tuple[DeadLetter, Any]]:
        if not self._sorted:  # batches come back in any order
            self._entries.sort(key=lambda pair: pair[0].record_index)
            self._sorted = True
        return self._entries

    def records(self) -> list[Any]:
        return [record for _, record in self._in_order()]

    def type_counts(self) -> collections.Counter[str]:
        return bounded_type_counts(entry.error_type for entry, _ in self._entries)

    def record_errors(self) -> list[RecordError]:
        return [RecordError(e.record_index, e.record_id, e.error_type, e.error_message, e.error_class,
                            e.stage, len(e.attempts), e.batch_index) for e, _ in self._in_order()]

    def dead_letters(self) -> list[DeadLetter]:
        return [entry for entry, _ in self._in_order()]

    def pattern_counter(self) -> PatternCounter:
        return count_patterns(self.dead_letters())


class ExecutorRecorder(RunRecorder):
    """A :class:`RunRecorder` fed by :meth:`outcome` with batches run elsewhere."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(self.failures, MemoryFailures):  # it would need the engine's dead records
            self.failures = EntryFailures(self.entries)
        self._arrived: BatchOutcome | None = None

    def outcome(self, outcome: BatchOutcome, counters: Counters, started_at: float) -> None:
        """Take one batch back from its worker: persist its entries (unless the worker sent them
        to the DLQ itself), then handle it as an engine's batch event (stats, checkpoint, log
        line, progress). ``started_at``: when the driver submitted it, in run seconds (the
        worker's breaker transitions are placed from there)."""
        events: list[BatchEvent | BreakerEvent] = [
            BreakerEvent(at=started_at + at, from_state=old, to_state=new)
            for at, old, new in outcome.breaker_events]
        stats = outcome.stats
        event = BatchEvent(index=stats.batch_index, size=stats.size, succeeded=stats.succeeded,
                           failed=stats.failed, retries=stats.retries, duration=stats.duration_s,
                           pending=stats.pending, dead=None)
        if self.retry_end is not None:  # the worker served them; the report counts them
            self.retry_end.count += outcome.fallbacks
        self._arrived = outcome
        try:
            if outcome.entries and not self._every_batch:
                # events() persists only a batch with engine dead records, or every batch for a
                # checkpoint: the entries built on the worker are persisted here.
                self._persist(event)
            events.append(event)
            self.events(events, counters)  # type: ignore[arg-type]  # no RetryEvent: a sub-list
        finally:
            self._arrived = None

    def _persist_batch(self, event: BatchEvent) -> None:
        arrived = self._arrived
        assert arrived is not None, "an executor's batch is persisted only from outcome()"
        entries, dead = arrived.entries, arrived.dead_records
        if self.sink is None:  # no DLQ: the report keeps the entries and records themselves
            self.failures.add(dead, entries)
            return
        if arrived.stored:
            pass  # the worker sent them to the (networked) DLQ before it returned
        elif self._writes is not None:
            self._writes.send(entries)
        else:
            self.sink.batch_done(arrived.stats, entries)
        self.dlq_count += len(entries)
        self.failures.add(dead, entries)
