"""A run's dead letters as its report reads them: the first ones from memory, the rest from the DLQ.

With a durable DLQ a run keeps no per-failure state beyond a fixed sample: counts by error
type, one small record per batch that dead-lettered something (where its entries sit in the
DLQ), and the first :data:`REPORT_SAMPLE` entries in record order. ``summary()`` and
``to_dict()`` need nothing more, so a run that dead-letters millions of records keeps its
memory flat. ``report.errors``, ``failed`` and ``dead_letters`` are then lazy, read-only
sequences (:class:`StoredSequence`): ``len()`` and the sample cost nothing, and past the
sample they read the DLQ back one batch at a time, in record order.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Generic, NamedTuple, TypeVar, overload

from .dlq.base import DeadLetter, DeadLetterQueue
from .errors import DLQError

__all__ = ["REPORT_SAMPLE", "SentBatch", "StoredDeadLetters", "StoredSequence"]

REPORT_SAMPLE = 1000
"""With a durable DLQ a report keeps this many entries (the first, in record order) in memory."""

T = TypeVar("T")


class SentBatch(NamedTuple):
    """Where one batch's dead letters went: enough to read them back without keeping them."""

    batch_index: int
    first: int
    """The lowest record index among them."""
    last: int
    """The highest record index among them."""
    size: int
    """How many."""
    offset: int
    """How many of this run's entries were sent before them: their place in the DLQ's order
    (every backend keeps an entry at the place of its first send)."""


class StoredDeadLetters:
    """The dead letters of one run, addressable by their position in record order.

    Positions below ``len(sample)`` come from memory. The others are read from the DLQ one
    batch at a time: the batch's entries are listed with ``run_id`` at the offset where the run
    sent them and sorted by record index. When the DLQ's order no longer matches (a resumed job
    re-sent entries a crashed run had stored first), the batch is fetched by entry id instead;
    when entries are gone (removed or replayed since), reading them raises :class:`DLQError`.

    ``reopen``, when given, opens the queue again for each read: the run closed the queue it
    opened from a URL (or a job store's default queue) when it ended. Without it the report
    reads through ``dlq``, the queue the caller passed and still owns. ``elsewhere`` says why
    the entries cannot be read back at all (a replay writes its failures into the entries it
    replayed), for the error raised past the sample.
    """

    def __init__(self, *, run_id: str, count: int, sample: list[DeadLetter], sent: list[SentBatch],
                 dlq: DeadLetterQueue, reopen: Callable[[], DeadLetterQueue] | None,
                 entry_id: Callable[[int], str], elsewhere: str | None = None) -> None:
        self.run_id = run_id
        self.count = count
        self.sample = sample
        self._sent = sent
        self._dlq = dlq
        self._reopen = reopen
        self._entry_id = entry_id
        self._elsewhere = elsewhere
        self._by_batch: list[SentBatch] | None = None
        self._starts: list[int] = []
        self._cached: tuple[int, list[DeadLetter]] | None = None

    def describe(self) -> str:
        return repr(self._dlq)

    def read(self, start: int, stop: int) -> Generator[DeadLetter, None, None]:
        """The entries at positions ``start`` to ``stop - 1``, in record order."""
        stop = min(stop, self.count)
        sampled = len(self.sample)
        if start < sampled:
            yield from self.sample[start:min(stop, sampled)]
            start = sampled
        if start >= stop:
            return
        if self._elsewhere is not None:
            raise DLQError(f"run {self.run_id} dead-lettered {self.count} records; the report keeps the "
                           f"first {sampled} in memory, and cannot read the others back: {self._elsewhere}")
        batches, starts = self._layout()
        at = bisect.bisect_right(starts, start) - 1
        queue: DeadLetterQueue | None = None
        try:
            while start < stop:
                if self._cached is not None and self._cached[0] == at:
                    entries = self._cached[1]
                else:
                    if queue is None:
                        queue = self._open()
                    entries = self._load(queue, batches[at])
                    self._cached = (at, entries)  # one batch: sequential indexing reads each once
                low = start - starts[at]
                high = min(stop - starts[at], len(entries))
                yield from entries[low:high]
                start = starts[at] + high
                at += 1
        finally:
            if queue is not None and self._reopen is not None:
                queue.close()

    def _layout(self) -> tuple[list[SentBatch], list[int]]:
        # Batches hold consecutive slices of the input, so batch order is record order.
        if self._by_batch is None:
            self._by_batch = sorted(self._sent, key=lambda sent: sent.batch_index)
            position = 0
            for sent in self._by_batch:
                self._starts.append(position)
                position += sent.size
        return self._by_batch, self._starts

    def _failed(self, why: str, exc: BaseException | None = None) -> DLQError:
        return DLQError(f"run {self.run_id} dead-lettered {self.count} records; the report keeps the "
                        f"first {len(self.sample)} in memory and reads the others back from the DLQ "
                        f"({self.describe()}), which {why}" + ("" if exc is None else f": {exc}"))

    def _open(self) -> DeadLetterQueue:
        if self._reopen is None:
            return self._dlq
        try:
            return self._reopen()
        except Exception as exc:  # whatever the backend raises, say where
            raise self._failed("cannot be opened again", exc) from exc

    def _load(self, queue: DeadLetterQueue, sent: SentBatch) -> list[DeadLetter]:
        try:
            entries = queue.list(run_id=self.run_id, offset=sent.offset, limit=sent.size)
            if not self._holds(entries, sent):
                entries = self._by_id(queue, sent)
        except DLQError as exc:
            raise self._failed("failed", exc) from exc
        if len(entries) != sent.size:
            raise self._failed(f"no longer holds {sent.size - len(entries)} of the {sent.size} entries "
                               f"of batch {sent.batch_index} (removed or replayed since the run?)")
        entries.sort(key=lambda entry: entry.record_index)
        return entries

    @staticmethod
    def _holds(entries: list[DeadLetter], sent: SentBatch) -> bool:
        return len(entries) == sent.size and all(
            entry.batch_index == sent.batch_index and sent.first <= entry.record_index <= sent.last
            for entry in entries)

    def _by_id(self, queue: DeadLetterQueue, sent: SentBatch) -> list[DeadLetter]:
        # Entry ids follow from the record index (see _run.entries.entry_id), so the batch's entries
        # can be found wherever the DLQ's order put them.
        found = []
        for index in range(sent.first, sent.last + 1):
            entry = queue.get(self._entry_id(index))
            if entry is not None and entry.run_id == self.run_id:
                found.append(entry)
        return found


