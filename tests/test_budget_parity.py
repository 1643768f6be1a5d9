"""The retry budget and the adaptive limit: the Rust engine and the reference engine decide alike
(issue 10 items 6 and 7).

Two levels: each state machine step by step on scripted events (the native one through the
test hooks ``_native._budget_trace_for_test`` / ``_adaptive_trace_for_test``, the reference one
in ``batchguard.reference.budget`` / ``adaptive``), and whole runs at concurrency 1, where the
order of calls is fixed, with a budget that refuses or holds retries: the same records
succeed, the same are dead-lettered (named RetryBudgetExhausted) and the same counts come back.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchguard
from batchguard import _native
from batchguard.reference.adaptive import Adaptive as RefAdaptive
from batchguard.reference.budget import RetryBudget as RefBudget

ENGINES = ("native", "python")

budgets = st.builds(
    batchguard.RetryBudget,
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    min_per_s=st.sampled_from([0.0, 0.1, 0.25, 1.0, 3.0]),
    window_s=st.sampled_from([0.4, 1.0, 2.5, 10.0]),
    over_budget=st.just("dead_letter"),
) | st.builds(
    batchguard.RetryBudget,
    ratio=st.sampled_from([0.0, 0.2, 1.0]),
    min_per_s=st.sampled_from([1.0, 3.0]),
    window_s=st.sampled_from([1.0, 2.5, 10.0]),
    over_budget=st.just("wait"),
)

# (step, seconds since the previous step): time only moves forward, as a run's clock does.
budget_steps = st.lists(st.tuples(st.sampled_from(["first", "allows", "retry", "take", "next"]),
                                  st.sampled_from([0.0, 0.0, 0.01, 0.13, 0.4, 1.0, 3.7, 25.0])),
                        max_size=120)


def _budget_script(steps: list[tuple[str, float]]) -> list[tuple[str, float]]:
    now, script = 0.0, []
    for step, gap in steps:
        now += gap
        script.append((step, now))
    return script


def _reference_budget_trace(policy: batchguard.RetryBudget, script: list[tuple[str, float]]) -> list[Any]:
    budget = RefBudget(policy, 0.0)
    out: list[Any] = []
    for step, now in script:
        if step == "first":
            budget.first_attempt(now)
            out.append(None)
        elif step == "allows":
            out.append(budget.allows(now))
        elif step == "retry":
            budget.retry_started(now)
            out.append(None)
        elif step == "take":
            out.append(budget.take_or_refuse(now))
        else:
            out.append(budget.next_change())
    out.append((budget.waited, budget.dead_lettered))
    return out


@settings(max_examples=300, deadline=None)
@given(budgets, budget_steps)
def test_the_budget_answers_every_step_alike_in_both_engines(policy: batchguard.RetryBudget,
                                                            steps: list[tuple[str, float]]) -> None:
    script = _budget_script(steps)
    native = _native._budget_trace_for_test(policy.ratio, policy.min_per_s, policy.window_s, policy.over_budget,
                                            script)
    assert native == _reference_budget_trace(policy, script)


def test_the_budget_traces_are_not_trivially_equal() -> None:
    """The hooks really run the machines: a script whose answers change along the way."""
    policy = batchguard.RetryBudget(ratio=0.5, min_per_s=0.0, window_s=1.0, over_budget="dead_letter")
    script = [("first", 0.0), ("first", 0.0), ("take", 0.0), ("take", 0.0), ("next", 0.0), ("take", 1.05)]
    assert _native._budget_trace_for_test(0.5, 0.0, 1.0, "dead_letter", script) == \
        [None, None, True, False, pytest.approx(0.1), False, (0, 2)]
    assert _reference_budget_trace(policy, script)[:-1] == [None, None, True, False, pytest.approx(0.1), False]


adaptives = st.builds(
    lambda low, span, start, increase, decrease: batchguard.Adaptive(
        min=low, max=low + span, initial=min(low + span, low + start), increase=increase, decrease=decrease),
    st.integers(1, 4), st.integers(0, 60), st.integers(0, 20),
    st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.sampled_from([0.3, 0.5, 0.7, 0.9]))


@st.composite
def adaptive_scripts(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Calls start, succeed with some in flight, or end overloaded (an earlier call's number)."""
    script: list[tuple[str, int]] = []
    started = 0
    for _ in range(draw(st.integers(0, 200))):
        kind = draw(st.sampled_from(["start", "start", "ok", "ok", "overload"]))
        if kind == "start":
            started += 1
            script.append(("start", 0))
        elif kind == "ok":
            script.append(("ok", draw(st.integers(1, 80))))
        elif started:
            script.append(("overload", draw(st.integers(1, started))))
    return script


def _reference_adaptive_trace(policy: batchguard.Adaptive, script: list[tuple[str, int]]) -> list[Any]:
    adaptive = RefAdaptive(policy)
    out: list[Any] = []
    for step, value in script:
        if step == "start":
            adaptive.start()
        elif step == "ok":
            adaptive.succeeded(value)
        else:
            adaptive.overloaded(value)
        out.append(adaptive.limit)
    out.append((adaptive.peak, adaptive.low, adaptive.decreases))
    return out


@settings(max_examples=300, deadline=None)
@given(adaptives, adaptive_scripts())
def test_the_adaptive_limit_follows_the_same_sequence_in_both_engines(policy: batchguard.Adaptive,
                                                                      script: list[tuple[str, int]]) -> None:
    native = _native._adaptive_trace_for_test(policy.min, policy.max, policy.start, policy.increase,
                                              policy.decrease, script)
    assert native == _reference_adaptive_trace(policy, script)


# ---------------------------------------------------------------- whole runs


class Busy(Exception):
    """A 503 from a dependency: RECOVERABLE, an overload signal."""

    status_code = 503


