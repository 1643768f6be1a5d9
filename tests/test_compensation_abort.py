"""An aborted job whose undos (``on_abort="compensate"``) partly fail (issue 10 item 5).

A batch wholly undone is reopened (a resume runs it again). A batch where some undo failed
cannot be run again whole (the failed undo's effect stands: running it again would do it
twice), so it stays done, and each record of it that *was* undone gets a DLQ entry
(``BatchRolledBack``) to replay, as a rolled-back atomic batch's do: nothing lost, nothing
done twice.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard.dlq import SqliteDLQ
from batchguard.jobs import job_status
from helpers_contract import ENGINES


class Shop:
    """Effects by record: fn adds one, undo takes one away; record 12 fails, record 3's undo
    always fails."""

    def __init__(self) -> None:
        self.effects: collections.Counter[int] = collections.Counter()

    def insert(self, record: int) -> int:
        if record == 12:
            raise ValueError("poison")
        self.effects[record] += 1
        return record

    def delete(self, record: int, value: int) -> None:
        if record == 3:
            raise ValueError("cannot undo 3")
        self.effects[record] -= 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_with_a_failed_undo_stays_done_and_its_undone_records_can_be_replayed(
        tmp_path: Path, engine: str) -> None:
    store, dlq_path = f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "dlq.db"
    shop = Shop()
    report = batchguard.run_batches(range(20), shop.insert, batch_size=5, engine=engine, job="load",
                                    store=store, dlq=f"sqlite:///{dlq_path}", compensate=shop.delete,
                                    on_abort="compensate", max_failures=0, retry=RetryPolicy(max_attempts=1))
    assert report.status == "aborted"
    assert +shop.effects == collections.Counter({3: 1})  # all undone but record 3
    with SqliteDLQ(dlq_path) as dlq:
        entries = {(e.record_index, e.error_type) for e in dlq.list(limit=100)}
    assert {(3, "CompensationFailed"), (12, "ValueError")} <= entries
    assert {(i, "BatchRolledBack") for i in (0, 1, 2, 4)} <= entries
    status = job_status("load", store=store)
    # Batch 0 stays done (not to be run whole again), its five records counted failed as the
    # report counts them: four undone with entries to replay, one whose undo failed.
    assert (status.batches_done, status.succeeded, status.failed) == (1, 0, 5)
    resumed = batchguard.run_batches(range(20), shop.insert, batch_size=5, engine=engine, job="load",
                                     store=store, dlq=f"sqlite:///{dlq_path}", retry=RetryPolicy(max_attempts=1))
    assert resumed.skipped_batches == 1
    replayed = batchguard.replay(f"sqlite:///{dlq_path}", shop.insert, error_type="BatchRolledBack", store=store)
    assert replayed.success_count == 4
    status = job_status("load", store=store)
    assert (status.succeeded, status.failed) == (18, 2)  # left: record 12's failure, record 3's undo
    # Every record's effect exactly once (12 always fails), record 3's never undone.
    assert shop.effects == collections.Counter({i: 1 for i in range(20) if i != 12})
