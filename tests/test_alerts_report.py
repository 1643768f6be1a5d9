"""The final report tells of undelivered alert notices and failing hooks (issue 10 item 4):
``report.alert_failures`` and ``report.hook_errors`` were counted but only on the object, in
neither ``to_dict()``, ``to_json()`` nor the text an operator reads."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

import batchguard
from batchguard import AlertRule
from batchguard._report.model import build
from batchguard._report.panel import render_panel
from batchguard.alerts import Alert
from helpers_contract import ENGINES


def _raise(*args: object) -> None:
    raise RuntimeError("hook down")


HOOKS = batchguard.Hooks(on_batch_complete=_raise)
def _refused(alert: Alert) -> None:
    raise ConnectionError("pager down")


@pytest.mark.parametrize("engine", ENGINES)
def test_undelivered_alerts_and_hook_errors_are_in_every_form_of_the_report(engine: str) -> None:
    report = batchguard.run_batches(range(20), lambda x: x, engine=engine, batch_size=5,
                                    alerts=[AlertRule.aborted(notify=_refused)])
    assert report.alert_failures == 0 and report.hook_errors == 0  # aborted fires only when stopped early
    failing = batchguard.run_batches(range(20), lambda x: 1 // (x - 3), engine=engine, batch_size=5,
                                     max_failures=0, retry=batchguard.RetryPolicy(max_attempts=1),
                                     hooks=HOOKS, alerts=[AlertRule.aborted(notify=_refused)])
    assert failing.status == "aborted" and failing.alert_failures == 1 and failing.hook_errors == 1
    data, shown = failing.to_dict(), failing.to_json()
    assert (data["alert_failures"], data["hook_errors"]) == (1, failing.hook_errors)
    assert (shown["alert_failures"], shown["hook_errors"]) == (1, failing.hook_errors)
    json.dumps(shown)
    text = failing.summary()
    assert "Alerts not delivered: 1 (see the log)" in text
    assert f"Hook errors:   {failing.hook_errors} (see the log)" in text
    assert "Alerts not delivered" not in report.summary() and report.to_dict()["alert_failures"] == 0
    console = Console(file=io.StringIO(), width=120)
    console.print(render_panel(build(failing)))
    panel = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Alerts not delivered" in panel and "Hook errors" in panel
