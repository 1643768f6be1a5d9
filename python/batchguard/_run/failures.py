"""A run's dead-lettered records, as its report reads them: two stores, one interface.

* :class:`MemoryFailures` (no DLQ, or a :class:`~batchguard.MemoryDLQ`): the engines' compact
  dead records, kept whole; entries and errors are built from them the first time they are read.
* :class:`DurableFailures` (any other DLQ): the entries live in the DLQ. The store keeps counts,
  where each batch's entries went and the first ``REPORT_SAMPLE`` entries in record order, so a
  run that dead-letters millions of records keeps its memory flat; the rest is read back.
"""

from __future__ import annotations

import abc
import collections
import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._native import DeadRecord, DeadRecords
from .._report.patterns import PatternCounter
from .._report.types import TypeCounter, bounded_type_counts
from .._stored import REPORT_SAMPLE, SentBatch, StoredDeadLetters, StoredSequence
from ..dlq.base import DeadLetter, DeadLetterQueue
from ..dlq.codec import clean_text, type_name
from ..results import RecordError
from .entries import EntryBuilder, http_status, message_of

__all__ = ["DeadBatch", "DurableFailures", "Failures", "ListedFailures", "MemoryFailures", "count_patterns"]

DeadBatch = DeadRecords | Sequence[DeadRecord]
"""One batch's dead records: the native engine's DeadRecords (each converted when read), or a list."""


class Failures(abc.ABC):
    """The dead-lettered records of one run, in input order, as the report reads them."""

    def __init__(self, entries: EntryBuilder) -> None:
        self.entries = entries
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @abc.abstractmethod
    def add(self, dead: DeadBatch, entries: Sequence[DeadLetter]) -> None:
        """Take one batch's dead records, and their entries once the DLQ has them (none
        without a DLQ)."""

    @abc.abstractmethod
    def records(self) -> Sequence[Any]:
        """The failed records."""

    @abc.abstractmethod
    def type_counts(self) -> collections.Counter[str]:
        """Exception type name -> how many records were dead-lettered with it: the most
        frequent ``_report.types.MAX_ERROR_TYPES``, the rest as "other" (``TypeCounter``)."""

    @abc.abstractmethod
    def record_errors(self) -> Sequence[RecordError]:
        """One RecordError per failed record."""

    @abc.abstractmethod
    def dead_letters(self) -> Sequence[DeadLetter]:
        """The run's DLQ entries."""

    def pattern_counter(self) -> PatternCounter:
        """Every failure counted by pattern (``_report.patterns``). By default counted from
        :meth:`dead_letters` when asked; the stores of a run keep theirs as they go."""
        return count_patterns(self.dead_letters())

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (and deep-copied) as lists: a store holds native dead records, the run's
        # callables (id_of) and an open DLQ, none of which pickle. A durable store's entries
        # past its sample are read back from the DLQ for it.
        return ListedFailures, (list(self.records()), self.type_counts(), list(self.record_errors()),
                                list(self.dead_letters()), self.pattern_counter())


def count_patterns(entries: Iterable[DeadLetter], counter: PatternCounter | None = None) -> PatternCounter:
    """``entries`` counted by pattern (into ``counter``, or a new one), each at its record index."""
    counter = PatternCounter() if counter is None else counter
    counter.add_entries(entries)
    return counter


class ListedFailures(Failures):
    """The failures of a pickled or copied report: read out into lists."""

    def __init__(self, records: list[Any], type_counts: collections.Counter[str],
                 record_errors: list[RecordError], dead_letters: list[DeadLetter],
                 patterns: PatternCounter | None = None) -> None:
        self._records = records
        self._type_counts = type_counts
        self._record_errors = record_errors
        self._dead_letters = dead_letters
        self._patterns = count_patterns(dead_letters) if patterns is None else patterns
        self._count = len(record_errors)

    def add(self, dead: DeadBatch, entries: Sequence[DeadLetter]) -> None:
        raise TypeError("the failures of a finished run take no more records")

    def records(self) -> list[Any]:
        return list(self._records)

    def type_counts(self) -> collections.Counter[str]:
        return collections.Counter(self._type_counts)

    def record_errors(self) -> list[RecordError]:
        return list(self._record_errors)

    def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead_letters)

    def pattern_counter(self) -> PatternCounter:
        return self._patterns


