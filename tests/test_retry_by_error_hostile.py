"""Retry policies by error (issue 10 item 2) against hostile input: exception types made at run
time by the thousand (the per-type caches of both engines stay bounded), keys no failure can
ever reach (KeyboardInterrupt, SystemExit, GeneratorExit), predicates that stop the run, and
the odd corners of the mapping. Each test here failed before the fix it names.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard._classifier import MAX_CACHED_TYPES
from batchguard._retry_table import MAX_LOGGED_KINDS
from helpers_contract import ENGINES


def _alive_types(prefix: str) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, type) and o.__name__.startswith(prefix))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mapping", [False, True], ids=["one-policy", "by-error"])
def test_a_run_raising_ever_new_exception_types_keeps_a_bounded_number_alive(
        engine: str, mapping: bool, tmp_path: Path) -> None:
    """Each record raises an exception of a type made for it (what a library creating error
    classes per call, or per response schema, does). The classifier's and the policy table's
    per-type caches kept every type alive to the run's end: memory grew with the input."""
    n = 3 * MAX_CACHED_TYPES
    prefix = f"Dynamic{engine.title()}{mapping}"
    alive: list[int] = []

    def fn(record: int) -> Any:
        if record == n - 1:
            alive.append(_alive_types(prefix))
        raise type(f"{prefix}{record}", (ValueError,), {})(record)

    retry: Any = {TimeoutError: RetryPolicy(max_attempts=2)} if mapping else RetryPolicy()
    # A SQLite DLQ: it keeps the entries, not the exceptions (a MemoryDLQ or the report alone
    # would keep every dead record's error, and so its type, by design).
    report = batchguard.run_batches(range(n), fn, engine=engine, retry=retry, concurrency=1, batch_size=64,
                                    dlq=f"sqlite:///{tmp_path / 'dlq.db'}")
    assert report.failure_count == n
    assert alive and alive[0] <= MAX_CACHED_TYPES + 64 + 1, alive


@pytest.mark.parametrize("engine", ENGINES)
def test_a_predicate_raising_keyboard_interrupt_stops_the_run_as_ctrl_c_does(engine: str) -> None:
    """A predicate key that raises KeyboardInterrupt stops the run: the records before it are
    dead-lettered, the rest pending, and the KeyboardInterrupt propagates. The reference engine
    looked the policy up after counting the call finished, and the driver then counted it
    again: ``OverflowError: can't convert negative int to unsigned`` (in_flight -1)."""

    def stop_on_five(exc: BaseException) -> bool:
        if "5" in str(exc):
            raise KeyboardInterrupt("stop")
        return False

    def fn(record: int) -> Any:
        raise ValueError(str(record))

    dlq = batchguard.MemoryDLQ()
    with pytest.raises(KeyboardInterrupt, match="stop"):
        batchguard.run_batches(range(10), fn, engine=engine, concurrency=1, batch_size=2, dlq=dlq,
                               retry={stop_on_five: RetryPolicy()})
    assert sorted(e.record_index for e in dlq.list()) == [0, 1, 2, 3, 4]


def _stop_on_five(exc: BaseException) -> bool:
    if "5" in str(exc):
        raise KeyboardInterrupt("stop")
    return False


def _fails(record: int) -> Any:
    raise ValueError(str(record))


async def _fails_async(record: int) -> Any:
    raise ValueError(str(record))


def _fails_bulk(records: list[int]) -> Any:
    raise ValueError(",".join(map(str, records)))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("fn", "options"), [
    (_fails, {"concurrency": 4}), (_fails, {"concurrency": 32}), (_fails_async, {"concurrency": 4}),
    (_fails_bulk, {"bulk": True})], ids=["threads-4", "threads-32", "async", "bulk"])
def test_a_predicate_raising_keyboard_interrupt_stops_every_driver(engine: str, fn: Any,
                                                                   options: dict[str, Any]) -> None:
    """The reference engine's thread workers died of it (printed as an unhandled exception in
    a thread), with the call still counted in flight: at concurrency 32 the run hung; at 4
    every worker died and the run returned as if nothing happened."""
    dlq = batchguard.MemoryDLQ()
    with pytest.raises(KeyboardInterrupt, match="stop"):
        batchguard.run_batches(range(40), fn, engine=engine, batch_size=4, dlq=dlq,
                               retry={_stop_on_five: RetryPolicy()}, **options)
    assert 5 not in {e.record_index for e in dlq.list()}


