"""A failure rate hovering at its threshold (issue 10 item 4): without ``clear_below`` each
crossing is a firing and a resolved notice; with it an episode resolves only once the rate falls
to ``clear_below``. On a virtual clock, plus both engines on one run."""

from __future__ import annotations

from typing import Any

import pytest

import batchguard
from batchguard import AlertRule, ConfigError, ConfigTypeError, RetryPolicy
from batchguard.alerts import Alert, default_rules
from batchguard.alerts.conditions import Conditions
from helpers_contract import ENGINES


def _noop(alert: Alert) -> None:
    pass


def _hover(rule: AlertRule) -> list[tuple[str, str]]:
    """Feed a rate that crosses 20 % back and forth (21 %, 19 %, ...) then falls to 9 %."""
    c = Conditions([rule], max_failures=None, now=0.0, run_id="run-1", stage="process", job_id=None,
                   to_wall=lambda t: t)
    notices: list[Any] = []
    succeeded = failed = 0
    for step, rate in enumerate([0.21, 0.19, 0.21, 0.19, 0.21, 0.19, 0.09]):
        # 100 more records per step, cumulatively at ``rate`` (the window covers the whole run)
        finished = 100 * (step + 1)
        failed = round(rate * finished)
        succeeded = finished - failed
        notices += c.counts(float(step + 1), succeeded=succeeded, failed=failed)
    return [(alert.state, alert.reason) for _, alert in notices]


def test_a_rate_hovering_at_the_threshold_flaps_without_clear_below() -> None:
    assert _hover(AlertRule.failure_rate(0.2, 600, notify=_noop)) == [
        ("firing", "threshold"), ("resolved", "cleared")] * 3


def test_clear_below_holds_the_episode_until_the_rate_falls_that_far() -> None:
    rule = AlertRule.failure_rate(0.2, 600, clear_below=0.1, notify=_noop)
    assert _hover(rule) == [("firing", "threshold"), ("resolved", "cleared")]
    assert rule.name == "failure rate above 20% over 600s"


def test_the_command_lines_default_rule_has_a_clear_below() -> None:
    rule = default_rules(_noop)[0]
    assert (rule.kind, rule.threshold, rule.clear_below) == ("failure_rate", 0.2, 0.1)


def test_clear_below_is_in_the_resolved_notice() -> None:
    c = Conditions([AlertRule.failure_rate(0.2, 600, min_records=1, clear_below=0.1, notify=_noop)],
                   max_failures=None, now=0.0, run_id="r", stage="process", job_id=None, to_wall=lambda t: t)
    c.counts(1.0, succeeded=5, failed=5)
    assert c.counts(2.0, succeeded=15, failed=5) == []  # 25 %: still firing
    (_, alert), = c.counts(3.0, succeeded=45, failed=5)  # 10 %
    assert alert.figures["clear_below"] == 0.1 and alert.figures["failure_rate"] == 0.1
    assert "at or below 10%" in alert.message


@pytest.mark.parametrize(("value", "error"), [(0.3, ConfigError), (-0.1, ConfigError), (float("nan"), ConfigError),
                                              (True, ConfigTypeError), ("0.1", ConfigTypeError)])
def test_clear_below_is_checked(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"clear_below"):
        AlertRule.failure_rate(0.2, clear_below=value, notify=_noop)
    with pytest.raises(ConfigError, match="clear_below"):
        AlertRule("stalled", _noop, 5.0, clear_below=0.1)


@pytest.mark.parametrize("engine", ENGINES)
def test_both_engines_hold_the_episode_with_clear_below(engine: str) -> None:
    # Batches of 100 at 25 %, 15 %, 25 %, 15 % (cumulative rate 25, 20, 21.7, 20 %), then clean
    # batches: without clear_below the rule would flap at 20 %; with 0.1 one episode, resolved
    # once the run's rate reaches 10 % (at 800 records).
    bad = {x for x in range(400) if x % 100 < (25 if x // 100 % 2 == 0 else 15)}
    got: list[Alert] = []
    batchguard.run_batches(range(1000), lambda x: 1 // (x not in bad), engine=engine, batch_size=100,
                           concurrency=1, retry=RetryPolicy(max_attempts=1),
                           alerts=[AlertRule.failure_rate(0.2, 600, clear_below=0.1, notify=got.append)])
    assert [(a.state, a.reason) for a in got] == [("firing", "threshold"), ("resolved", "cleared")]
    assert got[1].figures["failed"] == 80 and got[1].figures["finished"] >= 800  # seen at a hand-over or after
