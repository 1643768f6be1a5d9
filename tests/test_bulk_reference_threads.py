"""Both engines run a sync bulk fn on their sync drivers (issue 8, item 3): the reference
engine's inline and threaded drivers bisect a failing group as the native threaded driver
does (``reference/bulk.py``, ``src/bindings/bulk.rs``), so for the same plan the two reach the
same outcomes with the same bulk calls, and neither needs an event loop.

At concurrency 1 everything is deterministic: the outcome, the DLQ and the calls, in order, are
compared, under plans with fatal errors, failure budgets and breakers. At concurrency 4 a stop
(fatal, budget, breaker) would depend on which worker gets there first, so the plans there hold
poison, short results and retries only, and the calls are compared as a multiset: each batch
is one group, each retry its own call, and what a call does depends only on its records.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchguard
from batchguard import CircuitBreaker, MemoryDLQ, RetryPolicy
from helpers_contract import ENGINES, ERRORS, dlq_view, outcome_view, run

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class GroupPlan:
    """A deterministic bulk fn over int records, safe to call from several threads.

    ``outcomes[(record, try)]`` says what a record's ``try``-th solo call does ("ok" when
    absent); a call of several records fails, with its first bad member's error, when any
    member's next try would. Otherwise a call of several records that holds a ``short`` record
    returns one result too few, one that holds a ``wrong`` record returns None (both are a
    BulkResultError for the whole call); else it returns ``record * 10`` for each.
    """

    def __init__(self, outcomes: dict[tuple[int, int], str], short: set[int], wrong: set[int]) -> None:
        self.outcomes = outcomes
        self.short = short
        self.wrong = wrong
        self._lock = threading.Lock()
        self.tries: Counter[int] = Counter()
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, batch: list[int]) -> Any:
        with self._lock:
            self.calls.append(tuple(batch))
            if len(batch) == 1:
                self.tries[batch[0]] += 1
            tries = {record: self.tries[record] for record in batch}
        for record in batch:
            outcome = self.outcomes.get((record, tries[record] + (len(batch) > 1)), "ok")
            if outcome != "ok":
                raise ERRORS[outcome](f"{outcome} record={record}")
        if len(batch) > 1 and self.wrong.intersection(batch):
            return None
        results = [r * 10 for r in batch]
        return results[:-1] if len(batch) > 1 and self.short.intersection(batch) else results


RETRYING = ["ok"] * 20 + ["transient"] * 4 + ["recoverable"] * 4 + ["permanent"] * 6
STOPPING = [*RETRYING, "fatal"]


@st.composite
def plans(draw: st.DrawFn, *, stops: bool) -> dict[str, Any]:
    """A random plan: poison (permanent), retried failures, short and wrong-typed results; with
    ``stops``, fatal errors, a failure budget and a breaker too."""
    n = draw(st.integers(min_value=0, max_value=60))
    max_attempts = draw(st.integers(min_value=1, max_value=3))
    kinds = STOPPING if stops else RETRYING
    tries = draw(st.lists(st.lists(st.sampled_from(kinds), max_size=max_attempts), min_size=n, max_size=n))
    records = st.integers(min_value=0, max_value=max(0, n - 1))  # n == 0: never read
    scenario: dict[str, Any] = {
        "n": n, "batch_size": draw(st.integers(min_value=1, max_value=20)), "max_attempts": max_attempts,
        "outcomes": {(r, a): o for r, plan in enumerate(tries) for a, o in enumerate(plan, 1) if o != "ok"},
        "short": draw(st.sets(records, max_size=3)), "wrong": draw(st.sets(records, max_size=2)),
        "max_failures": None, "breaker": None,
    }
    if stops:
        scenario["max_failures"] = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=5)))
        scenario["breaker"] = draw(st.one_of(st.none(), st.builds(
            CircuitBreaker, failure_rate_threshold=st.sampled_from([0.5, 1.0]), window=st.just(4),
            minimum_calls=st.integers(min_value=1, max_value=4), open_duration=st.just(0.0),
            half_open_calls=st.just(1))))
    return scenario


def _run(scenario: dict[str, Any], engine: str, concurrency: int) -> tuple[Any, GroupPlan, MemoryDLQ]:
    plan = GroupPlan(scenario["outcomes"], scenario["short"], scenario["wrong"])
    dlq = MemoryDLQ()
    report = run(range(scenario["n"]), plan, engine=engine, bulk=True, dlq=dlq, concurrency=concurrency,
                 batch_size=scenario["batch_size"], max_failures=scenario["max_failures"],
                 breaker=scenario["breaker"],
                 retry=RetryPolicy(max_attempts=scenario["max_attempts"], base_delay=0.0, jitter="none"))
    return report, plan, dlq


def _by(key: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: item[key])


def _view(report: Any, plan: GroupPlan, dlq: MemoryDLQ, *, ordered: bool) -> dict[str, Any]:
    """What the engines must agree on; unordered (concurrency 4): records and batches finish
    in any order, so lists of them are compared sorted, and the calls as a multiset."""
    view = outcome_view(report)
    view["dlq"] = [dlq_view(e) for e in sorted(dlq.list(), key=lambda e: e.record_index)]
    view["calls"] = plan.calls if ordered else sorted(plan.calls)
    if not ordered:
        view["errors"] = _by("record_index", view["errors"])
        view["dead_letters"] = _by("record_index", view["dead_letters"])
        view["batches"] = _by("batch_index", view["batches"])
    return view


def _check_laws(scenario: dict[str, Any], report: Any, plan: GroupPlan) -> None:
    """Every record ends in one state; a record's attempts are its solo calls."""
    assert report.success_count + report.failure_count + report.pending_count == scenario["n"]
    for error in report.errors:
        if error.error_type != "BulkResultError":
            assert error.attempts == plan.tries[error.record_index]