class Abort(BaseException):
    """A user's BaseException: raised by fn, it stops the run (it is not an Exception)."""


@pytest.mark.parametrize("key", [KeyboardInterrupt, SystemExit, GeneratorExit, Abort])
def test_a_key_no_failure_can_have_is_refused(key: type[BaseException]) -> None:
    """A failure that is not an Exception stops the run (DESIGN: Ctrl-C is never a record's
    failure), so a policy keyed by one could never apply: it was accepted and silently unused."""
    with pytest.raises(batchguard.ConfigTypeError) as raised:
        batchguard.RetryPolicies(by_error={key: RetryPolicy(max_attempts=5)})
    assert key.__qualname__ in str(raised.value)
    assert "stops the run" in str(raised.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_base_exception_and_exception_group_keys_govern_the_exceptions_under_them(engine: str) -> None:
    """BaseException and BaseExceptionGroup are not Exceptions, but Exceptions derive from them
    (ExceptionGroup from BaseExceptionGroup): they stay valid keys. A type key matches the
    raised exception's type: a group's own, not its members' (a predicate can look inside)."""

    def fn(record: int) -> Any:
        if record == 1:
            raise ExceptionGroup("two", [TimeoutError("a"), ValueError("b")])
        if record == 2:
            raise TimeoutError("slow")
        return record

    attempts: dict[int, int] = {}

    def counted(record: int) -> Any:
        attempts[record] = attempts.get(record, 0) + 1
        return fn(record)

    report = batchguard.run_batches(range(3), counted, engine=engine, retry={
        BaseExceptionGroup: RetryPolicy(fallback="grouped"),
        BaseException: RetryPolicy(max_attempts=1, fallback="other")})
    assert report.successful == [0, "grouped", "other"]
    assert attempts == {0: 1, 1: 1, 2: 1}


class Client:
    """A fallback value that cannot be copied (it holds a lock, as a client or connection does)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return "Client()"


def _times_out_on_thirds(record: int | None) -> Any:
    if record is not None and record % 3 == 0:
        raise TimeoutError(record)
    return record


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_records_its_policies_by_error_and_any_fallback_value(engine: str, tmp_path: Path) -> None:
    """A job's stored config deep-copied the default RetryPolicy: a fallback value that cannot
    be copied (a client holding a lock) crashed the run with 'cannot pickle _thread.lock', and a
    mapping's policies were not recorded at all (the config showed RetryPolicy() alone)."""
    client = Client()
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    retry = batchguard.RetryPolicies(
        default=RetryPolicy(max_attempts=2, base_delay=0.0, retry_on_result=_is_none, fallback=client),
        by_error={TimeoutError: RetryPolicy(max_attempts=1, fallback=None), _tagged: RetryPolicy(max_attempts=4)})
    report = batchguard.run_batches([*range(6), None], _times_out_on_thirds, engine=engine, job="nightly",
                                    store=url, retry=retry)
    assert report.successful == [None, 1, 2, None, 4, 5, client]
    status = batchguard.job_status("nightly", store=url)
    assert status is not None
    stored = status.config["retry"]
    assert stored["max_attempts"] == 2
    assert stored["retry_on_result"] == "_is_none"
    assert stored["fallback"] == "Client()"
    assert stored["by_error"] == [
        {"key": "TimeoutError", "max_attempts": 1, "base_delay": 1.0, "multiplier": 2.0, "max_delay": 30.0,
         "jitter": "full", "seed": None, "max_retry_after": None, "retry_on_result": None, "max_elapsed": None,
         "fallback": "None"},
        {"key": "_tagged", "max_attempts": 4, "base_delay": 1.0, "multiplier": 2.0, "max_delay": 30.0,
         "jitter": "full", "seed": None, "max_retry_after": None, "retry_on_result": None, "max_elapsed": None,
         "fallback": None}]


def _is_none(value: Any) -> bool:
    return value is None


def _tagged(exc: BaseException) -> bool:
    return "#tag" in str(exc)


class _Unhashable:
    """A predicate object that defines __eq__ and so (Python's rule) has no hash."""

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, exc: BaseException) -> bool:
        return True


