"""``run_batches(..., results="keep" | "drop" | sink)`` on both engines (issue 11 item 1).

With ``results`` other than "keep" the engines hand each batch's values over at its end and
keep none: the report's counts stay right, ``report.successful`` is empty, a sink gets every
success exactly once with its input position, and the run's memory does not grow with the input.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchguard
from batchguard import RetryPolicy
from batchguard.errors import ConfigTypeError
from helpers_contract import CONCURRENCIES, ENGINES

FAST = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, jitter="none")


class Collect:
    """A callable sink: every batch's (indices, values) as it came."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], list[Any]]] = []

    def __call__(self, indices: Any, values: Any) -> None:
        assert len(indices) == len(values)
        self.batches.append((list(indices), list(values)))

    @property
    def pairs(self) -> list[tuple[int, Any]]:
        return sorted(pair for indices, values in self.batches for pair in zip(indices, values, strict=True))


def flaky(plan: dict[int, str]) -> Any:
    """fn(x): fails for good (``"dead"``) or once (``"once"``) as ``plan`` says, else 10 * x."""
    seen: set[int] = set()

    def fn(x: int) -> int:
        kind = plan.get(x)
        if kind == "dead":
            raise ValueError(f"bad {x}")
        if kind == "once" and x not in seen:
            seen.add(x)
            raise ConnectionError(f"flaky {x}")
        return 10 * x
    return fn


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", CONCURRENCIES)
def test_drop_keeps_no_values_and_the_counts_stay_right(engine: str, concurrency: int) -> None:
    fn = flaky({3: "dead", 5: "once", 11: "dead"})
    report = batchguard.run_batches(range(20), fn, batch_size=4, concurrency=concurrency, engine=engine,
                                    retry=FAST, results="drop")
    assert report.successful == []
    assert (report.total, report.success_count, report.failure_count, report.pending_count) == (20, 18, 2, 0)
    assert report.retry_count == 1  # record 5's (a ValueError is permanent: never retried)
    assert [e.record_index for e in report.errors] == [3, 11]
    assert report.status == "partial_success"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", CONCURRENCIES)
