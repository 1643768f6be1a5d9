"""Steering arguments are bounded to sane ranges (issue 10 item 6, leftovers): a retry budget, an
adaptive limit or a slow-call breaker out of range is refused when it is made, before any record
runs, with an error that names the argument, its value and the range. And a slow-call threshold
an async fn's timeout makes unreachable is refused, naming both values.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import batchguard
from batchguard import Adaptive, CircuitBreaker, ConfigError, RetryBudget

OUT_OF_RANGE = [
    # The unit mistake of the issue: 1e-10 retries/s over 1e10 s passed as "one retry per window".
    (RetryBudget, {"min_per_s": 1e-10, "window_s": 1e10}, "RetryBudget.window_s", "1e+10", "[0.1, 3600]"),
    (RetryBudget, {"window_s": 0.001, "over_budget": "dead_letter"}, "RetryBudget.window_s", "0.001", "[0.1, 3600]"),
    (RetryBudget, {"ratio": 5000.0}, "RetryBudget.ratio", "5000", "[0, 1000]"),
    (RetryBudget, {"ratio": float("nan")}, "RetryBudget.ratio", "nan", "[0, 1000]"),
    (RetryBudget, {"min_per_s": 1e9}, "RetryBudget.min_per_s", "1e+09", "[0, 1e+06]"),
    (RetryBudget, {"min_per_s": -1.0}, "RetryBudget.min_per_s", "-1", "[0, 1e+06]"),
    (Adaptive, {"max": 100_000}, "Adaptive.max", "100000", "[1, 65536]"),
    (Adaptive, {"increase": 1e-9}, "Adaptive.increase", "1e-09", "[0.01, 1000]"),
    (Adaptive, {"increase": 1e9}, "Adaptive.increase", "1e+09", "[0.01, 1000]"),
    (Adaptive, {"decrease": 0.001}, "Adaptive.decrease", "0.001", "[0.1, 0.99]"),
    (Adaptive, {"decrease": 0.9999}, "Adaptive.decrease", "0.9999", "[0.1, 0.99]"),
    (CircuitBreaker, {"slow_call_s": 1e-6, "slow_call_rate_threshold": 0.5}, "CircuitBreaker.slow_call_s",
     "1e-06", "[0.001, 31536000]"),
    (CircuitBreaker, {"slow_call_s": 1e12, "slow_call_rate_threshold": 0.5}, "CircuitBreaker.slow_call_s",
     "1e+12", "[0.001, 31536000]"),
]


@pytest.mark.parametrize(("kind", "kwargs", "name", "value", "bounds"), OUT_OF_RANGE,
                         ids=[f"{case[2]}={case[3]}" for case in OUT_OF_RANGE])
def test_an_argument_out_of_range_is_refused_naming_it_its_value_and_the_range(
        kind: type, kwargs: dict[str, Any], name: str, value: str, bounds: str) -> None:
    with pytest.raises(ConfigError) as raised:
        kind(**kwargs)
    message = str(raised.value)
    assert message.startswith(name), message
    assert value in message and bounds in message, message


@pytest.mark.parametrize(("kind", "kwargs"), [
    (RetryBudget, {"ratio": 0.0, "min_per_s": 0.001, "window_s": 1000.0}),  # one retry per 1000 s: allowed
    (RetryBudget, {"ratio": 1000.0, "min_per_s": 1e6, "window_s": 0.1, "over_budget": "dead_letter"}),
    (RetryBudget, {"ratio": 0.0, "min_per_s": 0.0, "window_s": 3600.0, "over_budget": "dead_letter"}),
    (Adaptive, {"min": 1, "max": 65_536, "increase": 0.01, "decrease": 0.1}),
    (Adaptive, {"increase": 1000.0, "decrease": 0.99}),
    (CircuitBreaker, {"slow_call_s": 0.001, "slow_call_rate_threshold": 1.0}),
])
def test_the_ends_of_each_range_are_allowed(kind: type, kwargs: dict[str, Any]) -> None:
    kind(**kwargs)


def test_a_policy_changed_with_replace_is_checked_again() -> None:
    import dataclasses

    with pytest.raises(ConfigError, match=re.escape("RetryBudget.window_s must be in [0.1, 3600]")):
        dataclasses.replace(RetryBudget(), window_s=1e10)


def _slow_breaker(slow_call_s: float) -> CircuitBreaker:
    return CircuitBreaker(slow_call_s=slow_call_s, slow_call_rate_threshold=0.5, window=4, minimum_calls=4)


async def _anap(record: int) -> int:
    await asyncio.sleep(0)
    return record


@pytest.mark.parametrize("engine", ["python", "native"])
@pytest.mark.parametrize("bulk", [False, True])
@pytest.mark.parametrize(("slow_call_s", "timeout"), [(2.0, 2.0), (5.0, 2.0)])
def test_an_async_fn_whose_timeout_comes_first_is_refused_naming_both(
        engine: str, bulk: bool, slow_call_s: float, timeout: float) -> None:
    calls: list[Any] = []

    async def fn(record: Any) -> Any:
        calls.append(record)
        return record

    with pytest.raises(ConfigError) as raised:
        batchguard.run_batches(range(4), fn, bulk=bulk, engine=engine, timeout=timeout,
                               breaker=_slow_breaker(slow_call_s))
    message = str(raised.value)
    assert f"slow_call_s={slow_call_s:g}" in message and f"timeout={timeout:g}" in message, message
    assert calls == []


def test_the_same_is_refused_by_arun_batches() -> None:
    with pytest.raises(ConfigError, match=re.escape("CircuitBreaker(slow_call_s=2) must be under timeout=1")):
        asyncio.run(batchguard.arun_batches(range(4), _anap, timeout=1.0, breaker=_slow_breaker(2.0)))


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_sync_fn_may_have_a_slow_call_threshold_past_its_timeout(engine: str) -> None:
    """A sync call cannot be cancelled: it runs to its end, and its time is what it took, so a
    slow call past the timeout is still seen (and counts as a TimeoutError)."""
    report = batchguard.run_batches(range(4), lambda record: record, engine=engine, timeout=1.0,
                                    breaker=_slow_breaker(2.0))
    assert report.successful == [0, 1, 2, 3]


def test_an_async_fn_with_a_slow_call_threshold_under_its_timeout_runs() -> None:
    report = batchguard.run_batches(range(4), _anap, timeout=2.0, breaker=_slow_breaker(1.0))
    assert report.successful == [0, 1, 2, 3]
