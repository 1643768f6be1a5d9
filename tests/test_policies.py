"""RetryPolicy schedules, CircuitBreaker validation, and the seed's batching helpers.

The Python policies and the Rust engine must compute the very same numbers: the backoff
delays bit for bit (so a schedule a user prints is the one the engine waits), and the batch
size heuristic.
"""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchguard import (
    Batch,
    CircuitBreaker,
    ErrorClass,
    RetryPolicy,
    _native,
    calculate_batch_size,
    create_batches,
)
from batchguard.errors import ConfigError

JITTERS = ("none", "full", "equal", "decorrelated")
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


# ------------------------------------------------------------------------ RetryPolicy.schedule


def test_schedule_without_jitter_is_exact_exponential_backoff() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, multiplier=2.0, max_delay=30.0, jitter="none")
    assert policy.schedule(5) == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_schedule_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(base_delay=1.0, multiplier=3.0, max_delay=10.0, jitter="none")
    assert policy.schedule(5) == [1.0, 3.0, 9.0, 10.0, 10.0]


def test_schedule_with_multiplier_one_is_constant() -> None:
    assert RetryPolicy(base_delay=0.25, multiplier=1.0, jitter="none").schedule(4) == [0.25] * 4


def test_schedule_of_zero_delays_is_empty_and_negative_n_is_rejected() -> None:
    assert RetryPolicy().schedule(0) == []
    with pytest.raises(ConfigError, match="n"):
        RetryPolicy().schedule(-1)


@pytest.mark.parametrize("jitter", JITTERS)
def test_schedule_of_a_huge_n_never_overflows(jitter: str) -> None:
    policy = RetryPolicy(base_delay=1.0, multiplier=10.0, max_delay=60.0, jitter=jitter, seed=3)
    delays = policy.schedule(3000)
    assert len(delays) == 3000
    assert all(math.isfinite(d) and 0.0 <= d <= 60.0 for d in delays)
    if jitter == "none":
        assert delays[-1] == 60.0
    assert policy.base_delay_for(10**6) == 60.0


@pytest.mark.parametrize("jitter", JITTERS)
def test_seeded_schedule_is_reproducible(jitter: str) -> None:
    a = RetryPolicy(base_delay=0.1, jitter=jitter, seed=1234).schedule(20)
    b = RetryPolicy(base_delay=0.1, jitter=jitter, seed=1234).schedule(20)
    assert a == b
    # The seed can also be given per call, and then wins over the policy's.
    assert RetryPolicy(base_delay=0.1, jitter=jitter, seed=99).schedule(20, seed=1234) == a


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated"])
def test_jitter_streams_differ_by_seed_and_by_record(jitter: str) -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1000.0, jitter=jitter, seed=1)
    base = policy.schedule(10)
    assert policy.schedule(10, seed=2) != base
    assert policy.schedule(10, record_index=1) != base
    assert len(set(base)) > 1, "jittered delays should not all be equal"


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(min_value=0.0, max_value=100.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=1000.0),
    seed=U64,
    record_index=st.integers(min_value=0, max_value=10**6),
)
def test_jittered_delays_stay_within_their_bounds(base: float, multiplier: float, extra: float,
                                                  seed: int, record_index: int) -> None:
    max_delay = base + extra
    make = lambda jitter: RetryPolicy(base_delay=base, multiplier=multiplier, max_delay=max_delay,  # noqa: E731
                                      jitter=jitter, seed=seed)
    n = 12
    caps = make("none").schedule(n)
    for retry, cap in enumerate(caps, 1):
        assert cap == min(max_delay, base * multiplier ** (retry - 1)) or cap == max_delay
    full = make("full").schedule(n, record_index=record_index)
    equal = make("equal").schedule(n, record_index=record_index)
    for d, f, e in zip(caps, full, equal, strict=True):
        assert 0.0 <= f <= d
        assert d / 2 <= e <= d
    previous = base
    for delay in make("decorrelated").schedule(n, record_index=record_index):
        assert min(base, max_delay) <= delay <= max_delay
        assert delay <= max(base, 3 * previous)
        previous = delay


@pytest.mark.parametrize("engine", ["python", "native"])
def test_equal_jitter_never_exceeds_a_subnormal_delay(engine: str) -> None:
    # A delay of 3 ulps (1.5e-323): d / 2 rounds up to 2 ulps, and 2 ulps more of jitter made
    # 4 ulps, past d (hypothesis found it: 2e-323 > 1.5e-323). The draw is clamped to d.
    d = 1.5e-323
    policy = RetryPolicy(max_attempts=50, base_delay=d, multiplier=1.0, max_delay=d, jitter="equal", seed=7)
    if engine == "python":
        delays = policy.schedule(40, record_index=3)
    else:
        delays = _native.backoff_schedule(50, d, 1.0, d, "equal", 7, 3, 40)
    assert all(d / 2 <= e <= d for e in delays), [e for e in delays if e > d]