def _flaky(failures: dict[int, int]) -> Any:
    """fn failing record r its first failures[r] calls, then returning r * 10."""
    calls: dict[int, int] = {}

    def fn(record: int) -> int:
        calls[record] = calls.get(record, 0) + 1
        if calls[record] <= failures.get(record, 0):
            raise Busy(f"busy {record}")
        return record * 10

    return fn


def _run(engine: str, failures: dict[int, int], n: int, budget: batchguard.RetryBudget) -> Any:
    dlq = batchguard.MemoryDLQ()
    report = batchguard.run_batches(range(n), _flaky(failures), engine=engine, dlq=dlq, batch_size=7,
                                    retry=batchguard.RetryPolicy(max_attempts=4, base_delay=0.0, jitter="none"),
                                    retry_budget=budget)
    entries = sorted((e.record_index, e.error_type, len(e.attempts)) for e in dlq.list())
    return (report.success_count, report.failure_count, report.retry_count, report.successful,
            report.retries_over_budget, entries)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60),
       failures=st.dictionaries(st.integers(0, 59), st.integers(1, 5), max_size=30),
       ratio=st.sampled_from([0.0, 0.1, 0.3, 1.0]),
       floor=st.sampled_from([0.0, 0.05, 0.5]))
def test_runs_that_refuse_retries_end_alike_in_both_engines(n: int, failures: dict[int, int], ratio: float,
                                                            floor: float) -> None:
    # A window far longer than the run: every decision depends on the order of calls alone,
    # which concurrency 1 fixes.
    budget = batchguard.RetryBudget(ratio=ratio, min_per_s=floor, window_s=1000.0, over_budget="dead_letter")
    native, python = (_run(engine, failures, n, budget) for engine in ENGINES)
    assert native == python
    succeeded, failed, _retries, _values, over, entries = native
    assert succeeded + failed == n
    assert over.dead_lettered == sum(1 for _, kind, _ in entries if kind == "RetryBudgetExhausted")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_refused_record_is_dead_lettered_with_the_reason_and_its_cause(engine: str) -> None:
    budget = batchguard.RetryBudget(ratio=0.0, min_per_s=0.0, over_budget="dead_letter")
    dlq = batchguard.MemoryDLQ()
    report = batchguard.run_batches(range(3), _flaky({1: 1}), engine=engine, dlq=dlq, retry_budget=budget,
                                    retry=batchguard.RetryPolicy(base_delay=0.0))
    assert (report.success_count, report.failure_count, report.retry_count) == (2, 1, 0)
    assert report.retries_over_budget == batchguard.RetriesOverBudget(waited=0, dead_lettered=1)
    (entry,) = dlq.list()
    assert entry.record_index == 1
    assert entry.error_type == "RetryBudgetExhausted"
    assert "attempt 2 was not scheduled" in entry.error_message
    assert "Busy: busy 1" in entry.error_message
    assert entry.error_class == "recoverable"


@pytest.mark.parametrize("engine", ENGINES)
def test_waiting_retries_all_run_and_are_counted(engine: str) -> None:
    # Five retries allowed per 0.5 s window once the first attempts have aged out: the run
    # waits for the window, and nothing is lost.
    budget = batchguard.RetryBudget(ratio=0.0, min_per_s=10.0, window_s=0.5)
    failures = {r: 1 for r in range(0, 40, 2)}
    report = batchguard.run_batches(range(40), _flaky(failures), engine=engine, retry_budget=budget,
                                    retry=batchguard.RetryPolicy(base_delay=0.0))
    assert (report.success_count, report.failure_count, report.retry_count) == (40, 0, 20)
    assert report.successful == [r * 10 for r in range(40)]
    assert report.retries_over_budget is not None
    assert 0 < report.retries_over_budget.waited <= 20
    assert report.retries_over_budget.dead_lettered == 0


def test_a_run_without_a_budget_reports_none() -> None:
    report = batchguard.run_batches(range(3), lambda r: r)
    assert report.retries_over_budget is None
    assert report.concurrency_limit is None
    assert "retries_over_budget" not in report.to_dict()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ratio": -0.1}, "RetryBudget.ratio"),
    ({"min_per_s": math.nan}, "RetryBudget.min_per_s"),
    ({"window_s": 0}, "RetryBudget.window_s"),
    ({"over_budget": "drop"}, "over_budget"),
    ({"min_per_s": 0.0}, "min_per_s * window_s >= 1"),
])
def test_a_bad_budget_is_refused_naming_its_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(batchguard.ConfigError, match=message.replace("*", r"\*").replace(".", r"\.")):
        batchguard.RetryBudget(**kwargs)


def test_retry_budget_must_be_a_retry_budget() -> None:
    with pytest.raises(batchguard.ConfigTypeError, match="retry_budget must be a RetryBudget"):
        batchguard.run_batches([1], lambda r: r, retry_budget=0.2)  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_report_says_what_steered_the_run(engine: str) -> None:
    budget = batchguard.RetryBudget(ratio=0.0, min_per_s=0.0, over_budget="dead_letter")
    report = batchguard.run_batches(range(3), _flaky({1: 1}), engine=engine, retry_budget=budget,
                                    concurrency=batchguard.Adaptive(min=1, max=4, initial=2),
                                    retry=batchguard.RetryPolicy(base_delay=0.0))
    text = report.summary()
    assert "Retry budget:  0 retries waited for it, 1 records dead-lettered by it" in text
    assert f"Concurrency:   adaptive, ended at {report.concurrency_limit.final}" in text  # type: ignore[union-attr]
    plain = batchguard.run_batches(range(3), lambda r: r, engine=engine).summary()
    assert "Retry budget" not in plain and "Concurrency" not in plain
