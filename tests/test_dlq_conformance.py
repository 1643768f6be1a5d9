"""One contract, every dead-letter queue: memory, SQLite, JSONL, Redis and PostgreSQL.

The shared tests run against each backend on a fresh location (file, key prefix or table);
the backend-specific ones after them cover what only one backend has (torn JSONL lines, SQLite
transactions, unreachable servers, URLs). Real servers only: see servers.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard._urls import redact, require_module
from batchguard.dlq import (
    FILTER_FIELDS,
    Attempt,
    DeadLetter,
    DeadLetterQueue,
    JsonlDLQ,
    MemoryDLQ,
    PostgresDLQ,
    RedisDLQ,
    SqliteDLQ,
    open_dlq,
)
from batchguard.errors import BatchguardWarning, ConfigError, DLQError, DLQUnavailableError

BACKENDS = [
    "memory",
    "sqlite",
    "jsonl",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]
DURABLE = BACKENDS[1:]


def entry(i: int, *, run_id: str = "run-1", **changes: Any) -> DeadLetter:
    """A plain dead letter for record ``i`` of ``run_id``; ``changes`` override any field."""
    base = DeadLetter(
        id=f"{run_id}:{i}", run_id=run_id, job_id=None, record_id=i, record_index=i,
        batch_index=i // 10, stage="process", payload={"id": i, "name": f"user {i}"},
        payload_encoding="json", error_class="permanent", error_type="ValueError",
        error_message=f"bad value {i}", traceback=None,
        attempts=(Attempt(1, "2024-06-01T12:00:00+00:00", "ValueError", f"bad value {i}", None),),
        first_failed_at="2024-06-01T12:00:00+00:00", last_failed_at="2024-06-01T12:00:00+00:00",
    )
    return dataclasses.replace(base, **changes)


def ids(entries: list[DeadLetter]) -> list[str]:
    return [e.id for e in entries]


class Opener:
    """Opens queues of one backend on fresh locations, reopens them, and cleans up afterwards."""

    def __init__(self, backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.backend = backend
        self._tmp = tmp_path
        self._opened: list[DeadLetterQueue] = []
        self._where: dict[int, Any] = {}
        self._cleanups: list[Callable[[], None]] = []
        self._counter = itertools.count()
        self._url = {"redis": "redis_url", "postgres": "postgres_url"}.get(backend)
        self.server_url: Any = request.getfixturevalue(self._url) if self._url else None

    def new(self) -> DeadLetterQueue:
        """A queue on a location no other test uses."""
        n = next(self._counter)
        tag = uuid.uuid4().hex[:12]
        location: Any = {
            "memory": None,
            "sqlite": self._tmp / f"dlq{n}.db",
            "jsonl": self._tmp / f"dlq{n}.jsonl",
            "redis": f"bgtest:{tag}",
            "postgres": f"bg_test_{tag}",
        }[self.backend]
        if self.backend == "redis":
            self._cleanups.append(lambda: self._drop_redis(location))
        if self.backend == "postgres":
            self._cleanups.append(lambda: self._drop_table(location))
        return self._open(location)

    def reopen(self, queue: DeadLetterQueue) -> DeadLetterQueue:
        """Another instance on the same location as ``queue``."""
        return self._open(self._where[id(queue)])

    def _open(self, location: Any) -> DeadLetterQueue:
        queue: DeadLetterQueue
        if self.backend == "memory":
            queue = MemoryDLQ()
        elif self.backend == "sqlite":
            queue = SqliteDLQ(location)
        elif self.backend == "jsonl":
            queue = JsonlDLQ(location)
        elif self.backend == "redis":
            queue = RedisDLQ(self.server_url, key_prefix=location)  # type: ignore[arg-type]
        else:
            queue = PostgresDLQ(self.server_url, table=location)  # type: ignore[arg-type]
        self._opened.append(queue)
        self._where[id(queue)] = location
        return queue

    def _drop_redis(self, prefix: str) -> None:
        import redis

        with redis.Redis.from_url(self.server_url) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)

    def _drop_table(self, table: str) -> None:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')

    def close(self) -> None:
        for queue in self._opened:
            queue.close()
        for cleanup in self._cleanups:
            cleanup()


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    made = Opener(request.param, request, tmp_path)
    yield made
    made.close()


@pytest.fixture
def dlq(opener: Opener) -> DeadLetterQueue:
    return opener.new()


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    made = Opener(request.param, request, tmp_path)
    yield made
    made.close()


RICH = DeadLetter(
    id="nächtlich-ü:7",
    run_id="nächtlich-ü",
    job_id=None,
    record_id="rec-✓-7",
    record_index=7,
    batch_index=3,
    stage="parse—stage",
    payload={
        "name": "Zoë 🚀 東京",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x", -0.125]}], "empty": {}, "none": []},
        "quote": 'a"b\\c\n\ttab',
        "big": 12345678901234567890,
    },
    payload_encoding="json",
    error_class="recoverable",
    error_type="TimeoutError",
    error_message="timed out after 30 s — réessayez",
    traceback='Traceback (most recent call last):\n  File "job.py", line 3, in <module>\nTimeoutError: timed out',
    attempts=(
        Attempt(1, "2024-06-01T12:00:00+00:00", "TimeoutError", "first try", 0.5),
        Attempt(2, "2024-06-01T12:00:01+00:00", "TimeoutError", "second try", 1.25),
        Attempt(3, "2024-06-01T12:00:03+00:00", "TimeoutError", "timed out after 30 s — réessayez", None),
    ),
    first_failed_at="2024-06-01T12:00:00+00:00",
    last_failed_at="2024-06-01T12:00:03+00:00",
)

MIXED = [
    entry(i, run_id=run_id, job_id=job_id, stage=stage, error_class=error_class, error_type=error_type)
    for i, (run_id, job_id, stage, error_class, error_type) in enumerate(itertools.product(
        ("run-a", "run-b"), (None, "job-x"), ("parse", "load"), ("permanent", "fatal"),
        ("ValueError", "KeyError"),
    ))
]


# -- the shared contract -----------------------------------------------------------------------

def test_every_backend_is_a_dead_letter_queue(dlq: DeadLetterQueue) -> None:
    assert isinstance(dlq, DeadLetterQueue)


def test_roundtrip_keeps_every_field(dlq: DeadLetterQueue) -> None:
    reprd = entry(1, payload="<object at 0x7f>", payload_encoding="repr", job_id="job-ä",
                  record_id=None, attempts=())
    dlq.send([RICH, reprd])
    assert dlq.get(RICH.id) == RICH
    assert dlq.get(reprd.id) == reprd
    assert dlq.list() == [RICH, reprd]


def test_send_of_nothing_stores_nothing(dlq: DeadLetterQueue) -> None:
    dlq.send([])
    assert dlq.count() == 0
    assert dlq.list() == []


def test_upsert_by_id_replaces_without_duplicate_and_keeps_first_place(dlq: DeadLetterQueue) -> None:
    dlq.send([entry(0), entry(1), entry(2)])
    newer = entry(1, stage="load", error_message="still bad", attempts=())
    dlq.send([newer, entry(3)])
    assert dlq.count() == 4
    assert ids(dlq.list()) == ["run-1:0", "run-1:1", "run-1:2", "run-1:3"]
    assert dlq.get("run-1:1") == newer
    assert dlq.count(stage="process") == 3
    assert ids(dlq.list(stage="load")) == ["run-1:1"]


def test_duplicate_ids_in_one_batch_keep_the_last(dlq: DeadLetterQueue) -> None:
    dlq.send([entry(0), entry(0, error_message="later"), entry(1)])
    assert dlq.count() == 2
    assert dlq.get("run-1:0") == entry(0, error_message="later")
    assert ids(dlq.list()) == ["run-1:0", "run-1:1"]


@pytest.mark.parametrize("field", FILTER_FIELDS)
def test_count_and_list_filter_on_each_field(dlq: DeadLetterQueue, field: str) -> None:
    dlq.send(MIXED)
    for value in {getattr(e, field) for e in MIXED} - {None}:
        expected = [e for e in MIXED if getattr(e, field) == value]
        only: dict[str, Any] = {field: value}
        assert dlq.count(**only) == len(expected)
        assert dlq.list(**only) == expected
    nothing: dict[str, Any] = {field: "no-such-value"}
    assert dlq.count(**nothing) == 0
    assert dlq.list(**nothing) == []


@pytest.mark.parametrize("filters", [
    {"run_id": "run-a", "stage": "load"},
    {"job_id": "job-x", "error_class": "fatal", "error_type": "KeyError"},
    {"run_id": "run-b", "job_id": "job-x", "stage": "parse", "error_class": "permanent",
     "error_type": "ValueError"},
    {"run_id": "run-a", "stage": "nowhere"},
])
def test_filters_combine_as_and(dlq: DeadLetterQueue, filters: dict[str, Any]) -> None:
    dlq.send(MIXED)
    expected = [e for e in MIXED if all(getattr(e, k) == v for k, v in filters.items())]
    assert dlq.count(**filters) == len(expected)
    assert dlq.list(**filters) == expected


def test_none_filters_are_ignored(dlq: DeadLetterQueue) -> None:
    dlq.send(MIXED)
    assert dlq.count(run_id=None, stage="load") == dlq.count(stage="load") == len(MIXED) // 2


def test_error_class_filter_accepts_the_enum(dlq: DeadLetterQueue) -> None:
    from batchguard.policies import ErrorClass

    dlq.send(MIXED)
    assert dlq.count(error_class=ErrorClass.FATAL) == len(MIXED) // 2


def test_list_pages_with_limit_and_offset(dlq: DeadLetterQueue) -> None:
    sent = [entry(i) for i in range(10)]
    dlq.send(sent)
    assert dlq.list(limit=3) == sent[:3]
    assert dlq.list(offset=8) == sent[8:]
    assert dlq.list(limit=3, offset=8) == sent[8:]
    assert dlq.list(limit=4, offset=2) == sent[2:6]
    assert dlq.list(limit=0) == []
    assert dlq.list(offset=10) == []
    assert dlq.list(offset=50, limit=5) == []
    dlq.send(MIXED)
    in_load = [e for e in MIXED if e.stage == "load"]
    assert dlq.list(stage="load", limit=5, offset=3) == in_load[3:8]


@pytest.mark.parametrize("page", [{"limit": -1}, {"offset": -1}, {"limit": 1.5}, {"offset": None}])
def test_invalid_page_raises_value_error(dlq: DeadLetterQueue, page: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(page))} must be a non-negative int"):
        dlq.list(**page)


def test_get_of_a_missing_id_returns_none(dlq: DeadLetterQueue) -> None:
    assert dlq.get("nope") is None
    dlq.send([entry(0)])
    assert dlq.get("nope") is None


def test_remove_returns_how_many_went_and_ignores_unknown_ids(dlq: DeadLetterQueue) -> None:
    dlq.send([entry(i) for i in range(5)])
    assert dlq.remove(["run-1:1", "run-1:3", "missing", "run-1:1"]) == 2
    assert dlq.count() == 3
    assert ids(dlq.list()) == ["run-1:0", "run-1:2", "run-1:4"]
    assert dlq.get("run-1:1") is None
    assert dlq.remove([]) == 0
    assert dlq.remove(["missing"]) == 0
    assert dlq.remove(e.id for e in dlq.list()) == 3
    assert dlq.count() == 0


def test_removed_entries_leave_the_filters(dlq: DeadLetterQueue) -> None:
    dlq.send(MIXED)
    gone = [e.id for e in MIXED if e.stage == "load"]
    assert dlq.remove(gone) == len(gone)
    assert dlq.count(stage="load") == 0
    assert dlq.list(stage="load") == []
    assert dlq.count(run_id="run-a") == len(MIXED) // 4


def test_an_entry_sent_again_after_removal_goes_last(dlq: DeadLetterQueue) -> None:
    dlq.send([entry(0), entry(1), entry(2)])
    dlq.remove(["run-1:0"])
    dlq.send([entry(0)])
    assert ids(dlq.list()) == ["run-1:1", "run-1:2", "run-1:0"]


def test_export_writes_jsonl_that_from_json_reads_back(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    dlq.send([RICH, *MIXED])
    out = tmp_path / "all.jsonl"
    assert dlq.export(out) == len(MIXED) + 1
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [DeadLetter.from_json(line) for line in lines] == [RICH, *MIXED]
    some = tmp_path / "some.jsonl"
    assert dlq.export(some, run_id="run-b", error_type="KeyError") == len(MIXED) // 4
    assert [DeadLetter.from_json(line) for line in some.read_text(encoding="utf-8").splitlines()] == \
        dlq.list(run_id="run-b", error_type="KeyError")


def test_export_of_an_empty_queue_writes_an_empty_file(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    out = tmp_path / "none.jsonl"
    assert dlq.export(out) == 0
    assert out.read_text() == ""


def test_unknown_filter_raises_type_error(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="record_index"):
        dlq.count(record_index=1)
    with pytest.raises(TypeError, match="colour"):
        dlq.list(colour="red")
    with pytest.raises(TypeError, match="colour"):
        dlq.export(tmp_path / "x.jsonl", colour="red")


def test_large_batches_keep_count_and_order(dlq: DeadLetterQueue) -> None:
    sent = [entry(i) for i in range(5000)]
    dlq.send(sent[:2500])
    dlq.send(sent[2500:])
    assert dlq.count() == 5000
    assert ids(dlq.list(offset=2495, limit=10)) == ids(sent[2495:2505])
    assert ids(dlq.list()) == ids(sent)


def test_concurrent_sends_from_four_threads_lose_nothing(dlq: DeadLetterQueue) -> None:
    threads, batches, size = 4, 20, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait()
            mine = [entry(i, run_id=f"thread-{t}") for i in range(batches * size)]
            for b in range(batches):
                dlq.send(mine[b * size:(b + 1) * size])
            dlq.send(mine[:size])  # an upsert racing the other threads' inserts
            dlq.remove([mine[-1].id])
        except BaseException as exc:  # noqa: BLE001 - surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    assert dlq.count() == threads * (batches * size - 1)
    for t in range(threads):
        got = dlq.list(run_id=f"thread-{t}")
        assert ids(got) == [f"thread-{t}:{i}" for i in range(batches * size - 1)]


def test_reopening_the_same_location_sees_every_entry(durable: Opener) -> None:
    first = durable.new()
    first.send([RICH, *MIXED])
    first.remove([MIXED[0].id])
    second = durable.reopen(first)
    assert second.list() == [RICH, *MIXED[1:]]
    first.close()
    third = durable.reopen(first)
    assert third.count() == len(MIXED)
    assert third.count(stage="load") == len(MIXED) // 2
    third.send([entry(99)])
    assert second.get("run-1:99") == entry(99)


def test_calls_after_close_raise_dlq_error(durable: Opener) -> None:
    queue = durable.new()
    queue.send([entry(0)])
    queue.close()
    queue.close()  # twice is fine
    with pytest.raises(DLQError, match="closed"):
        queue.send([entry(1)])
    with pytest.raises(DLQError, match="closed"):
        queue.count()
    with pytest.raises(DLQError, match="closed"):
        queue.get("run-1:0")


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.lists(
            st.tuples(st.integers(0, 7), st.sampled_from(["parse", "load"])), max_size=6)),
        st.tuples(st.just("remove"), st.lists(st.integers(0, 9), max_size=4)),
    ),
    max_size=8,
)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_any_sequence_of_sends_and_removes_matches_the_memory_model(
    opener: Opener, ops: list[tuple[str, list[Any]]]
) -> None:
    queue, model = opener.new(), MemoryDLQ()
    for op, args in ops:
        if op == "send":
            batch = [entry(i, stage=stage) for i, stage in args]
            queue.send(batch)
            model.send(batch)
        else:
            gone = [f"run-1:{i}" for i in args]
            assert queue.remove(gone) == model.remove(gone)
    assert queue.list() == model.list()
    for stage in ("parse", "load"):
        assert queue.count(stage=stage) == model.count(stage=stage)
        assert queue.list(stage=stage, offset=1, limit=2) == model.list(stage=stage, offset=1, limit=2)


# -- JSONL ---------------------------------------------------------------------------------------

def _jsonl_with(path: Path, entries: list[DeadLetter], tail: bytes = b"") -> None:
    with JsonlDLQ(path) as queue:
        queue.send(entries)
    with open(path, "ab") as out:
        out.write(tail)


def test_jsonl_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    torn = entry(3).to_json().encode()[:40]
    _jsonl_with(path, [entry(0), entry(1), entry(2)], torn)
    with pytest.warns(BatchguardWarning, match="line 4"):
        queue = JsonlDLQ(path)
    with queue:
        assert ids(queue.list()) == ["run-1:0", "run-1:1", "run-1:2"]
        queue.send([entry(3)])  # drops the torn fragment first
    with JsonlDLQ(path) as again:
        assert ids(again.list()) == ["run-1:0", "run-1:1", "run-1:2", "run-1:3"]
    assert len(path.read_text().splitlines()) == 4


def test_jsonl_corrupt_complete_last_line_is_skipped_too(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    _jsonl_with(path, [entry(0)], b"\x00\x00\x00\n")
    with pytest.warns(BatchguardWarning, match="line 2"):
        queue = JsonlDLQ(path)
    with queue:
        assert queue.count() == 1


def test_jsonl_unterminated_but_complete_last_line_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    _jsonl_with(path, [entry(0)], entry(1).to_json().encode())
    with JsonlDLQ(path) as queue:
        assert ids(queue.list()) == ["run-1:0", "run-1:1"]
        queue.send([entry(2)])
    with JsonlDLQ(path) as queue:
        assert ids(queue.list()) == ["run-1:0", "run-1:1", "run-1:2"]


def test_jsonl_corrupt_middle_line_raises_dlq_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    lines = [entry(0).to_json(), '{"id": "half', entry(1).to_json()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DLQError, match=r"line 2\b"):
        JsonlDLQ(path)


def test_jsonl_entry_missing_fields_in_the_middle_raises(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_text('{"id": "x"}\n' + entry(0).to_json() + "\n", encoding="utf-8")
    with pytest.raises(DLQError, match="line 1"):
        JsonlDLQ(path)


def test_jsonl_remove_appends_a_tombstone(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    with JsonlDLQ(path) as queue:
        queue.send([entry(0), entry(1)])
        assert queue.remove(["run-1:0", "missing"]) == 1
        assert queue.remove(["missing"]) == 0  # nothing to record
    last = json.loads(path.read_text().splitlines()[-1])
    assert last == {"$remove": ["run-1:0"]}
    assert len(path.read_text().splitlines()) == 3


def test_jsonl_compact_drops_dead_lines_and_keeps_order(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    with JsonlDLQ(path) as queue:
        queue.send([entry(i) for i in range(6)])
        queue.send([entry(2, stage="load")])
        queue.remove(["run-1:4"])
        before = queue.list()
        assert queue.compact() == 5
        assert queue.list() == before
        assert len(path.read_text().splitlines()) == 5
        queue.send([entry(9)])
    with JsonlDLQ(path) as queue:
        assert queue.list() == [*before, entry(9)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_jsonl_instances_follow_each_other_and_a_compaction(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    with JsonlDLQ(path) as a, JsonlDLQ(path) as b:
        a.send([entry(0), entry(1)])
        assert b.count() == 2
        b.remove(["run-1:0"])
        assert ids(a.list()) == ["run-1:1"]
        a.compact()
        b.send([entry(2)])  # must land in the new file, not the replaced one
        assert ids(a.list()) == ["run-1:1", "run-1:2"]
    with JsonlDLQ(path) as c:
        assert ids(c.list()) == ["run-1:1", "run-1:2"]


def test_jsonl_send_fsyncs_once_per_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    queue = JsonlDLQ(tmp_path / "dlq.jsonl")
    monkeypatch.setattr(os, "fsync", counting_fsync)
    queue.send([entry(i) for i in range(100)])
    assert len(calls) == 1
    queue.close()


_WRITER = """
import dataclasses, sys
from batchguard.dlq import DeadLetter, JsonlDLQ, SqliteDLQ
kind, path, tag = sys.argv[1:]
queue = (JsonlDLQ if kind == "jsonl" else SqliteDLQ)(path)
template = DeadLetter.from_json(sys.stdin.read())
for b in range(20):
    queue.send([dataclasses.replace(template, id=f"{tag}:{b}:{i}", run_id=tag) for i in range(50)])
