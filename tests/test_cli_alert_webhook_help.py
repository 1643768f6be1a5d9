"""``batchguard run --help`` describes the alert rules ``--alert-webhook`` really sets.

The default failure-rate rule resolves at 10 % (``clear_below=0.1``, issue 10 item 4), but the
help said only "failure rate above 20% over 60 s", which reads as resolving at 20 %. The
figures here come from :func:`batchguard.alerts.default_rules`, so the help is checked against
the rules themselves, not against a copy of its own wording.
"""

from __future__ import annotations

import click

from batchguard.alerts import Alert, default_rules
from batchguard.cli.run import run


def _ignore(alert: Alert) -> None:
    """A notify callable for building the rules; nothing is sent."""


def _help() -> str:
    [option] = [p for p in run.params if isinstance(p, click.Option) and "--alert-webhook" in p.opts]
    assert option.help is not None
    return " ".join(option.help.split())


def test_the_alert_webhook_help_gives_the_default_rules_figures() -> None:
    rules = {rule.kind: rule for rule in default_rules(_ignore, max_failures=10)}
    rate = rules["failure_rate"]
    assert rate.clear_below is not None
    text = _help()
    assert f"failure rate above {rate.threshold:.0%} over {rate.window_s:g} s" in text
    assert f"resolved once it falls to {rate.clear_below:.0%} or below" in text
    assert f"breaker open for {rules['breaker_open'].threshold:g} s" in text
    assert f"no record finished for {rules['stalled'].threshold:g} s" in text
    assert rules["budget_burn"].threshold == 0.5 and "half of the error budget used" in text
