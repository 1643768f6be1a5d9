"""Hostile tests of SqliteDLQ's row format (issue 11 item 5, H3): every DESIGN section 7 field of
odd entries reads back as MemoryDLQ keeps it through every reading path (get, list, iter,
export, the CLI, a replay's swap, an export imported again), from real SQLite files, including
a file the previous release made and files whose shared-traceback table was damaged."""

from __future__ import annotations

import base64
import json
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchguard import replay, run_batches
from batchguard.cli import main
from batchguard.dlq import Attempt, DeadLetter, JsonlDLQ, MemoryDLQ, SqliteDLQ, StatusChange
from batchguard.dlq.sqlite_rows import TRACEBACKS, digest_of
from dlq_previous_schema import PREVIOUS_SCHEMA

STACK = 'Traceback (most recent call last):\n  File "job.py", line 3, in load\n    raise ValueError(msg)\nValueError: '
OTHER = 'Traceback (most recent call last):\n  File "job.py", line 9, in save\n    raise KeyError(k)\nKeyError: '
BARE = 'Traceback (most recent call last):\n  File "job.py", line 12, in f\n    raise KeyError\nKeyError'
HUGE = ("Traceback (most recent call last):\n" + '  File "deep.py", line 1, in f\n    f()\n' * 60_000
        + "RecursionError: ")
T0, T1, T2 = "2026-12-07T10:00:00.000+00:00", "2026-12-07T10:00:01.000+00:00", "2026-12-07T10:00:02.000+00:00"


def _attempts(message: str, *others: str, error_type: str = "ValueError") -> tuple[Attempt, ...]:
    texts = (*others, message)
    return tuple(Attempt(n + 1, (T0, T1, T2)[n % 3], error_type, text, None if n == len(texts) - 1 else 0.25)
                 for n, text in enumerate(texts))


def _entry(index: int, message: str, traceback: str | None, **fields: Any) -> DeadLetter:
    attempts = fields.pop("attempts", _attempts(message))
    values: dict[str, Any] = dict(
        id=f"e{index:04d}", run_id="run-h3", job_id=None, record_id=index, record_index=index, batch_index=0,
        stage="process", payload={"n": index}, payload_encoding="json", error_class="permanent",
        error_type="ValueError", error_message=message, traceback=traceback, attempts=attempts,
        first_failed_at=attempts[0].at if attempts else "", last_failed_at=attempts[-1].at if attempts else "")
    values.update(fields)
    return DeadLetter(**values)


