"""Hostile differential test of SqliteDLQ's write paths (issue 11 item 5, H3): any sequence of
sends (one statement, several, background writes, sends inside a caller's transaction that
commits or rolls back, write_entries on another connection), status changes, swaps and
removals leaves the queue holding what a MemoryDLQ given the same operations holds, with
SQLite's caps and the queue's text caches made tiny so every turnover path runs."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard.dlq import Attempt, DeadLetter, MemoryDLQ, SqliteDLQ, sqlite_rows

STACKS = [f'Traceback (most recent call last):\n  File "s.py", line {n}, in f\nValueError: ' for n in (1, 2, 3, 40)]
AT = "2026-12-07T10:00:00.000+00:00"


@st.composite
def _entry(draw: st.DrawFn) -> DeadLetter:
    index = draw(st.integers(0, 12))
    message = draw(st.sampled_from(["a", "b", "", "m\n"]))
    traceback = draw(st.sampled_from([*(f"{s}{message}\n" for s in STACKS), None, f"own {index}\n"]))
    return DeadLetter(
        id=f"e{index}", run_id=draw(st.sampled_from(["r1", "r2"])), job_id=draw(st.sampled_from([None, "j"])),
        record_id=index, record_index=index, batch_index=0, stage="process", payload=index,
        payload_encoding="json", error_class="permanent", error_type="ValueError", error_message=message,
        traceback=traceback, attempts=(Attempt(1, AT, "ValueError", message, None),), first_failed_at=AT,
        last_failed_at=AT, status=draw(st.sampled_from(["open", "open", "resolved"])))


_batch = st.lists(_entry(), min_size=1, max_size=9)
_ops = st.lists(st.one_of(
    st.tuples(st.sampled_from(["send", "background", "nested-commit", "nested-rollback", "other-connection"]),
              st.lists(_batch, min_size=1, max_size=3)),
    st.tuples(st.sampled_from(["resolve", "reopen", "remove", "swap"]),
              st.lists(st.integers(0, 12).map(lambda n: f"e{n}"), min_size=1, max_size=5, unique=True)),
), min_size=1, max_size=8)


class _Rollback(Exception):
    pass


def _comparable(entries: list[DeadLetter]) -> list[DeadLetter]:
    # A status change is stamped with each queue's own clock.
    return [dataclasses.replace(e, status_at=None, history=tuple(dataclasses.replace(c, at="") for c in e.history))
            for e in entries]


def _apply(queue: Any, op: str, arg: Any, path: Path | None) -> None:
    if op == "send" or (op == "background" and path is None):
        for batch in arg:
            queue.send(batch)
    elif op == "background":
        writes = queue.background_writes()
        for batch in arg:
            writes.send(batch)
        writes.finish()
    elif op in ("nested-commit", "nested-rollback"):
        if path is None:
            if op == "nested-commit":
                for batch in arg:
                    queue.send(batch)
            return
        try:
            with queue.transaction():
                for batch in arg:
                    queue.send(batch)
                if op == "nested-rollback":
                    raise _Rollback
        except _Rollback:
            pass
    elif op == "other-connection":
        if path is None:
            for batch in arg:
                queue.send(batch)
            return
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        for batch in arg:
            SqliteDLQ.write_entries(other.cursor(), batch)
        other.execute("COMMIT")
        other.close()
    else:
        present = [i for i in arg if queue.get(i) is not None]
        if not present:
            return
        if op == "remove":
            queue.remove(present)
        elif op == "swap":
            queue.swap(present, lambda found: dict(found))
        else:
            queue.set_status(present, "resolved" if op == "resolve" else "open", reason="h3", by="h3")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_any_sequence_of_writes_leaves_what_a_memory_queue_holds(tmp_path_factory: pytest.TempPathFactory,
                                                                  ops: list[tuple[str, Any]]) -> None:
    path = tmp_path_factory.mktemp("paths") / "dlq.db"
    dlq = SqliteDLQ(path)
    model = MemoryDLQ()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_rows, "MAX_ROWS_PER_STATEMENT", 4)  # writes of several statements
        patch.setattr(sqlite_rows, "MAX_SHARED", 2)  # the text caches start again often
        patch.setattr(sqlite_rows, "MAX_SAME_LENGTH", 1)
        for op, arg in ops:
            _apply(dlq, op, arg, path)
            _apply(model, op, arg, None)
            assert _comparable(dlq.list(limit=None, status="all")) == _comparable(model.list(limit=None, status="all"))
    reopened = SqliteDLQ(path)
    assert _comparable(reopened.list(limit=None, status="all")) == _comparable(model.list(limit=None, status="all"))
    reopened.close()
    dlq.close()


def test_threads_sharing_one_queue_object_and_its_text_caches_leave_every_entry_whole(tmp_path: Path) -> None:
    # The queue's text caches are shared by its threads (each step one dict or list operation):
    # four threads send, background-write and swap at once while the caches turn over.
    path = tmp_path / "dlq.db"
    dlq = SqliteDLQ(path)
    errors: list[BaseException] = []

    def entries(who: int, k: int) -> list[DeadLetter]:
        return [DeadLetter(
            id=f"t{who}-{k}-{i}", run_id=f"r{who}", job_id=None, record_id=i, record_index=i, batch_index=k,
            stage="process", payload=i, payload_encoding="json", error_class="permanent", error_type="ValueError",
            error_message=f"m{i}", traceback=f"{STACKS[(i + k) % 4]}m{i}\n",
            attempts=(Attempt(1, AT, "ValueError", f"m{i}", None),), first_failed_at=AT, last_failed_at=AT)
            for i in range((k % 5) * 7 + 1)]

    def work(who: int) -> None:
        try:
            writes = dlq.background_writes() if who % 2 else None
            for k in range(60):
                batch = entries(who, k)
                if writes is not None:
                    writes.send(batch)
                else:
                    dlq.send(batch)
                if who == 2 and k % 10 == 0:
                    dlq.swap([e.id for e in dlq.list(limit=20, status="all")], lambda found: dict(found))
            if writes is not None:
                writes.finish()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_rows, "MAX_SHARED", 2)
        threads = [threading.Thread(target=work, args=(who,)) for who in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    expected = {e.id: e for who in range(4) for k in range(60) for e in entries(who, k)}
    stored = dlq.list(limit=None, status="all")
    assert len(stored) == len(expected) and all(expected[e.id] == e for e in stored)
    dlq.close()
