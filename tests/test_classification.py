"""Exception -> ErrorClass (DESIGN §4), through Classifier.classify and through both engines.

Resolution, first match wins: the user's callable; type rules (most specific class in the MRO);
an HTTP status on the exception; message regex rules; the default (PERMANENT).
"""

from __future__ import annotations

import http
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

import batchguard
from batchguard import Classifier, ErrorClass, MemoryDLQ, RetryPolicy
from batchguard.errors import ConfigError
from helpers_contract import ENGINES, HTTPStatusErr, no_wait

R, T, P, F = ErrorClass.RECOVERABLE, ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.FATAL


class IntegrityError(Exception):
    """A DB-API driver's IntegrityError: no common base class with sqlite3's."""


class UniqueViolation(IntegrityError):
    pass


class TimeoutFirst(TimeoutError, ValueError):
    pass


class ValueFirst(ValueError, TimeoutError):
    pass


class NamedIntegrityConnectionError(ConnectionError):
    pass


NamedIntegrityConnectionError.__name__ = "IntegrityError"


class StatusErr(Exception):
    def __init__(self, message: str = "", **attrs: Any) -> None:
        super().__init__(message)
        for name, value in attrs.items():
            setattr(self, name, value)


class Response:
    def __init__(self, status_code: Any) -> None:
        self.status_code = status_code


DEFAULT_CASES = [
    pytest.param(TimeoutError("t"), R, id="TimeoutError"),
    pytest.param(ConnectionError("c"), R, id="ConnectionError"),
    pytest.param(ConnectionResetError("c"), R, id="ConnectionResetError-subclass"),
    pytest.param(ValueError("v"), P, id="ValueError"),
    pytest.param(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), P, id="UnicodeDecodeError-subclass"),
    pytest.param(TypeError("t"), P, id="TypeError"),
    pytest.param(KeyError("k"), P, id="KeyError"),
    pytest.param(sqlite3.IntegrityError("UNIQUE constraint failed"), P, id="sqlite3.IntegrityError"),
    pytest.param(IntegrityError("dup"), P, id="driver-IntegrityError"),
    pytest.param(UniqueViolation("dup"), P, id="IntegrityError-subclass"),
    pytest.param(MemoryError(), F, id="MemoryError"),
    pytest.param(ZeroDivisionError("z"), P, id="unknown-ZeroDivisionError"),
    pytest.param(RuntimeError("r"), P, id="unknown-RuntimeError"),
    pytest.param(Exception("plain"), P, id="unknown-Exception"),
    pytest.param(TimeoutFirst("x"), R, id="mro-TimeoutError-before-ValueError"),
    pytest.param(ValueFirst("x"), P, id="mro-ValueError-before-TimeoutError"),
    pytest.param(NamedIntegrityConnectionError("x"), P, id="name-rule-on-the-class-itself-beats-its-base"),
]


@pytest.mark.parametrize(("exc", "expected"), DEFAULT_CASES)
def test_default_rules(exc: BaseException, expected: ErrorClass) -> None:
    assert Classifier.default().classify(exc) is expected


def test_most_specific_rule_in_the_mro_wins() -> None:
    c = Classifier.default().with_rule(OSError, T)
    assert c.classify(ConnectionRefusedError()) is R  # ConnectionError is closer than OSError
    assert c.classify(FileNotFoundError()) is T
    c = c.with_rule(ConnectionRefusedError, F)
    assert c.classify(ConnectionRefusedError()) is F
    assert c.classify(ConnectionResetError()) is R