def _odd_entries() -> list[DeadLetter]:
    """Entries that hit every branch of the row format: each shares or keeps its traceback, and
    leaves out or keeps each field the JSON may leave out."""
    pickled = base64.b64encode(pickle.dumps({"when": (1, 2)})).decode("ascii")
    change = StatusChange("resolved", T2, "ops", "fixed upstream")
    return [
        # Tracebacks that differ only in their message: one stack, shared.
        _entry(0, "bad amount 1", f"{STACK}bad amount 1\n"),
        _entry(1, "bad amount 2", f"{STACK}bad amount 2\n"),
        _entry(2, "", f"{BARE}\n"),  # an empty message: the last line is the type alone
        _entry(3, "", f"{BARE}\n"),
        # The message is not the traceback's last line (a note after it, another text).
        _entry(4, "bad amount 1", f"{STACK}bad amount 1\nnote: retried\n"),
        _entry(5, "nothing like it", f"{STACK}bad amount 1\n"),
        # A message that ends in a newline, and a multi-line one.
        _entry(6, "two\nlines\n", f"{STACK}two\nlines\n\n"),
        _entry(7, "two\nlines\n", f"{STACK}two\nlines\n\n"),
        # Attempts whose messages and types differ from the entry's; first/last failed-at
        # that are not the attempts'.
        _entry(8, "final", f"{STACK}final\n", attempts=_attempts("earlier", "first")),
        _entry(9, "final", f"{STACK}final\n", attempts=_attempts("final", "first", error_type="KeyError")),
        _entry(10, "final", f"{STACK}final\n", first_failed_at=T2, last_failed_at=T0),
        _entry(11, "final", f"{STACK}final\n", first_failed_at="", last_failed_at=""),
        # No attempts at all, and a traceback that is the message alone.
        _entry(12, "bare", f"{STACK}bare\n", attempts=()),
        _entry(13, "bare", "bare\n"),
        # Huge: a stack shared by three entries, and one of its own.
        _entry(14, "deep 1", f"{HUGE}deep 1\n", error_type="RecursionError"),
        _entry(15, "deep 2", f"{HUGE}deep 2\n", error_type="RecursionError"),
        _entry(16, "deep 3", f"{HUGE}deep 3\n", error_type="RecursionError"),
        _entry(17, "own", HUGE * 2 + "own\n"),
        # Text no backend stores (lone surrogates, NUL), in the stack and in the message.
        _entry(18, "sur\ud800rogate", f"{STACK}sur\ud800rogate\n"),
        _entry(19, "nul\x00byte", f"{STACK}nul\x00byte\n"),
        _entry(20, "fine", f"{STACK[:-2]}\udcff: fine\n"),
        _entry(21, "fine", f"{STACK[:-2]}\x00: fine\n"),
        _entry(22, "x", f"{STACK}x\n", payload="nul\x00in payload", record_id="id\ud800"),
        _entry(23, "x", f"{STACK}x\n", payload={"text": "a literal \\u0000, no NUL"}),
        # Payloads: pickled, repr, None; None wherever an entry allows it.
        _entry(24, "p", f"{STACK}p\n", payload=pickled, payload_encoding="pickle"),
        _entry(25, "p", f"{STACK}p\n", payload="<object at 0x1>", payload_encoding="repr"),
        _entry(26, "none", None, payload=None, record_id=None, job_id=None, http_status=None),
        _entry(27, "none", f"{STACK}none\n", payload=None, record_id=None, job_id="nightly", http_status=0),
        # A triaged entry, with its history; an open one that has a history (reopened).
        _entry(28, "s", f"{STACK}s\n", status="resolved", status_reason="fixed upstream", status_by="ops",
               status_at=T2, history=(change,)),
        _entry(29, "s", f"{STACK}s\n", history=(change, StatusChange("open", T2, None, None))),
        # Unicode the JSON writes raw, and ids that are no ASCII.
        _entry(30, "caf\u00e9 \u2028 \U0001f600", f"{STACK}caf\u00e9 \u2028 \U0001f600\n", id="\u00e9\u00e9-30"),
        _entry(31, "\ufffd", f"{STACK}\ufffd\n", stage="st\u00e4ge", error_class="transient", http_status=503),
    ]


def _model(entries: list[DeadLetter]) -> MemoryDLQ:
    model = MemoryDLQ()
    model.send(entries)
    return model


def _dangling(path: Path) -> int:
    """Rows naming a shared traceback that is not there."""
    conn = sqlite3.connect(path)
    try:
        ((n,),) = conn.execute(
            f"SELECT count(*) FROM dead_letters AS d WHERE traceback_digest IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {TRACEBACKS} AS t WHERE t.digest = d.traceback_digest)").fetchall()
    finally:
        conn.close()
    return int(n)


