"""Fresh records: the input read so far, and the records of it that have not started yet
(twin of ``src/engine/fresh.rs``)."""

from __future__ import annotations

import collections
from typing import Any

from .work import Work


class Fresh:
    """The read cursor and the queue of records read but never started, in input order.

    (The Rust twin keeps bare records and builds each one's work when it starts; here the work
    is built when the batch is queued, which costs Python less.)
    """

    __slots__ = ("_records", "exhausted", "next_batch", "next_index", "skipped")

    def __init__(self) -> None:
        self._records: collections.deque[Work] = collections.deque()
        # The index the next record read gets: records read so far, skipped ones included.
        self.next_index = 0
        # The index the next batch read gets.
        self.next_batch = 0
        self.skipped = 0
        self.exhausted = False

    def push(self, records: list[Any], keys: list[int | None] | None) -> int:
        """Queue one batch of records (with their ordering keys, if any); returns its index."""
        batch = self.next_batch
        self.next_batch += 1
        index = self.next_index
        queue = self._records
        if keys is None:
            for record in records:
                queue.append(Work(index, batch, record, 1))
                index += 1
        else:
            for record, key in zip(records, keys, strict=True):
                queue.append(Work(index, batch, record, 1, key))
                index += 1
        self.next_index = index
        return batch

    def skip(self, size: int) -> None:
        """The next batch of input was finished by an earlier run (a resumed job): account for
        its ``size`` records' indices without queueing them."""
        self.next_batch += 1
        self.next_index += size
        self.skipped += size

    def end_of_input(self) -> None:
        self.exhausted = True

    def wants_input(self, concurrency: int) -> bool:
        """Is more input wanted, with ``concurrency`` workers to keep busy?"""
        return not self.exhausted and len(self._records) < concurrency

    def pop(self) -> Work:
        """Take the next fresh record as its first attempt (the queue is not empty)."""
        return self._records.popleft()

    def head(self) -> Work | None:
        """The next fresh record's work, without taking it."""
        return self._records[0] if self._records else None

    def cursor(self) -> int:
        """The index of the first record never started: every record read before it has
        started."""
        return self._records[0].index if self._records else self.next_index

    def head_batch(self) -> int | None:
        """The batch of the next fresh record."""
        return self._records[0].batch_index if self._records else None

    def clear(self) -> None:
        """Drop every queued record (end of run: they are pending)."""
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)
