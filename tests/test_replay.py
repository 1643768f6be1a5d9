"""``batchguard.replay``: successes leave the DLQ, failures stay with their history extended."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from batchguard import (
    BatchguardWarning,
    DeadLetter,
    DeadLetterQueue,
    MemoryDLQ,
    ReplayReport,
    RetryPolicy,
    replay,
    run_batches,
)
from batchguard.dlq import JsonlDLQ, PostgresDLQ, RedisDLQ, SqliteDLQ

ONCE = RetryPolicy(max_attempts=1)
Engine = Literal["native", "python"]
BACKENDS = [
    "memory",
    "sqlite",
    "jsonl",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterQueue]:
    kind = request.param
    dlq: Any
    if kind == "memory":
        dlq = MemoryDLQ()
    elif kind == "sqlite":
        dlq = SqliteDLQ(tmp_path / "dlq.db")
    elif kind == "jsonl":
        dlq = JsonlDLQ(tmp_path / "dlq.jsonl")
    elif kind == "redis":
        dlq = RedisDLQ(request.getfixturevalue("redis_url"), key_prefix=f"replay-{uuid.uuid4().hex[:8]}")
    else:
        dlq = PostgresDLQ(request.getfixturevalue("postgres_url"), table=f"replay_{uuid.uuid4().hex[:8]}")
    yield dlq
    if kind == "postgres":
        with dlq.transaction() as cur:
            cur.execute(f"DROP TABLE {dlq.table}")
    elif kind == "redis":
        dlq.remove([e.id for e in dlq.list()])
    dlq.close()


def fail_every(n: int, exc: type[Exception] = ValueError) -> Any:
    def fn(x: int) -> int:
        if x % n == 0:
            raise exc(f"bad {x}")
        return x

    return fn


def seed(queue: DeadLetterQueue, records: Any, fn: Any = None, **kwargs: Any) -> list[DeadLetter]:
    run_batches(records, fn or fail_every(3), dlq=queue, retry=ONCE, **kwargs)
    return queue.list()


def test_entries_whose_record_now_succeeds_leave_the_queue(queue: DeadLetterQueue) -> None:
    before = seed(queue, range(300))
    assert len(before) == 100
    report = replay(queue, fail_every(2), retry=ONCE, batch_size=16)
    assert isinstance(report, ReplayReport)
    assert (report.total, report.success_count, report.failure_count) == (100, 50, 50)
    assert (report.removed, report.kept, report.not_replayable) == (50, 50, 0)
    left = queue.list()
    assert sorted(e.record_index for e in left) == [x for x in range(0, 300, 6)]
    assert [e.id for e in left] == [e.id for e in before if e.record_index % 6 == 0]  # same ids, same order


def test_entries_that_fail_again_keep_their_id_and_extend_their_history(queue: DeadLetterQueue) -> None:
    (original,) = seed(queue, [0, 1, 2], fail_every(3), )
    report = replay(queue, fail_every(1, KeyError), retry=RetryPolicy(max_attempts=2, base_delay=0))
    assert report.kept == 1
    (again,) = queue.list()
    assert again.id == original.id and again.run_id == original.run_id and again.stage == original.stage
    assert again.first_failed_at == original.first_failed_at
    assert again.last_failed_at >= original.last_failed_at
    assert (again.error_type, again.error_class) == ("KeyError", "permanent")
    assert [(a.attempt, a.error_type) for a in again.attempts] == [(1, "ValueError"), (2, "KeyError")]
    assert again.payload == original.payload and again.record_index == original.record_index


def test_filters_choose_what_is_replayed(queue: DeadLetterQueue) -> None:
    def mixed(x: int) -> int:
        if x % 2 == 0:
            raise ValueError("even")
        raise KeyError("odd")

    seed(queue, range(10), mixed)
    report = replay(queue, lambda x: x, retry=ONCE, error_type="KeyError")
    assert report.removed == 5 and report.total == 5
    assert {e.error_type for e in queue.list()} == {"ValueError"} and queue.count() == 5


def test_entries_that_leave_the_filtered_view_do_not_hide_the_next_ones(queue: DeadLetterQueue) -> None:
    # Filtering on error_type while every replayed entry changes its error type: each page
    # shifts under the reader; none may be skipped and none replayed twice.
    seed(queue, range(200), fail_every(1))
    seen: list[int] = []

    def now_key_error(x: int) -> int:
        seen.append(x)
        raise KeyError(x)

    report = replay(queue, now_key_error, retry=ONCE, batch_size=7, error_type="ValueError")
    assert sorted(seen) == list(range(200))
    assert report.kept == 200 and queue.count(error_type="KeyError") == 200


def test_a_mix_of_removals_and_failures_in_small_pages_replays_each_entry_once(queue: DeadLetterQueue) -> None:
    seed(queue, range(500), fail_every(1))
    seen: list[int] = []

    def some(x: int) -> int:
        seen.append(x)
        if x % 7 == 0:
            raise ValueError("still bad")
        return x

    report = replay(queue, some, retry=ONCE, batch_size=10)
    assert sorted(seen) == list(range(500))
    assert queue.count() == len(range(0, 500, 7)) == report.kept


def test_repr_payloads_are_left_in_place_counted_and_warned_about(tmp_path: Path) -> None:
    class Opaque:
        pass

    dlq = SqliteDLQ(tmp_path / "dlq.db")
    with pytest.warns(BatchguardWarning, match="repr"):
        run_batches([Opaque(), 3], fail_every(1, TypeError), dlq=dlq, retry=ONCE)
    with pytest.warns(BatchguardWarning, match="1 dead letters store their record as repr"):
        report = replay(dlq, lambda x: x, retry=ONCE)
    assert (report.not_replayable, report.removed, report.total) == (1, 1, 1)
    (left,) = dlq.list()
    assert left.payload_encoding == "repr"
    dlq.close()


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_pickled_payloads_are_replayed(tmp_path: Path) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    run_batches([Point(1, 2), Point(3, 4)], fail_every(1, TypeError), dlq=dlq, retry=ONCE,
                pickle_payloads=True)
    received: list[Point] = []
    report = replay(dlq, received.append, retry=ONCE, allow_pickle=True)
    assert report.removed == 2 and received == [Point(1, 2), Point(3, 4)] and dlq.count() == 0
    dlq.close()


def test_replay_accepts_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dlq.db'}"
    run_batches(range(6), fail_every(2), dlq=url, retry=ONCE)
    report = replay(url, lambda x: x, retry=ONCE)
    assert report.removed == 3
    with SqliteDLQ(tmp_path / "dlq.db") as dlq:
        assert dlq.count() == 0


def test_a_replay_that_stops_early_keeps_the_entries_it_did_not_finish(tmp_path: Path) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    seed(dlq, range(100), fail_every(1))

    def fatal_at_55(x: int) -> int:
        if x == 55:
            raise MemoryError("fatal")
        return x

    report = replay(dlq, fatal_at_55, retry=ONCE, batch_size=10)
    assert report.status == "aborted"
    left = sorted(e.record_index for e in dlq.list())
    # Batches 0-4 finished: their entries left. Batch 5 did not: 50-54 succeeded and left too
    # (LF1 item 3: marked before the replay returned), 55 failed again, and the rest of it
    # (never run) stays for the next replay, as does everything after it.
    assert left == list(range(55, 100))
    assert report.removed == 55 and report.kept == 1
    assert dlq.get(dlq.list()[0].id).attempts[-1].error_type == "MemoryError"  # type: ignore[union-attr]
    dlq.close()


def test_entries_sent_during_a_replay_wait_for_the_next_one(tmp_path: Path) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    seed(dlq, range(10), fail_every(1))
    extra = dataclasses.replace(dlq.list()[0], id="late", record_index=999)

    def sends_one_more(x: int) -> int:
        dlq.send([extra])
        return x

    report = replay(dlq, sends_one_more, retry=ONCE, batch_size=3)
    assert report.total == 10 and [e.id for e in dlq.list()] == ["late"]
    dlq.close()


@pytest.mark.parametrize("engine", ["native", "python"])
def test_replay_of_a_jobs_entries_keeps_their_job(tmp_path: Path, engine: Engine) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(20), fail_every(4), job="nightly", store=store, retry=ONCE, batch_size=5)
    with SqliteDLQ(tmp_path / "jobs.db") as dlq:
        assert dlq.count(job_id="nightly") == 5
        report = replay(dlq, fail_every(8), retry=ONCE, engine=engine, job_id="nightly")
        assert (report.removed, report.kept) == (2, 3)
        assert {e.job_id for e in dlq.list()} == {"nightly"}


def test_replay_of_nothing_is_complete(tmp_path: Path) -> None:
    report = replay(MemoryDLQ(), lambda x: x)
    assert (report.status, report.total, report.removed) == ("complete", 0, 0)


def test_replay_rejects_unknown_filters() -> None:
    with pytest.raises(TypeError, match="unknown DLQ filter"):
        replay(MemoryDLQ(), lambda x: x, colour="red")
