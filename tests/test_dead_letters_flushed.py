"""Whatever stops a run, every record that was dead-lettered reaches the DLQ (issue 7 defect 2).

DESIGN §4: an interrupt (or a failing input) stops the run, flushes what was dead-lettered,
and re-raises. Each test counts the records whose fn raised a PERMANENT error: every one of
them is final, so every one must have its DLQ entry once the error has propagated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from batchguard import DLQError, MemoryDLQ, RetryPolicy
from batchguard.dlq.base import DeadLetter
from helpers_contract import ENGINES, PermanentErr, run

both = pytest.mark.parametrize("engine", ENGINES)


class FailsEveryThird:
    """PERMANENT failure for every record divisible by 3; remembers which ones raised."""

    def __init__(self) -> None:
        self.raised: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, record: int) -> int:
        if record % 3 == 0:
            with self._lock:
                self.raised.add(record)
            raise PermanentErr(f"bad {record}")
        return record


class InputBroke(Exception):
    pass


def breaks_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise InputBroke(f"the input failed after {n} records")


@both
@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_dead_letters_of_finished_batches_reach_the_dlq_when_the_input_raises(
        engine: str, concurrency: int) -> None:
    fn = FailsEveryThird()
    dlq = MemoryDLQ()
    with pytest.raises(InputBroke):
        run(breaks_after(900), fn, engine=engine, concurrency=concurrency, batch_size=100, dlq=dlq,
            retry=RetryPolicy(max_attempts=1))
    stored = {entry.record_index for entry in dlq.list()}
    assert len(fn.raised) == 300
    assert stored == fn.raised, f"{len(fn.raised) - len(stored)} dead letters never reached the DLQ"


class InterruptedOnce(MemoryDLQ):
    """A DLQ whose ``send`` is interrupted (Ctrl-C) once, on its ``at``-th call, before it
    stores anything: as if SIGINT arrived while a durable backend was writing."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.calls = 0

    def send(self, entries: Sequence[DeadLetter]) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        super().send(entries)


@both
@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("at", [1, 3])
def test_an_interrupt_while_the_dlq_is_written_loses_no_entry(engine: str, concurrency: int, at: int) -> None:
    fn = FailsEveryThird()
    dlq = InterruptedOnce(at)
    with pytest.raises(KeyboardInterrupt):
        run(range(900), fn, engine=engine, concurrency=concurrency, batch_size=50, dlq=dlq,
            retry=RetryPolicy(max_attempts=1))
    stored = {entry.record_index for entry in dlq.list()}
    assert fn.raised, "the run stopped before any record failed"
    assert stored == fn.raised, f"{len(fn.raised - stored)} dead letters were lost to the interrupt"


class InterruptingProgress:
    """An on_progress callback that raises KeyboardInterrupt the ``at``-th time it is called."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0

    def __call__(self, progress: Any) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt


@both
@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_interrupt_in_on_progress_loses_no_entry(engine: str, concurrency: int) -> None:
    fn = FailsEveryThird()
    dlq = MemoryDLQ()
    with pytest.raises(KeyboardInterrupt):
        run(range(900), fn, engine=engine, concurrency=concurrency, batch_size=50, dlq=dlq,
            retry=RetryPolicy(max_attempts=1), on_progress=InterruptingProgress(3))
    stored = {entry.record_index for entry in dlq.list()}
    assert fn.raised
    assert stored == fn.raised


async def _async_fails_every_third(fn: FailsEveryThird, record: int) -> int:
    return fn(record)


@both
@pytest.mark.parametrize("concurrency", [1, 4])
def test_async_runs_flush_dead_letters_when_the_input_raises_or_the_dlq_write_is_interrupted(
        engine: str, concurrency: int) -> None:
    import functools

    fn = FailsEveryThird()
    dlq = MemoryDLQ()
    with pytest.raises(InputBroke):
        run(breaks_after(900), functools.partial(_async_fails_every_third, fn), engine=engine,
            concurrency=concurrency, batch_size=100, dlq=dlq, retry=RetryPolicy(max_attempts=1))
    assert {entry.record_index for entry in dlq.list()} == fn.raised and len(fn.raised) == 300

    fn = FailsEveryThird()
    interrupted = InterruptedOnce(3)
    with pytest.raises(KeyboardInterrupt):
        run(range(900), functools.partial(_async_fails_every_third, fn), engine=engine,
            concurrency=concurrency, batch_size=50, dlq=interrupted, retry=RetryPolicy(max_attempts=1))
    assert fn.raised and {entry.record_index for entry in interrupted.list()} == fn.raised


class StoresNothing(MemoryDLQ):
    def send(self, entries: Sequence[DeadLetter]) -> None:
        raise DLQError("the DLQ backend is down")


@both
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_failed_flush_after_an_interrupt_is_raised_not_hidden_by_it(engine: str, concurrency: int) -> None:
    """Ctrl-C, then the flush cannot store the dead letters: the DLQ's error is raised (the
    interrupt is its context), on both engines, as a Python ``finally`` would."""

    def fn(record: int) -> int:
        if record == 40:
            raise KeyboardInterrupt
        raise PermanentErr(f"bad {record}")

    with pytest.raises(DLQError, match="backend is down") as info:
        run(range(1000), fn, engine=engine, concurrency=concurrency, batch_size=500,
            dlq=StoresNothing(), retry=RetryPolicy(max_attempts=1))
    assert isinstance(info.value.__context__, KeyboardInterrupt)


class FailsSecondSend(MemoryDLQ):
    def __init__(self) -> None:
        super().__init__()
        self.sends = 0

    def send(self, entries: Sequence[DeadLetter]) -> None:
        self.sends += 1
        if self.sends >= 2:
            raise DLQError("the DLQ backend is down")
        super().send(entries)


def _slow_half_fail(record: int) -> int:
    time.sleep(0.001)  # records of the next batches are in flight when the DLQ fails
    if record % 2 == 0:
        raise PermanentErr(f"bad {record}")
    return record


@both
@pytest.mark.parametrize("concurrency", [1, 16])
def test_a_dlq_error_is_not_its_own_context(engine: str, concurrency: int) -> None:
    """The DLQ fails mid-run; the flush at the end meets the same failure: one error, raised
    once, not chained to itself."""
    with pytest.raises(DLQError) as info:
        run(range(1000), _slow_half_fail, engine=engine, concurrency=concurrency, batch_size=30,
            dlq=FailsSecondSend(), retry=RetryPolicy(max_attempts=1))
    assert info.value.__context__ is not info.value
