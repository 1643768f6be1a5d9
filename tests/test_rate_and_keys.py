"""Rate limits, the pause between batches, and keyed ordering (issue 4), on both engines, for
sync and async callbacks.

Timing appears only as the bounds the contract states (a token bucket's, the pause's, "never
at the same time"), never as a performance threshold.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import batchguard
from batchguard import ConfigError, MemoryDLQ, RateLimit, RetryPolicy
from batchguard.errors import ConfigTypeError
from helpers_contract import (
    ENGINES,
    FailurePlan,
    RecoverableErr,
    RetryAfterErr,
    TransientErr,
    assert_conservation,
    dlq_view,
    outcome_view,
    run,
)
from helpers_http import worst_rate_excess
from test_async import AsyncFailurePlan
from test_properties import SETTINGS, Scenario, check_laws, scenarios

both = pytest.mark.parametrize("engine", ENGINES)
kinds = pytest.mark.parametrize("kind", ["sync", "async"])
# Clock granularity, and the few instructions between the engine's grant and the callback's
# first line.
CLOCK_SLACK_S = 0.001


class Spans:
    """A callback (sync or async) that notes when each attempt of each record started and
    ended; ``fail(record, attempt)`` returns an exception to raise, or None."""

    def __init__(self, hold: float = 0.0, fail: Any = None) -> None:
        self.hold = hold
        self.fail = fail or (lambda record, attempt: None)
        self.starts: list[tuple[int, float]] = []
        self.spans: dict[int, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def begin(self, record: int) -> tuple[float, int]:
        now = time.monotonic()
        with self._lock:
            self.starts.append((record, now))
            attempt = sum(1 for r, _ in self.starts if r == record)
        return now, attempt

    def end(self, record: int, started: float, attempt: int) -> int:
        with self._lock:
            self.spans.setdefault(record, []).append((started, time.monotonic()))
        exc = self.fail(record, attempt)
        if exc is not None:
            raise exc
        return record * 10

    def sync(self, record: int) -> int:
        started, attempt = self.begin(record)
        if self.hold:
            time.sleep(self.hold)
        return self.end(record, started, attempt)

    async def async_(self, record: int) -> int:
        started, attempt = self.begin(record)
        await asyncio.sleep(self.hold)
        return self.end(record, started, attempt)

    def fn(self, kind: str) -> Any:
        return self.async_ if kind == "async" else self.sync

    def start_times(self) -> list[float]:
        return [at for _, at in self.starts]

    def first_start(self, record: int) -> float:
        return self.spans[record][0][0]

    def last_end(self, record: int) -> float:
        return self.spans[record][-1][1]


# ---------------------------------------------------------------------------- RateLimit: bad input


@pytest.mark.parametrize("per_second", [0, 0.0, -1, -0.5])
def test_rate_of_zero_or_less_is_a_config_error_naming_per_second(per_second: float) -> None:
    with pytest.raises(ConfigError, match="per_second"):
        RateLimit(per_second=per_second)


@pytest.mark.parametrize("per_second", [math.nan, math.inf])
def test_rate_that_is_not_finite_is_a_config_error_naming_per_second(per_second: float) -> None:
    with pytest.raises(ConfigError, match="per_second"):
        RateLimit(per_second=per_second)


@pytest.mark.parametrize("burst", [0, -3])
def test_burst_below_one_is_a_config_error_naming_burst(burst: int) -> None:
    with pytest.raises(ConfigError, match="burst"):
        RateLimit(per_second=10, burst=burst)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"per_second": "10"}, "per_second"),
    ({"per_second": None}, "per_second"),
    ({"per_second": True}, "per_second"),
    ({"per_second": 10, "burst": 1.5}, "burst"),
    ({"per_second": 10, "burst": "5"}, "burst"),
    ({"per_second": 10, "burst": True}, "burst"),
])
def test_rate_limit_of_the_wrong_type_is_a_config_type_error_naming_the_field(kwargs: dict[str, Any],
                                                                             field: str) -> None:
    with pytest.raises(ConfigTypeError, match=field):
        RateLimit(**kwargs)


@both
@pytest.mark.parametrize("value", [10, 10.0, {"per_second": 10}, (10, 2)])
def test_rate_limit_that_is_not_a_rate_limit_is_rejected_naming_rate_limit(engine: str, value: Any) -> None:
    calls: list[int] = []
    with pytest.raises(ConfigTypeError, match="rate_limit"):
        batchguard.run_batches(range(3), calls.append, rate_limit=value, engine=engine)
    assert calls == []


@both
@pytest.mark.parametrize("value", [-0.1, -5])
def test_negative_delay_between_batches_is_a_config_error(engine: str, value: float) -> None:
    with pytest.raises(ConfigError, match="delay_between_batches"):
        batchguard.run_batches(range(3), lambda r: r, delay_between_batches=value, engine=engine)


@both
@pytest.mark.parametrize("value", ["1", None, True])
def test_delay_between_batches_that_is_not_a_number_is_rejected(engine: str, value: Any) -> None:
    with pytest.raises(ConfigTypeError, match="delay_between_batches"):
        batchguard.run_batches(range(3), lambda r: r, delay_between_batches=value, engine=engine)


@both
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_delay_between_batches_that_is_not_finite_is_rejected(engine: str, value: Any) -> None:
    # A float, so a value problem (ConfigError), not a type problem.
    with pytest.raises(ConfigError, match="delay_between_batches"):
        batchguard.run_batches(range(3), lambda r: r, delay_between_batches=value, engine=engine)


@both
def test_key_of_that_is_not_callable_is_rejected_naming_key_of(engine: str) -> None:
    with pytest.raises(TypeError, match="key_of"):
        batchguard.run_batches(range(3), lambda r: r, key_of="account", engine=engine)


# ---------------------------------------------------------------------------- the rate limit holds


@both
@kinds
def test_rate_limit_holds_over_all_workers(engine: str, kind: str) -> None:
    rate = RateLimit(per_second=200, burst=5)
    spans = Spans(hold=0.001)
    report = run(range(200), spans.fn(kind), engine=engine, concurrency=8, rate_limit=rate)
    assert report.status == "complete"
    assert report.successful == [r * 10 for r in range(200)]
    starts = spans.start_times()
    assert len(starts) == 200
    excess = worst_rate_excess(starts, rate.per_second, rate.burst)
    assert excess <= CLOCK_SLACK_S, f"starts came {excess * 1e3:.2f} ms faster than {rate} allows"
    # The bound is tight where it matters: 200 starts need (200 - 5) / 200 s at least.
    assert max(starts) - min(starts) >= (200 - rate.burst) / rate.per_second - CLOCK_SLACK_S


@both
@kinds
def test_retries_count_against_the_rate_limit(engine: str, kind: str) -> None:
    rate = RateLimit(per_second=300, burst=3)
    spans = Spans(fail=lambda record, attempt: TransientErr("again") if attempt == 1 else None)
    report = run(range(60), spans.fn(kind), engine=engine, concurrency=4, rate_limit=rate,
                 retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    assert report.status == "complete" and report.retry_count == 60
    starts = spans.start_times()
    assert len(starts) == 120
    excess = worst_rate_excess(starts, rate.per_second, rate.burst)
    assert excess <= CLOCK_SLACK_S, f"starts came {excess * 1e3:.2f} ms faster than {rate} allows"


@both
def test_rate_limited_throttled_record_still_waits_its_retry_after(engine: str) -> None:
    spans = Spans(fail=lambda record, attempt: RetryAfterErr("429", 0.15) if record == 0 and attempt == 1
                  else None)
    report = run(range(5), spans.sync, engine=engine, concurrency=2,
                 rate_limit=RateLimit(per_second=1000, burst=10),
                 retry=RetryPolicy(max_attempts=2, base_delay=0.001, jitter="none"))
    assert report.status == "complete"
    (_, first_end), (second_start, _) = spans.spans[0]
    assert second_start - first_end >= 0.15


# ---------------------------------------------------------------------------- delay_between_batches


@both
@kinds
def test_delay_between_batches_separates_the_starts_of_consecutive_batches(engine: str, kind: str) -> None:
    delay, size, batches = 0.05, 5, 4
    spans = Spans()
    report = run(range(size * batches), spans.fn(kind), engine=engine, concurrency=3, batch_size=size,
                 delay_between_batches=delay)
    assert report.status == "complete"
    assert len(report.batches) == batches
    for k in range(batches - 1):
        last_of_k = max(spans.first_start(r) for r in range(k * size, (k + 1) * size))
        first_of_next = min(spans.first_start(r) for r in range((k + 1) * size, (k + 2) * size))
        assert first_of_next - last_of_k >= delay, f"batch {k + 1} started too soon"


@both
def test_delay_between_batches_does_not_delay_the_first_batch_or_records_within_a_batch(engine: str) -> None:
    spans = Spans()
    started = time.monotonic()
    run(range(10), spans.sync, engine=engine, batch_size=10, delay_between_batches=5.0)
    assert time.monotonic() - started < 5.0


# ---------------------------------------------------------------------------- key_of


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@both
@kinds
def test_equal_keys_never_overlap_and_run_in_input_order_while_different_keys_overlap(
        engine: str, kind: str) -> None:
    records = list(range(24))
    key = {r: r % 3 for r in records}
    spans = Spans(hold=0.01)
    report = run(records, spans.fn(kind), engine=engine, concurrency=6, batch_size=7,
                 key_of=key.__getitem__)
    assert report.status == "complete"
    assert report.successful == [r * 10 for r in records]
    same_key_overlaps = []
    different_key_overlaps = 0
    for a in records:
        for b in records[a + 1:]:
            if _overlap(spans.spans[a][0], spans.spans[b][0]):
                if key[a] == key[b]:
                    same_key_overlaps.append((a, b))
                else:
                    different_key_overlaps += 1
    assert same_key_overlaps == []
    assert different_key_overlaps > 0, "different keys never ran at the same time"
    for k in set(key.values()):
        group = [r for r in records if key[r] == k]
        assert sorted(group, key=spans.first_start) == group, f"key {k} ran out of input order"
        # One at a time: each record of a key starts after the previous one ended.
        for before, after in itertools.pairwise(group):
            assert spans.first_start(after) >= spans.last_end(before)


@both
@kinds
def test_key_of_that_raises_dead_letters_that_record_unrun_and_the_rest_run(engine: str, kind: str) -> None:
    def key_of(record: int) -> int:
        if record == 3:
            raise KeyError(f"record {record} has no account")
        return record % 2

    spans = Spans()
    dlq = MemoryDLQ()
    report = run(range(8), spans.fn(kind), engine=engine, concurrency=2, key_of=key_of, dlq=dlq)
    assert_conservation(report)
    assert report.successful == [r * 10 for r in range(8) if r != 3]
    assert 3 not in spans.spans, "a record whose key could not be computed was run"
    (error,) = report.errors
    assert (error.record_index, error.error_type, error.error_class, error.attempts) == (3, "KeyError", "permanent", 1)
    assert "record 3 has no account" in error.error_message
    (entry,) = dlq.list()
    assert (entry.record_index, entry.error_type, entry.error_class) == (3, "KeyError", "permanent")
    assert len(entry.attempts) == 1 and entry.payload == 3


@both
def test_unhashable_key_dead_letters_the_record_with_a_type_error(engine: str) -> None:
    spans = Spans()
    report = run(range(6), spans.sync, engine=engine, concurrency=2,
                 key_of=lambda r: [r] if r == 4 else r % 2)
    assert report.successful == [r * 10 for r in range(6) if r != 4]
    (error,) = report.errors
    assert (error.record_index, error.error_type, error.error_class, error.attempts) == (4, "TypeError", "permanent", 1)
    assert "unhashable" in error.error_message
    assert 4 not in spans.spans


@both
def test_key_of_may_return_none_or_any_hashable(engine: str) -> None:
    keys = {0: None, 1: ("a", 1), 2: frozenset({1}), 3: "a", 4: 1.5, 5: None}
    report = run(range(6), Spans().sync, engine=engine, concurrency=3, key_of=keys.__getitem__)
    assert report.status == "complete" and report.successful == [r * 10 for r in range(6)]


@both
@kinds
@pytest.mark.parametrize("retried_ends", ["succeeded", "dead_lettered"])
def test_record_waits_behind_a_retrying_record_of_the_same_key(engine: str, kind: str,
                                                                retried_ends: str) -> None:
    attempts = 3

    def fail(record: int, attempt: int) -> Exception | None:
        if record == 0 and (attempt < attempts or retried_ends == "dead_lettered"):
            return RecoverableErr(f"attempt {attempt}")
        return None

    spans = Spans(fail=fail)
    report = run(range(6), spans.fn(kind), engine=engine, concurrency=4, key_of=lambda r: r % 2,
                 retry=RetryPolicy(max_attempts=attempts, base_delay=0.05, jitter="none"))
    assert_conservation(report)
    assert report.pending_count == 0
    expected = [r * 10 for r in range(6) if r != 0 or retried_ends == "succeeded"]
    assert report.successful == expected
    assert len(spans.spans[0]) == attempts
    # The records of key 0 waited for record 0's last attempt; those of key 1 did not.
    for r in (2, 4):
        assert spans.first_start(r) >= spans.last_end(0)
    assert spans.last_end(5) < spans.spans[0][-1][0], "key 1 waited behind another key's retry"


# ---------------------------------------------------------------------------- key_of, under random plans


@st.composite
def keyed_scenarios(draw: st.DrawFn) -> tuple[Scenario, list[int]]:
    scenario = draw(scenarios(breaker=st.none()))
    keys = draw(st.lists(st.integers(min_value=0, max_value=3), min_size=scenario.n, max_size=scenario.n))
    return scenario, keys


def check_key_order(plan: FailurePlan, keys: list[int]) -> None:
    """Per key, every attempt of a record starts before any attempt of the next record."""
    for key in set(keys):
        seen = [record for record, _ in plan.calls if keys[record] == key]
        runs = [record for i, record in enumerate(seen) if i == 0 or seen[i - 1] != record]
        assert runs == sorted(set(runs)), f"key {key}: attempts interleaved or out of order: {seen}"


@both
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("concurrency", [1, 4])
@SETTINGS
@given(case=keyed_scenarios())
def test_keyed_runs_keep_the_laws_and_the_per_key_order(engine: str, kind: str, concurrency: int,
                                                        case: tuple[Scenario, list[int]]) -> None:
    scenario, keys = case
    plan = AsyncFailurePlan(scenario.outcomes) if kind == "async" else FailurePlan(scenario.outcomes)
    dlq = MemoryDLQ()
    report = run(list(range(scenario.n)), plan, engine=engine, concurrency=concurrency, dlq=dlq,
                 key_of=keys.__getitem__, **scenario.kwargs())
    check_laws(scenario, plan, report, dlq)
    check_key_order(plan, keys)


@SETTINGS
@given(case=keyed_scenarios())
def test_keyed_runs_agree_between_engines(case: tuple[Scenario, list[int]]) -> None:
    scenario, keys = case
    views = []
    for engine in ENGINES:
        plan = FailurePlan(scenario.outcomes)
        dlq = MemoryDLQ()
        report = run(list(range(scenario.n)), plan, engine=engine, dlq=dlq, key_of=keys.__getitem__,
                     **scenario.kwargs())
        views.append((outcome_view(report), plan.calls,
                      [dlq_view(e) for e in sorted(dlq.list(), key=lambda e: e.record_index)]))
    assert views[0] == views[1]