def _sql(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_odd_entries_read_back_whole_through_every_reading_path(tmp_path: Path) -> None:
    entries = _odd_entries()
    model = _model(entries)
    expected = model.list(limit=None, status="all")
    path = tmp_path / "dlq.db"
    dlq = SqliteDLQ(path)
    dlq.send(entries[:17])  # two writes: the second names texts the first stored
    dlq.send(entries[17:])
    assert dlq.list(limit=None, status="all") == expected
    assert [dlq.get(e.id) for e in expected] == expected
    assert list(dlq.iter(status="all")) == expected
    assert dlq.list(limit=None, status="resolved") == model.list(limit=None, status="resolved")
    exported = tmp_path / "out.jsonl"
    assert dlq.export(exported, status="all") == len(expected)
    assert [DeadLetter.from_json(line) for line in exported.read_text().split("\n") if line] == expected
    assert _dangling(path) == 0
    # The huge stack is stored once, not in each of its three rows.
    assert _sql(path, f"SELECT count(*) FROM {TRACEBACKS} WHERE length(text) > 1000000") == [(1,)]
    assert max(n for (n,) in _sql(path, "SELECT length(entry) FROM dead_letters WHERE id "
                                        "IN ('e0014', 'e0015', 'e0016')")) < 1000
    dlq.close()
    reopened = SqliteDLQ(path)  # a new connection (another process) reads the same
    assert reopened.list(limit=None, status="all") == expected
    reopened.close()


def test_the_cli_shows_and_lists_odd_entries_as_a_jsonl_queue_holding_them_does(tmp_path: Path) -> None:
    entries = _odd_entries()
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    dlq.send(entries)
    dlq.close()
    twin = JsonlDLQ(tmp_path / "twin.jsonl")
    twin.send(entries)
    twin.close()
    runner = CliRunner()
    queues = (f"sqlite:///{tmp_path / 'dlq.db'}", f"jsonl:///{tmp_path / 'twin.jsonl'}")

    def shown(url: str, *args: str) -> str:
        result = runner.invoke(main, [*args, "--dlq", url])
        assert result.exit_code == 0, result.output
        return result.output.replace(url, "<queue>")

    listed = [json.loads(shown(url, "dlq", "list", "--json", "--status", "all", "--limit", "100")) for url in queues]
    assert listed[0] == listed[1] and len(listed[0]) == len(entries)
    for entry in MemoryDLQ.list(_model(entries), limit=None, status="all"):
        sqlite_text, jsonl_text = (shown(url, "dlq", "show", entry.id) for url in queues)
        assert sqlite_text == jsonl_text
        if entry.traceback:
            assert entry.traceback.rstrip().splitlines()[-1] in sqlite_text


def test_entries_copied_from_a_memory_queue_and_an_import_of_an_export_read_back_equal(tmp_path: Path) -> None:
    def fails(record: dict[str, Any]) -> None:
        if record["n"] % 4 == 0:
            raise ValueError(f"bad amount {record['n']}\x00 in \ud800 row")
        if record["n"] % 4 == 1:
            raise KeyError(record["n"])
        if record["n"] % 4 == 2:
            raise RuntimeError()
        try:
            raise OSError(f"disk said no to {record['n']}")
        except OSError as exc:
            raise ValueError("not saved") from exc

    memory = MemoryDLQ()
    run_batches([{"n": n, "blob": "x" * n} for n in range(60)], fails, dlq=memory, batch_size=7,
                pickle_payloads=True)
    copied = SqliteDLQ(tmp_path / "copy.db")
    copied.send(memory.list(limit=None, status="all"))
    assert copied.list(limit=None, status="all") == memory.list(limit=None, status="all")
    copied.export(tmp_path / "out.jsonl", status="all")
    imported = SqliteDLQ(tmp_path / "imported.db")
    source = JsonlDLQ(tmp_path / "out.jsonl")
    for start in range(0, 60, 9):  # in writes of another size: other texts are new to each write
        imported.send(source.list(limit=9, offset=start, status="all"))
    assert imported.list(limit=None, status="all") == memory.list(limit=None, status="all")
    assert _dangling(tmp_path / "imported.db") == 0
    for queue in (copied, imported, source):
        queue.close()


def test_a_replay_keeps_every_field_and_appends_its_tries(tmp_path: Path) -> None:
    entries = [_entry(i, f"bad amount {i}", f"{STACK}bad amount {i}\n", payload=i) for i in range(40)]
    path = tmp_path / "dlq.db"
    dlq = SqliteDLQ(path)
    dlq.send(entries)
    before = {e.id: e for e in dlq.list(limit=None)}

    def again(record: int) -> None:
        if record % 2:
            raise ValueError(f"still bad {record}")

    report = replay(dlq, again, batch_size=16)
    assert report.total == 40
    after = {e.id: e for e in dlq.list(limit=None, status="all")}
    for entry_id, old in before.items():
        new = after[entry_id]
        assert (new.record_id, new.payload, new.record_index, new.stage, new.first_failed_at) == (
            old.record_id, old.payload, old.record_index, old.stage, old.first_failed_at)
        if old.payload % 2:
            assert new.status == "open" and new.error_message == f"still bad {old.payload}"
            assert new.attempts[:1] == old.attempts and len(new.attempts) == 2
            assert new.traceback is not None and new.traceback.startswith("Traceback (most recent call last):")
            assert new.traceback.endswith(f"ValueError: still bad {old.payload}\n")
        else:
            assert new.status == "replayed"
            # Settled as it was: its traceback and attempts are the ones it failed with.
            assert (new.traceback, new.attempts, new.error_message) == (old.traceback, old.attempts,
                                                                        old.error_message)
    assert _dangling(path) == 0
    dlq.close()


# -- files made elsewhere: the previous release, and damaged shared texts ---------------------------

def _previous_release_file(path: Path, entries: list[DeadLetter]) -> None:
    """A queue as the previous release wrote it: the whole entry in the JSON (codec.dumps)."""
    conn = sqlite3.connect(path)
    with conn:
        for statement in PREVIOUS_SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO dead_letters (id, run_id, job_id, stage, error_class, error_type, entry, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.id, e.run_id, e.job_id, e.stage, e.error_class, e.error_type, e.to_json(), e.status)
             for e in (MemoryDLQ.list(_model(entries), limit=None, status="all"))])
    conn.close()


