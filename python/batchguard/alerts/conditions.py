"""Judging a run's alert rules, on a clock the caller passes in (no threads, no I/O).

:class:`Conditions` is fed what the run shows (its counts, the breaker's state, its end) with
the time it was seen, and answers with the :class:`~batchguard.alerts.Alert` notices that
follow: a rule whose condition became true starts an episode (one "firing" notice), and the
episode ends (one "resolved" notice) when the condition clears or the run ends. The monitor
(:mod:`batchguard.alerts.monitor`) calls it under its lock, from the run's thread and from its
timer; tests call it with made-up times.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from .rules import Alert, AlertRule

__all__ = ["MIN_RATE_SAMPLE", "Conditions", "Notice"]

MIN_RATE_SAMPLE: Final = 10
"""Finished records before a rate ``max_failures`` is judged: the engines' own minimum
(``MIN_RATE_SAMPLE`` in src/engine/gates.rs, ``reference/gates.py``), so the budget's burn is
judged on the same numbers that stop the run."""


Notice = tuple[AlertRule, Alert]
"""A notice and the rule it is about (whose ``notify`` is told)."""


WINDOW_STEPS: Final = 100
"""A failure-rate window keeps one sample of the counts per 1/100 of its length (at most ~100
in it): a sample taken sooner after the previous one replaces that one's counts."""


class _Sample(NamedTuple):
    at: float
    succeeded: int
    failed: int


@dataclass
class _Episode:
    """A rule's state: whether it fires now, and which episode it is in."""

    firing: bool = False
    number: int = 0
    since: float = 0.0


def _pct(x: float) -> str:
    return f"{x:.0%}"


