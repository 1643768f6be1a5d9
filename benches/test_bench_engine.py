"""pytest-benchmark: issue 2's four scenarios at small sizes, bare loop vs reference vs native.

    python -m pytest benches/test_bench_engine.py --benchmark-only
    python -m pytest benches --benchmark-only --benchmark-group-by=group --benchmark-sort=mean

Skipped in the normal test run: ``--benchmark-skip`` is in pyproject's addopts, and benches/ is
outside ``testpaths``. One benchmark group per scenario, so pytest-benchmark's table compares
the contenders of a scenario with each other. For the ratios the issue asks for (bigger inputs,
fresh processes, interleaved rounds), run ``python benches/bench_engine.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import (
    FULL_FEATURES,
    Expected,
    QueuePool,
    RetryPolicy,
    bare_listcomp,
    bare_retry_loop,
    bare_try_loop,
    check,
    engine,
    every_tenth_invalid,
    expect_all,
    expect_flaky,
    expect_invalid,
    make_flaky,
    make_records,
    plus_one,
    sleep_1ms,
    small_dict,
    tenacity_loop,
    tpe_fresh,
)

TRIVIAL_N = 100_000
SLEEP_N = 1_000
FLAKY_N = 20_000
ROUNDS = 5

Run = Callable[[Any, Any], Any]


@pytest.fixture(scope="module")
def records() -> list[dict[str, int]]:
    return make_records(TRIVIAL_N)


def bench(benchmark: Any, run: Run, records: list[dict[str, int]], make_fn: Callable[[], Any],
          expected: Expected, rounds: int = ROUNDS) -> None:
    """Time ``run(records, fn)`` with a fresh ``fn`` every round; check the last output."""
    outputs: list[Any] = []

    def timed(recs: list[dict[str, int]], fn: Any) -> None:
        outputs[:] = [run(recs, fn)]

    benchmark.extra_info["records"] = len(records)
    benchmark.pedantic(timed, setup=lambda: ((records, make_fn()), {}), rounds=rounds,
                       iterations=1, warmup_rounds=1)
    assert check(outputs[0], expected) == "ok"


TRIVIAL: dict[str, Run] = {
    "bare": bare_listcomp,
    "python": engine("python"),
    "native": engine("native"),
    "native-full": engine("native", **FULL_FEATURES),
}


@pytest.mark.benchmark(group="a: 100k trivial records, fn returns an int")
@pytest.mark.parametrize("contender", list(TRIVIAL))
def test_trivial_records_returning_an_int(benchmark: Any, records: list[dict[str, int]],
                                          contender: str) -> None:
    bench(benchmark, TRIVIAL[contender], records, lambda: plus_one, expect_all(plus_one)(records))


@pytest.mark.benchmark(group="a: 100k trivial records, fn returns a small dict")
@pytest.mark.parametrize("contender", list(TRIVIAL))
def test_trivial_records_returning_a_dict(benchmark: Any, records: list[dict[str, int]],
                                          contender: str) -> None:
    bench(benchmark, TRIVIAL[contender], records, lambda: small_dict, expect_all(small_dict)(records))


FAILING: dict[str, Run] = {
    "bare-try-except": bare_try_loop,
    "python": engine("python"),
    "native": engine("native"),
    "native-full": engine("native", **FULL_FEATURES),
}


@pytest.mark.benchmark(group="b: 100k records, 10% raise ValueError")
@pytest.mark.parametrize("contender", list(FAILING))
def test_ten_percent_failing_records(benchmark: Any, records: list[dict[str, int]],
                                     contender: str) -> None:
    bench(benchmark, FAILING[contender], records, lambda: every_tenth_invalid, expect_invalid(records))


@pytest.fixture(scope="module")
def queue_pool() -> Iterator[QueuePool]:
    pool = QueuePool(64)
    yield pool
    pool.close()


SLEEPING = ("thread-pool-executor", "queue-pool", "python", "native")


@pytest.mark.benchmark(group="c: 1k records of sleep(0.001), concurrency 64")
@pytest.mark.parametrize("contender", SLEEPING)
def test_sleeping_records_at_concurrency_64(benchmark: Any, records: list[dict[str, int]],
                                            queue_pool: QueuePool, contender: str) -> None:
    runs: dict[str, Run] = {
        "thread-pool-executor": tpe_fresh,
        "queue-pool": lambda recs, fn: queue_pool.map(fn, recs),
        "python": engine("python", concurrency=64),
        "native": engine("native", concurrency=64),
    }
    subset = records[:SLEEP_N]
    bench(benchmark, runs[contender], subset, lambda: sleep_1ms, expect_all(plus_one)(subset))


ZERO_DELAY = RetryPolicy(max_attempts=3, base_delay=0.0)
FLAKY: dict[str, Run] = {
    "bare-retry-loop": bare_retry_loop,
    "tenacity": tenacity_loop,
    "python": engine("python", retry=ZERO_DELAY),
    "native": engine("native", retry=ZERO_DELAY),
}


@pytest.mark.benchmark(group="d: 20k records, 5% fail once (ConnectionError), zero delay")
@pytest.mark.parametrize("contender", list(FLAKY))
def test_records_failing_once_then_retried(benchmark: Any, records: list[dict[str, int]],
                                           contender: str) -> None:
    subset = records[:FLAKY_N]
    bench(benchmark, FLAKY[contender], subset, make_flaky, expect_flaky(subset))
