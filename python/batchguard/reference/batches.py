"""The open batches: their accounting until every record of one is final, then its event
(twin of ``src/engine/batches.rs``)."""

from __future__ import annotations

from typing import Any

from .._native import ActiveBatch, BatchEvent, DeadRecord


class Open:
    """One batch whose records are not all final yet."""

    __slots__ = ("dead", "failed", "first", "remaining", "retries", "size", "started", "succeeded",
                 "values", "waiting")

    def __init__(self, first: int, size: int, started: float, per_batch: bool) -> None:
        self.first = first  # the index of the batch's first record
        self.size = size
        self.remaining = size
        self.succeeded = 0
        self.failed = 0
        self.retries = 0
        # Records in the retry queue: kept here (on the failure path only) so a snapshot need
        # not walk the queue.
        self.waiting = 0
        self.started = started
        self.dead: list[DeadRecord] = []
        # (record index, value) of each success, when values go out with their batch's end.
        self.values: list[tuple[int, Any]] | None = [] if per_batch else None

    def event(self, index: int, duration: float, pending: int) -> BatchEvent:
        indices = values = None
        if self.values is not None:
            self.values.sort(key=lambda pair: pair[0])  # retried records succeed late
            indices = [i for i, _ in self.values]
            values = [v for _, v in self.values]
        return BatchEvent(index=index, size=self.size, succeeded=self.succeeded, failed=self.failed,
                          retries=self.retries, duration=duration, pending=pending, dead=self.dead,
                          indices=indices, values=values)


class Batches:
    """The batches read whose records are not all final yet."""

    __slots__ = ("_open", "_per_batch", "completed")

    def __init__(self, values_per_batch: bool = False) -> None:
        self._open: dict[int, Open] = {}
        self._per_batch = values_per_batch
        self.completed = 0

    def open(self, batch: int, first: int, size: int, now: float) -> None:
        """Batch ``batch`` of ``size`` records, the first of which has index ``first``, was
        read at ``now``."""
        self._open[batch] = Open(first, size, now, self._per_batch)

    def retry_scheduled(self, batch: int) -> None:
        """A record of ``batch`` failed and waits for a retry."""
        self._open[batch].waiting += 1

    def retried(self, batch: int) -> None:
        """A retry of a record of ``batch`` starts."""
        state = self._open[batch]
        state.retries += 1
        state.waiting -= 1

    def counts(self, cursor: int, now: float, run_started: float) -> tuple[ActiveBatch, ...]:
        """Every open batch's counts, in batch order, at ``now`` for a run started at
        ``run_started``; the records before ``cursor`` (the first record never started) have
        started. Built only when a progress snapshot is taken."""
        counts = []
        for index, b in sorted(self._open.items()):
            queued = b.size - min(max(cursor - b.first, 0), b.size)
            counts.append(ActiveBatch(
                index=index, size=b.size, succeeded=b.succeeded, failed=b.failed,
                retrying=b.waiting, in_flight=max(0, b.remaining - queued - b.waiting),
                queued=queued, retries=b.retries, started=b.started - run_started,
                elapsed=now - b.started))
        return tuple(counts)

    def succeeded(self, batch: int) -> bool:
        """A record of ``batch`` succeeded. True when that made the batch complete: then
        :meth:`close` it."""
        state = self._open[batch]
        state.succeeded += 1
        state.remaining -= 1
        return state.remaining == 0

    def succeeded_with(self, batch: int, index: int, value: Any) -> bool:
        """:meth:`succeeded`, keeping the value for the batch's event (values per batch)."""
        state = self._open[batch]
        assert state.values is not None
        state.values.append((index, value))
        state.succeeded += 1
        state.remaining -= 1
        return state.remaining == 0

    def dead_lettered(self, dead: DeadRecord) -> bool:
        """A record was dead-lettered. True when that made its batch complete: then
        :meth:`close` it."""
        state = self._open[dead.batch_index]
        state.failed += 1
        state.dead.append(dead)
        state.remaining -= 1
        return state.remaining == 0

    def close(self, batch: int, now: float) -> BatchEvent:
        """The complete batch ``batch``'s event."""
        state = self._open.pop(batch)
        self.completed += 1
        return state.event(batch, now - state.started, 0)

    def close_all(self, now: float) -> list[BatchEvent]:
        """End of run: the event of every batch still open, with its unfinished records
        pending."""
        events = [state.event(batch, now - state.started, state.remaining)
                  for batch, state in sorted(self._open.items())]
        self._open.clear()
        return events