queue.close()
"""


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_two_processes_writing_one_file_lose_nothing(kind: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / f"shared.{kind}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, kind, str(path), f"proc-{n}"],
                              stdin=subprocess.PIPE, env=env, text=True) for n in range(2)]
    for proc in procs:
        proc.communicate(entry(0).to_json(), timeout=120)
        assert proc.returncode == 0
    with (JsonlDLQ(path) if kind == "jsonl" else SqliteDLQ(path)) as queue:
        assert queue.count() == 2000
        for n in range(2):
            assert ids(queue.list(run_id=f"proc-{n}")) == [
                f"proc-{n}:{b}:{i}" for b in range(20) for i in range(50)]


# -- SQLite --------------------------------------------------------------------------------------

def test_sqlite_uses_wal_and_full_synchronous(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as queue:
        conn = queue.connection
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_sqlite_schema_has_a_column_per_filter_and_indexes_the_selective_ones(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as queue:
        columns = {row[1] for row in queue.connection.execute("PRAGMA table_info(dead_letters)")}
        indexed = {row[2] for name, in queue.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'dead_letters'")
            for row in queue.connection.execute(f"PRAGMA index_info({name})")}
    assert set(FILTER_FIELDS) | {"seq", "id", "entry"} <= columns
    # stage and error_class are narrowed within a run or job; indexing them would cost every
    # insert two more B-tree updates.
    assert {"id", "run_id", "job_id", "error_type"} <= indexed
    assert not {"stage", "error_class"} & indexed
    SqliteDLQ(tmp_path / "dlq.db").close()  # creating the schema again is harmless


def test_sqlite_upsert_keeps_the_sequence_number(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as queue:
        queue.send([entry(0), entry(1)])
        seq = dict(queue.connection.execute("SELECT id, seq FROM dead_letters").fetchall())
        queue.send([entry(0, stage="load")])
        assert dict(queue.connection.execute("SELECT id, seq FROM dead_letters").fetchall()) == seq


def test_sqlite_write_entries_commits_or_rolls_back_with_the_callers_transaction(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as queue:
        queue.connection.execute("CREATE TABLE checkpoints (job TEXT PRIMARY KEY, next_batch INT)")
        with pytest.raises(RuntimeError), queue.transaction() as cur:  # noqa: PT012 - the raise in it is the case
            queue.write_entries(cur, [entry(0), entry(1)])
            cur.execute("INSERT INTO checkpoints VALUES ('nightly', 1)")
            raise RuntimeError("crash before commit")
        assert queue.count() == 0
        assert queue.connection.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 0
        with queue.transaction() as cur:
            SqliteDLQ.write_entries(cur, [entry(0), entry(1)])
            cur.execute("INSERT INTO checkpoints VALUES ('nightly', 1)")
    with SqliteDLQ(tmp_path / "dlq.db") as again:
        assert again.count() == 2
        assert again.connection.execute("SELECT next_batch FROM checkpoints").fetchone()[0] == 1


def test_sqlite_send_inside_a_transaction_joins_it(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as queue:
        with pytest.raises(RuntimeError), queue.transaction():  # noqa: PT012 - the raise in it is the case
            queue.send([entry(0)])
            raise RuntimeError("roll everything back")
        assert queue.count() == 0
        with queue.transaction():
            queue.send([entry(0)])
        assert queue.count() == 1


def test_sqlite_write_entries_works_on_another_connection(tmp_path: Path) -> None:
    import sqlite3

    SqliteDLQ(tmp_path / "dlq.db").close()
    conn = sqlite3.connect(tmp_path / "dlq.db")
    with conn:
        SqliteDLQ.write_entries(conn.cursor(), [entry(5)])
    conn.close()
    with SqliteDLQ(tmp_path / "dlq.db") as queue:
        assert queue.get("run-1:5") == entry(5)


def test_sqlite_unopenable_path_raises_dlq_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DLQUnavailableError, match="missing-dir"):
        SqliteDLQ(tmp_path / "missing-dir" / "dlq.db")


# -- Redis and PostgreSQL ------------------------------------------------------------------------

def test_unreachable_redis_raises_quickly_without_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(DLQUnavailableError) as info:
        RedisDLQ("redis://app:s3cret@127.0.0.1:1/0")
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message
    assert "refused" in message.lower() or "connect" in message.lower()


def test_unreachable_postgres_raises_quickly_naming_host_port_and_db() -> None:
    started = time.monotonic()
    with pytest.raises(DLQUnavailableError) as info:
        PostgresDLQ("postgresql://app:s3cret@127.0.0.1:1/jobs")
    assert time.monotonic() - started < 4
    message = str(info.value)
    assert "127.0.0.1:1/jobs" in message and "s3cret" not in message


@pytest.mark.redis
def test_redis_indexes_follow_upserts_and_removals(redis_url: str) -> None:
    import redis

    prefix = f"bgtest:{uuid.uuid4().hex[:12]}"
    with RedisDLQ(redis_url, key_prefix=prefix) as queue, redis.Redis.from_url(redis_url) as raw:
        queue.send(MIXED)
        queue.send([dataclasses.replace(MIXED[0], stage="elsewhere")])
        assert queue.count(stage="elsewhere") == 1
        assert queue.count(stage=MIXED[0].stage) == len(MIXED) // 2 - 1
        queue.remove([e.id for e in MIXED])
        left = {key.decode() for key in raw.scan_iter(match=f"{prefix}:*")}
        assert left == {f"{prefix}:seq"}  # no entry, no order, no stale index set
        raw.delete(f"{prefix}:seq")


@pytest.mark.postgres
def test_postgres_write_entries_commits_or_rolls_back_with_the_callers_transaction(
    postgres_url: str,
) -> None:
    table = f"bg_test_{uuid.uuid4().hex[:12]}"
    with PostgresDLQ(postgres_url, table=table) as queue:
        try:
            with pytest.raises(RuntimeError), queue.transaction() as cur:  # noqa: PT012 - the raise in it is the case
                queue.write_entries(cur, [entry(0), entry(1)])
                raise RuntimeError("crash before commit")
            assert queue.count() == 0
            with queue.transaction() as cur:
                queue.write_entries(cur, [entry(0), entry(1)])
                queue.send([entry(2)])  # joins the transaction as a savepoint
            assert ids(queue.list()) == ["run-1:0", "run-1:1", "run-1:2"]
        finally:
            queue.connection.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.parametrize("table", ["drop table x", "a.b.c", "", "1abc", "x" * 64])
def test_postgres_rejects_a_table_name_that_is_not_a_name(table: str) -> None:
    with pytest.raises(ConfigError, match="table"):
        PostgresDLQ("postgresql://127.0.0.1:1/x", table=table)


# -- URLs ----------------------------------------------------------------------------------------

def test_open_dlq_unknown_scheme_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"'ftp'.*memory, sqlite, jsonl, redis, rediss, postgresql"):
        open_dlq("ftp://example/dlq")
    with pytest.raises(ConfigError, match="no scheme"):
        open_dlq("dead_letters.db")


def test_open_dlq_sqlite_and_jsonl_paths_follow_the_sqlalchemy_convention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_dlq("sqlite:///relative.db") as relative:  # type: ignore[attr-defined]
        assert relative.path == Path("relative.db")
    assert (tmp_path / "relative.db").exists()
    absolute = tmp_path / "sub dir" / "absolute.db"
    absolute.parent.mkdir()
    with open_dlq(f"sqlite:///{absolute}".replace(" ", "%20")) as queue:  # type: ignore[attr-defined]
        assert queue.path == absolute and queue.path.is_absolute()
    with open_dlq("jsonl:///dead.jsonl") as jsonl:  # type: ignore[attr-defined]
        assert isinstance(jsonl, JsonlDLQ) and jsonl.path == Path("dead.jsonl")
    with open_dlq(f"jsonl:///{tmp_path / 'abs.jsonl'}") as jsonl_abs:  # type: ignore[attr-defined]
        assert jsonl_abs.path == tmp_path / "abs.jsonl"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "jsonl://",
                                 "sqlite:///x.db?mode=ro", "memory://somewhere"])
def test_open_dlq_rejects_malformed_file_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_dlq(url)


def test_open_dlq_returns_a_queue_object_as_is_and_refuses_other_objects(tmp_path: Path) -> None:
    queue = MemoryDLQ()
    assert open_dlq(queue) is queue
    assert isinstance(open_dlq("memory://"), MemoryDLQ)
    with pytest.raises(TypeError, match="URL"):
        open_dlq(tmp_path / "x.db")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        open_dlq(42)  # type: ignore[arg-type]


@pytest.mark.redis
def test_open_dlq_redis_url_with_key_prefix(redis_url: str) -> None:
    prefix = f"bgtest:{uuid.uuid4().hex[:12]}"
    with open_dlq(f"{redis_url}?key_prefix={prefix}") as queue:  # type: ignore[attr-defined]
        assert isinstance(queue, RedisDLQ) and queue.key_prefix == prefix
        assert queue.count() == 0


@pytest.mark.postgres
def test_open_dlq_postgres_urls_with_table(postgres_url: str) -> None:
    table = f"bg_test_{uuid.uuid4().hex[:12]}"
    alias = postgres_url.replace("postgresql://", "postgres://", 1)
    with open_dlq(f"{alias}?table={table}") as queue:  # type: ignore[attr-defined]
        assert isinstance(queue, PostgresDLQ) and queue.table == table
        queue.send([entry(0)])
        assert queue.count() == 1
        queue.connection.execute(f'DROP TABLE "{table}"')


def test_open_dlq_unreachable_servers_raise_dlq_unavailable() -> None:
    with pytest.raises(DLQUnavailableError):
        open_dlq("redis://127.0.0.1:1/0")
    with pytest.raises(DLQUnavailableError):
        open_dlq("postgresql://127.0.0.1:1/db")


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:s3cret@db:5432/jobs", "postgresql://app:***@db:5432/jobs"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("redis://user@cache/0", "redis://user@cache/0"),
    ("postgresql://db/jobs?sslmode=require&password=s3cret", "postgresql://db/jobs?sslmode=require&password=***"),
    ("sqlite:///plain.db", "sqlite:///plain.db"),
])
def test_redact_hides_passwords_only(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_missing_optional_package_says_which_extra_installs_it() -> None:
    with pytest.raises(ModuleNotFoundError, match=r'pip install "batchguard\[redis\]"'):
        require_module("batchguard_no_such_module", needed_by="RedisDLQ", extra="redis")
