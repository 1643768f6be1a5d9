"""Bad input fails fast: a clear error naming the argument, before any record is processed.

Value problems raise ConfigError (a ValueError); type problems raise TypeError. Every case
runs on both engines with a callback and an input that record whether they were touched.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest

import batchguard
from batchguard import CircuitBreaker, Classifier, ErrorClass, MemoryDLQ, RetryPolicy
from batchguard.dlq import urls
from batchguard.errors import ConfigError
from helpers_contract import ENGINES, Spy

_UNSET = object()


def _raises(exc_type: type[BaseException], argument: str, engine: str,
            kwargs: dict[str, Any]) -> BaseException:
    spy = Spy()
    kwargs = {"engine": engine, **kwargs}
    records = kwargs.pop("records", _UNSET)
    fn = kwargs.pop("fn", spy)
    with pytest.raises(exc_type) as info:
        batchguard.run_batches(spy.records() if records is _UNSET else records, fn, **kwargs)
    assert spy.calls == 0, "fn was called before the bad argument was reported"
    assert spy.pulled == 0, "the input was read before the bad argument was reported"
    assert argument in str(info.value), f"the message does not name {argument!r}: {info.value}"
    return info.value


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert urls.ConfigError is ConfigError


# --------------------------------------------------------------------------- run_batches


VALUE_PROBLEMS = [
    pytest.param({"batch_size": 0}, "batch_size", id="batch_size-zero"),
    pytest.param({"batch_size": -5}, "batch_size", id="batch_size-negative"),
    pytest.param({"batch_size": "auto"}, "batch_size", id="batch_size-auto-on-a-generator"),
    pytest.param({"concurrency": 0}, "concurrency", id="concurrency-zero"),
    pytest.param({"concurrency": -1}, "concurrency", id="concurrency-negative"),
    pytest.param({"engine": "rust"}, "engine", id="engine-unknown"),
    pytest.param({"engine": "Python"}, "engine", id="engine-wrong-case"),
    pytest.param({"success_threshold": -0.1}, "success_threshold", id="threshold-below-0"),
    pytest.param({"success_threshold": 1.5}, "success_threshold", id="threshold-above-1"),
    pytest.param({"success_threshold": float("nan")}, "success_threshold", id="threshold-nan"),
    pytest.param({"max_failures": -1}, "max_failures", id="max_failures-negative-count"),
    pytest.param({"max_failures": 0.0}, "max_failures", id="max_failures-rate-zero"),
    pytest.param({"max_failures": 1.5}, "max_failures", id="max_failures-rate-above-1"),
    pytest.param({"max_failures": -0.5}, "max_failures", id="max_failures-rate-negative"),
    pytest.param({"stage": ""}, "stage", id="stage-empty"),
    pytest.param({"dlq": "ftp://host/queue"}, "ftp", id="dlq-unknown-scheme"),
    pytest.param({"dlq": "dead_letters.db"}, "scheme", id="dlq-url-without-scheme"),
    pytest.param({"job": ""}, "job", id="job-empty"),
    pytest.param({"store": "sqlite:///jobs.db"}, "store", id="store-without-job"),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("kwargs", "argument"), VALUE_PROBLEMS)
def test_bad_value_raises_config_error_naming_the_argument(engine: str, kwargs: dict[str, Any],
                                                          argument: str) -> None:
    error = _raises(ConfigError, argument, engine, kwargs)
    assert isinstance(error, ValueError)


TYPE_PROBLEMS = [
    pytest.param({"records": 42}, "records", id="records-int"),
    pytest.param({"records": None}, "records", id="records-none"),
    pytest.param({"records": "abc"}, "records", id="records-str"),
    pytest.param({"records": b"abc"}, "records", id="records-bytes"),
    pytest.param({"fn": None}, "fn", id="fn-none"),
    pytest.param({"fn": 42}, "fn", id="fn-int"),
    pytest.param({"fn": "len"}, "fn", id="fn-str"),
    pytest.param({"batch_size": 2.5}, "batch_size", id="batch_size-float"),
    pytest.param({"batch_size": "10"}, "batch_size", id="batch_size-str"),
    pytest.param({"batch_size": True}, "batch_size", id="batch_size-bool"),
    pytest.param({"concurrency": 2.0}, "concurrency", id="concurrency-float"),
    pytest.param({"success_threshold": "0.5"}, "success_threshold", id="threshold-str"),
    pytest.param({"max_failures": "3"}, "max_failures", id="max_failures-str"),
    pytest.param({"max_failures": True}, "max_failures", id="max_failures-bool"),
    pytest.param({"retry": {"max_attempts": 3}}, "retry", id="retry-dict"),
    pytest.param({"breaker": 0.5}, "breaker", id="breaker-float"),
    pytest.param({"classifier": "permanent"}, "classifier", id="classifier-str"),
    pytest.param({"id_of": "id"}, "id_of", id="id_of-str"),
    pytest.param({"on_progress": 1}, "on_progress", id="on_progress-int"),
    pytest.param({"dlq": 42}, "dlq", id="dlq-int"),
    pytest.param({"dlq": pathlib.Path("dead.db")}, "dlq", id="dlq-path"),
    pytest.param({"dlq": []}, "dlq", id="dlq-list"),
    pytest.param({"stage": 5}, "stage", id="stage-int"),
    pytest.param({"job": 5, "store": "sqlite:///jobs.db"}, "job", id="job-int"),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("kwargs", "argument"), TYPE_PROBLEMS)
def test_wrong_type_raises_type_error_naming_the_argument(engine: str, kwargs: dict[str, Any],
                                                         argument: str) -> None:
    _raises(TypeError, argument, engine, kwargs)


@pytest.mark.parametrize("engine", ENGINES)
def test_records_that_are_not_iterable_are_reported_before_the_callback_runs(engine: str) -> None:
    calls = []
    with pytest.raises(TypeError, match="records"):
        batchguard.run_batches(object(), calls.append, engine=engine)
    assert calls == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bad_argument_after_a_good_dlq_url_still_reads_nothing(engine: str, tmp_path: pathlib.Path) -> None:
    # The DLQ is opened during validation; a later problem must still stop the run before it starts.
    spy = Spy()
    with pytest.raises(ConfigError, match="engine"):
        batchguard.run_batches(spy.records(), spy, dlq=MemoryDLQ(), engine=engine + "x")
    assert (spy.calls, spy.pulled) == (0, 0)


@pytest.mark.parametrize("engine", ENGINES)
def test_valid_edge_values_are_accepted(engine: str) -> None:
    # The boundaries themselves are valid: they must not be rejected by an off-by-one check.
    report = batchguard.run_batches(list(range(5)), lambda r: r, engine=engine, batch_size=1,
                                    concurrency=1, success_threshold=1.0, max_failures=0,
                                    retry=RetryPolicy(max_attempts=1, base_delay=0.0))
    assert report.status == "complete"
    report = batchguard.run_batches(list(range(5)), lambda r: r, engine=engine,
                                    success_threshold=0.0, max_failures=1.0)
    assert report.successful == [0, 1, 2, 3, 4]
    report = batchguard.run_batches(list(range(5)), lambda r: r, engine=engine, batch_size="auto")
    assert [b.size for b in report.batches] == [5]


# --------------------------------------------------------------------------- policies


POLICY_VALUE_PROBLEMS = [
    pytest.param(lambda: RetryPolicy(max_attempts=0), "max_attempts", id="max_attempts-zero"),
    pytest.param(lambda: RetryPolicy(max_attempts=-2), "max_attempts", id="max_attempts-negative"),
    pytest.param(lambda: RetryPolicy(base_delay=-0.1), "base_delay", id="base_delay-negative"),
    pytest.param(lambda: RetryPolicy(base_delay=float("nan")), "base_delay", id="base_delay-nan"),
    pytest.param(lambda: RetryPolicy(base_delay=float("inf")), "base_delay", id="base_delay-inf"),
    pytest.param(lambda: RetryPolicy(multiplier=0.5), "multiplier", id="multiplier-below-1"),
    pytest.param(lambda: RetryPolicy(max_delay=-1.0), "max_delay", id="max_delay-negative"),
    pytest.param(lambda: RetryPolicy(base_delay=5.0, max_delay=1.0), "max_delay", id="max_delay-below-base"),
    pytest.param(lambda: RetryPolicy(jitter="gaussian"), "jitter", id="jitter-unknown"),
    pytest.param(lambda: CircuitBreaker(window=0, minimum_calls=1), "window", id="window-zero"),
    pytest.param(lambda: CircuitBreaker(failure_rate_threshold=1.5), "failure_rate_threshold",
                 id="threshold-above-1"),
    pytest.param(lambda: CircuitBreaker(failure_rate_threshold=0.0), "failure_rate_threshold",
                 id="threshold-zero"),
    pytest.param(lambda: CircuitBreaker(window=5, minimum_calls=6), "minimum_calls",
                 id="minimum_calls-above-window"),
    pytest.param(lambda: CircuitBreaker(minimum_calls=0), "minimum_calls", id="minimum_calls-zero"),
    pytest.param(lambda: CircuitBreaker(open_duration=-1.0), "open_duration", id="open_duration-negative"),
    pytest.param(lambda: CircuitBreaker(half_open_calls=0), "half_open_calls", id="half_open_calls-zero"),
    pytest.param(lambda: CircuitBreaker(abort_failure_rate=1.2), "abort_failure_rate", id="abort-rate-above-1"),
    pytest.param(lambda: CircuitBreaker(counts=()), "counts", id="counts-empty"),
    pytest.param(lambda: CircuitBreaker(counts=("sometimes",)), "counts", id="counts-unknown-class"),
    pytest.param(lambda: Classifier.default().with_rule(ValueError, "bogus"), "bogus",
                 id="rule-unknown-class"),
    pytest.param(lambda: Classifier.default().with_message_rule("timed (out", ErrorClass.RECOVERABLE),
                 "timed (out", id="message-rule-bad-regex"),
    pytest.param(lambda: Classifier.default().with_default("maybe"), "maybe", id="default-unknown-class"),
]


@pytest.mark.parametrize(("build", "argument"), POLICY_VALUE_PROBLEMS)
def test_bad_policy_value_fails_when_the_policy_is_built(build: Any, argument: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert argument in str(info.value)


POLICY_TYPE_PROBLEMS = [
    pytest.param(lambda: RetryPolicy(max_attempts=2.5), "max_attempts", id="max_attempts-float"),
    pytest.param(lambda: RetryPolicy(base_delay="1"), "base_delay", id="base_delay-str"),
    pytest.param(lambda: RetryPolicy(seed=1.5), "seed", id="seed-float"),
    pytest.param(lambda: CircuitBreaker(window=2.5), "window", id="window-float"),
    pytest.param(lambda: Classifier.default().with_rule(int, ErrorClass.PERMANENT), "int",
                 id="rule-for-a-non-exception-type"),
    pytest.param(lambda: Classifier.default().with_rule("ValueError", ErrorClass.PERMANENT), "ValueError",
                 id="rule-for-a-type-name"),
    pytest.param(lambda: Classifier.default().with_message_rule(42, ErrorClass.PERMANENT), "pattern",
                 id="message-rule-not-a-str"),
    pytest.param(lambda: Classifier(func=42), "func", id="classifier-func-not-callable"),
]


@pytest.mark.parametrize(("build", "argument"), POLICY_TYPE_PROBLEMS)
def test_wrong_policy_type_raises_type_error(build: Any, argument: str) -> None:
    with pytest.raises(TypeError) as info:
        build()
    assert argument in str(info.value)


def test_classifier_rule_error_says_what_a_rule_needs() -> None:
    with pytest.raises(TypeError, match=re.escape("not an exception type")):
        Classifier.default().with_rule(dict, ErrorClass.PERMANENT)


def test_unknown_dlq_scheme_lists_the_accepted_ones() -> None:
    with pytest.raises(urls.ConfigError) as info:
        urls.open_dlq("kafka://broker/topic")
    message = str(info.value)
    assert "kafka" in message
    for scheme in ("sqlite", "jsonl", "redis", "postgresql"):
        assert scheme in message


def test_dlq_url_error_does_not_leak_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        batchguard.run_batches([1], lambda r: r, dlq="mysql://app:s3cret@db/x")
    assert "s3cret" not in str(info.value)
