"""Where a finished batch's outcome goes: the :class:`OutcomeSink` protocol, and the run's
results sink (:class:`ResultsOut`, ``results=``).

The recorder builds a batch's DLQ entries when the batch is final and hands them, with the
batch's stats, to the run's sink; an entry counts as dead-lettered once the sink returns. Three
sinks exist:

* :class:`DLQSend`, a plain run with a DLQ: one ``send`` of the batch's entries;
* a job's checkpoint (``jobs.run``): the entries and the batch's checkpoint, committed together
  (in one transaction where the DLQ can join the job store's, see ``TransactionalDLQ``);
* a replay (``replay``): each failure is written back into the entry it replayed, and the
  entries whose record now succeeds leave the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from .._native import BatchEvent, DeadRecord
from ..dlq.base import DeadLetter, DeadLetterQueue
from ..errors import ConfigError
from ..results import BatchStats
from ..sinks import ResultWriter, as_writer

__all__ = ["RESULTS_MODES", "DLQSend", "OutcomeSink", "ResultsOut", "check_results"]

RESULTS_MODES: Final = ("keep", "drop")
"""``results=`` other than a sink: keep every value for ``report.successful``, or none."""


class OutcomeSink(Protocol):
    """Takes each finished batch's outcome, on the thread that runs the recorder."""

    @property
    def every_batch(self) -> bool:
        """True: every finished batch is handed over (a checkpoint needs them all); False: only
        batches with dead letters."""
        ...

    @property
    def entries_stored_elsewhere(self) -> str | None:
        """None when the entries are stored as they were built (under the run's id), so the
        report can read them back from the DLQ; else why it cannot, for its error message."""
        ...

    def batch_done(self, stats: BatchStats, entries: Sequence[DeadLetter]) -> None:
        """Make ``entries`` (the batch's dead letters, in record order) durable, and record
        whatever else the sink keeps of the batch, before returning."""
        ...


class DLQSend:
    """A plain run's sink: a batch's entries go to the run's DLQ in one ``send``."""

    every_batch = False
    entries_stored_elsewhere = None

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self.dlq = dlq

    def batch_done(self, stats: BatchStats, entries: Sequence[DeadLetter]) -> None:
        if entries:
            self.dlq.send(entries)


def check_results(value: Any) -> str | ResultWriter:
    """``results=`` checked: "keep", "drop", or the sink as a writer (``batchguard.sinks``)."""
    if isinstance(value, str) and value in RESULTS_MODES:
        return value
    return as_writer(value)


class ResultsOut:
    """A run's results sink as the recorder drives it (``results=`` a sink): opened when the run
    starts, written as each batch ends (before the batch's dead letters and checkpoint, so a job
    never checkpoints a batch whose values were not written), closed when the run ends.

    ``durable``: the run checkpoints its batches (a job), so each write is also synced (flushed,
    and fsynced for a local file) before the checkpoint: a kill after it loses no value. A kill
    between the write and the checkpoint leaves the batch written and unfinished, so the resumed
    run writes it again: a job's sink gets each value at least once, and exactly once in a
    local JSON lines file, which the resumed run first cuts back to its last checkpointed
    batch (``trim``); a batch the run stopped in is left to the resumed run.
    """

    def __init__(self, writer: ResultWriter, *, durable: bool, finished: frozenset[int] = frozenset(),
                 batch_size: int = 1) -> None:
        """``finished``: a resumed job's checkpointed batches (of ``batch_size`` records each),
        whose values the earlier runs wrote: the writer appends, and a writer that can
        (``trim``, a local JSON lines file) first cuts off what those runs wrote past them."""
        if durable and getattr(writer, "durable_at_sync", True) is False:
            # Killed, the job would have checkpointed batches whose values are in no readable
            # file, and its resume would skip them: refused before any record runs.
            raise ConfigError(f"results sink {writer!r} holds its values only when the run ends (a "
                              f"Parquet footer, an object store upload), so a job killed before then "
                              f"would lose the values of every batch it checkpointed: give a job a "
                              f"local JSON lines path (compressed or not), or a callable sink")
        self.writer = writer
        append = bool(finished)
        self._durable = durable
        self._sync: Callable[[], Any] | None = getattr(writer, "sync", None) if durable else None
        self.written = 0
        """Values handed to the writer so far."""
        self._whole: Callable[[BatchEvent, Callable[[DeadRecord], DeadLetter]], Any] | None = getattr(
            writer, "write_batch", None)
        trim: Callable[[Callable[[int], bool]], Any] | None = getattr(writer, "trim", None)
        if append and trim is not None:
            trim(lambda index: index // batch_size in finished)
        writer.open(append=append)

    def batch(self, event: BatchEvent, dead_letter: Callable[[DeadRecord], DeadLetter]) -> None:
        """One batch's end: its successes to the writer (nothing for a batch whose records all
        failed), or the whole event to a writer that takes it (``write_batch``: iter_batches,
        which builds the batch's errors with ``dead_letter``)."""
        if self._whole is not None:
            self._whole(event, dead_letter)
            return
        indices, values = event.indices, event.values
        if not values or indices is None:
            return
        if self._durable and event.pending:
            # A job checkpoints no batch the run stopped in: the resumed run runs it again and
            # writes its values then, so they are not written twice.
            return
        self.writer.write(indices, values)
        self.written += len(values)
        if self._sync is not None:
            self._sync()

    def close(self) -> None:
        self.writer.close()
