"""Alerts: ``run_batches(..., alerts=[AlertRule...])`` tells an operator when a run goes wrong.

>>> from batchguard.alerts import AlertRule, Webhook
>>> hook = Webhook("https://alerts.example.com/hooks/T0K3N", headers={"X-Team": "data"})
>>> rules = [AlertRule.failure_rate(above=0.2, window_s=60, notify=hook),
...          AlertRule.breaker_open(for_s=30, notify=hook),
...          AlertRule.budget_burn(share=0.5, notify=hook),      # needs max_failures=
...          AlertRule.stalled(for_s=120, notify=print),
...          AlertRule.aborted(notify=hook)]
>>> hook
Webhook('https://alerts.example.com/***', timeout=5, retries=3)

The conditions:

=========================================  ==============================================================
``failure_rate(above, window_s)``          more than ``above`` of the records that finished in the last
                                           ``window_s`` s were dead-lettered (judged once ``min_records``,
                                           10, finished in the window; with fewer it keeps its state);
                                           with ``clear_below``, an episode lasts until the rate falls
                                           to it (a rate hovering at ``above`` does not flap)
``breaker_open(for_s)``                    the circuit breaker opened and has not closed for ``for_s`` s
                                           (half-open probes that fail do not end the episode)
``budget_burn(share)``                     ``share`` of ``max_failures`` is used: ``failed/max_failures``
                                           for a count, the failure rate over the allowed rate for a rate
``stalled(for_s)``                         no record finished (succeeded or dead-lettered) for ``for_s`` s
``aborted()``                              the run stopped early: its error budget or breaker stopped it,
                                           a fatal error, Ctrl-C or a cancelled task, or an exception
                                           raised out of the run (a DLQ that failed)
=========================================  ==============================================================

Each rule fires once per episode: one "firing" notice when its condition becomes true, one
"resolved" notice when it clears (reason "cleared") or when the run ends with it still true
(reason "run_ended": nothing watches the run any more). ``aborted`` fires at most once, at the
end, and is never resolved. A notice is an :class:`Alert`; ``notify`` is a callable taking it, or
a :class:`Webhook` it is POSTed to as JSON (:meth:`Alert.to_dict`)::

    {"rule": "failure_rate", "name": "failure rate above 20% over 60s", "state": "firing",
     "episode": 1, "run_id": "...", "job_id": null, "stage": "process",
     "figures": {"failure_rate": 0.35, "failed": 7, "finished": 20, "window_s": 60.0, "above": 0.2},
     "started_at": "2026-12-07T17:02:11.204Z", "at": "2026-12-07T17:02:11.204Z", "duration_s": 0.0,
     "reason": "threshold", "message": "[FIRING] failure rate above 20% over 60s: batchguard run ..."}

How it runs: the rules are judged on what the engine already hands over (each batch's end with
the run's counters, breaker transitions, and, for ``failure_rate`` and ``stalled``, a progress
snapshot every 0.1 s, which is what shows a record finishing inside a long batch), plus a timer
thread for what grows with time. Notices are delivered from that thread: a ``notify`` callable
runs there (keep it quick), and each webhook has a sender thread of its own that retries with
backoff. The run's thread never waits for either. Both threads are stopped and joined when the run
ends (and on Ctrl-C); a webhook's undelivered notices get its ``drain_s`` (2 s) first. A notice
that could not be delivered (a webhook that gave up, a callable that raised) is logged and
counted in ``report.alert_failures``. A run without ``alerts=`` pays nothing for any of this.

``batchguard run --alert-webhook URL`` (or ``alert_webhook`` in ``--config``, or the environment
variable ``BATCHGUARD_ALERT_WEBHOOK``) POSTs :func:`default_rules` to URL.
"""

from __future__ import annotations

from .monitor import AlertMonitor, check_alerts
from .rules import RULE_KINDS, Alert, AlertRule, Notify, default_rules
from .webhook import Webhook, redact_webhook

__all__ = ["RULE_KINDS", "Alert", "AlertMonitor", "AlertRule", "Notify", "Webhook", "check_alerts",
           "default_rules", "redact_webhook"]
