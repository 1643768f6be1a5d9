"""A job's state as its store knows it: :class:`JobStatus` and the states a job can be in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = ["FINISHED", "DoneBatch", "DoneSpan", "JobState", "JobStatus", "StoppedBatch", "timestamp"]

JobState = Literal["running", "completed", "failed", "aborted"]
FINISHED: Final = frozenset({"completed", "failed"})
"""The states of a job that does not run again unless forced."""

DoneSpan = tuple[int, int, int, int, int, int]
"""Consecutive done batches as a store returns them: (first, last, records, succeeded, failed, retries)."""
DoneBatch = tuple[int, int, int, int, int, float, str, str]
"""A done batch: (index, size, succeeded, failed, retries, duration_s, run_id, done_at)."""
StoppedBatch = tuple[int, int, int, int, int, str, str]
"""A batch a run stopped inside: (index, size, succeeded, failed, pending, run_id, stopped_at)."""


def timestamp() -> str:
    """The current UTC time as the stores write it (ISO 8601, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job as its store knows it (the seed's ``get_batch_status``).

    Totals count the records of *finished* batches: a batch that was running when the job
    stopped counts once it completes on resume.

    >>> s = JobStatus(name="n", status="running", total=200, succeeded=90, failed=10,
    ...               batches_done=1, batch_size=100, stage="process", fingerprint="v1:ab",
    ...               config={}, runs=1, last_run_id="run-1", error=None,
    ...               created_at="2024-06-01T00:00:00.000+00:00",
    ...               updated_at="2024-06-01T00:00:01.000+00:00", finished_at=None)
    >>> s.processed, s.progress, s.percent_complete, s.batches_total, s.pending
    (100, 0.5, 50.0, 2, 100)
    """

    name: str
    status: JobState
    """running (or stopped by a crash: see ``active``), completed, failed (every batch done but
    the success rate is below the run's ``success_threshold``) or aborted (stopped early)."""
    total: int | None
    """Records in the input; None while unknown (a generator that has not been read to the end)."""
    succeeded: int
    failed: int
    """Records dead-lettered. A replay that tells the store (``replay(..., store=)``, or the
    job's default DLQ in the store's own database) moves the records it fixed to ``succeeded``;
    entries removed by hand are still counted here."""
    batches_done: int
    batch_size: int
    stage: str
    fingerprint: str
    config: Mapping[str, Any]
    runs: int
    """How many times the job was started (first run, resumes and forced reruns)."""
    last_run_id: str | None
    error: str | None
    """Why the last run stopped, when it stopped early."""
    created_at: str
    updated_at: str
    finished_at: str | None
    active: bool = False
    """A process is running the job right now (it holds the job's lock). A job whose status is
    "running" while ``active`` is False was stopped by a crash and can be resumed."""

    @property
    def processed(self) -> int:
        """Records final in finished batches (succeeded + dead-lettered)."""
        return self.succeeded + self.failed

    @property
    def batches_total(self) -> int | None:
        return None if self.total is None else -(-self.total // self.batch_size)

    @property
    def pending(self) -> int | None:
        """Records not yet final; None while the total is unknown."""
        return None if self.total is None else max(0, self.total - self.processed)

    @property
    def progress(self) -> float | None:
        """Fraction of records final, 0..1 (the seed's ``progress``); None if the total is unknown."""
        if self.total is None:
            return 1.0 if self.status in FINISHED else None
        return self.processed / self.total if self.total else 1.0

    @property
    def percent_complete(self) -> float | None:
        progress = self.progress
        return None if progress is None else 100.0 * progress

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.processed if self.processed else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; includes the seed's keys (``batch_id``, ``processed``, ``progress``)."""
        return {
            "name": self.name,
            "batch_id": self.name,
            "status": self.status,
            "active": self.active,
            "total": self.total,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "progress": self.progress,
            "batches_done": self.batches_done,
            "batches_total": self.batches_total,
            "batch_size": self.batch_size,
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "runs": self.runs,
            "last_run_id": self.last_run_id,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "config": dict(self.config),
        }