class _Pairs(Mapping[Any, RetryPolicy]):
    """A mapping that holds its keys in a list, so it can hold an unhashable one."""

    def __init__(self, pairs: list[tuple[Any, RetryPolicy]]) -> None:
        self._pairs = pairs

    def __getitem__(self, key: Any) -> RetryPolicy:
        return next(policy for k, policy in self._pairs if k is key)

    def __iter__(self) -> Iterator[Any]:
        return iter([k for k, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)


def test_an_unhashable_key_is_named() -> None:
    """It raised a bare TypeError ('unhashable type: _Unhashable') from inside RetryPolicies."""
    with pytest.raises(batchguard.ConfigTypeError) as raised:
        batchguard.run_batches([1], lambda r: r, retry=_Pairs([(_Unhashable(), RetryPolicy())]))
    assert "_Unhashable" in str(raised.value)
    assert "hashable" in str(raised.value)


def test_max_elapsed_inf_means_no_limit_as_timeout_inf_does() -> None:
    """float("inf") was refused as 'almost surely a unit mistake', though timeout=inf means no
    timeout; both now read it alike. -inf, nan, 0, negatives and bools stay refused."""
    assert RetryPolicy(max_elapsed=float("inf")).max_elapsed is None
    assert RetryPolicy(max_elapsed=float("inf")) == RetryPolicy()
    for bad in (float("-inf"), float("nan"), 0, -1.0, True):
        with pytest.raises((batchguard.ConfigError, batchguard.ConfigTypeError), match="max_elapsed"):
            RetryPolicy(max_elapsed=bad)


class _NoTruth:
    """What a predicate may return by mistake: an object that cannot be a bool (a numpy array)."""

    def __bool__(self) -> bool:
        raise ValueError("the truth value is ambiguous")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_predicate_answer_that_is_not_a_bool_counts_as_no_match(engine: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    def fn(record: int) -> Any:
        raise TimeoutError(record)

    report = batchguard.run_batches(range(3), fn, engine=engine, retry={
        (lambda exc: _NoTruth()): RetryPolicy(max_attempts=1, fallback="wrong"),
        TimeoutError: RetryPolicy(max_attempts=2, base_delay=0.0, fallback="right")})
    assert report.successful == ["right"] * 3
    assert report.retry_count == 3
    assert sum("counts as no match" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_retry_on_result_raising_keyboard_interrupt_stops_the_run(engine: str, concurrency: int) -> None:
    def rejects(value: Any) -> bool:
        if value == 50:
            raise KeyboardInterrupt("stop")
        return False

    dlq = batchguard.MemoryDLQ()
    with pytest.raises(KeyboardInterrupt, match="stop"):
        batchguard.run_batches(range(10), lambda r: r * 10, engine=engine, concurrency=concurrency, dlq=dlq,
                               batch_size=2, retry=RetryPolicy(retry_on_result=rejects))
    assert dlq.count() == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_predicate_raising_ever_new_error_types_logs_and_keeps_a_bounded_number(
        engine: str, caplog: pytest.LogCaptureFixture) -> None:
    """The log-once set of a broken predicate kept one name per error type it raised: one
    entry, and one log line, per record for a predicate raising classes made at run time."""
    n = 200

    def broken(exc: BaseException) -> bool:
        raise type(f"Bug{exc}", (RuntimeError,), {})()

    def fn(record: int) -> Any:
        raise TimeoutError(record)

    report = batchguard.run_batches(range(n), fn, engine=engine, retry={broken: RetryPolicy(fallback="wrong")},
                                    concurrency=1)
    assert report.failure_count == n
    logged = [r.getMessage() for r in caplog.records if "counts as no match" in r.getMessage()]
    assert len(logged) <= MAX_LOGGED_KINDS + 1
    assert "not logged" in logged[-1]
