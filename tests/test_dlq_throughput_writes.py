"""A plain run into a SqliteDLQ writes each batch on a writer thread, one batch behind the
engine, and every entry is durable before the run returns or raises (issue 11 item 5)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from batchguard import run_batches
from batchguard.dlq import DeadLetter, MemoryDLQ, SqliteDLQ
from batchguard.dlq.sqlite_rows import Rows
from batchguard.errors import DLQError
from helpers_contract import ENGINES


class SlowWrites(SqliteDLQ):
    """Each write takes a while and notes the thread it ran on: a run that returned before its
    last write finished would leave entries missing for another connection."""

    def __init__(self, path: Path, *, delay: float = 0.2, fail_on: int | None = None) -> None:
        super().__init__(path)
        self.delay = delay
        self.fail_on = fail_on
        self.writes = 0
        self.threads: set[str] = set()

    def _write(self, rows: Rows) -> None:
        self.writes += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.writes == self.fail_on:
            with self._db.errors("send"):
                raise sqlite3.OperationalError("disk I/O error")
        super()._write(rows)


def _fails(record: int) -> None:
    raise ValueError(f"bad {record}")


def _stored(path: Path) -> int:
    # Another connection, as another process would see the file.
    other = SqliteDLQ(path)
    try:
        return other.count()
    finally:
        other.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_every_entry_is_durable_when_the_run_returns(tmp_path: Path, engine: str) -> None:
    dlq = SlowWrites(tmp_path / "dlq.db")
    report = run_batches(range(50), _fails, dlq=dlq, batch_size=10, engine=engine)  # type: ignore[arg-type]
    assert _stored(tmp_path / "dlq.db") == 50 == report.dlq_count
    assert dlq.writes == 5
    assert threading.current_thread().name not in dlq.threads  # written off the run's thread
    entries = dlq.list(limit=None)
    assert [e.record_index for e in entries] == list(range(50))  # the order of the sends
    assert all(e.traceback and e.traceback.endswith(f"ValueError: bad {e.record_index}\n") for e in entries)
    dlq.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_entries_sent_before_an_interrupt_are_durable_when_it_propagates(tmp_path: Path, engine: str) -> None:
    dlq = SlowWrites(tmp_path / "dlq.db")

    def fn(record: int) -> None:
        if record == 35:
            raise KeyboardInterrupt
        raise ValueError(f"bad {record}")

    with pytest.raises(KeyboardInterrupt):
        run_batches(range(50), fn, dlq=dlq, batch_size=10, engine=engine)  # type: ignore[arg-type]
    # The batches finished before the interrupt, and what the interrupted one dead-lettered
    # (DESIGN §4: an interrupt flushes what was dead-lettered), are stored.
    assert _stored(tmp_path / "dlq.db") == 35
    assert [e.record_index for e in dlq.list(limit=None)] == list(range(35))
    dlq.close()


@pytest.mark.parametrize("fail_on", [2, 5])
def test_a_failed_write_fails_the_run(tmp_path: Path, fail_on: int) -> None:
    # The 2nd write fails while the engine runs a later batch: the next send raises it; the
    # 5th (last) write fails after the engine ended: the run's end raises it.
    dlq = SlowWrites(tmp_path / "dlq.db", delay=0.01, fail_on=fail_on)
    with pytest.raises(DLQError, match="disk I/O error"):
        run_batches(range(50), _fails, dlq=dlq, batch_size=10)
    dlq.close()


class GatedWrites(SqliteDLQ):
    """The second write waits for the test to open its gate."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.writes = 0

    def _write(self, rows: Rows) -> None:
        self.writes += 1
        if self.writes == 2:
            assert self.gate.wait(10)
        super()._write(rows)


