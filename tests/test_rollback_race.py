"""``rollback`` reads what to undo only once it holds the job (issue 10 item 5): a run of the job
that ends between the read and the hold must not leave its batches done and not undone while
the rollback reports the job rolled back."""

from __future__ import annotations

import contextlib
from pathlib import Path

import batchguard
from batchguard.jobs import SqliteJobStore

RECORDS = list(range(6))


def stops_at_2(x: int) -> int:
    if x == 2:
        raise MemoryError("out of memory")  # FATAL: the run stops inside batch 1
    return x * 10


def times_ten(x: int) -> int:
    return x * 10


class ResumedMeanwhile(SqliteJobStore):
    """A store whose job is resumed to its end just before ``rollback`` holds it, as another
    process's run ending at that moment would be."""

    def claim(self, job: str) -> contextlib.AbstractContextManager[None]:
        batchguard.run_batches(RECORDS, times_ten, batch_size=2, job=job, store=f"sqlite:///{self.path}",
                               keep_outcomes=True)
        return super().claim(job)


def test_a_run_that_ends_just_before_the_rollback_holds_the_job_is_undone_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = batchguard.run_batches(RECORDS, stops_at_2, batch_size=2, job="load", store=url, keep_outcomes=True)
    assert first.status == "aborted" and first.success_count == 2
    undone: list[tuple[int, int]] = []
    with contextlib.closing(ResumedMeanwhile(tmp_path / "jobs.db")) as store:
        report = batchguard.rollback("load", lambda record, value: undone.append((record, value)), store=store)
    # Every record the job succeeded on by the time the rollback held it is undone, newest first.
    assert undone == [(5, 50), (4, 40), (3, 30), (2, 20), (1, 10), (0, 0)]
    assert report.undone == 6 and report.batches_reopened == (2, 1, 0)