def test_with_rule_overrides_a_default_rule_and_accepts_a_class_name() -> None:
    c = Classifier.default().with_rule(ValueError, "recoverable")
    assert c.classify(ValueError()) is R
    assert c.classify(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")) is R
    assert Classifier.default().classify(ValueError()) is P, "with_rule must return a copy"
    assert len([r for r in c.type_rules if r[0] is ValueError]) == 1


def test_with_default_changes_only_the_fallback() -> None:
    c = Classifier.default().with_default(T)
    assert c.classify(RuntimeError()) is T
    assert c.classify(ValueError()) is P


HTTP_CASES = [
    pytest.param(StatusErr(status_code=503), R, id="status_code-503"),
    pytest.param(StatusErr(status_code=500), R, id="status_code-500"),
    pytest.param(StatusErr(status_code=599), R, id="status_code-599"),
    pytest.param(StatusErr(status_code=408), R, id="status_code-408"),
    pytest.param(StatusErr(status_code=425), R, id="status_code-425"),
    pytest.param(StatusErr(status_code=429), R, id="status_code-429"),
    pytest.param(StatusErr(status_code=400), P, id="status_code-400"),
    pytest.param(StatusErr(status_code=404), P, id="status_code-404"),
    pytest.param(StatusErr(status_code=499), P, id="status_code-499"),
    pytest.param(StatusErr(status=502), R, id="status-502"),
    pytest.param(StatusErr(status=403), P, id="status-403"),
    pytest.param(StatusErr(response=Response(504)), R, id="response.status_code-504"),
    pytest.param(StatusErr(response=Response(401)), P, id="response.status_code-401"),
    pytest.param(StatusErr(status_code=http.HTTPStatus.TOO_MANY_REQUESTS), R, id="HTTPStatus-enum"),
    pytest.param(StatusErr(status_code=404, status=503), P, id="status_code-before-status"),
    pytest.param(StatusErr(status_code=None, response=Response(503)), R, id="none-falls-to-response"),
    pytest.param(StatusErr(status_code=True), T, id="bool-ignored"),
    pytest.param(StatusErr(status=False, response=Response(True)), T, id="bools-ignored-everywhere"),
    pytest.param(StatusErr(status_code="503"), T, id="str-ignored"),
    pytest.param(StatusErr(status_code=503.0), T, id="float-ignored"),
    pytest.param(StatusErr(status_code=200), T, id="2xx-falls-through"),
    pytest.param(StatusErr(status_code=302), T, id="3xx-falls-through"),
    pytest.param(StatusErr(status_code=999), T, id="out-of-range-ignored"),
    pytest.param(StatusErr(response=None), T, id="response-none"),
    pytest.param(StatusErr(response=Response(None)), T, id="response-without-status"),
]


def _http_classifier() -> Classifier:
    # TRANSIENT default: a status that is ignored shows up as TRANSIENT, not as PERMANENT.
    return Classifier.default().with_default(T)


@pytest.mark.parametrize(("exc", "expected"), HTTP_CASES)
def test_http_status_on_the_exception(exc: BaseException, expected: ErrorClass) -> None:
    assert _http_classifier().classify(exc) is expected


def test_type_rules_beat_http_status_and_http_status_beats_message_rules() -> None:
    c = Classifier.default().with_message_rule("try later", T)
    timeout = TimeoutError("x")
    timeout.status_code = 404  # type: ignore[attr-defined]
    assert c.classify(timeout) is R
    assert c.classify(StatusErr("try later", status_code=404)) is P
    assert c.classify(StatusErr("try later")) is T


def test_http_status_can_be_turned_off() -> None:
    c = Classifier(type_rules=(), http_status=False, default_class=T)
    assert c.classify(StatusErr(status_code=404)) is T


def test_message_rules_search_in_the_order_they_were_added() -> None:
    c = (Classifier.default()
         .with_message_rule(r"deadlock", T)
         .with_message_rule(r"dead", F)
         .with_message_rule(r"(?i)RATE LIMIT", R))
    assert c.classify(RuntimeError("deadlock detected")) is T
    assert c.classify(RuntimeError("dead worker")) is F
    assert c.classify(RuntimeError("hit the rate limit")) is R
    assert c.classify(RuntimeError("something else")) is P
    assert c.classify(ValueError("deadlock")) is P, "type rules come before message rules"


def test_user_callable_comes_first_and_none_falls_through() -> None:
    seen: list[BaseException] = []

    def decide(exc: BaseException) -> ErrorClass | str | None:
        seen.append(exc)
        if isinstance(exc, ValueError):
            return "transient"
        if isinstance(exc, TimeoutError):
            return ErrorClass.FATAL
        return None

    c = Classifier.default().with_callable(decide)
    assert c.classify(ValueError()) is T
    assert c.classify(TimeoutError()) is F
    assert c.classify(KeyError()) is P
    assert c.classify(ConnectionError()) is R
    assert len(seen) == 4


def test_user_callable_returning_nonsense_is_a_config_error() -> None:
    c = Classifier.default().with_callable(lambda exc: "sometimes")
    with pytest.raises(ConfigError, match="sometimes"):
        c.classify(ValueError())


# --------------------------------------------------------------------------- end to end


def _failing(exc: BaseException) -> Callable[[Any], Any]:
    def fn(record: Any) -> Any:
        raise exc

    return fn


def _raising(make_exc: Callable[[], BaseException]) -> Callable[[Any], Any]:
    def fn(record: Any) -> Any:
        raise make_exc()

    return fn


def _raise_record_as_message(record: str) -> Any:
    raise RuntimeError(record)


E2E_CASES = [
    pytest.param(lambda: TimeoutError("slow"), Classifier.default(), "recoverable", 2, id="TimeoutError"),
    pytest.param(lambda: ConnectionResetError("reset"), Classifier.default(), "recoverable", 2, id="ConnectionReset"),
    pytest.param(lambda: KeyError("k"), Classifier.default(), "permanent", 1, id="KeyError"),
    pytest.param(lambda: sqlite3.IntegrityError("dup"), Classifier.default(), "permanent", 1,
                 id="sqlite3.IntegrityError"),
    pytest.param(lambda: UniqueViolation("dup"), Classifier.default(), "permanent", 1, id="IntegrityError-subclass"),
    pytest.param(lambda: RuntimeError("?"), Classifier.default(), "permanent", 1, id="unknown"),
    pytest.param(lambda: TimeoutFirst("x"), Classifier.default(), "recoverable", 2, id="mro-TimeoutFirst"),
    pytest.param(lambda: ValueFirst("x"), Classifier.default(), "permanent", 1, id="mro-ValueFirst"),
    pytest.param(lambda: ValueError("v"), Classifier.default().with_rule(ValueError, T), "transient", 2,
                 id="with_rule-override"),
    pytest.param(lambda: HTTPStatusErr(503), Classifier.default(), "recoverable", 2, id="http-503"),
    pytest.param(lambda: HTTPStatusErr(429), Classifier.default(), "recoverable", 2, id="http-429"),
    pytest.param(lambda: HTTPStatusErr(404), Classifier.default(), "permanent", 1, id="http-404"),
    pytest.param(lambda: HTTPStatusErr(True), Classifier.default().with_default(T), "transient", 2,
                 id="http-bool-ignored"),
    pytest.param(lambda: StatusErr(status=408), Classifier.default(), "recoverable", 2, id="status-408"),
    pytest.param(lambda: StatusErr(response=Response(500)), Classifier.default(), "recoverable", 2,
                 id="response-500"),
    pytest.param(lambda: StatusErr(status_code=404, status=503), Classifier.default(), "permanent", 1,
                 id="status_code-before-status"),
    pytest.param(lambda: RuntimeError("upstream deadlock"),
                 Classifier.default().with_message_rule("deadlock", T).with_message_rule("dead", R),
                 "transient", 2, id="message-rules-in-order"),
    pytest.param(lambda: RuntimeError("x"), Classifier.default().with_callable(lambda e: None).with_default(R),
                 "recoverable", 2, id="callable-none-falls-through"),
    pytest.param(lambda: ConnectionError("x"), Classifier.default().with_callable(lambda e: "permanent"),
                 "permanent", 1, id="callable-first"),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("make_exc", "classifier", "expected", "attempts"), E2E_CASES)
def test_engine_records_the_class_the_rules_give(engine: str, make_exc: Callable[[], BaseException],
                                                classifier: Classifier, expected: str,
                                                attempts: int) -> None:
    assert classifier.classify(make_exc()).value == expected
    dlq = MemoryDLQ()
    report = batchguard.run_batches([{"id": "a"}], _raising(make_exc),
                                    classifier=classifier, retry=no_wait(2), engine=engine, dlq=dlq)
    assert report.status == "partial_success"
    [error] = report.errors
    assert (error.error_class, error.attempts, error.record_id) == (expected, attempts, "a")
    [entry] = dlq.list()
    assert entry.error_class == expected
    assert entry.error_type == type(make_exc()).__name__
    assert len(entry.attempts) == attempts


@pytest.mark.parametrize("engine", ENGINES)
def test_memory_error_is_fatal_and_stops_the_run(engine: str) -> None:
    def fn(record: int) -> int:
        if record == 2:
            raise MemoryError("out of memory")
        return record

    report = batchguard.run_batches(list(range(10)), fn, engine=engine, batch_size=5)
    assert (report.status, report.stopped_reason) == ("aborted", "fatal")
    assert [(e.record_index, e.error_class, e.error_type) for e in report.errors] == [(2, "fatal", "MemoryError")]
    assert report.successful == [0, 1]
    assert report.pending_count == 7


@pytest.mark.parametrize("engine", ENGINES)
def test_a_plain_callable_is_accepted_as_classifier(engine: str) -> None:
    report = batchguard.run_batches([1, 2], _failing(ValueError("v")), engine=engine, retry=no_wait(3),
                                    classifier=lambda exc: "transient" if isinstance(exc, ValueError) else None)
    assert [(e.error_class, e.attempts) for e in report.errors] == [("transient", 3), ("transient", 3)]
    assert report.retry_count == 4


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_classifier_that_raises_makes_the_record_permanent_and_the_run_goes_on(
        engine: str, concurrency: int, caplog: pytest.LogCaptureFixture) -> None:
    def broken(exc: BaseException) -> ErrorClass | None:
        if "boom" in str(exc):
            raise LookupError("classifier bug")
        return None

    def fn(record: int) -> int:
        if record % 3 == 0:
            raise TimeoutError(f"boom {record}")
        return record

    caplog.set_level(logging.ERROR, logger="batchguard")
    report = batchguard.run_batches(list(range(12)), fn, engine=engine, concurrency=concurrency,
                                    classifier=Classifier.default().with_callable(broken),
                                    retry=no_wait(3), batch_size=4)
    assert report.status == "partial_success"
    assert report.successful == [r for r in range(12) if r % 3]
    assert [(e.record_index, e.error_class, e.attempts) for e in report.errors] == [
        (r, "permanent", 1) for r in (0, 3, 6, 9)]
    assert report.retry_count == 0
    logged = [r for r in caplog.records if r.name == "batchguard" and "classifier raised" in r.getMessage()]
    assert logged and "LookupError" in logged[0].getMessage()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_classifier_that_returns_nonsense_makes_the_record_permanent(engine: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="batchguard")
    report = batchguard.run_batches([0, 1], _failing(TimeoutError("t")), engine=engine, retry=no_wait(3),
                                    classifier=Classifier.default().with_callable(lambda e: 42))
    assert [(e.error_class, e.attempts) for e in report.errors] == [("permanent", 1), ("permanent", 1)]


@pytest.mark.parametrize("engine", ENGINES)
def test_classification_is_per_exception_not_cached_per_type_for_http_and_messages(engine: str) -> None:
    # The engines may cache the *type* rules per exception type; the status and the message of
    # each exception must still be read every time.
    def fn(record: int) -> int:
        raise StatusErr(f"call {record}", status_code=503 if record % 2 else 404)

    report = batchguard.run_batches(list(range(6)), fn, engine=engine, retry=no_wait(2))
    assert [e.error_class for e in report.errors] == ["permanent", "recoverable"] * 3
    c = Classifier.default().with_message_rule("^retry", T)
    report = batchguard.run_batches(["retry me", "no", "retry too"],
                                    _raise_record_as_message,
                                    engine=engine, retry=no_wait(2), classifier=c)
    assert [e.error_class for e in report.errors] == ["transient", "permanent", "transient"]


MESSAGE_PARITY = [
    pytest.param(r"time(?!stamp)", ["timeout", "timestamp"], id="lookahead"),
    pytest.param(r"^bad$", ["bad\n", "bad"], id="dollar-before-trailing-newline"),
    pytest.param(r"(?i)connection\s+reset", ["Connection  RESET by peer", "reset"], id="flags-and-classes"),
]


@pytest.mark.parametrize(("pattern", "messages"), MESSAGE_PARITY)
def test_message_rules_match_the_same_messages_on_both_engines(pattern: str, messages: list[str]) -> None:
    c = Classifier.default().with_message_rule(pattern, T)
    expected = [c.classify(RuntimeError(m)).value for m in messages]
    assert "transient" in expected
    for engine in ENGINES:
        report = batchguard.run_batches(messages, _raise_record_as_message,
                                        engine=engine, retry=no_wait(1), classifier=c)
        assert [e.error_class for e in report.errors] == expected, engine


def test_retry_policy_in_helpers_waits_nothing() -> None:
    # no_wait() is what lets these tests retry without sleeping.
    assert set(no_wait(5).schedule(4)) == {0.0}
    assert isinstance(no_wait(), RetryPolicy)


def test_default_classifiers_are_equal_and_each_keeps_its_own_type_cache() -> None:
    # default() reuses its validated rules (every run without a classifier asks for one), but
    # each copy classifies with a cache of its own.
    a, b = Classifier.default(), Classifier.default()
    assert a == b and a is not b
    a.classify(TimeoutError())
    assert TimeoutError in a._type_cache and TimeoutError not in b._type_cache
    assert a.with_rule(TimeoutError, P).classify(TimeoutError()) is P
    assert Classifier.default().classify(TimeoutError()) is R
