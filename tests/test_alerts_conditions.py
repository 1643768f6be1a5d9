"""The alert rules' judging (batchguard.alerts.conditions) on a virtual clock, the arguments'
checks, and a differential test: both engines raise the same notices for the same run."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchguard
from batchguard import AlertRule, ConfigError, ConfigTypeError, RetryPolicy
from batchguard.alerts import Alert, Webhook, redact_webhook
from batchguard.alerts.conditions import Conditions
from helpers_contract import ENGINES


def _noop(alert: Alert) -> None:
    pass


def conditions(*rules: AlertRule, max_failures: int | float | None = None) -> Conditions:
    return Conditions(rules, max_failures=max_failures, now=0.0, run_id="run-1", stage="process",
                      job_id="nightly", to_wall=lambda t: 1_700_000_000.0 + t)


def seen(notices: list[Any]) -> list[tuple[str, str, int, str]]:
    return [(alert.rule, alert.state, alert.episode, alert.reason) for _, alert in notices]


def test_failure_rate_is_judged_over_a_sliding_window() -> None:
    c = conditions(AlertRule.failure_rate(above=0.5, window_s=10, min_records=4, notify=_noop))
    assert c.counts(1.0, succeeded=1, failed=2) == []  # 3 finished: too few to judge
    assert seen(c.counts(2.0, succeeded=1, failed=4)) == [("failure_rate", "firing", 1, "threshold")]
    # Nothing finishes for a while: an empty window keeps the state (a stall is another rule).
    assert c.tick(30.0) == []
    # 8 successes in the window that now starts at 21: 0 of 8 failed.
    assert seen(c.counts(31.0, succeeded=9, failed=4)) == [("failure_rate", "resolved", 1, "cleared")]
    # At t=40 the window starts at 30: the failures of t=2 are out of it, the successes of
    # t=31 and ten new failures in it (10 of 18).
    notices = c.counts(40.0, succeeded=9, failed=14)
    assert seen(notices) == [("failure_rate", "firing", 2, "threshold")]
    assert notices[0][1].figures["failed"] == 10 and notices[0][1].figures["finished"] == 18
    # Nine successes at 41: 10 of 19 in the window still; once it slides past t=40 (at 50),
    # only they are in it, and time alone resolves the episode.
    assert c.counts(41.0, succeeded=18, failed=14) == []
    assert c.tick(49.9) == []
    assert seen(c.tick(50.0)) == [("failure_rate", "resolved", 2, "cleared")]


def test_a_window_keeps_a_bounded_number_of_samples() -> None:
    # 100,000 hand-overs in 10 s (batches of one record): one sample per 1/100 of the window.
    c = conditions(AlertRule.failure_rate(above=0.5, window_s=60, notify=_noop))
    for n in range(1, 100_001):
        c.counts(n / 10_000, succeeded=n, failed=0)
    assert len(c._windows[0]) <= 20  # 10 s of a 60 s window, in 0.6 s steps, plus the start
    assert seen(c.counts(10.5, succeeded=100_000, failed=200_001)) == [("failure_rate", "firing", 1, "threshold")]


def test_breaker_open_counts_half_open_probes_as_still_open() -> None:
    c = conditions(AlertRule.breaker_open(for_s=30, notify=_noop))
    assert c.breaker(0.0, "open") == [] and c.breaker(10.0, "half_open") == []
    assert c.breaker(10.5, "open") == [] and c.tick(29.9) == []
    notices = c.tick(30.0)
    assert seen(notices) == [("breaker_open", "firing", 1, "threshold")]
    assert notices[0][1].figures["open_s"] == 30.0 and notices[0][1].figures["trips"] == 1
    assert c.tick(40.0) == []  # once per episode
    assert seen(c.breaker(41.0, "closed")) == [("breaker_open", "resolved", 1, "cleared")]
    c.breaker(50.0, "open")
    assert seen(c.tick(80.0)) == [("breaker_open", "firing", 2, "threshold")]
    assert seen(c.end(81.0, stopped=None, figures={})) == [("breaker_open", "resolved", 2, "run_ended")]


def test_breaker_state_in_the_counters_counts_as_a_transition() -> None:
    c = conditions(AlertRule.breaker_open(for_s=0, notify=_noop))
    assert seen(c.counts(1.0, succeeded=0, failed=3, breaker_state="open")) == [
        ("breaker_open", "firing", 1, "threshold")]


def test_stalled_fires_once_and_resolves_when_a_record_finishes() -> None:
    c = conditions(AlertRule.stalled(for_s=60, notify=_noop))
    c.counts(5.0, succeeded=3, failed=0, in_flight=2)
    assert c.tick(64.0) == []
    notices = c.tick(65.0)
    assert seen(notices) == [("stalled", "firing", 1, "threshold")]
    assert notices[0][1].figures == {"stalled_s": 60.0, "for_s": 60.0, "finished": 3, "in_flight": 2,
                                     "retrying": 0, "queued": 0}
    assert c.tick(200.0) == []
    assert c.counts(201.0, succeeded=3, failed=0, in_flight=1) == []  # counts that did not move
    assert seen(c.counts(202.0, succeeded=3, failed=1)) == [("stalled", "resolved", 1, "cleared")]


def test_budget_burn_of_a_count_and_of_a_rate() -> None:
    c = conditions(AlertRule.budget_burn(share=0.5, notify=_noop), max_failures=4)
    assert c.counts(1.0, succeeded=10, failed=1) == []
    assert seen(c.counts(2.0, succeeded=10, failed=2)) == [("budget_burn", "firing", 1, "threshold")]
    assert seen(c.end(3.0, stopped=None, figures={})) == [("budget_burn", "resolved", 1, "run_ended")]
    # max_failures=0: the first failure uses all of it
    c = conditions(AlertRule.budget_burn(share=1.0, notify=_noop), max_failures=0)
    assert seen(c.counts(1.0, succeeded=0, failed=1)) == [("budget_burn", "firing", 1, "threshold")]
    # a rate: judged from the engines' minimum sample (10 finished) on
    c = conditions(AlertRule.budget_burn(share=0.5, notify=_noop), max_failures=0.2)
    assert c.counts(1.0, succeeded=0, failed=5) == []
    notices = c.counts(2.0, succeeded=9, failed=1)
    assert seen(notices) == [("budget_burn", "firing", 1, "threshold")]  # 10 % of an allowed 20 %
    assert notices[0][1].figures["burn"] == 0.5
    assert seen(c.counts(3.0, succeeded=30, failed=1)) == [("budget_burn", "resolved", 1, "cleared")]


def test_aborted_fires_once_at_the_end_and_is_never_resolved() -> None:
    c = conditions(AlertRule.aborted(notify=_noop))
    notices = c.end(9.0, stopped="max_failures", figures={"succeeded": 3, "failed": 4, "pending": 5})
    assert seen(notices) == [("aborted", "firing", 1, "threshold")]
    alert = notices[0][1]
    assert alert.to_dict()["at"] == "2023-11-14T22:13:29.000Z" and alert.job_id == "nightly"
    assert "aborted (max_failures): 3 succeeded, 4 dead-lettered, 5 pending" in alert.message
    assert c.end(10.0, stopped="interrupt", figures={}) == [] and c.tick(11.0) == []
    assert conditions(AlertRule.aborted(notify=_noop)).end(1.0, stopped=None, figures={}) == []



def test_aborted_tells_the_runs_counts_even_after_another_rule_resolved_at_the_end() -> None:
    # end() reused its figures argument for each resolved rule's figures: an aborted rule after
    # a firing failure_rate one sent the window's figures and "0 succeeded, ... 0 pending" (seen
    # with batchguard run --alert-webhook --max-failures).
    c = conditions(AlertRule.failure_rate(0.2, 60, min_records=1, notify=_noop), AlertRule.aborted(notify=_noop))
    assert seen(c.counts(1.0, succeeded=1, failed=3)) == [("failure_rate", "firing", 1, "threshold")]
    run = {"status": "aborted", "succeeded": 1, "failed": 3, "pending": 96}
    notices = c.end(2.0, stopped="max_failures", figures=run)
    assert seen(notices) == [("failure_rate", "resolved", 1, "run_ended"), ("aborted", "firing", 1, "threshold")]
    assert notices[1][1].figures == {"stopped_reason": "max_failures", **run}
    assert notices[1][1].message.endswith("aborted (max_failures): 1 succeeded, 3 dead-lettered, 96 pending")


_EVENTS = st.lists(st.one_of(
    st.tuples(st.just("counts"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("breaker"), st.sampled_from(["closed", "open", "half_open"])),
    st.tuples(st.just("tick"))), max_size=40)


@settings(max_examples=200, deadline=None)
@given(events=_EVENTS, steps=st.lists(st.floats(0.0, 20.0), min_size=40, max_size=40),
       stopped=st.sampled_from([None, "max_failures", "interrupt"]))
def test_every_rule_alternates_firing_and_resolved_one_episode_at_a_time(
        events: list[tuple[Any, ...]], steps: list[float], stopped: str | None) -> None:
    rules = [AlertRule.failure_rate(0.3, 15, min_records=2, notify=_noop),
             AlertRule.failure_rate(0.3, 15, min_records=2, clear_below=0.1, notify=_noop),
             AlertRule.breaker_open(5, notify=_noop), AlertRule.budget_burn(0.5, notify=_noop),
             AlertRule.stalled(10, notify=_noop), AlertRule.aborted(notify=_noop)]
    c = conditions(*rules, max_failures=6)
    now, ok, bad, notices = 0.0, 0, 0, []
    for event, step in zip(events, steps, strict=False):
        now += step
        if event[0] == "counts":
            ok, bad = ok + event[1], bad + event[2]
            notices += c.counts(now, succeeded=ok, failed=bad)
        elif event[0] == "breaker":
            notices += c.breaker(now, event[1])
        else:
            notices += c.tick(now)
    notices += c.end(now + 1, stopped=stopped, figures={})
    for rule in rules:
        mine = [alert for r, alert in notices if r is rule]
        if rule.kind == "aborted":
            assert [a.state for a in mine] == ([] if stopped is None else ["firing"])
            continue
        # firing, resolved, firing, resolved...: every episode ends, by the run's end at last
        assert [a.state for a in mine] == ["firing", "resolved"] * (len(mine) // 2)
        assert [a.episode for a in mine] == [n // 2 + 1 for n in range(len(mine))]
        assert all(a.reason != "run_ended" for a in mine[:-1])  # only the end ends with the run
        assert all(a.at >= a.started_at for a in mine)


# ---------------------------------------------------------------- both engines, one verdict


@settings(max_examples=25, deadline=None)
@given(bad=st.sets(st.integers(0, 59), max_size=30), budget=st.integers(0, 12),
       share=st.sampled_from([0.25, 0.5, 1.0]), batch_size=st.integers(1, 20))
def test_both_engines_raise_the_same_notices(bad: set[int], budget: int, share: float, batch_size: int) -> None:
    # A count budget's burn only grows, so which notices a run raises does not depend on when
    # the counts were seen: both engines must raise exactly the model's.
    def fn(x: int) -> int:
        if x in bad:
            raise ValueError(x)
        return x

    outcomes = {}
    for engine in ENGINES:
        got: list[Alert] = []
        report = batchguard.run_batches(range(60), fn, engine=engine, retry=RetryPolicy(max_attempts=1),
                                        batch_size=batch_size, max_failures=budget,
                                        alerts=[AlertRule.budget_burn(share, notify=got.append),
                                                AlertRule.aborted(notify=got.append)])
        outcomes[engine] = ([(a.rule, a.state, a.reason) for a in got], report.status, report.failure_count)
    assert outcomes["python"] == outcomes["native"]
    notices, status, failed = outcomes["native"]
    aborted = len(bad) > budget
    assert status == ("aborted" if aborted else "complete" if not bad else "partial_success")
    burned = failed / max(budget, 1) >= share
    expected = [("budget_burn", "firing", "threshold"), ("budget_burn", "resolved", "run_ended")] if burned else []
    expected += [("aborted", "firing", "threshold")] if aborted else []
    assert sorted(notices) == sorted(expected)


# ---------------------------------------------------------------- checks


def test_rules_and_webhooks_are_checked_when_made() -> None:
    with pytest.raises(ConfigError, match=r"failure_rate\(above=...\) must be in \[0, 1\)"):
        AlertRule.failure_rate(above=1.5, notify=_noop)
    with pytest.raises(ConfigError, match="window_s"):
        AlertRule.failure_rate(window_s=0, notify=_noop)
    with pytest.raises(ConfigError, match="for_s"):
        AlertRule.stalled(for_s=-1, notify=_noop)
    with pytest.raises(ConfigError, match=r"budget_burn\(share=...\) must be in \(0, 1\]"):
        AlertRule.budget_burn(share=0, notify=_noop)
    with pytest.raises(ConfigTypeError, match="notify must be a callable"):
        AlertRule.aborted(notify="https://example.com/hook")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"http:// or https:// URL.*'ftp://example.com/\*\*\*'"):
        Webhook("ftp://example.com/s3cret")
    with pytest.raises(ConfigTypeError, match="headers"):
        Webhook("https://example.com/", headers={"X-N": 1})  # type: ignore[dict-item]
    assert redact_webhook("https://hooks.example.com/services/T0/B0/s3cret") == "https://hooks.example.com/***"
    assert redact_webhook("https://example.com") == "https://example.com/"


def test_run_batches_checks_alerts_before_any_record_is_read() -> None:
    calls: list[int] = []
    with pytest.raises(ConfigError, match="needs an error budget: set max_failures="):
        batchguard.run_batches(range(3), calls.append, alerts=[AlertRule.budget_burn(notify=_noop)])
    with pytest.raises(ConfigTypeError, match=r"alerts must be a list of batchguard\.AlertRule"):
        batchguard.run_batches(range(3), calls.append, alerts=[_noop])  # type: ignore[list-item]
    with pytest.raises(ConfigTypeError, match="alerts must be a list"):
        batchguard.run_batches(range(3), calls.append, alerts="stalled")  # type: ignore[arg-type]
    assert calls == []
