"""Compensation against a real SQLite table (issue 10 item 5, "must show").

``fn`` inserts a row and returns its rowid; ``undo(record, rowid)`` deletes it. One batch holds
a poison row (a NULL name, refused by the table's NOT NULL constraint): with atomic batches the
table ends with no row of that batch and the DLQ holds all of its records with the cause. A
finished job that kept its outcomes is rolled back by ``batchguard rollback``, which empties the
table again; ``jobs resume`` then redoes it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import batchguard
from batchguard.cli import main
from batchguard.dlq import SqliteDLQ
from batchguard.jobs import job_status

ENGINES = ("python", "native")
POISON = 12


class Table:
    """The ``items`` table of a SQLite file: a connection per call, from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")

    def _db(self) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite3.connect(self.path, timeout=30, isolation_level=None))

    def insert(self, record: dict[str, Any]) -> int | None:
        with self._db() as db:
            return db.execute("INSERT INTO items (id, name) VALUES (?, ?)",
                              (record["id"], record["name"])).lastrowid

    def delete(self, record: dict[str, Any], rowid: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM items WHERE rowid = ?", (rowid,))

    def ids(self) -> list[int]:
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT id FROM items ORDER BY id")]


def records(poison: int | None = POISON, n: int = 20) -> list[dict[str, Any]]:
    return [{"id": i, "name": None if i == poison else f"item {i}"} for i in range(n)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_with_a_poison_row_leaves_no_row_and_is_dead_lettered_with_its_cause(
        tmp_path: Path, engine: str) -> None:
    table = Table(tmp_path / "shop.db")
    dlq_url = f"sqlite:///{tmp_path / 'dlq.db'}"
    report = batchguard.run_batches(records(), table.insert, batch_size=5, concurrency=4, engine=engine,
                                    dlq=dlq_url, compensate=table.delete, atomic_batches=True)
    poisoned_batch = range(10, 15)
    assert table.ids() == [i for i in range(20) if i not in poisoned_batch]
    assert (report.success_count, report.failure_count, report.compensated_count) == (15, 1, 4)
    with SqliteDLQ(tmp_path / "dlq.db") as dlq:
        entries = {entry.record_index: entry for entry in dlq.list(limit=100)}
    assert sorted(entries) == list(poisoned_batch)
    assert entries[POISON].error_type == "IntegrityError"
    assert "NOT NULL" in entries[POISON].error_message
    for index in (10, 11, 13, 14):
        entry = entries[index]
        assert entry.error_type == "BatchRolledBack"
        assert f"record {POISON} failed with IntegrityError" in entry.error_message
        assert entry.record() == {"id": index, "name": f"item {index}"}  # to replay once fixed


@pytest.mark.parametrize("engine", ENGINES)
def test_an_undo_that_fails_is_dead_lettered_and_its_row_stays(tmp_path: Path, engine: str) -> None:
    table = Table(tmp_path / "shop.db")

    def undo(record: dict[str, Any], rowid: int) -> None:
        if record["id"] == 11:
            raise PermissionError("row 11 is locked by an audit")
        table.delete(record, rowid)

    dlq = batchguard.MemoryDLQ()
    report = batchguard.run_batches(records(), table.insert, batch_size=5, engine=engine, dlq=dlq,
                                    compensate=undo, atomic_batches=True,
                                    retry=batchguard.RetryPolicy(max_attempts=2, base_delay=0.0))
    assert 11 in table.ids() and not {10, 13, 14} & set(table.ids())
    (failed,) = dlq.list(stage="compensate")
    assert failed.record() == {"record": {"id": 11, "name": "item 11"}, "value": 11}  # its rowid
    assert (report.failure_count, report.compensated_count) == (2, 3)


def _undo_module(tmp_path: Path, db: Path) -> str:
    module = tmp_path / "shop_undo.py"
    module.write_text(textwrap.dedent(f"""
        import contextlib, sqlite3

        def delete(record, rowid):
            with contextlib.closing(sqlite3.connect({str(db)!r}, isolation_level=None)) as db:
                db.execute("DELETE FROM items WHERE rowid = ?", (rowid,))
    """))
    return f"{module}:delete"


def test_rollback_of_a_finished_job_restores_the_table_and_resume_redoes_it(tmp_path: Path) -> None:
    table = Table(tmp_path / "shop.db")
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    report = batchguard.run_batches(records(poison=None), table.insert, batch_size=5, job="load",
                                    store=store, keep_outcomes=True)
    assert report.status == "complete" and table.ids() == list(range(20))

    result = CliRunner().invoke(main, ["rollback", "load", "--fn", _undo_module(tmp_path, table.path),
                                       "--store", store])
    assert result.exit_code == 0, result.output
    assert "Rolled back 20 records of job 'load'" in result.output
    assert table.ids() == []
    status = job_status("load", store=store)
    assert (status.status, status.succeeded, status.batches_done) == ("aborted", 0, 0)

    again = batchguard.run_batches(records(poison=None), table.insert, batch_size=5, job="load",
                                   store=store, keep_outcomes=True)
    assert (again.success_count, again.skipped_batches) == (20, 0)
    assert table.ids() == list(range(20))


def test_rollback_of_one_batch_leaves_the_others(tmp_path: Path) -> None:
    table = Table(tmp_path / "shop.db")
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    batchguard.run_batches(records(poison=None), table.insert, batch_size=5, job="load", store=store,
                           keep_outcomes=True)
    result = CliRunner().invoke(main, ["rollback", "load", "--fn", _undo_module(tmp_path, table.path),
                                       "--store", store, "--batch", "1"])
    assert result.exit_code == 0, result.output
    assert table.ids() == [i for i in range(20) if not 5 <= i < 10]
    assert job_status("load", store=store).batches_done == 3
    # Nothing is left to undo in batch 1: a second rollback of it says so (exit 2).
    again = CliRunner().invoke(main, ["rollback", "load", "--fn", _undo_module(tmp_path, table.path),
                                      "--store", store, "--batch", "1"])
    assert again.exit_code == 2 and "nothing to roll back" in again.output


def test_rollback_without_kept_outcomes_says_how_to_keep_them(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    batchguard.run_batches(range(3), lambda x: x, job="plain", store=store)
    result = CliRunner().invoke(main, ["rollback", "plain", "--fn", "builtins:print", "--store", store])
    assert result.exit_code == 2
    assert "keep_outcomes=True" in result.output


@pytest.mark.parametrize("engine", ENGINES)
def test_an_aborted_job_is_undone_and_its_batches_run_again_on_resume(tmp_path: Path, engine: str) -> None:
    table = Table(tmp_path / "shop.db")
    store = f"sqlite:///{tmp_path / 'jobs.db'}"

    def insert_until_the_disk_is_full(record: dict[str, Any]) -> int | None:
        if record["id"] == 12:
            raise MemoryError("out of memory at row 12")  # FATAL: the run aborts
        return table.insert(record)

    report = batchguard.run_batches(records(poison=None), insert_until_the_disk_is_full, batch_size=5,
                                    engine=engine, job="load", store=store, compensate=table.delete,
                                    on_abort="compensate", keep_outcomes=True)
    assert (report.status, report.compensated_count, report.failure_count) == ("aborted", 12, 1)
    assert table.ids() == []
    status = job_status("load", store=store)
    assert (status.status, status.batches_done, status.succeeded) == ("aborted", 0, 0)
    resumed = batchguard.run_batches(records(poison=None), table.insert, batch_size=5, engine=engine,
                                     job="load", store=store, compensate=table.delete, on_abort="compensate")
    assert (resumed.status, resumed.skipped_batches, resumed.success_count) == ("complete", 0, 20)
    assert table.ids() == list(range(20))


def test_a_rolled_back_job_batch_is_replayed_whole_and_the_job_counts_it(tmp_path: Path) -> None:
    table = Table(tmp_path / "shop.db")
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    report = batchguard.run_batches(records(), table.insert, batch_size=5, job="load", store=store,
                                    compensate=table.delete, atomic_batches=True)
    assert (report.failure_count, report.compensated_count) == (1, 4)
    status = job_status("load", store=store)
    # the job store counts what has an entry to replay: the poison row and its batch's undone rows
    assert (status.succeeded, status.failed) == (15, 5)

    def insert_fixed(record: dict[str, Any]) -> int | None:
        return table.insert({**record, "name": record["name"] or "unnamed"})

    with SqliteDLQ(tmp_path / "jobs.db") as dlq:
        replayed = batchguard.replay(dlq, insert_fixed, store=store)
        assert dlq.count() == 0
    assert replayed.success_count == 5
    assert table.ids() == list(range(20))
    status = job_status("load", store=store)
    assert (status.succeeded, status.failed) == (20, 0)
