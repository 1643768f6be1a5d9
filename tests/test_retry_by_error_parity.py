"""Retry policies by error (issue 10 item 2): the two engines agree under random failure plans
and random mappings of policies (keys of every kind: a predicate, exception types related by
inheritance, error classes), with fallbacks and max_elapsed: same outcomes, same attempts per
record, same delays and DLQ entries, same fallback values in the same places.

Delays are real but tiny and drawn from a seeded jitter stream, so both engines compute the
same ones whatever the clock does; the one ``max_elapsed`` policy is shorter than its first
delay, so it cuts a record at the same retry however long the run takes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import batchguard
from batchguard import Classifier, ErrorClass, MemoryDLQ, RetryPolicies, RetryPolicy
from helpers_contract import ENGINES, assert_conservation, dlq_view, outcome_view

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Transient(Exception):
    pass


class Flaky(Transient):
    """A TRANSIENT error with a type key of its own in some mappings."""


class Recoverable(Exception):
    pass


class Slow(Recoverable):
    """A subclass of a type key: the most specific key in the MRO must win."""


class Permanent(Exception):
    pass


class Both(Slow, Flaky):
    """Multiple inheritance with keys on both sides: RECOVERABLE by its MRO's first rule
    (Recoverable), and the policy of its first keyed class (Slow, else Recoverable, else Flaky)."""


ERRORS: dict[str, type[Exception]] = {"transient": Transient, "flaky": Flaky, "recoverable": Recoverable,
                                      "slow": Slow, "permanent": Permanent, "tagged": Recoverable,
                                      "both": Both, "boom": Recoverable}
TAGS = {"tagged": " #tag", "boom": " #boom"}
OUTCOMES = ["ok"] * 10 + list(ERRORS)
CLASSIFIER = (Classifier.default().with_rule(Transient, ErrorClass.TRANSIENT)
              .with_rule(Recoverable, ErrorClass.RECOVERABLE).with_rule(Permanent, ErrorClass.PERMANENT))


def tagged(exc: BaseException) -> bool:
    """The predicate key: errors whose message carries the tag."""
    return "#tag" in str(exc)


def broken(exc: BaseException) -> bool:
    """A predicate key with a bug: it raises on "#boom" errors (no match, logged once)."""
    if "#boom" in str(exc):
        raise RuntimeError("predicate bug")
    return False


def negate(record: Any, error: BaseException) -> Any:
    """A callable fallback: what it returns says which record and error it stood in for."""
    return f"fallback {record} {type(error).__name__}"


class Plan:
    """``outcomes[(record, attempt)]`` says what the attempt does ("ok" when absent)."""

    def __init__(self, outcomes: dict[tuple[int, int], str]) -> None:
        self.outcomes = outcomes
        self.attempts: dict[int, int] = {}
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def __call__(self, record: int) -> int:
        with self._lock:
            attempt = self.attempts[record] = self.attempts.get(record, 0) + 1
            self.calls.append((record, attempt))
        outcome = self.outcomes.get((record, attempt), "ok")
        if outcome == "ok":
            return record * 10
        raise ERRORS[outcome](f"{outcome} record={record} attempt={attempt}{TAGS.get(outcome, '')}")


@st.composite
def policies(draw: st.DrawFn, *, default: bool = False) -> RetryPolicy:
    fallback = draw(st.sampled_from([batchguard.policies.NO_FALLBACK, None, -1, negate]))
    return RetryPolicy(max_attempts=draw(st.integers(min_value=1, max_value=4)),
                       base_delay=draw(st.sampled_from([0.0, 0.0005, 0.001])), max_delay=0.002,
                       jitter=draw(st.sampled_from(["none", "full", "equal", "decorrelated"])),
                       seed=7 if default else None, fallback=fallback)


# Cuts a record at its first retry after a RECOVERABLE failure: its delay (5 ms) is past it.
CUT = RetryPolicy(max_attempts=4, base_delay=0.005, max_delay=0.005, jitter="none", max_elapsed=0.001)


@st.composite
def mappings(draw: st.DrawFn) -> RetryPolicies:
    keys: list[Any] = draw(st.lists(st.sampled_from(
        [tagged, broken, Slow, Recoverable, Flaky, BaseException, ErrorClass.TRANSIENT, ErrorClass.RECOVERABLE,
         ErrorClass.PERMANENT]), unique=True))
    by_error = {key: draw(policies()) for key in keys}
    if len(keys) >= 2 and draw(st.booleans()):
        by_error[keys[1]] = by_error[keys[0]]  # one policy object under two keys
    if draw(st.booleans()):
        by_error[Slow] = CUT
    return RetryPolicies(default=draw(policies(default=True)), by_error=by_error)


@dataclass(frozen=True)
class Scenario:
    n: int
    outcomes: dict[tuple[int, int], str]
    batch_size: int
    retry: RetryPolicies
    concurrency: int = 1


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(min_value=0, max_value=30))
    plans = draw(st.lists(st.lists(st.sampled_from(OUTCOMES), max_size=4), min_size=n, max_size=n))
    outcomes = {(r, a): o for r, plan in enumerate(plans) for a, o in enumerate(plan, 1) if o != "ok"}
    return Scenario(n, outcomes, draw(st.integers(min_value=1, max_value=8)), draw(mappings()),
                    draw(st.sampled_from([1, 4])))


def _run(scenario: Scenario, engine: str) -> tuple[Any, ...]:
    plan = Plan(scenario.outcomes)
    dlq = MemoryDLQ()
    report = batchguard.run_batches(list(range(scenario.n)), plan, engine=engine, dlq=dlq,
                                    classifier=CLASSIFIER, batch_size=scenario.batch_size,
                                    retry=scenario.retry, concurrency=scenario.concurrency)
    assert_conservation(report)
    entries = [dlq_view(e) for e in sorted(dlq.list(), key=lambda e: e.record_index)]
    view = outcome_view(report)
    # At concurrency 4 batches may end (and so list their dead letters) in another order.
    for key in ("errors", "dead_letters"):
        view[key] = sorted(view[key], key=lambda e: e["record_index"])
    return view, sorted(plan.calls), entries, report.fallback_count, report.successful


def _policy_for(retry: RetryPolicies, error: BaseException, error_class: ErrorClass) -> RetryPolicy:
    """The contract's lookup, written out: the first predicate that holds (one that raises
    holds not), the type key first in the MRO, the class key, the default."""
    for key, policy in retry.by_error.items():
        if isinstance(key, (type, ErrorClass)):
            continue
        try:
            if key(error):
                return policy
        except Exception:  # noqa: BLE001 - a broken predicate is no match
            continue
    for klass in type(error).__mro__:
        if klass in retry.by_error:
            return retry.by_error[klass]
    return retry.by_error.get(error_class, retry.default)


def _model(scenario: Scenario) -> tuple[list[Any], dict[int, tuple[str, int]], int]:
    """What the contract says happens, record by record, with ``RetryPolicies.policy_for`` as
    the lookup: the successful values in record order, each dead record's (error type,
    attempts), and how many records fell back."""
    fallbacks = 0
    successful: list[Any] = []
    dead: dict[int, tuple[str, int]] = {}
    for record in range(scenario.n):
        attempt = 1
        while True:
            outcome = scenario.outcomes.get((record, attempt), "ok")
            if outcome == "ok":
                successful.append(record * 10)
                break
            error: BaseException = ERRORS[outcome](f"{outcome} record={record} attempt={attempt}"
                                                   f"{TAGS.get(outcome, '')}")
            error_class = CLASSIFIER.classify(error)
            policy = _policy_for(scenario.retry, error, error_class)
            gives_up = error_class is ErrorClass.PERMANENT or attempt >= policy.max_attempts
            if not gives_up and policy is CUT and error_class is ErrorClass.RECOVERABLE:
                gives_up, error = True, batchguard.RetryTimeExceeded("cut")
            if gives_up:
                if policy.has_fallback:
                    successful.append(policy.fallback_for(record, error))
                    fallbacks += 1
                else:
                    dead[record] = (type(error).__name__, attempt)
                break
            attempt += 1
    return successful, dead, fallbacks


@SETTINGS
@given(scenario=scenarios())
@example(scenario=Scenario(4, {(1, 1): "slow", (2, 1): "tagged", (3, 1): "flaky", (3, 2): "flaky"}, 2,
                           RetryPolicies(default=RetryPolicy(max_attempts=2, base_delay=0.0, seed=7),
                                         by_error={tagged: RetryPolicy(max_attempts=1, fallback=negate),
                                                   Slow: CUT, Flaky: RetryPolicy(max_attempts=3, base_delay=0.0)})))
def test_engines_agree_on_policies_by_error(scenario: Scenario) -> None:
    python, native = (_run(scenario, engine) for engine in ENGINES)
    for key in python[0]:
        assert native[0][key] == python[0][key], key
    assert native[1] == python[1], "the engines gave a record different attempts"
    assert native[2] == python[2]
    assert native[3] == python[3]
    assert native[4] == python[4]
    successful, dead, fallbacks = _model(scenario)
    assert python[4] == successful
    assert {e["record_index"]: (e["error_type"], len(e["attempts"])) for e in python[2]} == dead
    assert python[3] == fallbacks