class Conditions:
    """The rules of one run and where each stands. Every method takes ``now`` (monotonic
    seconds) and returns the notices it caused, in rule order."""

    def __init__(self, rules: Sequence[AlertRule], *, max_failures: int | float | None, now: float,
                 run_id: str, stage: str, job_id: str | None, to_wall: Callable[[float], float]) -> None:
        self.rules = tuple(rules)
        self.max_failures = max_failures
        self.run_id, self.stage, self.job_id = run_id, stage, job_id
        self._to_wall = to_wall
        self._episodes = [_Episode() for _ in self.rules]
        # The rules each kind of observation can change, looked up once.
        self._on_counts = self._of("failure_rate", "budget_burn", "stalled")
        self._on_breaker = self._of("breaker_open")
        self._on_tick = self._of("stalled", "breaker_open", "failure_rate")
        # One window per failure_rate rule: samples of the cumulative counts, oldest first, the
        # first one the newest at or before the window's start (or the run's start).
        self._windows = {i: collections.deque([_Sample(now, 0, 0)]) for i, rule in enumerate(self.rules)
                         if rule.kind == "failure_rate"}
        self.succeeded = self.failed = 0
        self.in_flight = self.queued = self.retrying = 0
        self.last_finish = now  # the run's start counts as the last progress
        self.breaker_state = "closed"
        self.open_since: float | None = None
        self.trips = 0
        self.ended = False

    def _of(self, *kinds: str) -> list[tuple[int, AlertRule]]:
        return [(i, rule) for i, rule in enumerate(self.rules) if rule.kind in kinds]

    # ------------------------------------------------------------------ observations

    def counts(self, now: float, *, succeeded: int, failed: int, in_flight: int = 0, queued: int = 0,
               retrying: int = 0, breaker_state: str | None = None) -> list[Notice]:
        """The run's counters as an engine hand-over or a progress snapshot shows them."""
        if self.ended:
            return []
        moved = succeeded + failed != self.succeeded + self.failed
        if moved:
            self.last_finish = now
            for i, window in self._windows.items():
                last = window[-1]
                if len(window) > 1 and now - last.at < self.rules[i].window_s / WINDOW_STEPS:
                    # A run of many small batches hands over thousands of times a second: one
                    # sample per step keeps a window's memory bounded, the edge within a step.
                    window[-1] = _Sample(last.at, succeeded, failed)
                else:
                    window.append(_Sample(now, succeeded, failed))
        self.succeeded, self.failed = succeeded, failed
        self.in_flight, self.queued, self.retrying = in_flight, queued, retrying
        notices = self.breaker(now, breaker_state) if breaker_state is not None else []
        if not moved:  # what the counts decide changes only when they move (time: tick)
            return notices
        return notices + self._judge(now, self._on_counts)

    def breaker(self, now: float, state: str) -> list[Notice]:
        """The breaker is in ``state`` ("closed", "open", "half_open") as of ``now``."""
        if self.ended or state == self.breaker_state:
            return []
        if self.breaker_state == "closed":  # opened: half-open probes do not end the outage
            self.open_since = now
            self.trips += 1
        elif state == "closed":
            self.open_since = None
        self.breaker_state = state
        return self._judge(now, self._on_breaker)

    def tick(self, now: float) -> list[Notice]:
        """Time has passed: the conditions that grow with it (a stall, an open breaker, a
        window that slides)."""
        if self.ended:
            return []
        return self._judge(now, self._on_tick)

    def end(self, now: float, *, stopped: str | None, figures: dict[str, Any]) -> list[Notice]:
        """The run is over: ``aborted`` rules fire when it stopped early (``stopped`` says why),
        every other episode still firing is resolved with reason "run_ended"."""
        if self.ended:
            return []
        self.ended = True
        notices: list[Notice] = []
        for i, rule in enumerate(self.rules):
            episode = self._episodes[i]
            if rule.kind == "aborted":
                if stopped is not None:
                    episode.firing, episode.number, episode.since = True, 1, now
                    what = f"aborted ({stopped})"
                    notices.append(self._notice(i, "firing", now, {"stopped_reason": stopped, **figures},
                                                "threshold", f"{what}: {self._tally(figures)}"))
            elif episode.firing:
                episode.firing = False
                last_seen = self._verdict(i, rule, now, describe=True)[1]  # not the run's figures
                notices.append(self._notice(i, "resolved", now, last_seen, "run_ended",
                                            f"the run ended with {rule.name!r} still true"))
        return notices

    # ------------------------------------------------------------------ judging

    def _judge(self, now: float, rules: list[tuple[int, AlertRule]]) -> list[Notice]:
        notices: list[Notice] = []
        for i, rule in rules:
            # Judged at every hand-over and snapshot: the figures and words are built only for
            # a notice.
            verdict = self._verdict(i, rule, now, describe=False)[0]
            episode = self._episodes[i]
            if verdict is None or verdict == episode.firing:
                continue
            _, figures, message = self._verdict(i, rule, now, describe=True)
            episode.firing = verdict
            if verdict:
                episode.number += 1
                episode.since = now
            notices.append(self._notice(i, "firing" if verdict else "resolved", now, figures,
                                        "threshold" if verdict else "cleared", message))
        return notices

    def _verdict(self, i: int, rule: AlertRule, now: float, *,
                 describe: bool) -> tuple[bool | None, dict[str, Any], str]:
        """Is the rule's condition true now (None: too little to tell; the rule keeps its
        state), and, when ``describe``, the figures behind the answer and what it means in
        words."""
        t = rule.threshold
        figures: dict[str, Any]
        if rule.kind == "failure_rate":
            window = self._windows[i]
            edge = now - rule.window_s
            while len(window) >= 2 and window[1].at <= edge:
                window.popleft()
            base, last = window[0], window[-1]
            failed = last.failed - base.failed
            finished = failed + last.succeeded - base.succeeded
            rate = failed / finished if finished else 0.0
            # Hysteresis: a firing episode holds while the rate stays above clear_below.
            clear = t if rule.clear_below is None else rule.clear_below
            limit = clear if self._episodes[i].firing else t
            truth = None if finished < rule.min_records else rate > limit
            if not describe:
                return truth, {}, ""
            figures = {"failure_rate": round(rate, 4), "failed": failed, "finished": finished,
                       "window_s": rule.window_s, "above": t}
            if rule.clear_below is not None:
                figures["clear_below"] = clear
            if truth is None:
                return None, figures, ""
            if truth:
                return True, figures, (f"{failed} of the {finished} records finished in the last "
                                       f"{rule.window_s:g}s were dead-lettered ({_pct(rate)}, above {_pct(limit)})")
            return False, figures, (f"failure rate back to {_pct(rate)} over the last {rule.window_s:g}s"
                                    + (f" (at or below {_pct(clear)})" if rule.clear_below is not None else ""))
        if rule.kind == "breaker_open":
            open_s = 0.0 if self.open_since is None else now - self.open_since
            truth = self.open_since is not None and open_s >= t
            if not describe:
                return truth, {}, ""
            figures = {"open_s": round(open_s, 3), "breaker_state": self.breaker_state,
                       "trips": self.trips, "for_s": t}
            if truth:
                return True, figures, (f"circuit breaker {self.breaker_state} for {open_s:.0f}s "
                                       f"({self.trips} trip(s) this run)")
            return False, figures, "circuit breaker closed again"
        if rule.kind == "budget_burn":
            return self._burn(t, describe)
        # stalled
        stalled_s = now - self.last_finish
        if not describe:
            return stalled_s >= t, {}, ""
        figures = {"stalled_s": round(stalled_s, 3), "for_s": t, "finished": self.succeeded + self.failed,
                   "in_flight": self.in_flight, "retrying": self.retrying, "queued": self.queued}
        if stalled_s >= t:
            return True, figures, (f"no record finished for {stalled_s:.0f}s ({self.in_flight} in flight, "
                                   f"{self.retrying} waiting to retry, {self.queued} queued)")
        return False, figures, f"records finish again ({self.succeeded + self.failed} so far)"

    def _burn(self, share: float, describe: bool) -> tuple[bool | None, dict[str, Any], str]:
        budget, failed = self.max_failures, self.failed
        finished = self.succeeded + failed
        if budget is None:
            return None, {}, ""
        if isinstance(budget, int):
            burn = failed / max(budget, 1)  # max_failures=0: the first failure uses it all
        elif finished < MIN_RATE_SAMPLE:
            return None, {}, ""
        else:
            burn = failed / finished / budget
        if not describe:
            return burn >= share, {}, ""
        figures = {"burn": round(burn, 4), "share": share, "failed": failed, "finished": finished,
                   "max_failures": budget}
        if burn >= share:
            return True, figures, (f"{failed} records dead-lettered: {_pct(burn)} of the error budget "
                                   f"(max_failures={budget}) used")
        return False, figures, f"error budget use back to {_pct(burn)}"

    # ------------------------------------------------------------------ notices

    @staticmethod
    def _tally(figures: dict[str, Any]) -> str:
        if "error_type" in figures:
            return f"{figures['error_type']} raised out of the run"
        return (f"{figures.get('succeeded', 0)} succeeded, {figures.get('failed', 0)} dead-lettered, "
                f"{figures.get('pending', 0)} pending")

    def _notice(self, i: int, state: Literal["firing", "resolved"], now: float, figures: dict[str, Any],
                reason: Literal["threshold", "cleared", "run_ended"], what: str) -> Notice:
        rule, episode = self.rules[i], self._episodes[i]
        job = f" (job {self.job_id})" if self.job_id else ""
        word = "FIRING" if state == "firing" else "RESOLVED"
        return rule, Alert(rule=rule.kind, name=rule.name, state=state, episode=episode.number,
                     run_id=self.run_id, job_id=self.job_id, stage=self.stage, figures=dict(figures),
                     started_at=self._to_wall(episode.since), at=self._to_wall(now), reason=reason,
                     message=f"[{word}] {rule.name}: batchguard run {self.run_id}{job}: {what}")
