"""The laws, under random failure plans: conservation (DESIGN §3) and engine parity (§1).

A failure plan maps (record, attempt) to what that attempt does: return, or raise a
TRANSIENT / RECOVERABLE / PERMANENT / FATAL error. The callback reads it, so a run is a
deterministic function of the plan and the configuration (retries wait 0 s, the breaker's
open_duration is 0 s: timing cannot change an outcome at concurrency 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchguard import CircuitBreaker, ErrorClass, MemoryDLQ, RetryPolicy
from helpers_contract import ENGINES, FailurePlan, assert_conservation, dlq_view, outcome_view, run

OUTCOMES = ["ok"] * 24 + ["transient"] * 5 + ["recoverable"] * 5 + ["permanent"] * 5 + ["fatal"]
CLASSES = [ErrorClass.TRANSIENT, ErrorClass.RECOVERABLE, ErrorClass.PERMANENT, ErrorClass.FATAL]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Scenario:
    n: int
    outcomes: dict[tuple[int, int], str]
    batch_size: int
    max_attempts: int
    max_failures: int | float | None
    breaker: CircuitBreaker | None

    def kwargs(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "max_failures": self.max_failures, "breaker": self.breaker,
                "retry": RetryPolicy(max_attempts=self.max_attempts, base_delay=0.0, jitter="none", seed=1)}


@st.composite
def breakers(draw: st.DrawFn, *, minimum_calls: int | None = None) -> CircuitBreaker:
    window = draw(st.integers(min_value=1, max_value=8))
    return CircuitBreaker(
        failure_rate_threshold=draw(st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0])),
        window=window,
        minimum_calls=minimum_calls or draw(st.integers(min_value=1, max_value=window)),
        open_duration=0.0,
        half_open_calls=draw(st.integers(min_value=1, max_value=3)),
        abort_failure_rate=draw(st.one_of(st.none(), st.sampled_from([0.5, 0.8, 1.0]))),
        counts=tuple(draw(st.sets(st.sampled_from(CLASSES), min_size=1))),
    )


@st.composite
def scenarios(draw: st.DrawFn, *, breaker: Any = None) -> Scenario:
    n = draw(st.integers(min_value=0, max_value=40))
    max_attempts = draw(st.integers(min_value=1, max_value=4))
    plans = draw(st.lists(st.lists(st.sampled_from(OUTCOMES), max_size=max_attempts), min_size=n, max_size=n))
    outcomes = {(r, a): o for r, plan in enumerate(plans) for a, o in enumerate(plan, 1) if o != "ok"}
    max_failures = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=6),
                                  st.sampled_from([0.1, 0.3, 0.5, 1.0])))
    if breaker is None:
        breaker = st.one_of(st.none(), breakers())
    return Scenario(n, outcomes, draw(st.integers(min_value=1, max_value=12)), max_attempts, max_failures,
                    draw(breaker))


def check_laws(scenario: Scenario, plan: FailurePlan, report: Any, dlq: MemoryDLQ) -> None:
    assert_conservation(report)
    assert report.total == scenario.n
    succeeded = sorted(plan.returned)
    assert report.successful == [r * 10 for r in succeeded]
    failed = [e.record_index for e in report.errors]
    assert not set(failed) & plan.returned, "a record both succeeded and was dead-lettered"
    assert report.retry_count == len(plan.calls) - len(plan.attempts)
    for error in report.errors:
        raised = plan.raised[error.record_index]
        assert error.attempts == plan.attempts[error.record_index] == len(raised)
        assert error.error_class == raised[-1]
        assert raised[-1] in ("permanent", "fatal") or error.attempts == scenario.max_attempts
    # A pending record never got a final outcome: it was never called, or it was waiting to
    # be retried when the run stopped.
    for r in set(range(scenario.n)) - plan.returned - set(failed):
        assert report.stopped_reason is not None
        raised = plan.raised.get(r, [])
        assert len(raised) == plan.attempts.get(r, 0)
        if raised:
            assert raised[-1] in ("transient", "recoverable") and len(raised) < scenario.max_attempts
    if any("fatal" in raised for raised in plan.raised.values()):
        assert report.stopped_reason is not None
    if report.stopped_reason == "fatal":
        assert any(e.error_class == "fatal" for e in report.errors)
    if report.stopped_reason == "max_failures":
        assert scenario.max_failures is not None
        if isinstance(scenario.max_failures, int):
            assert report.failure_count > scenario.max_failures
    if isinstance(scenario.max_failures, int) and report.stopped_reason is None:
        assert report.failure_count <= scenario.max_failures
    if report.stopped_reason == "breaker_abort":
        assert scenario.breaker is not None and scenario.breaker.abort_failure_rate is not None
    if scenario.breaker is None:
        assert report.breaker_trips == 0 and report.breaker_events == []
    else:
        assert report.breaker_trips == sum(1 for _, _, new in report.breaker_events if new == "open")
    assert sorted(e.record_index for e in dlq.list()) == failed
    assert report.dlq_count == len(failed)
    assert report.status == ("complete" if report.success_count == report.total else
                             "aborted" if report.stopped_reason else "partial_success")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 3])
@SETTINGS
@given(scenario=scenarios())
def test_every_record_ends_in_exactly_one_state(engine: str, concurrency: int, scenario: Scenario) -> None:
    plan = FailurePlan(scenario.outcomes)
    dlq = MemoryDLQ()
    report = run(list(range(scenario.n)), plan, engine=engine, concurrency=concurrency, dlq=dlq,
                 **scenario.kwargs())
    check_laws(scenario, plan, report, dlq)


def _run_both(scenario: Scenario) -> list[tuple[dict[str, Any], list[tuple[int, int]], list[dict[str, Any]]]]:
    views = []
    for engine in ENGINES:
        plan = FailurePlan(scenario.outcomes)
        dlq = MemoryDLQ()
        report = run(list(range(scenario.n)), plan, engine=engine, dlq=dlq, **scenario.kwargs())
        check_laws(scenario, plan, report, dlq)
        entries = [dlq_view(e) for e in sorted(dlq.list(), key=lambda e: e.record_index)]
        views.append((outcome_view(report), plan.calls, entries))
    return views


def _assert_same(views: list[Any]) -> None:
    (python_report, python_calls, python_dlq), (native_report, native_calls, native_dlq) = views
    for key in python_report:
        assert native_report[key] == python_report[key], key
    assert native_calls == python_calls, "the engines ran the attempts in a different order"
    assert native_dlq == python_dlq


@SETTINGS
@given(scenario=scenarios(breaker=st.none()))
def test_engines_agree_without_a_breaker(scenario: Scenario) -> None:
    _assert_same(_run_both(scenario))


@SETTINGS
@given(scenario=scenarios(breaker=st.one_of(st.none(), breakers(minimum_calls=1))))
def test_engines_agree_with_a_breaker_judging_every_call(scenario: Scenario) -> None:
    _assert_same(_run_both(scenario))


BULK_SUCCESS_TRIP = Scenario(
    n=10, outcomes={(0, 1): "transient", (1, 1): "transient"}, batch_size=10, max_attempts=1,
    max_failures=None,
    breaker=CircuitBreaker(failure_rate_threshold=0.5, window=4, minimum_calls=4, open_duration=0.0,
                           half_open_calls=1))


@SETTINGS
@given(scenario=scenarios())
@example(scenario=BULK_SUCCESS_TRIP)
def test_engines_agree_with_any_breaker(scenario: Scenario) -> None:
    _assert_same(_run_both(scenario))
