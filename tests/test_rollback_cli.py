"""``batchguard run --job --keep-outcomes`` then ``batchguard rollback`` (issue 10 item 5), and
what a rollback cannot do: values stored as repr, pickles not opted into, undos that keep failing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import batchguard
from batchguard.cli import main
from batchguard.errors import JobNotFoundError
from batchguard.jobs import job_status
from helpers_shop import item_ids, shop


def test_run_keep_outcomes_then_rollback_then_resume(tmp_path: Path) -> None:
    db, module = shop(tmp_path)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "name": f"item {i}"}) + "\n" for i in range(8)))
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    runner = CliRunner()
    ran = runner.invoke(main, ["run", str(source), "--fn", f"{module}:insert", "--job", "load", "--store", store,
                               "--keep-outcomes", "--batch-size", "3", "-q"])
    assert ran.exit_code == 0, ran.output
    assert len(item_ids(db)) == 8
    rolled = runner.invoke(main, ["rollback", "load", "--fn", f"{module}:delete", "--store", store])
    assert rolled.exit_code == 0, rolled.output
    assert "Rolled back 8 records of job 'load'" in rolled.output
    assert "batchguard jobs resume load" in rolled.output
    assert len(item_ids(db)) == 0
    resumed = runner.invoke(main, ["jobs", "resume", "load", "--store", store, "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert len(item_ids(db)) == 8


def test_keep_outcomes_without_a_job_cannot_start(tmp_path: Path) -> None:
    _, module = shop(tmp_path)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "name": "a"}\n')
    result = CliRunner().invoke(main, ["run", str(source), "--fn", f"{module}:insert", "--keep-outcomes", "-q"])
    assert result.exit_code == 2
    assert "keep_outcomes=True is used with job=" in result.output


class Opaque:
    """A value JSON cannot hold: stored as its repr unless the run pickles payloads."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Opaque({self.n})"


def test_a_value_stored_as_repr_is_reported_not_undone(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    batchguard.run_batches(range(3), Opaque, job="j", store=store, keep_outcomes=True)
    undone: list[Any] = []
    report = batchguard.rollback("j", lambda record, value: undone.append(record), store=store)
    assert (report.undone, report.ok, undone) == (0, False, [])
    assert {f.record_index for f in report.failed} == {0, 1, 2}
    assert "stored as its repr" in report.failed[0].error_message
    assert job_status("j", store=store).status == "completed"  # nothing was undone: unchanged


def test_a_pickled_value_needs_allow_pickle(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    batchguard.run_batches(range(2), Opaque, job="j", store=store, keep_outcomes=True, pickle_payloads=True)
    refused = batchguard.rollback("j", lambda record, value: None, store=store)
    assert refused.undone == 0 and "allow_pickle" in refused.failed[0].error_message
    seen: list[int] = []
    report = batchguard.rollback("j", lambda record, value: seen.append(value.n), store=store, allow_pickle=True)
    assert (report.undone, seen) == (2, [1, 0])


def test_an_undo_that_keeps_failing_stays_kept_and_a_second_rollback_retries_it(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    batchguard.run_batches(range(4), lambda x: x * 10, batch_size=2, job="j", store=store, keep_outcomes=True)
    broken = {3}

    def undo(record: int, value: int) -> None:
        if record in broken:
            raise ValueError(f"cannot undo {record}")

    first = batchguard.rollback("j", undo, store=store, retry=batchguard.RetryPolicy(max_attempts=1))
    assert (first.undone, [f.record_index for f in first.failed], first.batches_reopened) == (3, [3], (0,))
    assert first.failed[0].error_type == "ValueError"
    assert job_status("j", store=store).batches_done == 1  # batch 1 still done: record 3's effect stands
    broken.clear()
    second = batchguard.rollback("j", undo, store=store)
    assert (second.undone, second.failed, second.batches_reopened) == (1, (), (1,))
    with pytest.raises(JobNotFoundError, match="nothing to roll back"):
        batchguard.rollback("j", undo, store=store)


def test_a_run_id_rolls_back_that_run_only(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = batchguard.run_batches(range(4), lambda x: x if x < 2 else 1 // 0, batch_size=2, job="j",
                                   store=store, keep_outcomes=True, retry=batchguard.RetryPolicy(max_attempts=1))
    undone: list[int] = []
    report = batchguard.rollback(first.run_id, lambda record, value: undone.append(record), store=store)
    assert (report.job, report.undone, undone) == ("j", 2, [1, 0])
    assert "run " in report.summary() and "of job 'j'" in report.summary()


def test_a_postgresql_store_keeps_outcomes_and_rolls_back(postgres_url: str) -> None:
    job = f"pg-rollback-{uuid.uuid4().hex[:8]}"
    report = batchguard.run_batches(range(6), lambda x: {"n": x}, batch_size=4, job=job, store=postgres_url,
                                    keep_outcomes=True, atomic_batches=True,
                                    compensate=lambda record, value: None)
    assert report.status == "complete"
    undone: list[tuple[int, Any]] = []
    rolled = batchguard.rollback(job, lambda record, value: undone.append((record, value)), store=postgres_url)
    assert undone == [(5, {"n": 5}), (4, {"n": 4}), (3, {"n": 3}), (2, {"n": 2}), (1, {"n": 1}), (0, {"n": 0})]
    assert (rolled.undone, rolled.batches_reopened) == (6, (1, 0))
    status = job_status(job, store=postgres_url)
    assert (status.status, status.batches_done, status.succeeded) == ("aborted", 0, 0)