@settings(max_examples=300, deadline=None)
@given(
    max_attempts=st.integers(min_value=1, max_value=20),
    base=st.floats(min_value=0.0, max_value=50.0),
    multiplier=st.floats(min_value=1.0, max_value=20.0),
    extra=st.one_of(st.floats(min_value=0.0, max_value=500.0), st.just(0.0)),
    jitter=st.sampled_from(JITTERS),
    seed=U64,
    record_index=st.one_of(st.integers(min_value=0, max_value=1000), U64),
    n=st.integers(min_value=0, max_value=40),
)
def test_python_schedule_equals_native_schedule_bit_for_bit(
        max_attempts: int, base: float, multiplier: float, extra: float, jitter: str, seed: int,
        record_index: int, n: int) -> None:
    max_delay = base + extra
    policy = RetryPolicy(max_attempts=max_attempts, base_delay=base, multiplier=multiplier,
                         max_delay=max_delay, jitter=jitter, seed=seed)
    ours = policy.schedule(n, record_index=record_index)
    theirs = _native.backoff_schedule(max_attempts, base, multiplier, max_delay, jitter, seed,
                                      record_index, n)
    assert [d.hex() for d in ours] == [d.hex() for d in theirs]


@pytest.mark.parametrize("jitter", JITTERS)
def test_schedules_agree_past_float_overflow(jitter: str) -> None:
    # 10.0 ** 400 overflows a double: both engines must fall back to max_delay the same way.
    policy = RetryPolicy(max_attempts=3, base_delay=0.5, multiplier=10.0, max_delay=7.0,
                         jitter=jitter, seed=11)
    ours = policy.schedule(500, record_index=5)
    theirs = _native.backoff_schedule(3, 0.5, 10.0, 7.0, jitter, 11, 5, 500)
    assert [d.hex() for d in ours] == [d.hex() for d in theirs]


def test_native_schedule_rejects_what_the_policy_rejects() -> None:
    with pytest.raises(ConfigError, match="jitter"):
        _native.backoff_schedule(3, 1.0, 2.0, 30.0, "gaussian", 0, 0, 3)
    with pytest.raises(ConfigError, match="max_attempts"):
        _native.backoff_schedule(0, 1.0, 2.0, 30.0, "none", 0, 0, 3)
    with pytest.raises(ConfigError, match="max_delay"):
        _native.backoff_schedule(3, 5.0, 2.0, 1.0, "none", 0, 0, 3)


def test_retry_policy_is_frozen_and_comparable() -> None:
    policy = RetryPolicy(max_attempts=4, jitter="none")
    assert policy == RetryPolicy(max_attempts=4, jitter="none")
    with pytest.raises(AttributeError):
        policy.max_attempts = 5  # type: ignore[misc]


# ------------------------------------------------------------------------ CircuitBreaker


def test_circuit_breaker_defaults_match_the_design() -> None:
    breaker = CircuitBreaker()
    assert (breaker.failure_rate_threshold, breaker.window, breaker.minimum_calls,
            breaker.open_duration, breaker.half_open_calls, breaker.abort_failure_rate) == (
        0.5, 20, 10, 30.0, 3, None)
    assert breaker.counts == (ErrorClass.TRANSIENT, ErrorClass.RECOVERABLE)


