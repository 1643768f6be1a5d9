"""Finite but huge durations never panic and never hang the engine (issue 7 defect 7).

``api`` rejects most of these values with a ConfigError (test_argument_bounds.py). These tests
go around that validation, as a value could come from a subclass, an old pickled policy or a
future code path, to prove the engines themselves are safe: every float-to-duration
conversion saturates, a wait of 1e300 s is an ordinary wait that Ctrl-C ends, and an
exception's ``retry_after`` is capped (at ``max_delay`` by default). Each run either finishes
or, when it must wait "forever", is interrupted by a real SIGINT after a moment: never a
PanicException, never a hang.
"""

from __future__ import annotations

import _thread
import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest

import batchguard
from batchguard import CircuitBreaker, ErrorClass, RetryPolicy
from batchguard._run.execute import execute
from batchguard._run.plan import make_plan
from helpers_contract import CLASSIFIER, ENGINES, RecoverableErr, RetryAfterErr

pytestmark = pytest.mark.timeout(30)

# concurrency 1 (inline driver), 4 (threaded driver), and an async fn at 4.
MODES = ("inline", "threaded", "async")


def _identity(record: int) -> int:
    return record


async def _async_identity(record: int) -> int:
    return record


def _plan(records: Any, fn: Callable[[Any], Any], mode: str, engine: str, **kwargs: Any) -> Any:
    if mode == "async":
        sync_fn = fn

        async def fn(record: Any) -> Any:
            return sync_fn(record)
    kwargs.setdefault("classifier", CLASSIFIER)
    return make_plan(records, fn, batch_size=kwargs.pop("batch_size", 2),
                     concurrency=1 if mode == "inline" else 4,
                     retry=kwargs.pop("retry", None), classifier=kwargs.pop("classifier"),
                     breaker=kwargs.pop("breaker", None), dlq=None, id_of=None, on_progress=None,
                     success_threshold=None, max_failures=None, stage="process", engine=engine,
                     pickle_payloads=False, **kwargs)


def _force(obj: Any, **fields: Any) -> Any:
    """A copy of a frozen policy or config with ``fields`` set, past its validation."""
    copy = dataclasses.replace(obj)
    for name, value in fields.items():
        object.__setattr__(copy, name, value)
    return copy


def _interrupted_after(seconds: float, call: Callable[[], Any]) -> Any:
    """Run ``call``; after ``seconds`` (if it is still running) deliver a real SIGINT to this,
    the main thread, as Ctrl-C does."""
    lock = threading.Lock()
    running = [True]

    def fire() -> None:
        with lock:
            if running[0]:
                _thread.interrupt_main()

    timer = threading.Timer(seconds, fire)
    timer.start()
    try:
        return call()
    finally:
        with lock:
            running[0] = False
        timer.cancel()


both = pytest.mark.parametrize("engine", ENGINES)
each_mode = pytest.mark.parametrize("mode", MODES)


@both
@each_mode
@pytest.mark.parametrize("timeout", [float("inf"), 1e20, 1e300])
def test_a_huge_or_infinite_timeout_is_no_timeout(engine: str, mode: str, timeout: float) -> None:
    plan = _plan(range(6), _identity, mode, engine)
    plan = dataclasses.replace(plan, timeout=timeout, config=_force(plan.config, timeout=timeout))
    report = execute(plan)
    assert report.status == "complete"
    assert report.successful == list(range(6))


# Each of these makes the run wait about 1e300 seconds (or forever) at some point: the run
# must be waiting, interruptible, when SIGINT comes, and must have finished what came first.
def _long_delay_between_batches(plan: Any) -> Any:
    return dataclasses.replace(plan, config=_force(plan.config, delay_between_batches=1e300))


def _long_backoff(plan: Any) -> Any:
    retry = _force(RetryPolicy(max_attempts=2, jitter="none"), base_delay=1e300, max_delay=1e300)
    return dataclasses.replace(plan, config=dataclasses.replace(plan.config, retry=retry))


def _slow_rate(plan: Any) -> Any:
    return dataclasses.replace(plan, config=_force(plan.config, rate_per_second=1e-300))


def _tiny_rate(plan: Any) -> Any:
    # 1 / 5e-324 is inf: the next token is due at +inf.
    return dataclasses.replace(plan, config=_force(plan.config, rate_per_second=5e-324))


def _long_open_breaker(plan: Any) -> Any:
    breaker = _force(CircuitBreaker(window=2, minimum_calls=2, failure_rate_threshold=0.5),
                     open_duration=1e300)
    return dataclasses.replace(plan, config=dataclasses.replace(plan.config, breaker=breaker))


LONG_WAITS = {
    "delay_between_batches=1e300": _long_delay_between_batches,
    "base_delay=1e300": _long_backoff,
    "per_second=1e-300": _slow_rate,
    "per_second=5e-324": _tiny_rate,
    "open_duration=1e300": _long_open_breaker,
}


