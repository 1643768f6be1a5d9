"""Where a finished batch's outcome goes: the :class:`OutcomeSink` protocol.

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

from collections.abc import Sequence
from typing import Protocol

from ..dlq.base import DeadLetter, DeadLetterQueue
from ..results import BatchStats

__all__ = ["DLQSend", "OutcomeSink"]


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
