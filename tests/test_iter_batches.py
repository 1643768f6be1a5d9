"""``batchguard.iter_batches`` (issue 11 item 1): each finished batch's results and errors, in
input order, from a run on a background thread held back by a bounded queue; closing it stops
the run. Both engines.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import batchguard
from batchguard import BatchResult, RetryPolicy, iter_batches
from batchguard.errors import ConfigError
from helpers_contract import ENGINES

FAST = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, jitter="none")


def jittery(x: int) -> int:
    """Slower for some records, so batches finish out of order at concurrency > 1."""
    time.sleep(random.Random(x).choice([0, 0, 0.002]))
    if x % 7 == 3:
        raise ValueError(f"bad {x}")
    return x * x


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 8])
def test_batches_come_in_input_order_with_their_results_and_errors(engine: str, concurrency: int) -> None:
    stream = iter_batches(range(50), jittery, batch_size=4, concurrency=concurrency, engine=engine, retry=FAST)
    batches = list(stream)
    assert [b.batch_index for b in batches] == list(range(13))
    assert all(isinstance(b, BatchResult) for b in batches)
    for b in batches:
        first = 4 * b.batch_index
        records = range(first, min(first + 4, 50))
        assert b.results == [(x, x * x) for x in records if x % 7 != 3]
        assert [e.record_index for e in b.errors] == [x for x in records if x % 7 == 3]
        assert all(e.error_type == "ValueError" and e.batch_index == b.batch_index for e in b.errors)
        assert b.size == len(records) and b.pending == 0
    assert stream.report is not None
    assert stream.report.success_count == 43 and stream.report.failure_count == 7
    assert stream.report.successful == [], "the values went to the consumer, not the report"


@pytest.mark.parametrize("engine", ENGINES)
def test_an_async_fn_is_iterated_too(engine: str) -> None:
    async def triple(x: int) -> int:
        return 3 * x

    got = [pair for b in iter_batches(range(7), triple, batch_size=3, concurrency=4, engine=engine)
           for pair in b.results]
    assert got == [(x, 3 * x) for x in range(7)]


class Counted:
    """An input generator that counts the records read from it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.read = 0

    def __iter__(self) -> Iterator[int]:
        for x in range(self.n):
            self.read += 1
            yield x


@pytest.mark.parametrize("engine", ENGINES)
def test_a_slow_consumer_holds_the_producer_back(engine: str) -> None:
    records = Counted(100_000)
    stream = iter_batches(records, lambda x: x, batch_size=10, read_ahead=2, engine=engine)
    first = next(stream)
    assert first.batch_index == 0
    # The consumer pauses; the run may fill the queue and its open batches, and must then wait.
    time.sleep(0.3)
    paused_at = records.read
    assert paused_at <= 10 * 10, f"{paused_at} records read while the consumer held one batch"
    rest = sum(1 for _ in stream)
    assert rest == 9_999 and records.read == 100_000


@pytest.mark.parametrize("engine", ENGINES)
def test_closing_stops_the_run_and_says_what_was_pending(engine: str, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    lock = threading.Lock()

    def fn(x: int) -> int:
        nonlocal calls
        with lock:
            calls += 1
        return x

    stream = iter_batches(iter(range(1_000_000)), fn, batch_size=10, concurrency=4, engine=engine)
    taken = [next(stream) for _ in range(3)]
    assert [b.batch_index for b in taken] == [0, 1, 2]
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        stream.close()
    stopped_at = calls
    assert stopped_at < 1_000, "the run stopped soon after the close"
    assert stream.report is None and stream.pending is not None
    assert "iter_batches closed before its run ended" in caplog.text
    assert "left pending" in caplog.text and "never yielded" in caplog.text
    time.sleep(0.1)
    assert calls == stopped_at, "no record runs once the generator is closed"
    with pytest.raises(StopIteration):
        next(stream)


def test_a_with_block_closes_the_stream() -> None:
    with iter_batches(iter(range(100_000)), lambda x: x, batch_size=5) as stream:
        assert next(stream).results == [(x, x) for x in range(5)]
    assert stream.report is None and stream.pending is not None


def test_an_interrupt_in_the_run_is_raised_from_the_iteration() -> None:
    def stop_at_12(x: int) -> int:
        if x == 12:
            raise KeyboardInterrupt
        return x

    stream = iter_batches(range(30), stop_at_12, batch_size=5)
    got: list[int] = []

    def consume() -> None:
        for batch in stream:
            got.extend(batch.indices)

    with pytest.raises(KeyboardInterrupt):
        consume()
    assert got[:10] == list(range(10))


@pytest.mark.parametrize("given", [{"results": "drop"}, {"job": "j"}])
def test_results_and_job_are_refused(given: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="iter_batches takes no"):
        iter_batches(range(3), lambda x: x, **given)


def test_a_bad_argument_raises_at_the_call_not_at_the_first_next() -> None:
    with pytest.raises(batchguard.ConfigError, match="batch_size"):
        iter_batches(range(3), lambda x: x, batch_size=0)
    with pytest.raises(batchguard.ConfigError, match="read_ahead"):
        iter_batches(range(3), lambda x: x, read_ahead=0)


def test_leaving_a_loop_over_an_unnamed_stream_stops_the_run(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def fn(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    with caplog.at_level(logging.WARNING, logger="batchguard"):
        for batch in iter_batches(iter(range(1_000_000)), fn, batch_size=10):
            if batch.batch_index == 2:
                break
        gc.collect()
    assert "iter_batches closed before its run ended" in caplog.text
    stopped_at = calls
    time.sleep(0.1)
    assert calls == stopped_at < 1_000
