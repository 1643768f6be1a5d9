"""A SqliteDLQ row keeps each fact once (issue 11 item 5): the columns, a JSON of the rest, and a
traceback that many entries repeat stored once in dead_letter_tracebacks. Every field of every
entry reads back as MemoryDLQ keeps it, whatever the entry holds, through get, list, iter,
export and the CLI, from this format and from the one before it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard import run_batches
from batchguard.cli import main
from batchguard.dlq import Attempt, DeadLetter, MemoryDLQ, SqliteDLQ, sqlite_rows
from batchguard.dlq.sqlite_rows import TRACEBACKS, rows_of
from dlq_previous_schema import PREVIOUS_SCHEMA


def _rows(path: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class Recorded(SqliteDLQ):
    """Keeps what it was given in a MemoryDLQ too: the model of what reading must give back."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.model = MemoryDLQ()

    def _rows(self, entries: Any) -> Any:
        entries = list(entries)
        self.model.send(entries)
        return super()._rows(entries)


class Unsaved(Exception):
    pass


def _fails(record: dict[str, Any]) -> None:
    # Three places to fail from, one with a chain that quotes the record (its own traceback).
    if record["id"] % 3 == 0:
        raise ValueError(f"bad amount in record {record['id']}")
    if record["id"] % 3 == 1:
        raise KeyError(record["id"])
    try:
        raise OSError(f"disk said no to {record['id']}")
    except OSError as exc:
        raise Unsaved(f"record {record['id']} not saved") from exc


def test_a_runs_entries_read_back_whole_with_each_repeated_stack_stored_once(tmp_path: Path) -> None:
    records = [{"id": i, "email": f"user{i}@example.com"} for i in range(300)]
    dlq = Recorded(tmp_path / "dlq.db")
    run_batches(records, _fails, dlq=dlq, batch_size=50)  # written on the run's writer thread
    model = dlq.model
    stored = dlq.list(limit=None)
    assert stored == model.list(limit=None)
    assert [e.record_index for e in stored] == list(range(300))
    assert all(e.traceback and e.traceback.startswith("Traceback (most recent call last):\n") for e in stored)
    assert stored[2].traceback is not None and "The above exception was the direct cause" in stored[2].traceback
    assert [dlq.get(e.id) for e in stored[:6]] == stored[:6]
    assert list(dlq.iter(error_type="KeyError")) == model.list(limit=None, error_type="KeyError")
    # The ValueError and KeyError stacks, once each; the chained one quotes its record in its
    # cause, so each of those keeps its own traceback in its JSON.
    texts = [text for (text,) in _rows(tmp_path / "dlq.db", f"SELECT text FROM {TRACEBACKS}")]
    assert sorted(text.splitlines()[-1] for text in texts) == ["KeyError: ", "ValueError: "]
    rows = _rows(tmp_path / "dlq.db", "SELECT error_type, entry, traceback_digest FROM dead_letters")
    for error_type, text, digest in rows:
        shared = error_type != "Unsaved"
        assert (digest is not None) is shared
        assert ('"traceback"' in text) is not shared
        # What the columns hold is not repeated in the JSON.
        assert not {"id", "run_id", "stage", "error_class", "error_type"} & set(json.loads(text))
    dlq.close()


