"""A run's alerts: :class:`AlertMonitor`, a hook target (:mod:`batchguard.hooks`) with a
timer thread.

The run's thread only observes: each hand-over's counters, each progress snapshot, each breaker
transition go into :class:`~batchguard.alerts.conditions.Conditions` under a lock, and any
notice that follows is handed to its webhook's own sender thread at once, or queued for the
timer thread ("batchguard-alerts"), which judges what grows with time (a stall, an open
breaker, a sliding window) and calls the ``notify`` callables. So neither a slow callable nor a
slow receiver ever holds the run up, and a callable that hangs holds back no webhook. The
threads are stopped and joined when the run ends, however it ends (``run_closed``, which the
run core calls even on Ctrl-C); a callable still running then gets CALLABLE_DRAIN_S.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from .._checks import shown
from ..errors import ConfigError, ConfigTypeError
from ..results import BatchProgress, BatchReport
from .conditions import Conditions, Notice
from .rules import Alert, AlertRule
from .webhook import Webhook, WebhookSender

__all__ = ["AlertMonitor", "check_alerts"]

logger = logging.getLogger("batchguard")

MIN_TICK_S: Final = 0.02
MAX_TICK_S: Final = 1.0
MAX_HELD: Final = 1000
"""Notices held for the ``notify`` callables at once; more are dropped (logged, counted): only
a callable that hangs lets them pile up, and holding every one would only grow memory."""
CALLABLE_DRAIN_S: Final = 10.0
"""How long the end of a run waits for ``notify`` callables still running (a hung one is left
behind, logged)."""


def _tick(rules: Sequence[AlertRule]) -> float:
    """How often the timer judges: a quarter of the shortest duration it watches, so a stall
    of ``for_s`` is noticed within 25 % of it (between MIN_TICK_S and MAX_TICK_S)."""
    spans = [r.window_s / 10 if r.kind == "failure_rate" else r.threshold
             for r in rules if r.kind in ("failure_rate", "breaker_open", "stalled")]
    return min(MAX_TICK_S, max(MIN_TICK_S, min(spans, default=MAX_TICK_S) / 4))


class AlertMonitor:
    """The hook target ``run_batches(..., alerts=[...])`` adds to a run.

    One object serves one run at a time (``run_started`` to ``run_closed``); the run core makes
    it from the rules when it checks the arguments. ``alert_failures`` counts the notices of the
    last run that were not delivered (a webhook that gave up, a callable that raised).
    """

    reads_dlq = False
    """It never reads the DLQ: an SQLite DLQ keeps its background writes (batchguard.hooks)."""

    def __init__(self, rules: Sequence[AlertRule], *, max_failures: int | float | None) -> None:
        self.rules = tuple(rules)
        self.max_failures = max_failures
        # Snapshots between hand-overs are what show a record finishing inside a long batch.
        self.wants_progress = any(r.kind in ("failure_rate", "stalled") for r in self.rules)
        self._tick_s = _tick(self.rules)
        self._lock = threading.Condition()
        self._outbox: list[Notice] = []
        self._conditions: Conditions | None = None
        self._senders: dict[int, WebhookSender] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self._callable_failures = 0
        self._in_hand = 0  # notices the timer took and has not finished calling
        self._abandoned = False  # the run ended without this thread: it delivers nothing more
        self._dropped_logged = False
        self._logged: set[int] = set()
        self.alert_failures = 0

    # ------------------------------------------------------------------ hooks (batchguard.hooks)

    def run_started(self, run_id: str, stage: str, job_id: str | None) -> None:
        now, wall = time.monotonic(), time.time()
        with self._lock:
            self._conditions = Conditions(self.rules, max_failures=self.max_failures, now=now,
                                          run_id=run_id, stage=stage, job_id=job_id,
                                          to_wall=lambda t: wall + (t - now))
            self._outbox = []
            self._stop = False
            self._callable_failures, self.alert_failures, self._in_hand = 0, 0, 0
            self._abandoned = False
            self._dropped_logged = False
            self._logged = set()
            self._senders = {id(r.notify): WebhookSender(r.notify) for r in self.rules
                             if isinstance(r.notify, Webhook)}
        for sender in self._senders.values():
            sender.start()
        self._thread = threading.Thread(target=self._run_timer, name="batchguard-alerts", daemon=True)
        self._thread.start()

    def observe_counters(self, counters: Any) -> None:
        self._counts(counters)

    def observe_progress(self, progress: BatchProgress) -> None:
        if not progress.final:  # the final snapshot's zeros are the run's end, seen at run_end
            self._counts(progress)

    def on_breaker(self, old: str, new: str) -> None:
        with self._lock:
            if self._conditions is not None:
                self._queue(self._conditions.breaker(time.monotonic(), new))

    def on_run_end(self, report: BatchReport[Any]) -> None:
        figures = {"status": report.status, "succeeded": report.success_count,
                   "failed": report.failure_count, "pending": report.pending_count}
        self._end(report.stopped_reason if report.status == "aborted" else None, figures)

    def run_closed(self, error: BaseException | None) -> None:
        """The run is over (after ``on_run_end``, or instead of it when the run raised): judge
        the end, deliver what is queued, stop and join the threads."""
        if error is not None:
            stopped = "interrupt" if not isinstance(error, Exception) else "error"
            self._end(stopped, {"error_type": type(error).__name__})
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        try:
            for sender in self._senders.values():
                # Every drain at once, and while the callables finish: the end waits for the
                # longest of them, not for their sum.
                sender.begin_close()
            thread.join(CALLABLE_DRAIN_S)
            if thread.is_alive():
                logger.error("an alert's notify callable was still running when the run ended; left behind")
            for sender in self._senders.values():
                sender.close()
        finally:
            # Ctrl-C in one of the joins above ends the drain; no sender may be left waiting
            # for a close() that will not come (its thread would outlive the run).
            for sender in self._senders.values():
                sender.abandon()
            with self._lock:
                # A callable still running is left behind: what it holds is counted as not
                # delivered below (or lost with Ctrl-C), so never delivered late either,
                # should it return after the run did.
                self._abandoned = thread.is_alive()
        with self._lock:
            undelivered = len(self._outbox) + self._in_hand  # only when a callable hung
            if self._abandoned:
                self._outbox = []
            self.alert_failures = (self._callable_failures + undelivered
                                   + sum(s.failed for s in self._senders.values()))
            self._thread, self._conditions = None, None

    # ------------------------------------------------------------------ internals

    def _counts(self, seen: Any) -> None:
        with self._lock:
            if self._conditions is not None:
                self._queue(self._conditions.counts(
                    time.monotonic(), succeeded=seen.succeeded, failed=seen.failed, in_flight=seen.in_flight,
                    queued=seen.queued, retrying=seen.retrying, breaker_state=seen.breaker_state))

    def _end(self, stopped: str | None, figures: dict[str, Any]) -> None:
        with self._lock:
            if self._conditions is not None:
                self._queue(self._conditions.end(time.monotonic(), stopped=stopped, figures=figures))

    def _queue(self, notices: list[Notice]) -> None:
        """Hand each of ``notices`` to its webhook's sender at once (never blocks), or hold it for
        the timer thread, which calls the callables (called under the lock). A callable that
        hangs thus holds back only the callables' notices."""
        queued = False
        for rule, alert in notices:
            if isinstance(rule.notify, Webhook):
                self._senders[id(rule.notify)].send(alert.to_dict())
            elif len(self._outbox) < MAX_HELD:
                self._outbox.append((rule, alert))
                queued = True
            else:
                self._callable_failures += 1
                if not self._dropped_logged:
                    self._dropped_logged = True
                    logger.error("%d notices wait for the notify callables already (one hangs?); dropping "
                                 "new ones (counted in report.alert_failures)", MAX_HELD)
        if queued:
            self._lock.notify_all()

    def _run_timer(self) -> None:
        try:
            self._timer_loop()
        except Exception:  # a bug here must not pass silently, nor reach the run
            logger.exception("the alert timer thread failed; alerts stop for this run")

    def _timer_loop(self) -> None:
        while True:
            with self._lock:
                if not self._outbox and not self._stop:
                    self._lock.wait(self._tick_s)
                if self._conditions is not None and not self._stop:
                    self._queue(self._conditions.tick(time.monotonic()))
                notices, self._outbox = self._outbox, []
                stop = self._stop
            for index, (rule, alert) in enumerate(notices):
                with self._lock:
                    if self._abandoned:
                        return
                    self._in_hand = len(notices) - index  # lost if this call never returns
                self._deliver(rule, alert)
            with self._lock:
                self._in_hand = 0
            if stop:
                with self._lock:
                    if not self._outbox:
                        return

    def _deliver(self, rule: AlertRule, alert: Alert) -> None:
        notify = rule.notify
        assert not isinstance(notify, Webhook)  # handed to its sender by _queue, never held here
        try:
            result = notify(alert)
            if inspect.isawaitable(result):  # a plain function returning a coroutine: never run
                if inspect.iscoroutine(result):
                    result.close()  # no "never awaited" warning: this is logged and counted
                raise TypeError("it returned a coroutine, which nothing awaits on the alerts' thread: "
                                "run it with asyncio.run(...) inside the callable")
        except BaseException as exc:
            # Even SystemExit: it would end this thread, and with it every later notice of
            # every rule (the run's own thread never sees it).
            with self._lock:
                self._callable_failures += 1
                first = id(rule) not in self._logged
                self._logged.add(id(rule))
            if first:
                logger.error("the notify callable of alert rule %r raised %s: %s (logged once; "
                             "report.alert_failures counts every failure)", rule.name,
                             type(exc).__name__, exc, exc_info=exc)


def check_alerts(alerts: Any, *, max_failures: int | float | None) -> AlertMonitor | None:
    """``run_batches``' ``alerts=`` checked: a list (or tuple) of :class:`AlertRule`; the run's
    monitor, or None for no rules. ConfigError for a ``budget_burn`` rule without an error budget."""
    if alerts is None:
        return None
    if isinstance(alerts, AlertRule):
        alerts = [alerts]
    if not isinstance(alerts, (list, tuple)):
        raise ConfigTypeError(f"alerts must be a list of batchguard.AlertRule, got {type(alerts).__name__}")
    for rule in alerts:
        if not isinstance(rule, AlertRule):
            raise ConfigTypeError(f"alerts must be a list of batchguard.AlertRule (AlertRule.failure_rate(...), "
                                  f"...), got an item {type(rule).__name__} {shown(rule)}")
        if rule.kind == "budget_burn" and max_failures is None:
            raise ConfigError(f"alerts: {rule.name!r} (AlertRule.budget_burn) needs an error budget: "
                              f"set max_failures=")
    return AlertMonitor(alerts, max_failures=max_failures) if alerts else None