def test_background_writes_are_one_batch_behind_at_most(tmp_path: Path) -> None:
    dlq = GatedWrites(tmp_path / "dlq.db")
    writes = dlq.background_writes()
    entries = [DeadLetter(id=f"e{i}", run_id="r", job_id=None, record_id=i, record_index=i, batch_index=0,
                          stage="process", payload=i, payload_encoding="json", error_class="permanent",
                          error_type="ValueError", error_message="bad", traceback=None) for i in range(4)]
    writes.send(entries[:2])
    writes.send(entries[2:])  # returns once the first batch is durable; the second is held
    assert _stored(tmp_path / "dlq.db") == 2
    dlq.gate.set()
    writes.finish()
    assert _stored(tmp_path / "dlq.db") == 4
    writes.finish()  # twice is fine
    dlq.close()


def _entry(i: int, message: str = "bad", status: str = "open") -> DeadLetter:
    return DeadLetter(id=f"e{i}", run_id="r", job_id=None, record_id=i, record_index=i, batch_index=0,
                      stage="process", payload={"n": i}, payload_encoding="json", error_class="permanent",
                      error_type="ValueError", error_message=message, traceback=None, status=status)


def _inserts(dlq: SqliteDLQ) -> list[str]:
    statements: list[str] = []
    dlq.connection.set_trace_callback(statements.append)
    return statements


@pytest.mark.parametrize("size", [1, 2, 3, 511, 512, 513, 1000, 1024, 1025, 2100])
def test_a_send_writes_its_entries_in_a_few_statements_in_order(tmp_path: Path, size: int) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    statements = _inserts(dlq)
    dlq.send([_entry(i) for i in range(size)])
    inserts = [s for s in statements if s.lstrip().startswith("INSERT")]
    # One statement per row (executemany) made 1,000 for 1,000 entries, each a GIL hand-off
    # on the writer thread; a statement holds up to 1024 rows (the last one padded).
    assert len(inserts) == -(-size // 1024)
    # Up to 1024 entries, that statement is the whole transaction: no BEGIN and COMMIT, two
    # more hand-offs.
    assert (statements == inserts) is (size <= 1024)
    assert [e.record_index for e in dlq.list(limit=None)] == list(range(size))
    dlq.close()


def test_an_id_repeated_in_one_statement_is_updated_in_place_as_memory_dlq_does(tmp_path: Path) -> None:
    batch = [_entry(0), _entry(1), _entry(0, "again"), _entry(2, status="resolved"), _entry(1, "and again")]
    dlq, model = SqliteDLQ(tmp_path / "dlq.db"), MemoryDLQ()
    dlq.send(batch)
    model.send(batch)
    assert dlq.list(limit=None, status="all") == model.list(limit=None, status="all")
    assert [(e.id, e.error_message) for e in dlq.list(limit=None, status="all")] == [
        ("e0", "again"), ("e1", "and again"), ("e2", "bad")]
    dlq.close()


def test_sends_keep_within_sqlites_limit_on_bound_parameters(tmp_path: Path) -> None:
    # SQLite before 3.32 allows 999 parameters a statement; here, 2 rows of 8 (or of 9).
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    dlq.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 21)
    statements = _inserts(dlq)
    dlq.send([_entry(i) for i in range(7)])
    dlq.send([_entry(i, "closed", status="resolved") for i in range(7, 12)])
    assert len([s for s in statements if s.lstrip().startswith("INSERT")]) == 4 + 3  # 2+2+2+1, 2+2+1
    stored = dlq.list(limit=None, status="all")
    assert [(e.record_index, e.status) for e in stored] == [(i, "open" if i < 7 else "resolved") for i in range(12)]
    dlq.close()


def test_a_job_stores_entries_in_its_transaction_in_a_few_statements(tmp_path: Path) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    statements = _inserts(dlq)
    entries = [_entry(i) for i in range(600)]
    with dlq.transaction() as cur:
        dlq.write_entries(cur, iter(entries))
    assert len([s for s in statements if s.lstrip().startswith("INSERT")]) == 1  # 600 of 1024
    assert dlq.list(limit=None) == entries
    dlq.close()
