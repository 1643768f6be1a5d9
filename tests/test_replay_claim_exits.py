"""A replay cut short marks the entries whose record already succeeded (LF1 item 3, leftover of
issues 9/10): a FATAL error or a Ctrl-C inside a batch left that batch's successes open, so the
next replay ran them again. Every backend (the conformance suite's), both engines; no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchguard import RetryPolicy, replay, run_batches
from batchguard.dlq import DeadLetterQueue
from test_dlq_conformance import BACKENDS, Opener

ENGINES = ["native", "python"]
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture(params=BACKENDS)
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterQueue]:
    made = Opener(request.param, request, tmp_path)
    q = made.new()
    run_batches(range(12), _always_fails, dlq=q, retry=ONCE, batch_size=12)
    assert q.count() == 12
    yield q
    made.close()


def _always_fails(record: int) -> int:
    raise ValueError(f"down {record}")


class StopAt:
    """fn for the replay: succeeds, and notes each record it ran, until record ``at``, where it
    raises ``error``."""

    def __init__(self, at: int, error: BaseException) -> None:
        self.at = at
        self.error = error
        self.ran: list[int] = []

    def __call__(self, record: int) -> int:
        if record == self.at:
            raise self.error
        self.ran.append(record)
        return record


def _replayed_records(q: DeadLetterQueue) -> list[int]:
    return sorted(int(e.payload) for e in q.iter(status="replayed"))


def _check_marked(q: DeadLetterQueue, fn: StopAt) -> None:
    # Every record fn returned for is marked replayed, and no other: the next replay runs only
    # the fatal record and those never started.
    assert fn.ran, "the replay stopped before any record succeeded: the test proves nothing"
    assert _replayed_records(q) == sorted(fn.ran)
    assert q.count() == 12 - len(fn.ran)
    again: list[Any] = []
    replay(q, lambda r: again.append(r), retry=ONCE)
    assert sorted(again) == sorted(set(range(12)) - set(fn.ran))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_fatal_error_leaves_the_records_that_succeeded_before_it_marked(
        queue: DeadLetterQueue, engine: Any) -> None:
    fn = StopAt(6, MemoryError("out of memory"))
    report = replay(queue, fn, retry=ONCE, engine=engine, batch_size=4)
    assert report.status == "aborted"
    assert report.replayed == len(fn.ran) == 6
    assert sorted(report.successful) == sorted(fn.ran)
    _check_marked(queue, fn)


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_leaves_the_records_that_succeeded_before_it_marked(
        queue: DeadLetterQueue, engine: Any) -> None:
    fn = StopAt(6, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        replay(queue, fn, retry=ONCE, engine=engine, batch_size=4)
    _check_marked(queue, fn)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_fatal_error_at_concurrency_marks_every_success(queue: DeadLetterQueue, engine: Any) -> None:
    fn = StopAt(9, MemoryError("out of memory"))
    replay(queue, fn, retry=ONCE, engine=engine, batch_size=12, concurrency=4)
    _check_marked(queue, fn)