def test_a_previous_release_file_written_to_by_this_release_reads_back_whole(tmp_path: Path) -> None:
    entries = _odd_entries()
    path = tmp_path / "old.db"
    _previous_release_file(path, entries[:16])
    dlq = SqliteDLQ(path)
    model = _model(entries[:16])
    assert dlq.list(limit=None, status="all") == model.list(limit=None, status="all")
    # New entries share the stacks the old rows hold whole; some old entries are sent again.
    fresh = [_entry(100 + i, f"bad amount {i}", f"{STACK}bad amount {i}\n") for i in range(5)]
    again = [_entry(i, f"again {i}", f"{OTHER}again {i}\n") for i in (0, 1, 4)]
    dlq.send(fresh + entries[16:] + again)
    model.send(fresh + entries[16:] + again)
    dlq.resolve([entries[2].id, fresh[0].id], "fixed upstream", by="ops")
    model.resolve([entries[2].id, fresh[0].id], "fixed upstream", by="ops")

    def comparable(queue: Any) -> list[DeadLetter]:  # the resolve's time is each queue's own
        import dataclasses
        return [dataclasses.replace(e, status_at=None, history=tuple(
            dataclasses.replace(c, at="") for c in e.history)) for e in queue.list(limit=None, status="all")]

    assert comparable(dlq) == comparable(model)
    assert _dangling(path) == 0
    dlq.close()
    assert comparable(SqliteDLQ(path)) == comparable(model)


def test_a_corrupt_shared_traceback_row_is_not_trusted_by_a_new_write(tmp_path: Path) -> None:
    # A row of dead_letter_tracebacks whose text is not the one its digest names (an edit by
    # hand, a restore gone wrong): a write of that text must not name it.
    path = tmp_path / "dlq.db"
    SqliteDLQ(path).close()
    text = STACK
    _sql(path, f"INSERT INTO {TRACEBACKS} (digest, text) VALUES (?, ?)", (digest_of(text), "garbage\n"))
    entries = [_entry(i, f"m{i}", f"{STACK}m{i}\n") for i in range(3)]
    dlq = SqliteDLQ(path)
    dlq.send(entries)
    dlq.send([_entry(9, "m9", f"{STACK}m9\n")])
    assert dlq.list(limit=None) == _model([*entries, _entry(9, "m9", f"{STACK}m9\n")]).list(limit=None)
    dlq.close()


@pytest.mark.parametrize("damage", ["DELETE FROM {t}", "UPDATE {t} SET text = X'00ff'", "UPDATE {t} SET text = 7"])
def test_entries_whose_shared_traceback_row_is_damaged_still_read(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "dlq.db"
    dlq = SqliteDLQ(path)
    entries = [_entry(i, f"m{i}", f"{STACK}m{i}\n") for i in range(3)]
    dlq.send(entries)
    dlq.close()
    _sql(path, damage.format(t=TRACEBACKS))
    dlq = SqliteDLQ(path)
    read = dlq.list(limit=None)
    # Every field but the traceback reads as stored; the traceback still ends with the message
    # and never reads as another entry's.
    assert [e.__class__(**{**_fields(e), "traceback": None}) for e in read] == [
        e.__class__(**{**_fields(e), "traceback": None}) for e in entries]
    assert all(isinstance(e.traceback, str) and e.traceback.endswith(f"{e.error_message}\n") for e in read)
    runner = CliRunner()
    result = runner.invoke(main, ["dlq", "show", entries[0].id, "--dlq", f"sqlite:///{path}"])
    assert result.exit_code == 0, result.output
    # Sent again, they are whole again.
    dlq.send(entries)
    assert dlq.list(limit=None) == entries
    dlq.close()


def _fields(entry: DeadLetter) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in DeadLetter.__dataclass_fields__}