class FailsFirst:
    """Records 0 and 1 fail RECOVERABLE on their first attempt (they trip a breaker and start
    a backoff); every other attempt succeeds."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, record: int) -> int:
        first = record not in self.calls
        self.calls.append(record)
        if record < 2 and first:
            raise RecoverableErr(f"record {record} fails once")
        return record


@both
@each_mode
@pytest.mark.parametrize("setting", sorted(LONG_WAITS))
def test_a_wait_of_1e300_seconds_neither_panics_nor_ignores_ctrl_c(engine: str, mode: str, setting: str) -> None:
    fn = FailsFirst()
    plan = LONG_WAITS[setting](_plan(range(6), fn, mode, engine))
    with pytest.raises(KeyboardInterrupt):
        _interrupted_after(0.25, lambda: execute(plan))
    assert fn.calls, "nothing ran before the long wait"


@both
@each_mode
@pytest.mark.parametrize("retry_after", [1e12, 10**30, 1e308, 10**400, float("inf")],
                         ids=["1e12", "10**30", "1e308", "10**400", "inf"])
def test_a_huge_retry_after_is_capped_at_max_delay(engine: str, mode: str, retry_after: Any) -> None:
    """A server asking for 1e12 s (or 10**30) waits max_delay at most: the record is retried
    and succeeds within the run, and no PanicException ever reaches the caller."""
    seen: list[int] = []

    def fn(record: int) -> int:
        seen.append(record)
        if record == 1 and seen.count(1) == 1:
            raise RetryAfterErr("slow down", retry_after)
        return record

    retry = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, jitter="none")
    plan = _plan(range(4), fn, mode, engine, retry=retry)
    report = execute(plan)
    assert report.status == "complete", report.summary()
    assert report.successful == [0, 1, 2, 3]
    assert report.retry_count == 1


@both
@pytest.mark.parametrize("concurrency", [1, 4])
def test_huge_retry_after_on_a_real_run_batches_call(engine: str, concurrency: int) -> None:
    """The same through the public API, no validation bypassed: retry_after is the user's
    exception's attribute, the one input no constructor can check."""
    attempts: dict[int, int] = {}

    def fn(record: int) -> int:
        attempts[record] = attempts.get(record, 0) + 1
        if attempts[record] == 1:
            raise RetryAfterErr("come back much later", 10**30)
        return record

    report = batchguard.run_batches(
        range(3), fn, engine=engine, concurrency=concurrency, classifier=CLASSIFIER,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.02, jitter="none"))
    assert report.successful == [0, 1, 2]
    assert report.retry_count == 3


@both
def test_a_huge_breaker_window_does_not_allocate_it_up_front(engine: str) -> None:
    breaker = _force(CircuitBreaker(window=10, minimum_calls=5), window=10**15)
    plan = _plan(range(20), _identity, "threaded", engine)
    plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, breaker=breaker))
    assert execute(plan).successful == list(range(20))


def test_a_worker_that_panics_with_a_record_in_flight_fails_the_run_instead_of_hanging() -> None:
    from batchguard import MemoryDLQ, _native

    raised: set[int] = set()
    lock = threading.Lock()

    def fn(record: int) -> int:
        if record % 5 == 0:
            with lock:
                raised.add(record)
            raise ValueError(f"bad {record}")
        return record

    dlq = MemoryDLQ()
    _native._panic_in_worker_for_test(7)
    try:
        with pytest.raises(RuntimeError, match="worker thread panicked"):
            batchguard.run_batches(range(200), fn, concurrency=4, batch_size=10, dlq=dlq,
                                   retry=RetryPolicy(max_attempts=1))
    finally:
        _native._panic_in_worker_for_test(2**64 - 1)
    stored = {entry.record_index for entry in dlq.list()}
    assert stored == raised, "a dead-lettered record did not reach the DLQ"
    assert 7 not in stored


def test_async_classification_does_not_change_with_a_huge_retry_after() -> None:
    """retry_after is only read for records that will be retried: a PERMANENT failure with an
    absurd retry_after is dead-lettered after one try, on both engines alike."""

    async def fn(record: int) -> int:
        raise RetryAfterErr("no", 10**30)

    classifier = CLASSIFIER.with_rule(RetryAfterErr, ErrorClass.PERMANENT)
    for engine in ENGINES:
        report = asyncio.run(batchguard.arun_batches(range(3), fn, engine=engine, classifier=classifier))
        assert report.failure_count == 3 and report.retry_count == 0


@both
@each_mode
@pytest.mark.timeout(10)
def test_the_engines_refuse_a_zero_concurrency_they_are_given(engine: str, mode: str) -> None:
    """api rejects it; an engine handed it anyway must say so, not report a run in which no
    worker ever ran."""
    plan = _plan(range(5), _identity, mode, engine)
    plan = dataclasses.replace(plan, config=_force(plan.config, concurrency=0))
    with pytest.raises(batchguard.ConfigError, match="concurrency must be >= 1"):
        execute(plan)


@pytest.mark.timeout(10)
def test_the_native_engine_refuses_a_zero_batch_size_it_is_given() -> None:
    """A batch of 0 records never ends the input: the engine would read empty batches forever."""
    from batchguard import _native
    from batchguard._run.execute import recorder_for

    plan = _plan(range(5), _identity, "inline", "native")
    recorder = recorder_for(plan, None, None, None)
    config = _force(plan.config, batch_size=0)
    with pytest.raises(batchguard.ConfigError, match="batch_size must be >= 1"):
        _native.run(iter(range(5)), _identity, config, plan.classifier, recorder, None)
    with pytest.raises(batchguard.ConfigError, match="batch_size must be >= 1"):
        _native.AsyncRun(config, plan.classifier, recorder)


def test_a_huge_schedule_length_is_an_error_not_a_panic() -> None:
    from batchguard import _native

    with pytest.raises(batchguard.ConfigError, match="n must be <="):
        _native.backoff_schedule(3, 1.0, 2.0, 30.0, "none", 0, 0, 2**62)
