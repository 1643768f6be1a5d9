"""Retry policies by error (issue 10 item 2): ``retry=`` takes a mapping (or ``RetryPolicies``)
from an ErrorClass, an exception type or a predicate to a RetryPolicy. What a mapping may hold
(each bad key or value named), which policy a failure gets (predicate, most specific type in
the MRO, class, default), and that each engine retries a record as its failure's policy says.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import batchguard
from batchguard import ConfigError, ConfigTypeError, ErrorClass, RetryPolicies, RetryPolicy
from helpers_contract import CLASSIFIER, ENGINES, PermanentErr, RecoverableErr, TransientErr

NO_WAIT = RetryPolicy(max_attempts=2, base_delay=0.0, jitter="none")


class Slow(RecoverableErr):
    """A subclass of a keyed type: the most specific key wins."""


def times(n: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=n, base_delay=0.0, jitter="none")


class Raising:
    """fn: record r raises ``errors[r]`` on every attempt; counts the attempts."""

    def __init__(self, errors: dict[int, type[Exception]]) -> None:
        self.errors = errors
        self.attempts: dict[int, int] = {}

    def __call__(self, record: int) -> int:
        self.attempts[record] = self.attempts.get(record, 0) + 1
        error = self.errors.get(record)
        if error is not None:
            raise error(f"record {record}{' #tag' if record == 4 else ''}")
        return record


# ---------------------------------------------------------------- what a mapping may hold


@pytest.mark.parametrize(("by_error", "error", "words"), [
    ({"default": NO_WAIT}, ConfigTypeError, ["'default'", "RetryPolicies(default=...)"]),
    ({5: NO_WAIT}, ConfigTypeError, ["5", "ErrorClass, an exception type or a predicate"]),
    ({int: NO_WAIT}, ConfigTypeError, ["int", "not an exception type"]),
    ({TimeoutError: 3}, ConfigTypeError, ["by_error[TimeoutError]", "RetryPolicy", "int"]),
    ({TimeoutError: RetryPolicy(retry_on_result=bool)}, ConfigError, ["by_error[TimeoutError]", "retry_on_result",
                                                                       "default policy"]),
    ({ErrorClass.TRANSIENT: RetryPolicy(seed=3)}, ConfigError, ["by_error[ErrorClass.TRANSIENT]", "seed"]),
])
def test_a_bad_key_or_policy_is_refused_with_its_name(by_error: dict[Any, Any], error: type[Exception],
                                                      words: list[str]) -> None:
    with pytest.raises(error) as raised:
        batchguard.run_batches([1], lambda r: r, retry=by_error)
    for word in words:
        assert word in str(raised.value)


def test_a_mapping_of_policy_fields_is_pointed_at_retry_policy() -> None:
    with pytest.raises(ConfigTypeError, match=r"RetryPolicy's fields: retry=RetryPolicy\(max_attempts=3\)"):
        batchguard.run_batches([1], lambda r: r, retry={"max_attempts": 3})


def test_a_bad_mapping_is_named_as_the_retry_argument() -> None:
    with pytest.raises(ConfigTypeError, match=r"^retry: RetryPolicies.by_error\[TimeoutError\]"):
        batchguard.run_batches([1], lambda r: r, retry={TimeoutError: 3})


def test_an_async_predicate_is_refused() -> None:
    async def is_slow(exc: BaseException) -> bool:
        return True

    with pytest.raises(ConfigTypeError, match="is_slow is an async def function"):
        RetryPolicies(by_error={is_slow: NO_WAIT})


def test_retry_must_be_a_policy_policies_or_mapping() -> None:
    with pytest.raises(ConfigTypeError, match="a RetryPolicy, a RetryPolicies or a mapping"):
        batchguard.run_batches([1], lambda r: r, retry=[NO_WAIT])  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value", "error"), [
    ("max_elapsed", 0, ConfigError), ("max_elapsed", -1.0, ConfigError), ("max_elapsed", "1", ConfigTypeError),
    ("retry_on_result", 5, ConfigTypeError),
])
def test_bad_policy_fields_are_refused_when_built(field: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"RetryPolicy.{field}"):
        RetryPolicy(**{field: value})


def test_a_string_key_naming_a_class_is_that_class() -> None:
    policies = RetryPolicies(by_error={"transient": times(5)})
    assert ErrorClass.TRANSIENT in policies.by_error


# ---------------------------------------------------------------- which policy a failure gets


def _tagged(exc: BaseException) -> bool:
    return "#tag" in str(exc)


POLICIES = RetryPolicies(default=times(2), by_error={
    _tagged: times(5),
    RecoverableErr: times(3),
    Slow: times(4),
    ErrorClass.TRANSIENT: times(6),
})


@pytest.mark.parametrize(("exc", "error_class", "attempts"), [
    (RecoverableErr("x"), ErrorClass.RECOVERABLE, 3),
    (Slow("x"), ErrorClass.RECOVERABLE, 4),  # the most specific type key in the MRO
    (Slow("x #tag"), ErrorClass.RECOVERABLE, 5),  # a predicate that holds comes first
    (TransientErr("x"), ErrorClass.TRANSIENT, 6),  # no type key: the class key
    (TimeoutError("x"), ErrorClass.RECOVERABLE, 2),  # nothing matches: the default
])
def test_the_policy_of_a_failure(exc: BaseException, error_class: ErrorClass, attempts: int) -> None:
    assert POLICIES.policy_for(exc, error_class).max_attempts == attempts


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_each_record_is_tried_as_often_as_its_errors_policy_says(engine: str, concurrency: int) -> None:
    fn = Raising({0: RecoverableErr, 1: Slow, 2: TransientErr, 3: TimeoutError, 4: Slow, 5: PermanentErr})
    report = batchguard.run_batches(range(7), fn, engine=engine, concurrency=concurrency, classifier=CLASSIFIER,
                                    retry=POLICIES)
    assert fn.attempts == {0: 3, 1: 4, 2: 6, 3: 2, 4: 5, 5: 1, 6: 1}
    assert report.success_count == 1
    assert {e.record_index: e.attempts for e in report.errors} == {0: 3, 1: 4, 2: 6, 3: 2, 4: 5, 5: 1}
    assert report.retry_count == 2 + 3 + 5 + 1 + 4


@pytest.mark.parametrize("engine", ENGINES)
def test_a_predicate_that_raises_is_no_match_and_is_logged_once(engine: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(exc: BaseException) -> bool:
        raise KeyError("no such field")

    fn = Raising({0: RecoverableErr, 1: RecoverableErr})
    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = batchguard.run_batches(range(2), fn, engine=engine, classifier=CLASSIFIER,
                                        retry={broken: times(5), RecoverableErr: times(3)})
    assert fn.attempts == {0: 3, 1: 3}
    assert report.failure_count == 2
    logged = [r.getMessage() for r in caplog.records if "predicate" in r.getMessage()]
    assert len(logged) == 1
    assert "broken raised KeyError on RecoverableErr" in logged[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failures_policy_shapes_its_delays(engine: str) -> None:
    """The jitter stream is the record's, the shape the failure's policy's: the DLQ entry's
    delays are the policy's schedule."""
    quick = RetryPolicy(max_attempts=4, base_delay=0.001, multiplier=3.0, max_delay=0.01, jitter="none")
    report = batchguard.run_batches([0, 1], Raising({0: RecoverableErr, 1: TimeoutError}), engine=engine,
                                    classifier=CLASSIFIER,
                                    retry=RetryPolicies(default=RetryPolicy(max_attempts=2, base_delay=0.002,
                                                                            jitter="none"),
                                                        by_error={RecoverableErr: quick}))
    delays = {d.record_index: [a.delay_s for a in d.attempts] for d in report.dead_letters}
    assert delays == {0: [*quick.schedule(3), None], 1: [0.002, None]}
    assert delays[0] == pytest.approx([0.001, 0.003, 0.009, None])