class MemoryFailures(Failures):
    """Every dead record, kept as the engine reported it (the native engine's converts each
    record only when it is read)."""

    def __init__(self, entries: EntryBuilder) -> None:
        super().__init__(entries)
        self._chunks: list[DeadBatch] = []
        self._flat: list[DeadRecord] | None = []
        self._patterns: PatternCounter | None = None

    def add(self, dead: DeadBatch, entries: Sequence[DeadLetter]) -> None:
        if len(dead):
            self._chunks.append(dead)
            self._count += len(dead)
            self._flat = None
            self._patterns = None

    def _in_order(self) -> list[DeadRecord]:
        if self._flat is None:
            flat = [record for chunk in self._chunks for record in chunk]
            flat.sort(key=lambda r: r.record_index)
            self._chunks = [flat]
            self._flat = flat
        return self._flat

    def records(self) -> list[Any]:
        return [r.record for r in self._in_order()]

    def type_counts(self) -> collections.Counter[str]:
        return bounded_type_counts(type(r.attempts[-1].error).__name__ for r in self._in_order())

    def record_errors(self) -> list[RecordError]:
        stage_of, record_id = self.entries.stage_of, self.entries.record_id
        out = []
        for dead in self._in_order():
            exc = dead.attempts[-1].error
            out.append(RecordError(dead.record_index, record_id(dead.record, dead.record_index),
                                   type(exc).__name__, message_of(exc), dead.error_class, stage_of(exc),
                                   len(dead.attempts), dead.batch_index))
        return out

    def dead_letters(self) -> list[DeadLetter]:
        return [self.entries.dead_letter(dead) for dead in self._in_order()]

    def pattern_counter(self) -> PatternCounter:
        """Counted from the dead records the first time it is read: every one of them is in
        memory already, so a run pays for its patterns only if its report shows them. The
        facts are the ones its entries would store (type name, clean message, HTTP status)."""
        if self._patterns is None:
            counter = PatternCounter()
            record_id = self.entries.record_id
            for dead in self._in_order():
                exc = dead.attempts[-1].error
                counter.add(record_id(dead.record, dead.record_index), type_name(exc), dead.error_class,
                            http_status(exc), clean_text(message_of(exc)), order=dead.record_index)
            self._patterns = counter
        return self._patterns


def _record_error(entry: DeadLetter) -> RecordError:
    return RecordError(entry.record_index, entry.record_id, entry.error_type, entry.error_message,
                       entry.error_class, entry.stage, len(entry.attempts), entry.batch_index)


def _stored_record(entry: DeadLetter) -> Any:
    # A repr payload cannot become the record again: the report shows the repr itself. A pickle
    # one was written by this run (the report reads its own run_id) because its caller passed
    # pickle_payloads=True: that is the opt-in to load it back.
    return entry.payload if entry.payload_encoding == "repr" else entry.record(allow_pickle=True)


def _same_entry(entry: DeadLetter) -> DeadLetter:
    return entry


class DurableFailures(Failures):
    """Counts, a sample and where each batch's entries went; the rest is read back from the
    DLQ (lazily, a batch of entries at a time) when the report is read that far."""

    def __init__(self, entries: EntryBuilder, dlq: DeadLetterQueue, *,
                 reopen: Callable[[], DeadLetterQueue] | None, elsewhere: str | None) -> None:
        """``reopen`` opens ``dlq`` again once the run closed it; ``elsewhere`` says why the
        entries cannot be read back by run id (see ``OutcomeSink.entries_stored_elsewhere``)."""
        super().__init__(entries)
        self._dlq = dlq
        self._reopen = reopen
        self._elsewhere = elsewhere
        self._type_counts = TypeCounter()  # bounded: a run may raise any number of types
        # A max-heap on the record index (negated), with a tie-breaker so entries never compare.
        self._sample: list[tuple[int, int, DeadLetter]] = []
        self._sample_order = itertools.count()
        self._sent: list[SentBatch] = []
        self._reader: StoredDeadLetters | None = None
        self._patterns = PatternCounter()

    def add(self, dead: DeadBatch, entries: Sequence[DeadLetter]) -> None:
        """Note one batch's entries, sent to the DLQ; only the first ``REPORT_SAMPLE`` of the
        run (in record order) stay in memory."""
        if not entries:
            return
        indexes = [entry.record_index for entry in entries]
        first, last = min(indexes), max(indexes)
        self._sent.append(SentBatch(entries[0].batch_index, first, last, len(entries), self._count))
        self._count += len(entries)
        self._type_counts.update(entry.error_type for entry in entries)
        # Counted now: past the sample, the entries are only in the DLQ.
        count_patterns(entries, self._patterns)
        sample = self._sample
        if len(sample) >= REPORT_SAMPLE and first > -sample[0][0]:
            return  # the usual case once the sample is full: the whole batch comes later
        for entry in entries:
            item = (-entry.record_index, next(self._sample_order), entry)
            if len(sample) < REPORT_SAMPLE:
                heapq.heappush(sample, item)
            elif entry.record_index < -sample[0][0]:
                heapq.heapreplace(sample, item)

    def _stored(self) -> StoredDeadLetters:
        if self._reader is None:
            sample = sorted((item[2] for item in self._sample), key=lambda entry: entry.record_index)
            builder = self.entries
            self._reader = StoredDeadLetters(
                run_id=builder.run_id, count=self._count, sample=sample, sent=self._sent,
                dlq=self._dlq, reopen=self._reopen,
                entry_id=builder.entry_id,
                elsewhere=self._elsewhere)
        return self._reader

    def records(self) -> Sequence[Any]:
        return StoredSequence(self._stored(), _stored_record, "failed records")

    def type_counts(self) -> collections.Counter[str]:
        return self._type_counts.counter()

    def record_errors(self) -> Sequence[RecordError]:
        return StoredSequence(self._stored(), _record_error, "errors")

    def dead_letters(self) -> Sequence[DeadLetter]:
        return StoredSequence(self._stored(), _same_entry, "dead letters")

    def pattern_counter(self) -> PatternCounter:
        return self._patterns
