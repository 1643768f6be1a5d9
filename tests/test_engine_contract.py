"""The behaviour DESIGN.md promises, held against both engines (and concurrency 1 and 4).

Timing appears only where the contract is about time ("waited at least retry_after"), never
as a performance threshold.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import operator
import threading
import time
import warnings
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

import batchguard
from batchguard import (
    BatchguardWarning,
    BatchProgress,
    BatchStats,
    CircuitBreaker,
    Classifier,
    DeadLetter,
    MemoryDLQ,
    RecordError,
    RetryPolicy,
)
from batchguard.dlq import open_dlq
from helpers_contract import (
    CONCURRENCIES,
    ENGINES,
    CountingIterator,
    FailurePlan,
    PermanentErr,
    RecoverableErr,
    RetryAfterErr,
    assert_conservation,
    no_wait,
    run,
)

both = pytest.mark.parametrize("engine", ENGINES)
each_concurrency = pytest.mark.parametrize("concurrency", CONCURRENCIES)


def backoff(max_attempts: int, base_delay: float, multiplier: float = 2.0) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, base_delay=base_delay, multiplier=multiplier,
                       max_delay=10.0, jitter="none")


class Timed:
    """A callback that remembers when each attempt of each record started and ended."""

    def __init__(self, fail: Any) -> None:
        self._fail = fail
        self.starts: dict[int, list[float]] = {}
        self.ends: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def __call__(self, record: int) -> int:
        now = time.monotonic()
        with self._lock:
            self.starts.setdefault(record, []).append(now)
            attempt = len(self.starts[record])
        exc = self._fail(record, attempt)
        with self._lock:
            self.ends.setdefault(record, []).append(time.monotonic())
        if exc is not None:
            raise exc
        return record * 10

    def gaps(self, record: int) -> list[float]:
        """How long the record waited between the end of one attempt and the start of the next."""
        starts, ends = self.starts[record], self.ends[record]
        return [starts[i + 1] - ends[i] for i in range(len(starts) - 1)]


# --------------------------------------------------------------------------- order and input


@both
@each_concurrency
def test_successful_values_are_in_input_order(engine: str, concurrency: int) -> None:
    def fn(record: int) -> int:
        if record % 4 == 0:
            time.sleep(0.002)  # finish out of order when there are several workers
        if record % 7 == 3:
            raise PermanentErr(record)
        return record * 10

    report = run(range(200), fn, engine=engine, concurrency=concurrency, batch_size=16)
    assert report.successful == [r * 10 for r in range(200) if r % 7 != 3]
    assert [e.record_index for e in report.errors] == [r for r in range(200) if r % 7 == 3]
    assert report.failed == [r for r in range(200) if r % 7 == 3]
    assert_conservation(report)


@both
@each_concurrency
def test_successful_values_are_in_input_order_with_retries(engine: str, concurrency: int) -> None:
    plan = FailurePlan({(3, 1): "transient", (5, 1): "recoverable", (5, 2): "recoverable",
                        (11, 1): "transient", (12, 1): "recoverable", (19, 1): "recoverable"})
    report = run(range(20), plan, engine=engine, concurrency=concurrency, batch_size=8,
                 retry=backoff(3, 0.005))
    assert report.status == "complete"
    assert report.successful == [r * 10 for r in range(20)]
    assert report.retry_count == 6
    assert [b.retries for b in report.batches] == [3, 2, 1]


@both
@each_concurrency
def test_generator_input_is_read_lazily_batch_by_batch(engine: str, concurrency: int) -> None:
    source = CountingIterator(range(2000))
    lead: list[int] = []  # how far the input was read past the furthest record started
    furthest = [-1]
    lock = threading.Lock()

    def fn(record: int) -> int:
        with lock:
            furthest[0] = max(furthest[0], record)
            lead.append(source.pulled - furthest[0] - 1)
        return record

    report = run(source, fn, engine=engine, concurrency=concurrency, batch_size=10)
    assert report.total == 2000 and report.status == "complete"
    assert report.successful == list(range(2000))
    if concurrency == 1:
        assert lead[0] == 9, "the first call should come after reading exactly one batch"
    # At most one batch plus a few records per worker is read ahead, never the whole input.
    assert max(lead) < 10 + 2 * concurrency, f"read {max(lead)} records ahead"


@both
@each_concurrency
def test_a_stopped_run_stops_reading_its_input(engine: str, concurrency: int) -> None:
    source = CountingIterator(itertools.count(), limit=5000)
    plan = FailurePlan({(25, 1): "fatal"}, pause=0.0005)
    report = run(source, plan, engine=engine, concurrency=concurrency, batch_size=10)
    assert (report.status, report.stopped_reason) == ("aborted", "fatal")
    assert source.pulled < 100
    assert report.total == source.pulled, "total counts the records read from a generator"
    assert_conservation(report)


@both
@each_concurrency
@pytest.mark.parametrize("records", [[], (), iter(()), range(0)], ids=["list", "tuple", "iterator", "range"])
def test_empty_input_is_complete(engine: str, concurrency: int, records: Any) -> None:
    calls: list[Any] = []
    report = run(records, calls.append, engine=engine, concurrency=concurrency)
    assert (report.status, report.total, report.success_count, report.failure_count,
            report.pending_count) == ("complete", 0, 0, 0, 0)
    assert report.successful == [] and report.batches == [] and calls == []
    assert report.success_rate == 1.0
    assert report.stopped_reason is None
    assert report.summary().splitlines()[0] == "BATCH COMPLETE"
    json.dumps(report.to_dict())


@both
def test_input_whose_length_is_a_multiple_of_the_batch_size(engine: str) -> None:
    report = run(CountingIterator(range(30)), lambda r: r, engine=engine, batch_size=10)
    assert [b.size for b in report.batches] == [10, 10, 10]
    assert report.total == 30 and report.status == "complete"


# --------------------------------------------------------------------------- retries


@both
@each_concurrency
def test_transient_failure_is_retried_at_once(engine: str, concurrency: int) -> None:
    # A 5 s backoff would make this run last over 20 s if TRANSIENT waited for it.
    plan = FailurePlan({(1, 1): "transient", (1, 2): "transient",
                        (2, 1): "transient", (2, 2): "transient", (2, 3): "transient"})
    dlq = MemoryDLQ()
    started = time.monotonic()
    report = run(range(4), plan, engine=engine, concurrency=concurrency, dlq=dlq,
                 retry=backoff(3, 5.0))
    assert time.monotonic() - started < 4.0
    assert report.successful == [0, 10, 30]
    [entry] = dlq.list()
    assert entry.record_index == 2 and entry.error_class == "transient"
    assert [a.delay_s for a in entry.attempts] == [0.0, 0.0, None]
    assert report.retry_count == 4


@both
@each_concurrency
def test_recoverable_failure_is_retried_after_its_backoff(engine: str, concurrency: int) -> None:
    fn = Timed(lambda r, a: RecoverableErr(f"r{r} a{a}") if r in (0, 2) and (r == 2 or a <= 2) else None)
    dlq = MemoryDLQ()
    report = run(range(4), fn, engine=engine, concurrency=concurrency, dlq=dlq,
                 retry=backoff(3, 0.02, multiplier=2.0))
    assert report.successful == [0, 10, 30]
    gaps = fn.gaps(0)
    assert len(gaps) == 2
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04, gaps
    [entry] = dlq.list()
    assert entry.record_index == 2
    assert [a.delay_s for a in entry.attempts] == [0.02, 0.04, None]
    assert [a.attempt for a in entry.attempts] == [1, 2, 3]


@both
@each_concurrency
def test_retry_after_is_honoured_when_longer_than_the_backoff(engine: str, concurrency: int) -> None:
    fn = Timed(lambda r, a: RetryAfterErr("slow down", 0.06) if r == 1 and a == 1 else None)
    report = run(range(3), fn, engine=engine, concurrency=concurrency, retry=backoff(3, 0.001))
    assert report.successful == [0, 10, 20]
    [gap] = fn.gaps(1)
    assert gap >= 0.06, gap


@both
@pytest.mark.parametrize("retry_after", [0.0, 0.001, -5, "soon", True, float("nan"), float("inf"), None])
def test_retry_after_shorter_than_the_backoff_or_invalid_is_ignored(engine: str, retry_after: Any) -> None:
    fn = Timed(lambda r, a: RetryAfterErr("x", retry_after))
    dlq = MemoryDLQ()
    run([0], fn, engine=engine, dlq=dlq, retry=backoff(2, 0.02))
    [entry] = dlq.list()
    assert [a.delay_s for a in entry.attempts] == [0.02, None]


@both
def test_retry_after_is_recorded_as_the_delay(engine: str) -> None:
    dlq = MemoryDLQ()
    run([0], Timed(lambda r, a: RetryAfterErr("x", 0.03)), engine=engine, dlq=dlq, retry=backoff(2, 0.001))
    assert [a.delay_s for a in dlq.list()[0].attempts] == [0.03, None]


@both
@each_concurrency
def test_exhausted_retries_are_dead_lettered_with_the_full_attempt_history(engine: str, concurrency: int) -> None:
    plan = FailurePlan({(1, a): "recoverable" for a in range(1, 5)})
    dlq = MemoryDLQ()
    report = run(range(3), plan, engine=engine, concurrency=concurrency, dlq=dlq,
                 retry=backoff(4, 0.001))
    [entry] = dlq.list()
    assert (entry.record_index, entry.error_class, entry.error_type) == (1, "recoverable", "RecoverableErr")
    assert [a.attempt for a in entry.attempts] == [1, 2, 3, 4]
    assert [a.delay_s for a in entry.attempts] == [0.001, 0.002, 0.004, None]
    assert [a.error_message for a in entry.attempts] == [
        f"recoverable record=1 attempt={a}" for a in range(1, 5)]
    assert all(a.error_type == "RecoverableErr" for a in entry.attempts)
    stamps = [datetime.fromisoformat(a.at) for a in entry.attempts]
    assert stamps == sorted(stamps)
    assert (entry.first_failed_at, entry.last_failed_at) == (entry.attempts[0].at, entry.attempts[-1].at)
    assert entry.error_message == "recoverable record=1 attempt=4"
    assert [(e.record_index, e.attempts) for e in report.errors] == [(1, 4)]
    assert report.retry_count == 3
    assert plan.attempts[1] == 4


@both
@each_concurrency
def test_permanent_failure_is_not_retried(engine: str, concurrency: int) -> None:
    plan = FailurePlan({(2, 1): "permanent"})
    report = run(range(5), plan, engine=engine, concurrency=concurrency, retry=backoff(5, 0.001))
    assert plan.attempts[2] == 1
    assert report.retry_count == 0
    assert [(e.record_index, e.error_class, e.attempts) for e in report.errors] == [(2, "permanent", 1)]
    assert report.dead_letters[0].attempts[0].delay_s is None


@both
def test_a_record_waiting_for_its_retry_does_not_block_the_others(engine: str) -> None:
    plan = FailurePlan({(0, 1): "recoverable"})
    report = run(range(10), plan, engine=engine, retry=backoff(2, 0.1))
    assert plan.calls == [(0, 1)] + [(r, 1) for r in range(1, 10)] + [(0, 2)]
    assert report.successful == [r * 10 for r in range(10)]


@both
@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated"])
def test_engine_waits_the_delays_the_seeded_policy_schedules(engine: str, jitter: str) -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.004, multiplier=2.0, max_delay=0.02,
                         jitter=jitter, seed=2024)
    plan = FailurePlan({(r, a): "recoverable" for r in (2, 5) for a in range(1, 5)})
    dlq = MemoryDLQ()
    run(range(6), plan, engine=engine, dlq=dlq, retry=policy, batch_size=4)
    for entry in dlq.list():
        delays = [a.delay_s for a in entry.attempts]
        assert delays[:-1] == policy.schedule(3, record_index=entry.record_index), entry.record_index
        assert delays[-1] is None


@both
def test_retry_after_is_honoured_for_transient_failures_too(engine: str) -> None:
    dlq = MemoryDLQ()
    classifier = Classifier.default().with_rule(RetryAfterErr, "transient")
    fn = Timed(lambda r, a: RetryAfterErr("busy", 0.05))
    run([0], fn, engine=engine, dlq=dlq, classifier=classifier, retry=backoff(2, 1.0))
    assert [a.delay_s for a in dlq.list()[0].attempts] == [0.05, None]
    assert fn.gaps(0)[0] >= 0.05


@both
@each_concurrency
@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
def test_an_input_that_raises_stops_the_run_and_keeps_the_dead_letters(engine: str, concurrency: int,
                                                                       stop: type[BaseException]) -> None:
    def records() -> Any:
        yield from range(25)
        raise stop("the input broke")

    dlq = MemoryDLQ()
    with pytest.raises(stop):
        run(records(), FailurePlan({(3, 1): "permanent"}), engine=engine, concurrency=concurrency,
            batch_size=10, dlq=dlq)
    assert [e.record_index for e in dlq.list()] == [3]


@both
@each_concurrency
def test_an_exception_from_on_progress_propagates(engine: str, concurrency: int) -> None:
    def on_progress(progress: BatchProgress) -> None:
        raise LookupError("progress bar broke")

    calls: list[int] = []
    with pytest.raises(LookupError, match="progress bar"):
        run(range(1000), calls.append, engine=engine, concurrency=concurrency, batch_size=10,
            on_progress=on_progress)
    assert len(calls) < 1000


@both
def test_max_attempts_one_means_no_retry(engine: str) -> None:
    plan = FailurePlan({(0, 1): "transient", (1, 1): "recoverable"})
    report = run(range(3), plan, engine=engine, retry=no_wait(1))
    assert [e.error_class for e in report.errors] == ["transient", "recoverable"]
    assert report.retry_count == 0 and plan.call_count == 3


# --------------------------------------------------------------------------- stopping


@both
@each_concurrency
def test_fatal_error_leaves_unstarted_records_pending(engine: str, concurrency: int) -> None:
    plan = FailurePlan({(15, 1): "fatal"}, pause=0.0005)
    report = run(range(1000), plan, engine=engine, concurrency=concurrency, batch_size=10)
    assert (report.status, report.stopped_reason) == ("aborted", "fatal")
    assert [(e.record_index, e.error_class) for e in report.errors] == [(15, "fatal")]
    assert report.pending_count > 900
    assert plan.call_count < 100, "records kept starting after the fatal error"
    assert_conservation(report)
    if concurrency == 1:
        assert (report.success_count, report.pending_count) == (15, 984)
        assert report.successful == [r * 10 for r in range(15)]
        assert max(r for r, _ in plan.calls) == 15
    # The stopped batch is reported with its pending records. (With several workers, the
    # records left of the open batch may all have started before the fatal error was seen:
    # then every opened batch is whole, and the pending records are in batches never opened.)
    stopped = [b for b in report.batches if b.pending]
    assert sum(b.pending for b in report.batches) <= report.pending_count
    if concurrency == 1:
        assert [(b.batch_index, b.pending) for b in stopped] == [(1, 4)]


@both
def test_records_in_flight_finish_after_a_fatal_error(engine: str) -> None:
    slow_started = threading.Event()

    def fn(record: int) -> int:
        if record == 0:
            assert slow_started.wait(5), "record 1 never started"
            raise MemoryError("fatal")
        if record == 1:
            slow_started.set()
            time.sleep(0.2)
        return record * 10

    # Two workers: records 0 and 1 are the only ones in flight when record 0 fails.
    report = run(range(100), fn, engine=engine, concurrency=2, batch_size=10)
    assert report.stopped_reason == "fatal"
    assert report.successful == [10], "the record in flight was not allowed to finish"
    assert (report.failure_count, report.pending_count) == (1, 98)
    assert_conservation(report)


@both
@each_concurrency
def test_max_failures_as_a_count_stops_the_run_past_the_budget(engine: str, concurrency: int) -> None:
    plan = FailurePlan({(r, 1): "permanent" for r in range(0, 500, 5)}, pause=0.0005)
    report = run(range(500), plan, engine=engine, concurrency=concurrency, batch_size=10, max_failures=2)
    assert (report.status, report.stopped_reason) == ("aborted", "max_failures")
    assert report.failure_count >= 3
    assert report.pending_count > 400
    assert_conservation(report)
    if concurrency == 1:
        assert [e.record_index for e in report.errors] == [0, 5, 10]
        assert report.success_count == 8


@both
def test_max_failures_zero_stops_at_the_first_failure(engine: str) -> None:
    plan = FailurePlan({(3, 1): "permanent"})
    report = run(range(50), plan, engine=engine, max_failures=0)
    assert report.stopped_reason == "max_failures"
    assert (report.success_count, report.failure_count, report.pending_count) == (3, 1, 46)


@both
def test_max_failures_budget_that_is_not_spent_does_not_stop(engine: str) -> None:
    plan = FailurePlan({(r, 1): "permanent" for r in range(0, 100, 3)})
    report = run(range(100), plan, engine=engine, max_failures=34)
    assert report.stopped_reason is None and report.status == "partial_success"
    report = run(range(100), FailurePlan({(r, 1): "permanent" for r in range(0, 100, 3)}),
                 engine=engine, max_failures=0.5)
    assert report.stopped_reason is None and report.failure_count == 34


@both
@each_concurrency
def test_max_failures_as_a_rate_stops_the_run(engine: str, concurrency: int) -> None:
    plan = FailurePlan({(r, 1): "permanent" for r in range(0, 300, 3)}, pause=0.0005)
    report = run(range(300), plan, engine=engine, concurrency=concurrency, batch_size=10, max_failures=0.2)
    assert (report.status, report.stopped_reason) == ("aborted", "max_failures")
    assert report.failure_count / (report.success_count + report.failure_count) > 0.2
    assert report.pending_count > 200
    assert_conservation(report)
    if concurrency == 1:
        # Judged once 10 records are final: records 0..9 hold 4 failures (0, 3, 6, 9).
        assert (report.success_count, report.failure_count) == (6, 4)


@both
@pytest.mark.parametrize(("threshold", "status"), [
    (None, "partial_success"), (0.7, "partial_success"), (0.71, "failed"), (0.0, "partial_success"),
    (1.0, "failed")])
def test_success_threshold_decides_between_failed_and_partial_success(engine: str, threshold: float | None,
                                                                      status: str) -> None:
    plan = FailurePlan({(r, 1): "permanent" for r in (2, 5, 8)})
    report = run(range(10), plan, engine=engine, success_threshold=threshold)
    assert report.success_rate == 0.7
    assert report.status == status
    assert report.stopped_reason is None


@both
def test_a_complete_run_is_complete_whatever_the_threshold(engine: str) -> None:
    assert run(range(5), lambda r: r, engine=engine, success_threshold=1.0).status == "complete"


@both
def test_a_stopped_run_is_aborted_even_above_the_threshold(engine: str) -> None:
    report = run(range(100), FailurePlan({(98, 1): "fatal"}), engine=engine, success_threshold=0.5)
    assert report.success_rate > 0.5 and report.status == "aborted"


# --------------------------------------------------------------------------- circuit breaker


class Outage:
    """The first ``calls`` calls fail with a ConnectionError (RECOVERABLE), then all succeed."""

    def __init__(self, calls: int, *, pause: float = 0.0) -> None:
        self.remaining = calls
        self.pause = pause
        self.timeline: list[tuple[float, float, bool]] = []  # (start, end, failed)
        self._lock = threading.Lock()

    def __call__(self, record: int) -> int:
        start = time.monotonic()
        with self._lock:
            failed = self.remaining > 0
            self.remaining -= 1
        if self.pause:
            time.sleep(self.pause)
        with self._lock:
            self.timeline.append((start, time.monotonic(), failed))
        if failed:
            raise ConnectionError(f"service down (record {record})")
        return record


def _breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_rate_threshold=0.5, window=4, minimum_calls=4, open_duration=0.05,
                          half_open_calls=1)


@both
@each_concurrency
def test_circuit_breaker_trips_and_dead_letters_nothing_while_open(engine: str, concurrency: int) -> None:
    outage = Outage(calls=6)
    dlq = MemoryDLQ()
    report = batchguard.run_batches(range(40), outage, engine=engine, concurrency=concurrency,
                                    batch_size=10, breaker=_breaker(), dlq=dlq,
                                    retry=RetryPolicy(max_attempts=10, base_delay=0.0, jitter="none"))
    assert report.status == "complete"
    assert report.successful == list(range(40))
    assert report.failure_count == 0 and len(dlq) == 0
    assert report.breaker_trips >= 1
    moves = [(old, new) for _, old, new in report.breaker_events]
    assert moves[0] == ("closed", "open")
    assert moves[-1] == ("half_open", "closed")
    assert sum(1 for m in moves if m[1] == "open") == report.breaker_trips
    for (_, new), (old, _) in itertools.pairwise(moves):
        assert new == old, moves
    times = [at for at, _, _ in report.breaker_events]
    assert times == sorted(times) and times[0] >= 0
    if concurrency == 1:
        assert report.breaker_trips == 3
        assert report.retry_count == 6


@both
def test_an_open_breaker_starts_no_call_until_open_duration_has_passed(engine: str) -> None:
    outage = Outage(calls=6)
    batchguard.run_batches(range(10), outage, engine=engine, breaker=_breaker(),
                           retry=RetryPolicy(max_attempts=10, base_delay=0.0, jitter="none"))
    timeline = outage.timeline
    # Calls 1-4 fail and trip the breaker; the probes (calls 5, 6, 7) each wait open_duration.
    for previous, probe in itertools.pairwise(timeline[3:7]):
        assert probe[0] - previous[1] >= 0.05, timeline
    assert [failed for _, _, failed in timeline[:7]] == [True] * 6 + [False]


@both
def test_breaker_state_shows_in_progress_snapshots(engine: str) -> None:
    snapshots: list[BatchProgress] = []
    batchguard.run_batches(range(30), Outage(calls=4), engine=engine, breaker=_breaker(), batch_size=10,
                           on_progress=snapshots.append,
                           retry=RetryPolicy(max_attempts=10, base_delay=0.0, jitter="none"))
    states = [p.breaker_state for p in snapshots]
    assert "open" in states and states[-1] == "closed"


@both
def test_breaker_state_changes_are_logged(engine: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="batchguard")
    batchguard.run_batches(range(10), Outage(calls=4), engine=engine, breaker=_breaker(),
                           retry=RetryPolicy(max_attempts=10, base_delay=0.0, jitter="none"))
    moves = [(r.breaker_from, r.breaker_to) for r in caplog.records if hasattr(r, "breaker_to")]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


@both
@each_concurrency
def test_abort_failure_rate_stops_the_run(engine: str, concurrency: int) -> None:
    breaker = CircuitBreaker(failure_rate_threshold=1.0, window=10, minimum_calls=5, open_duration=0.05,
                             abort_failure_rate=0.6)
    report = batchguard.run_batches(range(200), Outage(calls=10**9, pause=0.0005), engine=engine,
                                    concurrency=concurrency, batch_size=10, breaker=breaker, retry=no_wait(1))
    assert (report.status, report.stopped_reason) == ("aborted", "breaker_abort")
    assert report.pending_count > 150
    assert_conservation(report)
    if concurrency == 1:
        assert (report.failure_count, report.success_count) == (5, 0)


@both
def test_failures_the_breaker_does_not_count_never_trip_it(engine: str) -> None:
    plan = FailurePlan({(r, 1): "permanent" for r in range(20)})
    report = run(range(20), plan, engine=engine, breaker=_breaker())
    assert report.breaker_trips == 0 and report.breaker_events == []
    assert report.failure_count == 20


# --------------------------------------------------------------------------- progress and logging


@both
@each_concurrency
def test_on_progress_gets_consistent_snapshots_at_batch_ends(engine: str, concurrency: int) -> None:
    snapshots: list[BatchProgress] = []
    plan = FailurePlan({(r, 1): "permanent" for r in (3, 17, 44)})
    report = run(list(range(50)), plan, engine=engine, concurrency=concurrency, batch_size=10,
                 on_progress=snapshots.append)
    assert snapshots and all(isinstance(p, BatchProgress) for p in snapshots)
    for p in snapshots:
        assert p.records_processed == p.succeeded + p.failed
        assert p.total == 50 and p.batches_total == 5
        assert 0 <= p.batches_completed <= 5
        assert p.in_flight >= 0 and p.queued >= 0 and p.retrying >= 0
        assert 0.0 <= p.percent_complete <= 100.0
        assert p.has_errors == (p.failed > 0)
        assert p.breaker_state == "closed"
        assert p.elapsed_s >= 0
    for a, b in itertools.pairwise(snapshots):
        assert b.records_processed >= a.records_processed
        assert b.batches_completed >= a.batches_completed
        assert b.elapsed_s >= a.elapsed_s
    last = snapshots[-1]
    assert (last.succeeded, last.failed, last.batches_completed) == (47, 3, 5)
    assert last.percent_complete == 100.0
    assert last.eta_s == 0.0
    assert last.avg_time_per_record >= 0
    if concurrency == 1:
        assert {p.batches_completed for p in snapshots} >= {1, 2, 3, 4, 5}
    assert report.success_count == 47


@both
def test_progress_of_a_generator_has_no_total(engine: str) -> None:
    snapshots: list[BatchProgress] = []
    run(iter(range(25)), lambda r: r, engine=engine, batch_size=10, on_progress=snapshots.append)
    assert snapshots[-1].total is None and snapshots[-1].batches_total is None
    assert snapshots[-1].eta_s is None
    assert snapshots[-1].records_processed == 25


@both
@each_concurrency
def test_each_batch_end_logs_batch_complete_with_structured_fields(engine: str, concurrency: int,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batchguard")
    plan = FailurePlan({(4, 1): "permanent", (12, 1): "transient"})
    report = run(list(range(25)), plan, engine=engine, concurrency=concurrency, batch_size=10,
                 stage="load", retry=no_wait(2))
    logged = [r for r in caplog.records if r.name == "batchguard" and r.getMessage() == "batch_complete"]
    assert sorted(r.batch_index for r in logged) == [0, 1, 2]
    by_batch = {r.batch_index: r for r in logged}
    for r in logged:
        assert r.levelno == logging.INFO
        assert r.run_id == report.run_id and r.stage == "load" and r.job_id is None
        assert r.total_records == 25
        assert r.batch_pending == 0 and r.duration_s >= 0
        assert r.total_processed >= r.batch_success + r.batch_failure
    assert [(by_batch[i].batch_size, by_batch[i].batch_success, by_batch[i].batch_failure,
             by_batch[i].batch_retries) for i in range(3)] == [(10, 9, 1, 0), (10, 10, 0, 1), (5, 5, 0, 0)]


# --------------------------------------------------------------------------- dead-letter queue


@both
@each_concurrency
def test_dlq_entries_have_every_field(engine: str, concurrency: int) -> None:
    records = [{"id": f"rec-{i}", "value": i} for i in range(12)]

    def fn(record: dict[str, Any]) -> int:
        if record["value"] in (1, 7):
            raise PermanentErr(f"bad value {record['value']}")
        if record["value"] == 9:
            raise RecoverableErr("flaky")
        return record["value"]

    dlq = MemoryDLQ()
    report = run(records, fn, engine=engine, concurrency=concurrency, batch_size=5, dlq=dlq,
                 stage="enrich", retry=backoff(2, 0.001))
    entries = sorted(dlq.list(), key=lambda e: e.record_index)
    assert [e.record_index for e in entries] == [1, 7, 9]
    assert report.dlq_count == 3 == len(dlq)
    assert len({e.id for e in entries}) == 3
    for e in entries:
        assert isinstance(e, DeadLetter)
        assert isinstance(e.id, str) and e.id
        assert e.run_id == report.run_id
        assert e.job_id is None
        assert e.record_id == f"rec-{e.record_index}"
        assert e.batch_index == e.record_index // 5
        assert e.stage == "enrich"
        assert e.payload == records[e.record_index] and e.payload_encoding == "json"
        assert e.record() == records[e.record_index]
        assert e.traceback and "Traceback" in e.traceback and e.error_type in e.traceback
        assert e.first_failed_at and e.last_failed_at
        assert datetime.fromisoformat(e.first_failed_at) <= datetime.fromisoformat(e.last_failed_at)
        assert datetime.fromisoformat(e.first_failed_at).tzinfo is not None
        assert e.attempts and e.attempts[-1].delay_s is None
        json.loads(e.to_json())
        assert DeadLetter.from_dict(e.to_dict()) == e
    assert [(e.error_class, e.error_type, e.error_message, len(e.attempts)) for e in entries] == [
        ("permanent", "PermanentErr", "bad value 1", 1),
        ("permanent", "PermanentErr", "bad value 7", 1),
        ("recoverable", "RecoverableErr", "flaky", 2),
    ]
    assert [d.to_dict() for d in report.dead_letters] == [e.to_dict() for e in entries]


class FailingDLQ(MemoryDLQ):
    """A queue whose second send fails, as a backend that went down would."""

    def __init__(self) -> None:
        super().__init__()
        self.sends = 0

    def send(self, entries: Any) -> None:
        self.sends += 1
        if self.sends == 2:
            raise batchguard.DLQError("backend down")
        super().send(entries)


@both
@each_concurrency
def test_a_dlq_that_cannot_store_stops_the_run_with_its_error(engine: str, concurrency: int) -> None:
    # An entry counts as dead-lettered only once send() returned: a run that cannot store its
    # dead letters must not report them as stored.
    dlq = FailingDLQ()
    plan = FailurePlan({(r, 1): "permanent" for r in range(0, 1000, 10)}, pause=0.0005)
    with pytest.raises(batchguard.DLQError, match="backend down"):
        run(range(1000), plan, engine=engine, concurrency=concurrency, batch_size=10, dlq=dlq)
    stored = {e.record_index for e in dlq.list()}
    assert 0 in stored and stored <= set(plan.raised)
    assert plan.call_count < 100
    if concurrency == 1:
        assert stored == {0}


@both
def test_dlq_url_receives_the_entries(engine: str, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/dead.db"
    report = run(range(10), FailurePlan({(3, 1): "permanent"}), engine=engine, dlq=url)
    queue = open_dlq(url)
    try:
        [entry] = queue.list()
        assert (entry.record_index, entry.run_id) == (3, report.run_id)
        assert report.dlq_count == 1
    finally:
        queue.close()


@both
def test_a_record_json_cannot_hold_is_stored_as_repr_with_a_warning(engine: str) -> None:
    records = [{"when": Decimal("1.5")}, {"x": float("nan")}, {"fine": 1}]
    dlq = MemoryDLQ()
    with pytest.warns(BatchguardWarning, match="repr") as caught:
        run(records, _fail_all, engine=engine, dlq=dlq)
    assert len([w for w in caught if issubclass(w.category, BatchguardWarning)]) == 1, "warn once per run"
    entries = sorted(dlq.list(), key=lambda e: e.record_index)
    assert [e.payload_encoding for e in entries] == ["repr", "repr", "json"]
    assert entries[0].payload == repr(records[0])
    assert entries[2].payload == {"fine": 1}
    with pytest.raises(ValueError, match="repr"):
        entries[0].record()


def _fail_all(record: Any) -> Any:
    raise PermanentErr(f"cannot handle {record!r}")


@both
def test_a_record_json_cannot_hold_warns_when_read_from_the_report_without_a_dlq(engine: str) -> None:
    report = run([{1, 2}], _fail_all, engine=engine)
    with pytest.warns(BatchguardWarning):
        [entry] = report.dead_letters
    assert entry.payload_encoding == "repr" and entry.payload == repr({1, 2})


@both
def test_pickle_payloads_keep_records_replayable(engine: str) -> None:
    records = [Decimal("1.5"), {"fine": 1}]
    dlq = MemoryDLQ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(records, _fail_all, engine=engine, dlq=dlq, pickle_payloads=True)
    entries = sorted(dlq.list(), key=lambda e: e.record_index)
    assert [e.payload_encoding for e in entries] == ["pickle", "json"]
    assert isinstance(entries[0].payload, str)
    assert entries[0].record(allow_pickle=True) == Decimal("1.5")
    json.loads(entries[0].to_json())


@both
@each_concurrency
def test_tracebacks_are_kept_for_the_first_100_failures_only_without_a_dlq(engine: str, concurrency: int) -> None:
    report = run(range(200), _fail_all, engine=engine, concurrency=concurrency, batch_size=50)
    letters = report.dead_letters
    assert len(letters) == 200
    with_traceback = [d for d in letters if d.traceback is not None]
    assert len(with_traceback) == 100
    assert all("PermanentErr" in d.traceback for d in with_traceback)
    assert all(d.error_message.startswith("cannot handle") for d in letters)
    if concurrency == 1:
        assert letters[0].traceback and "_fail_all" in letters[0].traceback
        assert letters[99].traceback is not None
        assert letters[100].traceback is None and letters[150].traceback is None
        assert letters[150].error_type == "PermanentErr"


@both
def test_tracebacks_are_kept_for_every_entry_with_a_dlq(engine: str) -> None:
    dlq = MemoryDLQ()
    run(range(150), _fail_all, engine=engine, dlq=dlq, batch_size=50)
    assert len(dlq) == 150
    assert all(e.traceback and "_fail_all" in e.traceback for e in dlq.list())


# --------------------------------------------------------------------------- ids and the report


@both
def test_id_of_gives_the_record_id(engine: str) -> None:
    records = [{"key": f"k{i}"} for i in range(4)]
    report = run(records, _fail_all, engine=engine, id_of=lambda r: r["key"])
    assert [e.record_id for e in report.errors] == ["k0", "k1", "k2", "k3"]
    assert [d.record_id for d in report.dead_letters] == ["k0", "k1", "k2", "k3"]


@both
def test_default_record_id_is_entity_id_then_id_then_the_index(engine: str) -> None:
    records = [{"entity_id": "e1", "id": "x"}, {"id": 7}, {"entity_id": None, "id": 3}, {"other": 1},
               "plain", 42, {"id": None}]
    report = run(records, _fail_all, engine=engine)
    assert [e.record_id for e in report.errors] == ["e1", 7, 3, 3, 4, 5, 6]


@both
def test_an_id_of_that_raises_falls_back_to_the_index(engine: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="batchguard")
    report = run([{"key": "a"}, {}], _fail_all, engine=engine, id_of=lambda r: r["key"])
    assert [e.record_id for e in report.errors] == ["a", 1]
    assert any("id_of" in r.getMessage() for r in caplog.records)


def _mixed(record: int) -> int:
    if record in (1, 2, 3):
        raise ValueError(f"bad {record}")
    if record == 4:
        raise KeyError("missing")
    if record == 7:
        raise TimeoutError("slow")
    return record


@both
def test_report_fields(engine: str) -> None:
    report = run(range(20), _mixed, engine=engine, batch_size=5, classifier=Classifier.default(),
                 retry=RetryPolicy(max_attempts=3, base_delay=0.001, jitter="none"))
    assert report.status == "partial_success"
    assert (report.total, report.success_count, report.failure_count, report.pending_count) == (20, 15, 5, 0)
    assert report.errors_by_type == {"ValueError": 3, "KeyError": 1, "TimeoutError": 1}
    assert next(iter(report.errors_by_type)) == "ValueError", "most common first"
    assert report.most_common_error == "ValueError"
    assert report.retry_count == 2
    assert report.dlq_count == 5
    assert report.success_rate == 0.75
    assert report.duration_s >= 0 and report.throughput > 0
    assert report.batches == sorted(report.batches, key=lambda b: b.batch_index)
    assert all(isinstance(b, BatchStats) for b in report.batches)
    assert [(b.batch_index, b.size, b.succeeded, b.failed, b.retries, b.pending) for b in report.batches] == [
        (0, 5, 1, 4, 0, 0), (1, 5, 4, 1, 2, 0), (2, 5, 5, 0, 0, 0), (3, 5, 5, 0, 0, 0)]
    assert all(b.duration_s >= 0 for b in report.batches)
    assert all(isinstance(e, RecordError) for e in report.errors)
    assert [(e.record_index, e.error_type, e.error_class, e.attempts, e.stage, e.batch_index)
            for e in report.errors] == [
        (1, "ValueError", "permanent", 1, "process", 0), (2, "ValueError", "permanent", 1, "process", 0),
        (3, "ValueError", "permanent", 1, "process", 0), (4, "KeyError", "permanent", 1, "process", 0),
        (7, "TimeoutError", "recoverable", 3, "process", 1)]
    assert report.errors[0].error_message == "bad 1"
    assert report.failed == [1, 2, 3, 4, 7]
    assert report.job_id is None and report.run_id.startswith("run-")

    text = report.summary()
    assert text == str(report)
    for expected in ("BATCH COMPLETE (Partial Success)", "Total records: 20", "15 (75.0%)", "5 (25.0%)",
                     "ValueError: 3", "KeyError: 1", "Retries:       2", report.run_id):
        assert expected in text, expected

    data = report.to_dict()
    json.dumps(data)
    assert (data["status"], data["total"], data["success_count"], data["failure_count"]) == (
        "partial_success", 20, 15, 5)
    assert data["errors_by_type"] == report.errors_by_type and len(data["errors"]) == 5
    assert len(data["batches"]) == 4 and "successful" not in data
    assert report.to_dict(include_values=True)["successful"] == report.successful
    json.dumps(report.to_dict(include_values=True))


@both
@pytest.mark.parametrize(("make_fn", "headline"), [
    (lambda: (lambda r: r), "BATCH COMPLETE"),
    (lambda: _fail_all, "BATCH FAILED"),
    (lambda: FailurePlan({(0, 1): "fatal"}), "BATCH ABORTED"),
])
def test_summary_headline_follows_the_status(engine: str, make_fn: Any, headline: str) -> None:
    report = run(range(3), make_fn(), engine=engine, success_threshold=0.5)
    text = report.summary()
    assert text.splitlines()[0] == headline
    if report.stopped_reason:
        assert "Stopped early: fatal" in text


class Doubler:
    def __call__(self, record: int) -> int:
        return record * 2

    def method(self, record: int) -> int:
        return record * 2


@both
@each_concurrency
@pytest.mark.parametrize(("fn", "records", "expected", "errors"), [
    (int, ["1", "x", "3"], [1, 3], ["ValueError"]),
    (str.upper, ["a", "b"], ["A", "B"], []),
    (functools.partial(pow, 2), [1, 2, 3], [2, 4, 8], []),
    (Doubler(), [1, 2], [2, 4], []),
    (Doubler().method, [1, 2], [2, 4], []),
    (operator.itemgetter("a"), [{"a": 1}, {}], [1], ["KeyError"]),
    (len, [[1], "ab", 3], [1, 2], ["TypeError"]),
    (divmod.__call__, [(7, 2)], [], ["TypeError"]),
], ids=["type", "method-descriptor", "partial", "callable-object", "bound-method", "itemgetter",
        "builtin", "method-wrapper"])
def test_any_kind_of_callable_works_as_fn(engine: str, concurrency: int, fn: Any, records: list[Any],
                                          expected: list[Any], errors: list[str]) -> None:
    report = batchguard.run_batches(records, fn, engine=engine, concurrency=concurrency)
    assert report.successful == expected
    assert [e.error_type for e in report.errors] == errors


@both
def test_successful_values_are_the_very_objects_fn_returned(engine: str) -> None:
    returned: list[Any] = []

    def fn(record: int) -> Any:
        value = object()
        returned.append(value)
        return value

    report = batchguard.run_batches(range(5), fn, engine=engine)
    assert all(a is b for a, b in zip(report.successful, returned, strict=True))


@both
def test_successful_values_may_be_anything(engine: str) -> None:
    values = [None, 0, "", [], {"a": 1}, object]
    report = run(range(6), lambda r: values[r], engine=engine)
    assert report.successful == values


@both
@each_concurrency
def test_a_large_failure_heavy_run_conserves_every_record(engine: str, concurrency: int) -> None:
    def fn(record: int) -> int:
        if record % 2:
            raise ValueError(record)
        return record

    report = run(range(3000), fn, engine=engine, concurrency=concurrency, batch_size=100)
    assert (report.success_count, report.failure_count) == (1500, 1500)
    assert report.successful == list(range(0, 3000, 2))
    assert report.failed == list(range(1, 3000, 2))
    assert_conservation(report)
    assert math.isclose(report.success_rate, 0.5)