def test_circuit_breaker_accepts_class_names_in_counts() -> None:
    breaker = CircuitBreaker(counts=["permanent", ErrorClass.RECOVERABLE])
    assert breaker.counts == (ErrorClass.PERMANENT, ErrorClass.RECOVERABLE)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"failure_rate_threshold": 0.0}, "failure_rate_threshold"),
    ({"failure_rate_threshold": 1.01}, "failure_rate_threshold"),
    ({"failure_rate_threshold": float("nan")}, "failure_rate_threshold"),
    ({"window": 0, "minimum_calls": 1}, "window"),
    ({"window": 4, "minimum_calls": 5}, "minimum_calls"),
    ({"minimum_calls": 0}, "minimum_calls"),
    ({"open_duration": -0.5}, "open_duration"),
    ({"open_duration": float("inf")}, "open_duration"),
    ({"half_open_calls": 0}, "half_open_calls"),
    ({"abort_failure_rate": 0.0}, "abort_failure_rate"),
    ({"abort_failure_rate": 2.0}, "abort_failure_rate"),
    ({"counts": ()}, "counts"),
])
def test_circuit_breaker_rejects_bad_fields_by_name(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_circuit_breaker_edge_values_are_valid() -> None:
    CircuitBreaker(failure_rate_threshold=1.0, window=1, minimum_calls=1, open_duration=0.0,
                   half_open_calls=1, abort_failure_rate=1.0)


# ------------------------------------------------------------------------ batching helpers


@pytest.mark.parametrize(("total", "max_size", "expected"), [
    (0, 32, 1),
    (1, 32, 1),
    (50, 32, 32),
    (50, 100, 50),
    (100, 32, 32),
    (100, 1000, 100),
    (101, 1000, 10),
    (500, 32, 32),
    (500, 100, 50),
    (1000, 1000, 100),
    (1001, 64, 64),
    (5000, 32, 32),
])
def test_calculate_batch_size_follows_the_seed_heuristic(total: int, max_size: int, expected: int) -> None:
    assert calculate_batch_size(total, max_size) == expected


def test_calculate_batch_size_default_max_is_32() -> None:
    assert calculate_batch_size(50) == 32
    assert calculate_batch_size(5000) == 32
    assert calculate_batch_size(500) == 32


@pytest.mark.parametrize(("total", "max_size", "blamed"),
                         [(-1, 32, "total_items"), (10, 0, "max_batch_size"), (10, -3, "max_batch_size")])
def test_calculate_batch_size_rejects_negative_total_and_max_below_one(total: int, max_size: int, blamed: str) -> None:
    with pytest.raises(ValueError, match=f"^{blamed} must be >= "):
        calculate_batch_size(total, max_size)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(min_value=0, max_value=10**7), max_size=st.integers(min_value=1, max_value=10**5))
def test_calculate_batch_size_equals_the_native_heuristic(total: int, max_size: int) -> None:
    size = calculate_batch_size(total, max_size)
    assert size == _native.calculate_batch_size(total, max_size)
    assert 1 <= size <= max(1, max_size)


def test_native_calculate_batch_size_rejects_max_below_one() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        _native.calculate_batch_size(10, 0)


def test_create_batches_keeps_order_indices_and_metadata() -> None:
    items = [f"item-{i}" for i in range(10)]
    batches = create_batches(items, batch_size=4)
    assert all(isinstance(b, Batch) for b in batches)
    assert [b.items for b in batches] == [items[0:4], items[4:8], items[8:10]]
    assert [b.batch_index for b in batches] == [0, 1, 2]
    assert [(b.metadata["start_index"], b.metadata["end_index"]) for b in batches] == [(0, 4), (4, 8), (8, 10)]
    assert [b.metadata["count"] for b in batches] == [4, 4, 2]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [(b.start_index, b.end_index) for b in batches] == [(0, 4), (4, 8), (8, 10)]
    for b in batches:
        created = datetime.fromisoformat(b.metadata["created_at"])
        assert created.tzinfo is not None
    assert [x for b in batches for x in b.items] == items


def test_create_batches_without_a_size_uses_the_heuristic() -> None:
    batches = create_batches(list(range(500)))
    assert [len(b) for b in batches] == [32] * 15 + [20]
    assert len(create_batches(list(range(7)))) == 1


def test_create_batches_accepts_any_sequence() -> None:
    assert [b.items for b in create_batches((1, 2, 3), batch_size=2)] == [[1, 2], [3]]
    assert [b.items for b in create_batches(range(3), batch_size=5)] == [[0, 1, 2]]


def test_create_batches_of_nothing_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="items is empty"):
        create_batches([])


@pytest.mark.parametrize("size", [0, -1])
def test_create_batches_rejects_a_size_below_one(size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        create_batches([1, 2, 3], batch_size=size)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=1, max_value=300), size=st.integers(min_value=1, max_value=50))
def test_create_batches_partitions_exactly(n: int, size: int) -> None:
    items = list(range(n))
    batches = create_batches(items, batch_size=size)
    assert [x for b in batches for x in b.items] == items
    assert all(len(b) == size for b in batches[:-1])
    assert 1 <= len(batches[-1]) <= size
    assert len(batches) == -(-n // size)


@pytest.mark.parametrize("jitter", JITTERS)
def test_schedule_returns_floats_even_for_int_settings(jitter: str) -> None:
    policy = RetryPolicy(max_attempts=9, base_delay=1, multiplier=2, max_delay=4, jitter=jitter, seed=5)
    delays = policy.schedule(8)
    assert all(type(d) is float for d in delays), delays
    native = _native.backoff_schedule(9, 1.0, 2.0, 4.0, jitter, 5, 0, 8)
    assert [d.hex() for d in delays] == [d.hex() for d in native]


def test_zero_base_delay_never_waits_however_many_retries() -> None:
    policy = RetryPolicy(max_attempts=2000, base_delay=0.0, multiplier=2.0, max_delay=30.0, jitter="none")
    assert set(policy.schedule(1100)) == {0.0}
