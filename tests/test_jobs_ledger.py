"""Issue 9 item 4 (jobs part): where a job's batches and records stand, derived from the job
store's checkpoints and the DLQ (batchguard.jobs.ledger), on real SQLite and PostgreSQL stores."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from batchguard import RetryPolicy, run_batches
from batchguard.errors import ConfigError, JobNotFoundError
from batchguard.jobs import SqliteJobStore, batch_rows, find_record, job_batches, job_status, record_status

ONCE = RetryPolicy(max_attempts=1, base_delay=0)


def failing(fatal_at: int | None = None) -> Any:
    """Every record divisible by 7 fails (ValueError); ``fatal_at`` stops the run (MemoryError)."""
    def fn(record: int) -> int:
        if record == fatal_at:
            raise MemoryError("simulated out of memory")
        if record % 7 == 0:
            raise ValueError(f"bad {record}")
        return record
    return fn


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    # A table prefix of its own per test: the session's database is shared.
    return f"{url}?table_prefix=t{uuid.uuid4().hex[:10]}_"


def test_a_stopped_job_has_done_stopped_and_pending_batches_that_add_up(store: str) -> None:
    report = run_batches(range(100), failing(fatal_at=25), batch_size=10, job="j", store=store,
                         retry=ONCE)
    assert report.status == "aborted"
    table = job_batches("j", store=store)
    states = [(s.first, s.last, s.state) for s in table.spans]
    assert states == [(0, 1, "done"), (2, 2, "stopped"), (3, 9, "pending")]
    done, stopped, pending = table.spans
    assert (done.records, done.succeeded, done.failed) == (20, 17, 3)  # 0, 7, 14 failed
    # The stopped batch as it stood: 21 and 25 failed (25 fatal), the rest of it never final.
    assert stopped.records == 10 and stopped.failed == 2 and stopped.pending == 10 - stopped.succeeded - 2
    assert stopped.run_id == report.run_id
    assert pending.records == 70 and pending.pending == 70
    assert (table.done, table.stopped, table.pending, table.batches_total) == (2, 1, 7, 10)
    assert sum(s.records or 0 for s in table.spans) == 100

    run_batches(range(100), failing(), batch_size=10, job="j", store=store, retry=ONCE)
    after = job_batches("j", store=store)
    assert [(s.first, s.last, s.state) for s in after.spans] == [(0, 9, "done")]
    assert after.stopped == 0 and after.spans[0].failed == job_status("j", store=store).failed == 15


def test_ten_thousand_batches_fold_into_a_few_rows_and_page_one_by_one(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(10_000), failing(fatal_at=6_000), batch_size=1, job="big", store=store,
                retry=ONCE, concurrency=4)
    table = job_batches("big", store=store)
    assert table.batches_total == 10_000
    assert len(table.spans) <= 12, table.spans  # in-order runs stop with a handful in flight
    assert table.spans[0].state == "done" and table.spans[-1].state == "pending"
    assert table.spans[-1].last == 9_999
    assert sum(s.count for s in table.spans) == 10_000
    assert table.done == job_status("big", store=store).batches_done
    page = batch_rows("big", first=5_990, limit=20, store=store)
    assert [r.index for r in page] == list(range(5_990, 6_010))
    assert page[0].state == "done" and page[0].run_id is not None and page[0].duration_s is not None
    assert page[-1].state == "pending" and page[-1].size == 1
    fatal = page[10]  # a batch of one: its record, dead-lettered, is final, so the batch is done
    assert (fatal.index, fatal.state, fatal.failed) == (6_000, "done", 1)


def test_a_record_is_succeeded_dead_lettered_or_pending(store: str) -> None:
    run_batches(range(100), failing(fatal_at=25), batch_size=10, job="j", store=store, retry=ONCE)
    ok = record_status("j", index=8, store=store)
    assert (ok.state, ok.batch_index, ok.batch_state, ok.entry) == ("succeeded", 0, "done", None)
    dead = record_status("j", index=14, store=store)
    assert dead.state == "dead_lettered" and dead.entry is not None
    assert (dead.entry.error_type, dead.entry.record_index, dead.record_id) == ("ValueError", 14, 14)
    in_flight = record_status("j", index=21, store=store)
    assert in_flight.state == "pending" and in_flight.batch_state == "stopped"
    assert in_flight.entry is not None and "reruns" in in_flight.detail
    later = record_status("j", index=80, store=store)
    assert (later.state, later.batch_state, later.entry) == ("pending", "pending", None)
    beyond = record_status("j", index=100, store=store)
    assert beyond.state == "unknown" and "no record #100" in beyond.detail


def test_a_record_named_by_id_is_found_in_the_input_or_among_the_dead_letters(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    records = [{"sku": f"S-{i:03d}", "n": i} for i in range(30)]

    def fn(record: dict[str, Any]) -> int:
        if record["n"] in (4, 17):
            raise KeyError("price")
        if record["n"] == 22:
            raise MemoryError("stop")
        return int(record["n"])

    def sku(record: dict[str, Any]) -> str:
        return str(record["sku"])

    run_batches(records, fn, batch_size=5, job="skus", store=store, retry=ONCE, id_of=sku)
    by_input = record_status("skus", record_id="S-017", records=records, id_of=sku, store=store)
    assert (by_input.state, by_input.record_index, by_input.batch_index) == ("dead_lettered", 17, 3)
    assert by_input.entry is not None and by_input.entry.record_id == "S-017"
    assert record_status("skus", record_id="S-003", records=records, id_of=sku, store=store).state == "succeeded"
    assert record_status("skus", record_id="S-028", records=records, id_of=sku, store=store).state == "pending"
    assert record_status("skus", record_id="nope", records=records, id_of=sku, store=store).state == "unknown"
    # Without the input: a dead-lettered record is found among the job's entries...
    scanned = record_status("skus", record_id="S-004", store=store)
    assert (scanned.state, scanned.record_index) == ("dead_lettered", 4)
    # ...but a record with no entry cannot be placed while the job is unfinished.
    unknown = record_status("skus", record_id="S-003", store=store)
    assert unknown.state == "unknown" and "--index" in unknown.detail


def test_find_record_names_records_as_a_run_does() -> None:
    records: list[Any] = [{"id": "a"}, {"entity_id": 5, "id": "x"}, "raw", {"id": None}]
    assert find_record(records, "a") == [0]
    assert find_record(records, 5) == [1] and find_record(records, "5") == [1]
    assert find_record(records, 2) == [2] and find_record(records, 3) == [3]  # no id: the index
    assert find_record([{"id": 1}, {"id": 1}], 1) == [0, 1]


def test_bad_questions_are_config_errors(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(3), lambda x: x, job="j", store=store)
    with pytest.raises(ConfigError, match="one of the two"):
        record_status("j", store=store)
    with pytest.raises(ConfigError, match="index must be"):
        record_status("j", index=-1, store=store)
    with pytest.raises(JobNotFoundError):
        job_batches("nope", store=store)


def test_a_store_made_before_stopped_batches_existed_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    run_batches(range(20), lambda x: x, batch_size=5, job="old", store=f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE job_stopped_batches")
    SqliteJobStore(path).close()  # opening migrates in place
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "job_stopped_batches" in names
    assert [s.state for s in job_batches("old", store=f"sqlite:///{path}").spans] == ["done"]