def _assert_same(scenario: dict[str, Any], concurrency: int) -> None:
    views = []
    for engine in ENGINES:
        report, plan, dlq = _run(scenario, engine, concurrency)
        _check_laws(scenario, report, plan)
        views.append(_view(report, plan, dlq, ordered=concurrency == 1))
    python, native = views
    for key in python:
        assert native[key] == python[key], key


@SETTINGS
@given(scenario=plans(stops=True))
def test_at_concurrency_1_the_engines_agree_call_for_call(scenario: dict[str, Any]) -> None:
    _assert_same(scenario, 1)


@SETTINGS
@given(scenario=plans(stops=False))
def test_at_concurrency_4_the_engines_agree_on_outcomes_and_calls(scenario: dict[str, Any]) -> None:
    _assert_same(scenario, 4)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_poisoned_run_makes_the_same_calls_on_both_engines(concurrency: int) -> None:
    """A fixed case, readable when the properties fail: two poison rows, one short result."""
    scenario = {"n": 100, "batch_size": 25, "max_attempts": 2, "max_failures": None, "breaker": None,
                "outcomes": {(3, 1): "permanent", (3, 2): "permanent", (60, 1): "transient"},
                "short": {80}, "wrong": set()}
    _assert_same(scenario, concurrency)
    report, plan, _ = _run(scenario, "python", concurrency)
    # Batch 0: 25 → 12 + 13 → 6 + 6 → 3 + 3 → 1 + 2 → 1 + 1; batch 2: 25 → ... record 60 alone
    # twice (the transient try, then its retry); batch 3 dead-letters its 25 with BulkResultError.
    assert report.success_count == 100 - 1 - 25 and report.failure_count == 26
    assert Counter(e.error_type for e in report.errors) == {"PermanentErr": 1, "BulkResultError": 25}
    assert plan.tries[3] == 1 and plan.tries[60] == 2  # permanent: never retried
    assert sorted(len(call) for call in plan.calls if len(call) == 25) == [25, 25, 25, 25]


def _sync_bulk_in_a_loop(engine: str, concurrency: int) -> tuple[list[int], list[int], set[str]]:
    threads: set[str] = set()

    def double(batch: list[int]) -> list[int]:
        threads.add(threading.current_thread().name)
        if 7 in batch or 33 in batch:
            raise ValueError("bad record among them")
        return [2 * x for x in batch]

    async def main() -> batchguard.BatchReport[int]:
        return batchguard.run_batches(range(40), double, bulk=True, batch_size=10, engine=engine,
                                      concurrency=concurrency, retry=RetryPolicy(max_attempts=1))

    report = asyncio.run(main())
    return report.successful, [e.record_index for e in report.errors], threads


@pytest.mark.parametrize("concurrency", [1, 4])
def test_both_engines_run_a_sync_bulk_fn_from_inside_a_running_event_loop(concurrency: int) -> None:
    """No event loop of their own (one could not start here), no asyncio thread pool."""
    outcomes = {engine: _sync_bulk_in_a_loop(engine, concurrency) for engine in ENGINES}
    for successful, failed, threads in outcomes.values():
        assert successful == [2 * x for x in range(40) if x not in (7, 33)]
        assert failed == [7, 33]
        assert not any(name.startswith("batchguard-sync") for name in threads), threads
    # The reference engine calls inline at concurrency 1, on its worker threads at N.
    python_threads = outcomes["python"][2]
    if concurrency == 1:
        assert python_threads == {threading.main_thread().name}
    else:
        assert python_threads and all(name.startswith("batchguard-ref-") for name in python_threads)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_interrupt_in_a_reference_bulk_call_stops_the_run_and_flushes_the_dead_letters(
        concurrency: int) -> None:
    calls: list[int] = []

    def fn(records: list[int]) -> list[int]:
        calls.append(len(records))
        if 150 in records:
            raise KeyboardInterrupt
        if 3 in records:
            raise ValueError("bad")
        return records

    dlq = MemoryDLQ()
    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(300), fn, bulk=True, engine="python", concurrency=concurrency,
                               batch_size=50, dlq=dlq, retry=RetryPolicy(max_attempts=1))
    if concurrency == 1:  # batch 0 (record 3) is bisected before batch 3 (record 150) starts
        assert [entry.record_index for entry in dlq.list()] == [3]
    else:  # whatever finished before the stop is there, and nothing else
        assert {entry.record_index for entry in dlq.list()} <= {3}
