"""A circuit breaker that counts slow calls, as Resilience4j's does (issue 10 item 6):
``CircuitBreaker(slow_call_s=..., slow_call_rate_threshold=...)`` opens when the share of calls
slower than ``slow_call_s`` over its window reaches the threshold, successes included, on both
engines and every driver (inline, threads, asyncio). The slow calls here sleep four times
``slow_call_s`` and the fast ones return at once, so no assertion hangs on the machine's speed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import batchguard
from batchguard import CircuitBreaker

ENGINES = ("native", "python")
SLOW_S = 0.05


def _breaker(**overrides: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {"failure_rate_threshold": 1.0, "window": 4, "minimum_calls": 4,
                                "open_duration": 0.2, "half_open_calls": 1, "slow_call_s": SLOW_S,
                                "slow_call_rate_threshold": 0.5}
    return CircuitBreaker(**{**settings, **overrides})


def _sleepy(slow: set[int]) -> Any:
    def fn(record: int) -> int:
        if record in slow:
            time.sleep(4 * SLOW_S)
        return record

    return fn


@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("engine", ENGINES)
def test_slow_successes_open_the_breaker(engine: str, concurrency: int) -> None:
    report = batchguard.run_batches(range(12), _sleepy({1, 2, 3, 4, 5}), engine=engine, concurrency=concurrency,
                                    breaker=_breaker())
    assert report.status == "complete"
    assert report.successful == list(range(12))
    assert report.failure_count == 0
    assert report.breaker_trips >= 1
    assert ("closed", "open") in [(old, new) for _, old, new in report.breaker_events]


@pytest.mark.parametrize("engine", ENGINES)
def test_fast_calls_leave_the_breaker_closed(engine: str) -> None:
    report = batchguard.run_batches(range(40), _sleepy({7}), engine=engine, breaker=_breaker())
    assert report.breaker_trips == 0
    assert report.breaker_events == []


@pytest.mark.parametrize("engine", ENGINES)
def test_without_slow_call_settings_slow_calls_do_not_count(engine: str) -> None:
    report = batchguard.run_batches(range(12), _sleepy({1, 2, 3, 4, 5}), engine=engine,
                                    breaker=_breaker(slow_call_s=None, slow_call_rate_threshold=None))
    assert report.breaker_trips == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_slow_async_calls_open_the_breaker(engine: str) -> None:
    async def fn(record: int) -> int:
        if record in {1, 2, 3, 4, 5}:
            await asyncio.sleep(4 * SLOW_S)
        return record

    report = batchguard.run_batches(range(12), fn, engine=engine, concurrency=2, breaker=_breaker())
    assert report.successful == list(range(12))
    assert report.breaker_trips >= 1


@pytest.mark.parametrize(("overrides", "message"), [
    ({"slow_call_rate_threshold": None}, "go together"),
    ({"slow_call_s": None}, "go together"),
    ({"slow_call_s": 0}, "slow_call_s must be > 0"),
    ({"slow_call_rate_threshold": 1.5}, r"slow_call_rate_threshold must be in \(0, 1\]"),
])
def test_bad_slow_call_settings_are_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(batchguard.ConfigError, match=message):
        _breaker(**overrides)
