"""Engine parity at the edges of issue 7: huge or odd ``retry_after`` values and interrupts.

For the same input and failure plan, the reference engine and the native engine reach the same
outcomes (DESIGN §1): here with exceptions asking for absurd waits (capped at
``max_retry_after``, by default ``max_delay``; values that are not a finite number >= 0 are
ignored), and with a KeyboardInterrupt raised by the callback mid-run (the DLQ holds the same
entries, the same records ran).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchguard import MemoryDLQ, RetryPolicy
from helpers_contract import ENGINES, PermanentErr, RetryAfterErr, dlq_view, outcome_view, run

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A cap this small keeps every run fast whatever the exception asks for.
CAP = 0.002
RETRY_AFTERS = [0.0, 0.001, 0.5, 1e12, 10**30, 1e308, 10**400, float("inf"), float("nan"), -5, "12",
                True, None]


# What an interrupt leaves depends on which calls ran before it, so here every retry is due at
# once (a value that is ignored, or 0): a wait of a millisecond or two would race the fresh
# records on a loaded machine, in either engine, and the engines would "disagree" by timing.
NO_WAIT = [0.0, 10**400, float("inf"), float("nan"), -5, "12", True, None]


class AsksToWait:
    """``plan[(record, attempt)]`` is a retry_after value to raise with (RECOVERABLE), or
    "permanent"; absent: the attempt returns ``record * 10``."""

    def __init__(self, plan: dict[tuple[int, int], Any], interrupt_at: int | None = None) -> None:
        self.plan = plan
        self.interrupt_at = interrupt_at
        self.attempts: dict[int, int] = {}
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def __call__(self, record: int) -> int:
        with self._lock:
            attempt = self.attempts[record] = self.attempts.get(record, 0) + 1
            self.calls.append((record, attempt))
        if record == self.interrupt_at:
            raise KeyboardInterrupt
        key = (record, attempt)
        if key not in self.plan:
            return record * 10
        if self.plan[key] == "permanent":
            raise PermanentErr(f"bad {record}")
        raise RetryAfterErr(f"wait {record}/{attempt}", self.plan[key])


@st.composite
def plans(draw: st.DrawFn, retry_afters: list[Any] = RETRY_AFTERS) -> tuple[int, int, int, dict[tuple[int, int], Any]]:
    n = draw(st.integers(min_value=0, max_value=16))
    max_attempts = draw(st.integers(min_value=1, max_value=3))
    batch_size = draw(st.integers(min_value=1, max_value=6))
    outcome = st.one_of(st.just("ok"), st.just("permanent"), st.sampled_from(retry_afters))
    plan = {}
    for record in range(n):
        for attempt, what in enumerate(draw(st.lists(outcome, max_size=max_attempts)), 1):
            if what != "ok":
                plan[(record, attempt)] = what
    return n, max_attempts, batch_size, plan


def _retry(max_attempts: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, base_delay=0.0, max_delay=CAP, jitter="none", seed=3)


@SETTINGS
@given(plans())
@example((2, 2, 1, {(0, 1): 10**30, (1, 1): 1e12}))
def test_engines_agree_on_huge_and_odd_retry_after_values(
        case: tuple[int, int, int, dict[tuple[int, int], Any]]) -> None:
    n, max_attempts, batch_size, plan = case
    views = []
    for engine in ENGINES:
        report = run(range(n), AsksToWait(plan), engine=engine, batch_size=batch_size, retry=_retry(max_attempts))
        view = outcome_view(report)
        for entry in view["dead_letters"]:
            for attempt in entry["attempts"]:
                delay = attempt["delay_s"]
                assert delay is None or 0.0 <= delay <= CAP, f"{engine}: waited {delay} s, over the cap"
        views.append(view)
    assert views[0] == views[1]


@SETTINGS
@given(plans(retry_afters=NO_WAIT), st.integers(min_value=0, max_value=15))
def test_engines_agree_on_what_an_interrupt_leaves_in_the_dlq(
        case: tuple[int, int, int, dict[tuple[int, int], Any]], interrupt_at: int) -> None:
    n, max_attempts, batch_size, plan = case
    outcomes = []
    for engine in ENGINES:
        fn = AsksToWait(plan, interrupt_at=interrupt_at)
        dlq = MemoryDLQ()
        if interrupt_at < n:
            with pytest.raises(KeyboardInterrupt):
                run(range(n), fn, engine=engine, batch_size=batch_size, retry=_retry(max_attempts), dlq=dlq)
        else:
            run(range(n), fn, engine=engine, batch_size=batch_size, retry=_retry(max_attempts), dlq=dlq)
        entries = sorted((dlq_view(entry) for entry in dlq.list()), key=lambda e: e["record_index"])
        outcomes.append((fn.calls, entries))
    assert outcomes[0] == outcomes[1]
