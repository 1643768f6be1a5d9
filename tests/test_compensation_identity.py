"""Compensation matches each record to its value by input position, never by identity
(issue 10 item 5).

The same object may stand at several positions of the input (``[row] * 1000``, small ints,
interned strings, None): each position's undo must get the value that position's call
returned, and a results sink must hold exactly the values that were not undone.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard import ErrorClass, MemoryDLQ, RetryPolicy
from helpers_contract import ENGINES, run


class Flaky(Exception):
    """A recoverable failure (classified so in these tests)."""


class Broken(Exception):
    """A permanent failure."""


def _classify(exc: BaseException) -> ErrorClass:
    return ErrorClass.RECOVERABLE if isinstance(exc, Flaky) else ErrorClass.PERMANENT


class Calls:
    """fn: each call of the shared record returns a new token ("x#1", "x#2", ...); the poison
    record fails recoverably, then for good; the slow record fails recoverably twice."""

    def __init__(self, shared: Any, poison: Any, slow: Any) -> None:
        self.shared, self.poison, self.slow = shared, poison, slow
        self.returned: list[str] = []
        self._tokens = itertools.count(1)
        self._tries: dict[int, int] = {}
        self._lock = threading.Lock()

    def __call__(self, record: Any) -> str:
        with self._lock:
            tries = self._tries[id(record)] = self._tries.get(id(record), 0) + 1
            if record is self.poison:
                raise Flaky("poison, first try") if tries == 1 else Broken("poison")
            if record is self.slow:
                if tries <= 2:
                    raise Flaky("slow")
                token = "slow"
            else:
                token = f"x#{next(self._tokens)}"
            self.returned.append(token)
            return token


@pytest.mark.parametrize("engine", ENGINES)
def test_an_object_at_two_positions_is_undone_with_its_own_positions_value(engine: str) -> None:
    # Batch 0 = [x, poison], batch 1 = [x, slow], one call at a time. x at 0 returns x#1; the
    # poison's retry waits, so x at 2 runs and returns x#2 before batch 0 ends (the poison's
    # retry fails for good); batch 1 ends later (slow's two retries). Batch 0 is rolled back:
    # its x must be undone with x#1, and batch 1's x#2 must stay written.
    x, poison, slow = {"row": "x"}, {"row": "poison"}, {"row": "slow"}
    fn = Calls(x, poison, slow)
    undone: list[tuple[Any, Any]] = []
    written: list[Any] = []

    def sink(indices: Any, values: Any) -> None:
        written.extend(zip(indices, values, strict=True))

    report = run([x, poison, x, slow], fn, engine=engine, batch_size=2, concurrency=1,
                 classifier=_classify, dlq=MemoryDLQ(), results=sink,
                 retry=RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2, jitter="none", seed=1),
                 compensate=lambda record, value: undone.append((record, value)), atomic_batches=True)
    assert fn.returned[:2] == ["x#1", "x#2"]  # the order the scenario needs
    assert undone == [(x, "x#1")]
    assert written == [(2, "x#2"), (3, "slow")]
    assert (report.success_count, report.failure_count, report.compensated_count) == (2, 1, 1)


class Tokens:
    """fn over records that repeat (small ints, None): each call returns (record, call number),
    or fails as the seeded draw says; remembers every value it returned."""

    def __init__(self, seed: int, fail_rate: float) -> None:
        self._random = random.Random(seed)
        self._fail_rate = fail_rate
        self._calls = itertools.count()
        self.returned: list[tuple[Any, int]] = []
        self._lock = threading.Lock()

    def __call__(self, record: Any) -> tuple[Any, int]:
        with self._lock:
            call = next(self._calls)
            fails = self._random.random() < self._fail_rate
        if fails:
            raise (Flaky if call % 2 else Broken)(f"call {call}")
        value = (record, call)
        with self._lock:
            self.returned.append(value)
        return value


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.sampled_from([0, 1, 7, None, "a"]), min_size=20, max_size=150),
       batch_size=st.integers(1, 9), concurrency=st.sampled_from([1, 8, 32]),
       fail_rate=st.sampled_from([0.0, 0.05, 0.3]), seed=st.integers(0, 2**16),
       max_failures=st.sampled_from([None, 5]), to_sink=st.booleans())
def test_repeated_records_are_each_undone_once_with_a_value_of_their_own(
        engine: str, records: list[Any], batch_size: int, concurrency: int, fail_rate: float,
        seed: int, max_failures: int | None, to_sink: bool) -> None:
    # Every value fn returned ends once: kept (in report.successful, or written to a results
    # sink) or undone, never both, never neither; each undo gets a value its record's call
    # returned; the four states add up.
    fn = Tokens(seed, fail_rate)
    undone: list[tuple[Any, Any]] = []
    written: list[Any] = []
    lock = threading.Lock()

    def sink(indices: Any, values: Any) -> None:
        written.extend(values)

    def undo(record: Any, value: Any) -> None:
        with lock:
            undone.append((record, value))

    report = run(records, fn, engine=engine, batch_size=batch_size, concurrency=concurrency,
                 classifier=_classify, dlq=MemoryDLQ(), max_failures=max_failures,
                 retry=RetryPolicy(max_attempts=2, base_delay=0.0, jitter="none", seed=1),
                 compensate=undo, atomic_batches=True, results=sink if to_sink else "keep")
    assert all(record is value[0] for record, value in undone)
    kept = written if to_sink else report.successful
    assert collections.Counter(kept) + collections.Counter(value for _, value in undone) == collections.Counter(
        fn.returned)
    assert report.success_count == len(kept)
    assert report.compensated_count == len(undone)
    assert report.total == (report.success_count + report.failure_count + report.compensated_count
                            + report.pending_count)
    for batch in report.batches:
        assert batch.size == batch.succeeded + batch.failed + batch.compensated + batch.pending