@pytest.mark.parametrize("engine", ENGINES)
def test_without_a_mapping_nothing_changes(engine: str) -> None:
    """A plain RetryPolicy, and RetryPolicies without keys, are one policy for every error."""
    for retry in (times(3), RetryPolicies(default=times(3))):
        fn = Raising({0: RecoverableErr, 1: TransientErr})
        report = batchguard.run_batches(range(3), fn, engine=engine, classifier=CLASSIFIER, retry=retry)
        assert fn.attempts == {0: 3, 1: 3, 2: 1}
        assert report.fallback_count == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_an_async_fn_gets_the_same_policies(engine: str) -> None:
    sync = Raising({0: RecoverableErr, 1: Slow, 2: TransientErr, 3: TimeoutError, 4: Slow, 5: PermanentErr})

    async def fn(record: int) -> int:
        return sync(record)

    report = batchguard.run_batches(range(7), fn, engine=engine, concurrency=3, classifier=CLASSIFIER,
                                    retry=POLICIES)
    assert sync.attempts == {0: 3, 1: 4, 2: 6, 3: 2, 4: 5, 5: 1, 6: 1}
    assert report.success_count == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bulk_fns_records_get_their_own_errors_policies(engine: str) -> None:
    """Bisection isolates each failing record; then its error's policy counts its retries."""
    attempts: dict[int, int] = {}

    def fn(records: list[int]) -> list[int]:
        if len(records) == 1:
            attempts[records[0]] = attempts.get(records[0], 0) + 1
        for record in records:
            if record in (1, 2):
                raise (Slow if record == 1 else RecoverableErr)(f"record {record}")
        return records

    report = batchguard.run_batches(range(4), fn, engine=engine, bulk=True, batch_size=4, classifier=CLASSIFIER,
                                    retry=POLICIES)
    assert {e.record_index: e.attempts for e in report.errors} == {1: 4, 2: 3}
    assert report.successful == [0, 3]
