"""What a replay reports: :class:`ReplayReport`, its failures told as the entries they replayed,
and :class:`Successes`, which records of each batch succeeded (also in a batch the run stopped
in), so that their entries are marked on every exit path."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, overload

from ._native import BatchEvent
from ._report.patterns import PatternCounter
from ._run.failures import Failures
from .dlq.base import DeadLetter
from .results import BatchReport, RecordError

__all__ = ["ReplayReport", "ReplayedFailures", "ReplayedRecordError", "Successes"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReplayedRecordError(RecordError):
    """A record a replay failed again: its entry's record id, index and batch (not its place
    in the replay), and the error it first failed with."""

    first_error_type: str | None = None
    first_error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**RecordError.to_dict(self), "first_error_type": self.first_error_type,
                "first_error_message": self.first_error_message}


class _Mapped(Sequence[T], Generic[T]):
    """A read-only view of a sequence, each item converted when read (lazy, as the report's)."""

    def __init__(self, inner: Sequence[Any], convert: Callable[[Any], T]) -> None:
        self._inner = inner
        self._convert = convert

    def __len__(self) -> int:
        return len(self._inner)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._convert(item) for item in self._inner[index]]
        return self._convert(self._inner[index])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


class ReplayedFailures(Failures):
    """The run's failures, told as the entries they replayed: the engine numbers the records by
    their place in the replay and knows no record ids (a raw line's id was its place)."""

    def __init__(self, inner: Failures, replayed: dict[int, DeadLetter]) -> None:
        super().__init__(inner.entries)
        self._inner = inner
        self._replayed = replayed
        self._count = len(inner)

    def add(self, dead: Any, entries: Sequence[DeadLetter]) -> None:
        raise TypeError("the failures of a finished replay take no more records")

    def records(self) -> Sequence[Any]:
        return self._inner.records()

    def type_counts(self) -> Any:
        return self._inner.type_counts()

    def record_errors(self) -> Sequence[RecordError]:
        return _Mapped(self._inner.record_errors(), self._error)

    def dead_letters(self) -> Sequence[DeadLetter]:
        # What the queue now holds: the replayed entry, its history extended.
        return _Mapped(self._inner.dead_letters(), lambda d: self._replayed.get(d.record_index, d))

    def pattern_counter(self) -> PatternCounter:
        # The run's own count (its entries past the sample cannot be read back), its example
        # ids turned from places in the replay into the replayed entries' record ids.
        def record_id(index: int, place: Any) -> Any:
            entry = self._replayed.get(index)
            return place if entry is None else entry.record_id

        return self._inner.pattern_counter().relabelled(record_id)

    def _error(self, error: RecordError) -> RecordError:
        entry = self._replayed.get(error.record_index)
        if entry is None:
            return error
        first = entry.attempts[0] if entry.attempts else None
        return ReplayedRecordError(
            entry.record_index, entry.record_id, error.error_type, error.error_message,
            error.error_class, entry.stage, error.attempts, entry.batch_index,
            first_error_type=None if first is None else first.error_type,
            first_error_message=None if first is None else first.error_message)


@dataclass(frozen=True)
class ReplayReport(BatchReport):
    """A :class:`BatchReport` of the replayed records, plus what happened to their entries.

    ``total`` and the counts cover the entries that were replayed; ``not_replayable`` ones
    (payload stored as ``repr``) were left in the queue untouched.
    """

    entries_carry_run: ClassVar[bool] = False  # failures go back into the replayed entries

    removed: int = 0
    """Entries whose record succeeded: marked ``replayed`` (kept for the audit trail, out of the
    default open view, as they left the queue before entries had a status). Also ``replayed``."""
    kept: int = 0
    """Entries whose record failed again: they stay open, their attempt history extended."""
    not_replayable: int = 0
    """Entries that cannot be turned back into their record (``repr`` payloads): left as they are."""
    pickle_refused: int = 0
    """Entries stored as pickle that were not loaded (no ``allow_pickle=True``): left as they are."""
    parse_skipped: int = 0
    """Entries of input lines that did not parse (InputParseError): their payload is the raw
    text, not a record, so they are not fed to ``fn`` unless ``include_parse_errors=True``;
    left as they are."""
    blocked_skipped: int = 0
    """Entries of records their check blocked (stage "validate"): not fed to ``fn`` unless
    ``validate=`` checks them again; left as they are."""
    jobs_updated: tuple[str, ...] = ()
    """Jobs whose replayed entries moved from failed to succeeded in the job store (sorted)."""
    held_elsewhere: int = 0
    """Matching entries another running replay had claimed: left to it, not run here."""
    claims_lost: int = 0
    """Entries this replay ran whose claim was gone when their outcome came (skipped with
    ``force=True`` meanwhile, or taken over once its lease ran out unrenewed): left as they
    were set, neither marked replayed nor written back."""

    @property
    def replayed(self) -> int:
        """Entries whose record succeeded and are now marked ``replayed`` (``removed``)."""
        return self.removed


class Successes:
    """The replay's results sink: which records succeeded, batch by batch, whole or not.

    A batch the run stopped in (a FATAL error, Ctrl-C) ends with some records pending, and its
    stats say how many succeeded but not which: the engine's per-batch values
    (``results=`` a sink) name them, so their entries are marked before the replay returns or
    raises. The values are kept for the report's ``successful``, in record order, as
    ``results="keep"`` would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: set[int] = set()  # successes whose batch has not reached batch_done
        self._values: list[tuple[int, Any]] = []

    def open(self, *, append: bool) -> None:
        """Nothing to open: the values stay in memory."""

    def write(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        """A batch's successes: ``values[i]`` is what ``fn`` returned for record ``indices[i]``."""
        with self._lock:
            self._pending.update(indices)
            self._values.extend(zip(indices, values, strict=True))

    def write_batch(self, event: BatchEvent, dead_letter: Any) -> None:
        """A batch's end, before its ``batch_done``: its successes, also those of a batch the run
        stopped in (which a results sink of a run that checkpoints is not handed)."""
        if event.indices is not None and event.values is not None:
            self.write(event.indices, event.values)

    def take(self, index: int) -> bool:
        """Whether record ``index`` succeeded (asked once per record, at its batch's end)."""
        with self._lock:
            if index in self._pending:
                self._pending.discard(index)
                return True
            return False

    def close(self) -> None:
        """Nothing to flush."""

    def successful(self) -> list[Any]:
        """The values of every record that succeeded, in record order."""
        with self._lock:
            return [value for _, value in sorted(self._values, key=lambda pair: pair[0])]
