"""Issue 7, defects 21 and 7: every flag is type-checked and every number range-checked, with a
message naming the argument, before any record is read or any policy reaches an engine.

``bool`` means bool (``pickle_payloads="no"`` must not turn pickling on); an int must fit what the
native engine takes (no bare OverflowError, no allocation that aborts the process); a duration
is at most ``MAX_DURATION_S`` (no PanicException or hang from ``timeout=1e20``).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

import batchguard
from batchguard import CircuitBreaker, Classifier, MemoryDLQ, RateLimit, RetryPolicy
from batchguard.errors import ConfigError, ConfigTypeError
from batchguard.policies import MAX_DURATION_S, MIN_RATE_PER_SECOND
from helpers_contract import ENGINES, Spy

ONE_YEAR = 365 * 24 * 3600


async def _async_identity(record: Any) -> Any:
    return record


def _check_message(error: BaseException, argument: str, mentions: tuple[str, ...]) -> None:
    message = str(error)
    assert argument in message, f"the message does not name {argument!r}: {message}"
    for text in mentions:
        assert text in message, f"the message does not say {text!r}: {message}"


# One row per bad value: the keyword arguments, the error type, the argument the message must
# name, and what else it must say (the bound, the value).
RUN_PROBLEMS: list[Any] = [
    # flags: bool means bool
    pytest.param({"pickle_payloads": "no"}, ConfigTypeError, "pickle_payloads", ("'no'",), id="pickle-str-no"),
    pytest.param({"pickle_payloads": 1}, ConfigTypeError, "pickle_payloads", (), id="pickle-int-1"),
    pytest.param({"pickle_payloads": None}, ConfigTypeError, "pickle_payloads", (), id="pickle-none"),
    pytest.param({"bulk": "yes"}, ConfigTypeError, "bulk", (), id="bulk-str"),
    pytest.param({"bulk": 1}, ConfigTypeError, "bulk", (), id="bulk-int-1"),
    pytest.param({"bulk": None}, ConfigTypeError, "bulk", (), id="bulk-none"),
    # batch_size
    pytest.param({"batch_size": 2**64}, ConfigError, "batch_size", (str(sys.maxsize), str(2**64)),
                 id="batch_size-2**64"),
    pytest.param({"batch_size": sys.maxsize + 1}, ConfigError, "batch_size", (str(sys.maxsize),),
                 id="batch_size-maxsize-plus-1"),
    pytest.param({"batch_size": 0}, ConfigError, "batch_size", (), id="batch_size-0"),
    pytest.param({"batch_size": 10.0}, ConfigTypeError, "batch_size", (), id="batch_size-float"),
    pytest.param({"batch_size": "big"}, ConfigTypeError, "batch_size", ("auto",), id="batch_size-str"),
    pytest.param({"batch_size": False}, ConfigTypeError, "batch_size", (), id="batch_size-bool"),
    # concurrency
    pytest.param({"concurrency": 2**64}, ConfigError, "concurrency", ("1024",), id="concurrency-2**64"),
    pytest.param({"concurrency": 1025}, ConfigError, "concurrency", ("1024",), id="concurrency-1025-sync"),
    pytest.param({"concurrency": 2**17, "fn": _async_identity}, ConfigError, "concurrency", ("65536",),
                 id="concurrency-2**17-async"),
    pytest.param({"concurrency": True}, ConfigTypeError, "concurrency", (), id="concurrency-bool"),
    pytest.param({"concurrency": None}, ConfigTypeError, "concurrency", (), id="concurrency-none"),
    # max_failures
    pytest.param({"max_failures": 2**64}, ConfigError, "max_failures", (str(2**63 - 1),),
                 id="max_failures-2**64"),
    pytest.param({"max_failures": float("nan")}, ConfigError, "max_failures", (), id="max_failures-nan"),
    pytest.param({"max_failures": float("inf")}, ConfigError, "max_failures", (), id="max_failures-inf"),
    pytest.param({"max_failures": "10"}, ConfigTypeError, "max_failures", (), id="max_failures-str"),
    # success_threshold
    pytest.param({"success_threshold": True}, ConfigTypeError, "success_threshold", (), id="threshold-bool"),
    pytest.param({"success_threshold": 10**400}, ConfigError, "success_threshold", (), id="threshold-huge-int"),
    pytest.param({"success_threshold": float("inf")}, ConfigError, "success_threshold", (), id="threshold-inf"),
    # timeout
    pytest.param({"timeout": 1e20}, ConfigError, "timeout", (str(ONE_YEAR), "1e+20"), id="timeout-1e20"),
    pytest.param({"timeout": ONE_YEAR + 1}, ConfigError, "timeout", (str(ONE_YEAR),), id="timeout-year-plus-1"),
    pytest.param({"timeout": 10**400}, ConfigError, "timeout", (str(ONE_YEAR),), id="timeout-huge-int"),
    pytest.param({"timeout": float("-inf")}, ConfigError, "timeout", (), id="timeout-minus-inf"),
    pytest.param({"timeout": float("nan")}, ConfigError, "timeout", (), id="timeout-nan"),
    pytest.param({"timeout": 0}, ConfigError, "timeout", (), id="timeout-zero"),
    pytest.param({"timeout": "1"}, ConfigTypeError, "timeout", (), id="timeout-str"),
    pytest.param({"timeout": True}, ConfigTypeError, "timeout", (), id="timeout-bool"),
    # delay_between_batches
    pytest.param({"delay_between_batches": 1e300}, ConfigError, "delay_between_batches",
                 (str(ONE_YEAR), "1e+300"), id="delay-1e300"),
    pytest.param({"delay_between_batches": float("inf")}, ConfigError, "delay_between_batches",
                 (str(ONE_YEAR),), id="delay-inf"),
    pytest.param({"delay_between_batches": float("nan")}, ConfigError, "delay_between_batches", (),
                 id="delay-nan"),
    pytest.param({"delay_between_batches": -1}, ConfigError, "delay_between_batches", (), id="delay-negative"),
    pytest.param({"delay_between_batches": None}, ConfigTypeError, "delay_between_batches", (), id="delay-none"),
    pytest.param({"delay_between_batches": "1"}, ConfigTypeError, "delay_between_batches", (), id="delay-str"),
    # stage, engine
    pytest.param({"stage": None}, ConfigTypeError, "stage", (), id="stage-none"),
    pytest.param({"stage": b"load"}, ConfigTypeError, "stage", (), id="stage-bytes"),
    pytest.param({"engine": None}, ConfigTypeError, "engine", ("'native'", "'python'"), id="engine-none"),
    pytest.param({"engine": ["native"]}, ConfigTypeError, "engine", (), id="engine-list"),
    pytest.param({"engine": "rust"}, ConfigError, "engine", ("'native'", "'python'"), id="engine-unknown"),
    # callables and policies
    pytest.param({"key_of": "id"}, ConfigTypeError, "key_of", (), id="key_of-str"),
    pytest.param({"id_of": 3}, ConfigTypeError, "id_of", (), id="id_of-int"),
    pytest.param({"on_progress": True}, ConfigTypeError, "on_progress", (), id="on_progress-bool"),
    pytest.param({"classifier": 3}, ConfigTypeError, "classifier", (), id="classifier-int"),
    pytest.param({"retry": 3}, ConfigTypeError, "retry", (), id="retry-int"),
    pytest.param({"breaker": True}, ConfigTypeError, "breaker", (), id="breaker-bool"),
    pytest.param({"rate_limit": 10}, ConfigTypeError, "rate_limit", (), id="rate_limit-number"),
    pytest.param({"records": None}, ConfigTypeError, "records", (), id="records-none"),
    pytest.param({"fn": None}, ConfigTypeError, "fn", (), id="fn-none"),
]

# run_batches only: the job arguments.
JOB_PROBLEMS: list[Any] = [
    pytest.param({"job": "j", "force": "no"}, ConfigTypeError, "force", ("'no'",), id="force-str-no"),
    pytest.param({"job": "j", "force": 1}, ConfigTypeError, "force", (), id="force-int-1"),
    pytest.param({"job": "j", "force": None}, ConfigTypeError, "force", (), id="force-none"),
    pytest.param({"force": True}, ConfigError, "force", ("job",), id="force-without-job"),
    pytest.param({"job": b"j"}, ConfigTypeError, "job", (), id="job-bytes"),
]


def _run(kwargs: dict[str, Any], engine: str, call: Callable[..., Any]) -> tuple[BaseException, Spy]:
    spy = Spy()
    kwargs = {"engine": engine, **kwargs}
    records = kwargs.pop("records", spy.records())
    fn = kwargs.pop("fn", spy)
    with pytest.raises(ConfigError) as info:
        call(records, fn, **kwargs)
    assert (spy.calls, spy.pulled) == (0, 0), "a record was read or run before the bad argument was reported"
    return info.value, spy


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("kwargs", "error", "argument", "mentions"), RUN_PROBLEMS + JOB_PROBLEMS)
def test_run_batches_refuses_a_bad_argument_naming_it(engine: str, kwargs: dict[str, Any],
                                                      error: type[ConfigError], argument: str,
                                                      mentions: tuple[str, ...], tmp_path: Any) -> None:
    if "job" in kwargs:
        kwargs = {**kwargs, "store": f"sqlite:///{tmp_path}/jobs.db"}
    raised, _ = _run(kwargs, engine, batchguard.run_batches)
    assert isinstance(raised, error), f"{type(raised).__name__} is not a {error.__name__}: {raised}"
    _check_message(raised, argument, mentions)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("kwargs", "error", "argument", "mentions"), RUN_PROBLEMS)
def test_arun_batches_refuses_a_bad_argument_naming_it(engine: str, kwargs: dict[str, Any],
                                                       error: type[ConfigError], argument: str,
                                                       mentions: tuple[str, ...]) -> None:
    def call(records: Any, fn: Any, **options: Any) -> Any:
        return asyncio.run(batchguard.arun_batches(records, fn, **options))

    raised, _ = _run(kwargs, engine, call)
    assert isinstance(raised, error), f"{type(raised).__name__} is not a {error.__name__}: {raised}"
    _check_message(raised, argument, mentions)


REPLAY_PROBLEMS: list[Any] = [
    pytest.param({"batch_size": 2**64}, ConfigError, "batch_size", id="batch_size-2**64"),
    pytest.param({"batch_size": "auto"}, ConfigError, "batch_size", id="batch_size-auto"),
    pytest.param({"concurrency": 2**64}, ConfigError, "concurrency", id="concurrency-2**64"),
    pytest.param({"concurrency": 1.5}, ConfigTypeError, "concurrency", id="concurrency-float"),
    pytest.param({"engine": None}, ConfigTypeError, "engine", id="engine-none"),
    pytest.param({"on_progress": "print"}, ConfigTypeError, "on_progress", id="on_progress-str"),
    pytest.param({"retry": RetryPolicy}, ConfigTypeError, "retry", id="retry-class"),
    pytest.param({"run_id": 5}, ConfigTypeError, "run_id", id="filter-run_id-int"),
    pytest.param({"stage": b"process"}, ConfigTypeError, "stage", id="filter-stage-bytes"),
    pytest.param({"error_class": "bogus"}, ConfigError, "error_class", id="filter-error_class-unknown"),
    pytest.param({"error_class": "Permanent"}, ConfigError, "error_class", id="filter-error_class-wrong-case"),
]


@pytest.mark.parametrize(("kwargs", "error", "argument"), REPLAY_PROBLEMS)
def test_replay_refuses_a_bad_argument_and_leaves_the_queue_alone(kwargs: dict[str, Any],
                                                                  error: type[ConfigError],
                                                                  argument: str) -> None:
    queue = MemoryDLQ()
    batchguard.run_batches([0, 1], lambda r: 1 // r, dlq=queue, retry=RetryPolicy(max_attempts=1))
    before = queue.list()
    spy = Spy()
    with pytest.raises(error) as info:
        batchguard.replay(queue, spy, **kwargs)
    assert spy.calls == 0
    assert queue.list() == before
    _check_message(info.value, argument, ())


def test_pickle_payloads_no_does_not_pickle() -> None:
    # The original report: "no" was truthy, so an unrepresentable record was pickled.
    queue = MemoryDLQ()
    with pytest.raises(ConfigTypeError, match="pickle_payloads"):
        batchguard.run_batches([object()], lambda r: 1 // 0, dlq=queue, pickle_payloads="no",
                               retry=RetryPolicy(max_attempts=1))
    assert queue.count() == 0


# --------------------------------------------------------------------------- durations


def test_max_duration_is_one_year_and_exported() -> None:
    assert MAX_DURATION_S == ONE_YEAR
    assert batchguard.MAX_DURATION_S == ONE_YEAR
    assert MIN_RATE_PER_SECOND == pytest.approx(1 / ONE_YEAR)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_infinite_timeout_means_no_timeout(engine: str, concurrency: int) -> None:
    # Documented choice: inf is the usual Python spelling of "no limit", so it is None, not an
    # error (and never a PanicException from a float-to-Duration conversion).
    report = batchguard.run_batches(range(5), lambda r: r, timeout=float("inf"), engine=engine,
                                    concurrency=concurrency)
    assert report.status == "complete"
    assert report.successful == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("engine", ENGINES)
def test_infinite_timeout_is_no_timeout_for_async_callbacks(engine: str) -> None:
    report = asyncio.run(batchguard.arun_batches(range(3), _async_identity, timeout=math.inf,
                                                 engine=engine))
    assert report.successful == [0, 1, 2]


@pytest.mark.parametrize("engine", ENGINES)
def test_durations_at_the_bound_are_accepted(engine: str) -> None:
    # The bound itself is valid (no off-by-one); nothing waits that long in this run.
    report = batchguard.run_batches(
        range(3), lambda r: r, engine=engine, timeout=ONE_YEAR, delay_between_batches=0,
        retry=RetryPolicy(base_delay=ONE_YEAR, max_delay=ONE_YEAR),
        breaker=CircuitBreaker(open_duration=ONE_YEAR),
        rate_limit=RateLimit(per_second=MIN_RATE_PER_SECOND, burst=3))
    assert report.successful == [0, 1, 2]


POLICY_PROBLEMS: list[Any] = [
    pytest.param(lambda: RetryPolicy(base_delay=1e300, max_delay=1e300), ConfigError, "RetryPolicy.base_delay",
                 (str(ONE_YEAR), "1e+300"), id="base_delay-1e300"),
    pytest.param(lambda: RetryPolicy(max_delay=1e300), ConfigError, "RetryPolicy.max_delay",
                 (str(ONE_YEAR), "1e+300"), id="max_delay-1e300"),
    pytest.param(lambda: RetryPolicy(max_delay=ONE_YEAR + 1), ConfigError, "RetryPolicy.max_delay",
                 (str(ONE_YEAR),), id="max_delay-year-plus-1"),
    pytest.param(lambda: RetryPolicy(max_delay=10**400), ConfigError, "RetryPolicy.max_delay", (),
                 id="max_delay-huge-int"),
    pytest.param(lambda: RetryPolicy(multiplier=10**400), ConfigError, "RetryPolicy.multiplier", (),
                 id="multiplier-huge-int"),
    pytest.param(lambda: RetryPolicy(max_attempts=2**40), ConfigError, "RetryPolicy.max_attempts",
                 (str(2**32 - 1),), id="max_attempts-2**40"),
    pytest.param(lambda: RetryPolicy(max_attempts=True), ConfigTypeError, "RetryPolicy.max_attempts", (),
                 id="max_attempts-bool"),
    pytest.param(lambda: RetryPolicy(jitter=None), ConfigTypeError, "RetryPolicy.jitter", (), id="jitter-none"),
    pytest.param(lambda: RetryPolicy(seed=True), ConfigTypeError, "RetryPolicy.seed", (), id="seed-bool"),
    pytest.param(lambda: RateLimit(per_second=1e-300), ConfigError, "RateLimit.per_second",
                 (str(ONE_YEAR), "1e-300"), id="per_second-1e-300"),
    pytest.param(lambda: RateLimit(per_second=float("inf")), ConfigError, "RateLimit.per_second", (),
                 id="per_second-inf"),
    pytest.param(lambda: RateLimit(per_second=True), ConfigTypeError, "RateLimit.per_second", (),
                 id="per_second-bool"),
    pytest.param(lambda: RateLimit(per_second=1, burst=10**400), ConfigError, "RateLimit.burst",
                 (str(2**32 - 1),), id="burst-huge"),
    pytest.param(lambda: CircuitBreaker(open_duration=1e300), ConfigError, "CircuitBreaker.open_duration",
                 (str(ONE_YEAR), "1e+300"), id="open_duration-1e300"),
    pytest.param(lambda: CircuitBreaker(open_duration=float("inf")), ConfigError,
                 "CircuitBreaker.open_duration", (), id="open_duration-inf"),
    pytest.param(lambda: CircuitBreaker(window=2**40, minimum_calls=1), ConfigError, "CircuitBreaker.window",
                 ("1000000",), id="window-2**40"),
    pytest.param(lambda: CircuitBreaker(half_open_calls=2**40), ConfigError, "CircuitBreaker.half_open_calls",
                 (str(2**32 - 1),), id="half_open_calls-2**40"),
    pytest.param(lambda: CircuitBreaker(failure_rate_threshold=True), ConfigTypeError,
                 "CircuitBreaker.failure_rate_threshold", (), id="threshold-bool"),
    pytest.param(lambda: CircuitBreaker(abort_failure_rate=10**400), ConfigError,
                 "CircuitBreaker.abort_failure_rate", (), id="abort-rate-huge-int"),
    pytest.param(lambda: CircuitBreaker(counts="transient"), ConfigTypeError, "CircuitBreaker.counts", (),
                 id="counts-a-str"),
    pytest.param(lambda: Classifier(http_status="no"), ConfigTypeError, "Classifier.http_status", ("'no'",),
                 id="http_status-str-no"),
    pytest.param(lambda: Classifier(http_status=0), ConfigTypeError, "Classifier.http_status", (),
                 id="http_status-int-0"),
]


@pytest.mark.parametrize(("build", "error", "argument", "mentions"), POLICY_PROBLEMS)
def test_policy_refuses_a_bad_value_when_built(build: Callable[[], Any], error: type[ConfigError],
                                               argument: str, mentions: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert isinstance(info.value, error), f"{type(info.value).__name__} is not a {error.__name__}: {info.value}"
    _check_message(info.value, argument, mentions)


def test_duration_message_names_the_bound_constant() -> None:
    with pytest.raises(ConfigError, match=re.escape("MAX_DURATION_S")):
        RetryPolicy(max_delay=1e12)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_largest_batch_size_is_accepted_and_reads_lazily(engine: str) -> None:
    # In a child process: a regression here would abort the process on an allocation.
    code = textwrap.dedent(f"""
        import sys, batchguard
        report = batchguard.run_batches(iter(range(5)), lambda r: r, batch_size=sys.maxsize,
                                        engine={engine!r}, concurrency=2)
        print(report.status, report.successful)
    """)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "RUST_BACKTRACE": "0"})
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "complete [0, 1, 2, 3, 4]"


# --------------------------------------------------------------------------- stores


STORE_PROBLEMS: list[Any] = [
    pytest.param(lambda d: batchguard.dlq.SqliteDLQ(d / "q.db", timeout=1e300), ConfigError,
                 "SqliteDLQ timeout", id="sqlite-dlq-timeout-1e300"),
    pytest.param(lambda d: batchguard.dlq.SqliteDLQ(d / "q.db", timeout=-1), ConfigError,
                 "SqliteDLQ timeout", id="sqlite-dlq-timeout-negative"),
    pytest.param(lambda d: batchguard.dlq.SqliteDLQ(d / "q.db", timeout="30"), ConfigTypeError,
                 "SqliteDLQ timeout", id="sqlite-dlq-timeout-str"),
    pytest.param(lambda d: batchguard.SqliteJobStore(d / "jobs.db", timeout=math.inf), ConfigError,
                 "SqliteJobStore timeout", id="sqlite-store-timeout-inf"),
    # Checked before connecting: nothing listens on port 1.
    pytest.param(lambda d: batchguard.dlq.RedisDLQ("redis://127.0.0.1:1/0", timeout=1e12), ConfigError,
                 "RedisDLQ timeout", id="redis-timeout-1e12"),
    pytest.param(lambda d: batchguard.dlq.RedisDLQ("redis://127.0.0.1:1/0", connect_timeout=0), ConfigError,
                 "RedisDLQ connect_timeout", id="redis-connect-timeout-0"),
    pytest.param(lambda d: batchguard.dlq.PostgresDLQ("postgresql://127.0.0.1:1/x", connect_timeout=10**12),
                 ConfigError, "PostgresDLQ connect_timeout", id="postgres-connect-timeout-huge"),
    pytest.param(lambda d: batchguard.dlq.PostgresDLQ("postgresql://127.0.0.1:1/x", connect_timeout=2.5),
                 ConfigTypeError, "PostgresDLQ connect_timeout", id="postgres-connect-timeout-float"),
    pytest.param(lambda d: batchguard.PostgresJobStore("postgresql://127.0.0.1:1/x", connect_timeout=0),
                 ConfigError, "PostgresJobStore connect_timeout", id="postgres-store-connect-timeout-0"),
]


@pytest.mark.parametrize(("build", "error", "argument"), STORE_PROBLEMS)
def test_a_store_refuses_a_bad_timeout_before_it_opens_anything(build: Callable[[Any], Any],
                                                                 error: type[ConfigError], argument: str,
                                                                 tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path)
    assert isinstance(info.value, error), f"{type(info.value).__name__} is not a {error.__name__}: {info.value}"
    _check_message(info.value, argument, ())
    assert list(tmp_path.iterdir()) == [], "a file was created before the bad argument was reported"


def test_the_sync_concurrency_cap_is_the_native_pools() -> None:
    from batchguard import _native
    from batchguard._run.plan import MAX_SYNC_CONCURRENCY, make_plan

    assert MAX_SYNC_CONCURRENCY == _native.MAX_CONCURRENCY
    assert make_plan([1], abs, concurrency=_native.MAX_CONCURRENCY).config.concurrency == _native.MAX_CONCURRENCY
    with pytest.raises(ConfigError, match=f"concurrency must be <= {_native.MAX_CONCURRENCY}"):
        make_plan([1], abs, concurrency=_native.MAX_CONCURRENCY + 1)
