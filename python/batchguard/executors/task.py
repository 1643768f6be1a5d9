"""What crosses between the driver and a worker: a :class:`BatchTask` out, a :class:`BatchOutcome` back.

Both are plain picklable data. A task carries the batch's records (or, later, a descriptor of
where to read them) and everything the worker's engine needs: the run's config with the
worker's share of the rate limit, the classifier, and what builds the batch's DLQ entries. An
outcome carries the values in input order and the dead records already as DLQ entries (built
on the worker, where the exception and its traceback are), so nothing unpicklable comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._run.config import EngineConfig
from ..dlq.base import DeadLetter
from ..policies import Classifier
from ..results import BatchStats
from .splits import ParquetSplit

__all__ = ["BatchOutcome", "BatchTask"]


@dataclass(frozen=True)
class BatchTask:
    """One batch of a run, as a worker runs it.

    Its repr (Dask and a user's logging print tasks) leaves out the records and the DLQ URL,
    which may hold a password; the split shows its files by their redacted names."""

    run_id: str
    job_id: str | None
    batch_index: int
    first_index: int
    """The input position of the batch's first record: entries and record ids use positions in
    the whole input, never in the batch."""
    records: list[Any] = field(repr=False)
    """The batch's records; empty when ``split`` says where the worker reads them."""
    fn: Callable[..., Any]
    config: EngineConfig
    """The run's config for one batch: batch_size is the batch's length, the rate limit the
    worker's share, the error budget what is left of it; no skipped batches."""
    classifier: Classifier
    stage: str
    id_of: Callable[[Any], Any] | None
    pickle_payloads: bool
    bulk: bool
    dlq_url: str | None = field(default=None, repr=False)
    """Set when the worker sends the batch's entries to a networked DLQ (PostgreSQL, Redis)
    itself; None when they go back to the driver, which writes them."""
    attempt: int = 0
    """How often the driver submitted this batch before (an executor error made it resubmit)."""
    split: ParquetSplit | None = None
    """Where the worker reads the batch's records (a Parquet source), instead of ``records``."""

    @property
    def size(self) -> int:
        """How many records the batch has."""
        if self.split is None:
            return len(self.records)
        return sum(rows for _, _, rows in self.split.pieces)


@dataclass(frozen=True)
class BatchOutcome:
    """What a worker hands back for one batch."""

    stats: BatchStats
    """The batch's counts as the report shows them (a record served its retry policy's fallback
    counted as succeeded)."""
    values: list[Any]
    """The successful records' values, in input order."""
    entries: list[DeadLetter]
    """The dead records' DLQ entries, in record order (ids deterministic per record, so a
    batch run twice after a worker died writes the same entries again, never new ones)."""
    dead_records: list[Any]
    """The dead records themselves, in the order of ``entries`` (the report of a run without a
    durable DLQ lists them, as a local run's does)."""
    stored: bool
    """True when the worker already sent ``entries`` to the run's DLQ (``BatchTask.dlq_url``)."""
    stop_reason: str | None
    """Why the batch's engine stopped early (``"fatal"``, ``"breaker_abort"``,
    ``"max_failures"``), leaving ``pending`` records; None when every record is final."""
    fallbacks: int
    """Records of ``stats.succeeded`` that succeeded with their retry policy's fallback value
    (the engine counted them failed; the recorder's report counts them as the local run's does)."""
    breaker_trips: int
    breaker_events: list[tuple[float, str, str]]
    """The worker's breaker transitions: (seconds since the batch started, from, to)."""
    worker: str = ""
    """Which worker ran it (its address or process), for logs."""