def test_a_sink_gets_every_success_once_with_its_input_position(engine: str, concurrency: int) -> None:
    fn = flaky({2: "once", 3: "dead", 7: "once", 9: "once"})
    sink = Collect()
    report = batchguard.run_batches(range(10), fn, batch_size=3, concurrency=concurrency, engine=engine,
                                    retry=FAST, results=sink)
    assert sink.pairs == [(i, 10 * i) for i in range(10) if i != 3]
    for indices, _ in sink.batches:
        assert indices == sorted(indices), "a batch's values come in input order, retries included"
        assert len({i // 3 for i in indices}) == 1, "one batch per call"
    assert report.successful == [] and report.success_count == 9


@pytest.mark.parametrize("engine", ENGINES)
def test_async_and_bulk_fns_stream_their_results_too(engine: str) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    sink = Collect()
    report = batchguard.run_batches(range(9), double, batch_size=4, concurrency=3, engine=engine, results=sink)
    assert sink.pairs == [(i, 2 * i) for i in range(9)] and report.successful == []

    bulk_sink = Collect()
    batchguard.run_batches(range(9), lambda xs: [x + 1 for x in xs], bulk=True, batch_size=4, engine=engine,
                           results=bulk_sink)
    assert bulk_sink.pairs == [(i, i + 1) for i in range(9)]


def test_keep_is_the_default_and_returns_the_values() -> None:
    report = batchguard.run_batches(range(5), lambda x: x * 3, results="keep")
    assert report.successful == [0, 3, 6, 9, 12]


@pytest.mark.parametrize("bad", [42, "nowhere", b"out.jsonl", object()])
def test_a_results_that_is_no_mode_sink_or_url_is_refused_before_any_record_runs(bad: Any) -> None:
    calls: list[int] = []
    with pytest.raises((ConfigTypeError, batchguard.ConfigError), match="results"):
        batchguard.run_batches(range(3), calls.append, results=bad)
    assert calls == []


@pytest.mark.parametrize("typo", ["KEEP", "Drop", "none", "discard"])
def test_a_word_that_is_no_mode_is_named_as_one(typo: str) -> None:
    with pytest.raises(batchguard.ConfigError, match=f'results="{typo}" is neither "keep" nor "drop"'):
        batchguard.run_batches(range(3), lambda x: x, results=typo)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.dictionaries(st.integers(0, 29), st.sampled_from(["dead", "once"]), max_size=12),
       batch_size=st.integers(1, 7), concurrency=st.sampled_from([1, 3]))
def test_both_engines_stream_what_keep_would_have_kept(plan: dict[int, str], batch_size: int,
                                                       concurrency: int) -> None:
    """Differential: for the same input and failure plan, each engine's sink gets exactly the
    (index, value) pairs its "keep" run returns, and the two engines agree."""
    streamed = {}
    for engine in ENGINES:
        kept = batchguard.run_batches(range(30), flaky(plan), batch_size=batch_size, concurrency=concurrency,
                                      engine=engine, retry=FAST)
        sink = Collect()
        report = batchguard.run_batches(range(30), flaky(plan), batch_size=batch_size,
                                        concurrency=concurrency, engine=engine, retry=FAST, results=sink)
        assert [value for _, value in sink.pairs] == kept.successful
        assert (report.success_count, report.failure_count, report.retry_count) == (
            kept.success_count, kept.failure_count, kept.retry_count)
        streamed[engine] = sink.pairs
    assert streamed["native"] == streamed["python"]


def _records(n: int) -> Iterator[int]:
    yield from range(n)


def _peak(n: int, engine: str, results: Any) -> int:
    """Peak traced memory of a run over a generator of ``n`` records returning a fresh dict each."""
    gc.collect()
    tracemalloc.start()
    try:
        report = batchguard.run_batches(_records(n), lambda x: {"n": x, "name": "record"}, batch_size=500,
                                        engine=engine, results=results)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.success_count == n
    del report
    return peak


@pytest.mark.parametrize("engine", ENGINES)
def test_memory_does_not_grow_with_the_input_when_results_are_streamed(engine: str) -> None:
    """4x the records, about the same peak: only a batch's values are ever held. The same
    measure on "keep" grows about 4x, so this test tells the two apart."""
    n = 20_000
    for results in ("drop", lambda indices, values: None):
        small, large = _peak(n, engine, results), _peak(4 * n, engine, results)
        assert large < 1.5 * small + 256 * 1024, (results, small, large)
    kept_small, kept_large = _peak(n, engine, "keep"), _peak(4 * n, engine, "keep")
    assert kept_large > 3 * kept_small, (kept_small, kept_large)


class NoWorkers:
    """An executor (the Executor protocol) that is never asked to run anything here."""

    slots = 1

    def submit(self, task: Any) -> Any:
        raise AssertionError("nothing is submitted: the run is refused first")

    def completed(self, timeout: float | None) -> Any:
        return ()

    def cancel(self, tickets: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("results", ["drop", lambda indices, values: None])
def test_an_executor_run_refuses_streamed_results_for_now(results: Any) -> None:
    with pytest.raises(batchguard.ConfigError, match="executor= cannot be combined with results="):
        batchguard.run_batches(range(3), lambda x: x, executor=NoWorkers(), results=results)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_fallback_value_reaches_the_sink_in_its_records_place(engine: str) -> None:
    sink = Collect()
    report = batchguard.run_batches(range(6), lambda x: 10 // (x - 2), batch_size=3, engine=engine,
                                    retry=RetryPolicy(max_attempts=1, fallback=-1), results=sink)
    assert sink.batches == [([0, 1, 2], [-5, -10, -1]), ([3, 4, 5], [10, 5, 3])]
    assert report.fallback_count == 1 and report.successful == []


@pytest.mark.parametrize("engine", ENGINES)
def test_an_atomic_batch_rolled_back_writes_none_of_its_values(engine: str) -> None:
    def fn(x: int) -> int:
        if x == 4:
            raise ValueError("poison")
        return x

    sink = Collect()
    report = batchguard.run_batches(range(6), fn, batch_size=3, engine=engine, retry=RetryPolicy(max_attempts=1),
                                    compensate=lambda record, value: None, atomic_batches=True, results=sink)
    assert sink.pairs == [(0, 0), (1, 1), (2, 2)], "compensation runs before the sink write"
    assert (report.success_count, report.compensated_count) == (3, 2)


def _no_negatives(record: int) -> Any:
    if record < 0:
        return [batchguard.ValidationIssue(field="value", message="negative", severity="error",
                                           fix="make it positive")]
    return None


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["dry-run", "sample"])
def test_a_dry_run_or_a_sample_writes_no_results(engine: str, mode: str) -> None:
    """A phase writes nothing (no DLQ, no job): its engine run, of checks or of the sample, must
    not reach the run's sink either."""
    sink = Collect()
    report: Any = batchguard.run_batches([1, -2, 3, 4], lambda x: 2 * x, validate=_no_negatives, mode=mode,
                                         engine=engine, results=sink)
    assert sink.batches == []
    if mode == "sample":
        assert report.items and all(item.ok and item.value == 2 * [1, -2, 3, 4][item.record_index]
                                    for item in report.items), report.items
    else:
        assert report.blocked == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_arun_batches_streams_results_of_sync_and_async_fns(engine: str) -> None:
    async def inc(x: int) -> int:
        return x + 1

    async def main() -> tuple[Any, Any]:
        a, b = Collect(), Collect()
        await batchguard.arun_batches(range(7), inc, batch_size=3, concurrency=2, engine=engine, results=a)
        await batchguard.arun_batches(range(7), lambda x: x - 1, batch_size=3, concurrency=2, engine=engine,
                                      results=b)
        return a, b

    a, b = asyncio.run(main())
    assert a.pairs == [(x, x + 1) for x in range(7)]
    assert b.pairs == [(x, x - 1) for x in range(7)]