def test_export_and_the_cli_show_the_whole_traceback(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    dlq = SqliteDLQ(path)
    run_batches([{"id": 0}, {"id": 3}], _fails, dlq=dlq)
    exported = tmp_path / "out.jsonl"
    assert dlq.export(exported) == 2
    lines = [DeadLetter.from_json(line) for line in exported.read_text().splitlines()]
    assert lines == dlq.list()
    assert lines[1].traceback is not None and lines[1].traceback.endswith("ValueError: bad amount in record 3\n")
    shown = CliRunner().invoke(main, ["dlq", "show", "--dlq", f"sqlite:///{path}", lines[1].id])
    assert shown.exit_code == 0, shown.output
    assert "ValueError: bad amount in record 3" in shown.output and "Traceback" in shown.output
    dlq.close()


def test_a_traceback_only_one_entry_of_a_write_has_stays_in_its_json(tmp_path: Path) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    run_batches([{"id": 0}], _fails, dlq=dlq)
    assert _rows(tmp_path / "dlq.db", f"SELECT count(*) FROM {TRACEBACKS}") == [(0,)]
    # Once stored (a later write repeats it), a single entry names it too.
    run_batches([{"id": 3}, {"id": 6}], _fails, dlq=dlq)
    run_batches([{"id": 9}], _fails, dlq=dlq)
    digests = _rows(tmp_path / "dlq.db", "SELECT traceback_digest FROM dead_letters ORDER BY seq")
    assert digests[0] == (None,) and digests[1][0] is not None and digests[1] == digests[2] == digests[3]
    assert [e.traceback for e in dlq.list(limit=None)][-1].endswith("ValueError: bad amount in record 9\n")
    dlq.close()


def test_two_texts_with_one_digest_keep_their_own_tracebacks(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # 64-bit digests: a collision is caught when the second text is written.
    monkeypatch.setattr(sqlite_rows, "digest_of", lambda text: 42)
    dlq = Recorded(tmp_path / "dlq.db")
    run_batches([{"id": 0}, {"id": 3}], _fails, dlq=dlq)
    run_batches([{"id": 1}, {"id": 4}], _fails, dlq=dlq)
    assert dlq.list(limit=None) == dlq.model.list(limit=None)
    assert _rows(tmp_path / "dlq.db", f"SELECT digest FROM {TRACEBACKS}") == [(42,)]
    dlq.close()


# One row of the release before this one, copied literally (its schema: dlq_previous_schema).
PREVIOUS_ROW = (
    "c83d55aa5d17-000000000000", "run-old", None, "process", "permanent", "ValueError",
    '{"id":"c83d55aa5d17-000000000000","run_id":"run-old","job_id":null,"record_id":0,"record_index":0,'
    '"batch_index":0,"stage":"process","payload":{"id":0},"payload_encoding":"json","error_class":"permanent",'
    '"error_type":"ValueError","error_message":"invalid amount for record 0","traceback":"Traceback (most '
    'recent call last):\\n  File \\"/app/job.py\\", line 80, in load\\n    raise ValueError(msg)\\nValueError: '
    'invalid amount for record 0\\n","attempts":[{"attempt":1,"at":"2026-12-07T19:54:46.925+00:00",'
    '"error_type":"ValueError","error_message":"invalid amount for record 0","delay_s":null}],'
    '"first_failed_at":"2026-12-07T19:54:46.925+00:00","last_failed_at":"2026-12-07T19:54:46.925+00:00"}',
)


def test_a_queue_written_by_the_previous_release_reads_as_it_did_and_takes_new_entries(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    with conn:
        for statement in PREVIOUS_SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO dead_letters (id, run_id, job_id, stage, error_class, error_type, entry) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", PREVIOUS_ROW)
    conn.close()
    dlq = SqliteDLQ(path)
    (old,) = dlq.list()
    assert old == DeadLetter.from_json(PREVIOUS_ROW[-1])
    assert old.traceback is not None and old.traceback.endswith("ValueError: invalid amount for record 0\n")
    report = run_batches([{"id": 3}, {"id": 6}], _fails, dlq=dlq)
    assert [e.run_id for e in dlq.list(limit=None)] == ["run-old", report.run_id, report.run_id]
    assert dlq.get(old.id) == old and dlq.count(run_id=report.run_id) == 2
    new = dlq.list(run_id=report.run_id)
    assert all(e.traceback and e.traceback.endswith(f"record {e.record_id}\n") for e in new)
    assert dlq.resolve([old.id], "fixed upstream") == 1
    assert dlq.list(status="resolved")[0].traceback == old.traceback
    dlq.close()


# -- any entry ------------------------------------------------------------------------------------

_texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\ud800\n"), max_size=12)
_stacks = st.sampled_from(["Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nValueError: ",
                           "Traceback (most recent call last):\n  File \"b.py\", line 2, in g\nKeyError: ",
                           "bad\x00stack: "])


@st.composite
def _entries(draw: st.DrawFn, index: int) -> DeadLetter:
    message = draw(_texts)
    attempts = tuple(Attempt(n + 1, draw(st.sampled_from(["t0", "t1"])), draw(st.sampled_from(["ValueError", "E"])),
                             draw(st.sampled_from([message, "other"])), draw(st.sampled_from([None, 0.5])))
                     for n in range(draw(st.integers(0, 2))))
    traceback = draw(st.one_of(st.none(), _texts, _stacks.map(lambda stack: f"{stack}{message}\n")))
    return DeadLetter(
        id=f"e{index}", run_id=draw(st.sampled_from(["r1", "r2"])), job_id=draw(st.sampled_from([None, "job"])),
        record_id=draw(st.one_of(st.integers(-5, 5), _texts, st.just(2**70))), record_index=index, batch_index=0,
        stage=draw(st.sampled_from(["process", "validate"])),
        payload=draw(st.one_of(st.integers(), _texts, st.lists(st.integers(), max_size=2))),
        payload_encoding=draw(st.sampled_from(["json", "repr"])),
        error_class=draw(st.sampled_from(["permanent", "fatal"])),
        error_type=draw(st.sampled_from(["ValueError", "E"])), error_message=message, traceback=traceback,
        attempts=attempts, first_failed_at=attempts[0].at if attempts and draw(st.booleans()) else "t9",
        last_failed_at=attempts[-1].at if attempts else "", http_status=draw(st.sampled_from([None, 503])),
        status=draw(st.sampled_from(["open", "open", "resolved"])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_entries_read_back_as_memory_dlq_keeps_them(tmp_path_factory: pytest.TempPathFactory,
                                                         data: st.DataObject) -> None:
    writes = data.draw(st.lists(st.lists(st.integers(0, 7), max_size=6), min_size=1, max_size=3))
    dlq = SqliteDLQ(tmp_path_factory.mktemp("rows") / "dlq.db")
    model = MemoryDLQ()
    for indexes in writes:
        batch = [data.draw(_entries(i)) for i in indexes]
        dlq.send(batch)
        model.send(batch)
    assert dlq.list(limit=None, status="all") == model.list(limit=None, status="all")
    # A caller's transaction on another connection (a job's checkpoint) writes the same rows.
    other = sqlite3.connect(dlq.path)
    other.execute("BEGIN IMMEDIATE")
    again = [data.draw(_entries(i + 100)) for i in range(3)]
    SqliteDLQ.write_entries(other.cursor(), again)
    other.execute("COMMIT")
    other.close()
    model.send(again)
    assert dlq.list(limit=None, status="all") == model.list(limit=None, status="all")
    dlq.close()


def test_rows_bind_no_none(tmp_path: Path) -> None:
    # None is bound after an adapter look-up that raises and formats an AttributeError: the
    # rows carry NO_VALUE instead, turned back into NULL by the upsert.
    entries = [DeadLetter(id=f"e{i}", run_id="r", job_id=None, record_id=None, record_index=i, batch_index=0,
                          stage="process", payload=None, payload_encoding="json", error_class="permanent",
                          error_type="ValueError", error_message="bad", traceback=None) for i in range(3)]
    rows = rows_of(entries)
    assert rows.common == ("r", 0, "process")
    assert all(value is not None for row in rows.rows for value in row)
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    dlq.send(entries)
    assert dlq.list() == entries
    assert _rows(tmp_path / "dlq.db", "SELECT job_id, traceback_digest FROM dead_letters") == [(None, None)] * 3
    dlq.close()


def _fails_until(stop: int | None) -> Any:
    def fn(record: int) -> None:
        if record == stop:
            raise KeyboardInterrupt
        raise ValueError(f"bad record {record}")
    return fn


def test_a_jobs_checkpointed_batches_have_their_entries_whole_in_the_same_transaction(tmp_path: Path) -> None:
    # The job's DLQ shares the job store's file: a batch's entries, with the traceback they
    # share, commit in its checkpoint's transaction (write_entries), never after it.
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    with pytest.raises(KeyboardInterrupt):
        run_batches(range(50), _fails_until(35), batch_size=10, job="nightly", store=store)
    other = SqliteDLQ(tmp_path / "jobs.db")  # another connection, as after a crash
    stored = other.list(limit=None, job_id="nightly")
    assert [e.record_index for e in stored][:30] == list(range(30))
    assert all(e.traceback and e.traceback.endswith(f"ValueError: bad record {e.record_index}\n") for e in stored)
    assert _rows(tmp_path / "jobs.db", f"SELECT count(*) FROM {TRACEBACKS}") == [(1,)]
    run_batches(range(50), _fails_until(None), batch_size=10, job="nightly", store=store)  # resumed
    assert [e.record_index for e in other.list(limit=None, job_id="nightly")] == list(range(50))
    assert all(e.traceback and e.traceback.endswith(f"bad record {e.record_index}\n")
               for e in other.list(limit=None, job_id="nightly"))
    other.close()


@pytest.mark.parametrize(("where", "index"), [
    ("run_id = ?", "dead_letters_run_id"), ("job_id = ?", "dead_letters_job_id"),
    ("error_type = ?", "dead_letters_error_type"), ("status = ? AND status <> 'open'", "dead_letters_closed"),
    ("d.id = ?", "sqlite_autoindex_dead_letters_1"),
])
def test_reads_find_rows_by_their_index_and_shared_texts_by_their_key(tmp_path: Path, where: str,
                                                                       index: str) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    plan = [row[-1] for row in dlq.connection.execute(
        f"EXPLAIN QUERY PLAN {sqlite_rows.SELECT_ROWS} WHERE {where} AND seq > ? ORDER BY seq", ("x", 0))]
    assert f"USING INDEX {index} " in plan[0]
    assert plan[1] == "SEARCH t USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN"
    dlq.close()


def test_texts_of_one_length_are_kept_bounded_and_still_shared_when_a_write_repeats_them(tmp_path: Path) -> None:
    # Each record's cause quotes a fixed-width id: a new text of the same length every time.
    def fn(record: int) -> None:
        try:
            raise KeyError(f"user-{record // 2:06d}")  # two records each
        except KeyError as exc:
            raise ValueError("lookup failed") from exc

    dlq = Recorded(tmp_path / "dlq.db")
    run_batches(range(40), fn, dlq=dlq, batch_size=40)
    assert dlq.list(limit=None) == dlq.model.list(limit=None)
    assert max(len(same) for same in dlq._shared._by_length.values()) == sqlite_rows.MAX_SAME_LENGTH
    assert _rows(tmp_path / "dlq.db", f"SELECT count(*) FROM {TRACEBACKS}") == [(20,)]
    dlq.close()