class StoredSequence(Sequence[T], Generic[T]):
    """A read-only sequence over a run's stored dead letters (``report.errors``, ``failed``,
    ``dead_letters`` with a durable DLQ).

    ``len()`` and the first :data:`REPORT_SAMPLE` items come from memory; the others are read
    from the DLQ one batch at a time as you reach them (iterate or slice rather than index one
    by one: each batch that is not the last one read is fetched again). A slice returns a list.
    Equal to any sequence with equal items.
    """

    __slots__ = ("_convert", "_source", "_what")

    def __init__(self, source: StoredDeadLetters, convert: Callable[[DeadLetter], T], what: str) -> None:
        self._source = source
        self._convert = convert
        self._what = what

    def __len__(self) -> int:
        return self._source.count

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._read(start, stop)
            return [self[i] for i in range(start, stop, step)]
        position = operator.index(index)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"{self._what} index {index} out of range (this run has {len(self)})")
        return self._read(position, position + 1)[0]

    def _read(self, start: int, stop: int) -> list[T]:
        if start >= stop:
            return []
        reading = self._source.read(start, stop)
        try:
            return [self._convert(entry) for entry in reading]
        finally:
            reading.close()  # releases a reopened queue now, not when collected

    def __iter__(self) -> Iterator[T]:
        for entry in self._source.read(0, len(self)):
            yield self._convert(entry)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, bytes)) or not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        source = self._source
        return (f"<{len(self)} {self._what} of run {source.run_id}: the first {len(source.sample)} "
                f"in memory, the others read from {source.describe()} when reached>")