def test_a_corrupt_shared_row_is_not_trusted_by_writes_of_every_row_layout(tmp_path: Path) -> None:
    # The rows naming a text whose digest is taken are rewritten with the text in their JSON:
    # rows of one run (the common layout), of several runs (their own columns), with statuses.
    path = tmp_path / "dlq.db"
    SqliteDLQ(path).close()
    _sql(path, f"INSERT INTO {TRACEBACKS} (digest, text) VALUES (?, ?)", (digest_of(OTHER), "garbage\n"))
    change = StatusChange("resolved", T2, "ops", "known")
    writes = [
        [_entry(i, f"k{i}", f"{OTHER}k{i}\n", error_type="KeyError") for i in range(3)],
        [_entry(10 + i, f"k{i}", f"{OTHER}k{i}\n", run_id=f"run-{i % 2}", job_id=(None, "job")[i % 2])
         for i in range(4)],
        [_entry(20 + i, f"k{i}", f"{OTHER}k{i}\n", status=("open", "resolved")[i % 2], status_at=T2,
                status_reason="known", status_by="ops", history=(change,)) for i in range(4)],
        [_entry(30 + i, f"k{i}", f"{OTHER}k{i}\n", run_id=f"run-{i % 2}", status=("open", "resolved")[i % 2],
                history=(change,)) for i in range(4)],
    ]
    dlq = SqliteDLQ(path)
    for batch in writes:
        dlq.send(batch)
    everything = [e for batch in writes for e in batch]
    assert dlq.list(limit=None, status="all") == _model(everything).list(limit=None, status="all")
    assert _sql(path, "SELECT count(*) FROM dead_letters WHERE traceback_digest IS NOT NULL") == [(0,)]
    dlq.close()


def test_one_send_of_more_new_shared_texts_than_sqlite_binds_at_once(tmp_path: Path) -> None:
    # SQLite binds at most 999 values a statement before 3.32 (32766 since): a send of more
    # distinct shared texts than that (a MemoryDLQ's entries copied in one send, each stack a
    # cause quoting an id that two records share) must still write them.
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    dlq.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    entries = [_entry(i, f"m{i}", f"{STACK[:-12]}KeyError: 'user-{i // 2:06d}'\n\nThe above exception was the "
                                  f"direct cause of the following exception:\n\nValueError: m{i}\n")
               for i in range(2400)]
    dlq.send(entries)
    assert dlq.list(limit=None) == entries
    assert _sql(tmp_path / "dlq.db", f"SELECT count(*) FROM {TRACEBACKS}") == [(1200,)]
    dlq.close()


def test_texts_left_by_removed_entries_survive_a_vacuum_and_serve_later_writes(tmp_path: Path) -> None:
    # Removing entries leaves their shared text (never deleted: a writer that stored one names
    # it without looking); a VACUUM keeps it; the same queue object, and a new one, write
    # entries naming it that read back whole.
    path = tmp_path / "dlq.db"
    dlq = SqliteDLQ(path)
    first = [_entry(i, f"m{i}", f"{STACK}m{i}\n") for i in range(3)]
    dlq.send(first)
    assert dlq.remove([e.id for e in first]) == 3
    _sql(path, "VACUUM")
    assert _sql(path, f"SELECT count(*) FROM {TRACEBACKS}") == [(1,)]
    dlq.send([_entry(10, "m10", f"{STACK}m10\n")])  # one entry: names the stored text
    other = SqliteDLQ(path)
    other.send([_entry(11, "m11", f"{STACK}m11\n"), _entry(12, "m12", f"{STACK}m12\n")])
    expected = [_entry(i, f"m{i}", f"{STACK}m{i}\n") for i in (10, 11, 12)]
    assert dlq.list(limit=None) == other.list(limit=None) == expected
    assert _sql(path, "SELECT count(DISTINCT traceback_digest) FROM dead_letters") == [(1,)]
    assert _sql(path, f"SELECT count(*) FROM {TRACEBACKS}") == [(1,)] and _dangling(path) == 0
    dlq.close()
    other.close()
