"""What to alert on (:class:`AlertRule`) and what an alert says (:class:`Alert`).

A rule is data: its kind, its threshold, who is told. Judging it is
:mod:`batchguard.alerts.conditions`' job, telling is :mod:`batchguard.alerts.monitor`'s.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .._checks import check_count, check_duration, shown
from ..errors import ConfigError, ConfigTypeError
from .webhook import Webhook

__all__ = ["RULE_KINDS", "Alert", "AlertRule", "Notify", "default_rules"]

RuleKind = Literal["failure_rate", "breaker_open", "budget_burn", "stalled", "aborted"]
RULE_KINDS: Final[tuple[RuleKind, ...]] = ("failure_rate", "breaker_open", "budget_burn", "stalled",
                                           "aborted")
"""Every kind of rule, in the order their constructors are documented."""

Notify = Callable[["Alert"], Any] | Webhook
"""Who is told: a callable taking the :class:`Alert`, or a :class:`Webhook` it is POSTed to."""


def _iso(epoch_s: float) -> str:
    """A wall-clock instant as ISO 8601 in UTC, to the millisecond (what a receiver parses)."""
    moment = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    """One notice about a rule: it started firing, or the episode it fired in is over.

    A webhook receives :meth:`to_dict` as its JSON body; a callable receives this object.
    """

    rule: RuleKind
    """The rule's kind ("failure_rate", "breaker_open", "budget_burn", "stalled", "aborted")."""
    name: str
    """The rule's name (its ``name=``, or one spelled from its kind and threshold)."""
    state: Literal["firing", "resolved"]
    episode: int
    """1 for the rule's first episode in this run, 2 for the next...: a firing notice and the
    resolved notice that ends it carry the same number."""
    run_id: str
    job_id: str | None
    stage: str
    figures: Mapping[str, Any]
    """The numbers behind the notice: for a firing one, those that crossed the threshold; for a
    resolved one, those that cleared it (or, for ``reason="run_ended"``, the last ones seen)."""
    started_at: float
    """When the episode began (seconds since the epoch)."""
    at: float
    """When this notice was raised (seconds since the epoch)."""
    reason: Literal["threshold", "cleared", "run_ended"]
    """Why this notice: the threshold was crossed (firing), the condition cleared, or the run
    ended with the condition still true (the run cannot be watched any more)."""
    message: str = field(default="")
    """One line for a person (a chat message, a pager's summary)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON a webhook receives: these fields, the instants as ISO 8601 UTC strings,
        and ``duration_s`` (seconds since the episode began)."""
        return {
            "rule": self.rule, "name": self.name, "state": self.state, "episode": self.episode,
            "run_id": self.run_id, "job_id": self.job_id, "stage": self.stage,
            "figures": dict(self.figures), "started_at": _iso(self.started_at), "at": _iso(self.at),
            "duration_s": round(max(0.0, self.at - self.started_at), 3), "reason": self.reason,
            "message": self.message,
        }


def _check_notify(notify: Any) -> None:
    if isinstance(notify, Webhook):
        return
    if not callable(notify):
        raise ConfigTypeError(f"AlertRule.notify must be a callable taking an Alert or a "
                              f"batchguard.alerts.Webhook, got {type(notify).__name__} {shown(notify)}")
    if inspect.iscoroutinefunction(notify) or inspect.iscoroutinefunction(type(notify).__call__):
        # Called on the timer thread, it would only make a coroutine nobody awaits: the notice lost.
        raise ConfigTypeError(f"AlertRule.notify must be a plain callable (it runs on a thread of its own), "
                              f"got the async def {getattr(notify, '__qualname__', type(notify).__name__)}; "
                              f"call it with asyncio.run(...) from a plain function, or use a Webhook")


def _check_share(name: str, value: Any, *, zero_ok: bool, one_ok: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name} must be a number in [0, 1], got {type(value).__name__} {shown(value)}")
    low_ok = value >= 0.0 if zero_ok else value > 0.0
    high_ok = value <= 1.0 if one_ok else value < 1.0
    if not (low_ok and high_ok):  # nan fails both
        raise ConfigError(f"{name} must be in {'[' if zero_ok else '('}0, 1{']' if one_ok else ')'}, "
                          f"got {shown(value)}")
    return float(value)


@dataclass(frozen=True)
class AlertRule:
    """A condition of a run an operator wants to hear about, and who to tell.

    Build one with its constructor: :meth:`failure_rate`, :meth:`breaker_open`,
    :meth:`budget_burn`, :meth:`stalled` or :meth:`aborted`. Each rule fires once per episode
    (the condition became true) and sends a "resolved" notice when the episode ends (the
    condition cleared, or the run ended); ``aborted`` fires at most once, at the end, and has
    nothing to resolve.
    """

    kind: RuleKind
    notify: Notify
    threshold: float = 0.0
    """failure_rate: the rate above which it fires; breaker_open and stalled: seconds;
    budget_burn: the share of ``max_failures``; aborted: unused."""
    window_s: float = 0.0
    """failure_rate: the sliding window, in seconds."""
    min_records: int = 0
    """failure_rate: records that must have finished in the window before its rate is judged."""
    name: str = ""
    clear_below: float | None = None
    """failure_rate: the rate at or below which a firing episode resolves (None: ``threshold``
    itself); below the threshold, so a rate hovering at it does not fire and resolve by turns."""

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ConfigError(f"AlertRule.kind must be one of {', '.join(RULE_KINDS)}, got {shown(self.kind)}")
        _check_notify(self.notify)
        if not isinstance(self.name, str):
            raise ConfigTypeError(f"AlertRule.name must be a str, got {type(self.name).__name__}")
        if self.kind == "failure_rate":
            # Fires on a rate *above* it: at 1 it never could.
            _check_share("AlertRule.failure_rate(above=...)", self.threshold, zero_ok=True, one_ok=False)
            object.__setattr__(self, "window_s", check_duration("AlertRule.failure_rate(window_s=...)",
                                                                self.window_s, positive=True))
            check_count("AlertRule.failure_rate(min_records=...)", self.min_records, minimum=1,
                        maximum=2**63 - 1)
            if self.clear_below is not None:
                clear = _check_share("AlertRule.failure_rate(clear_below=...)", self.clear_below, zero_ok=True)
                if clear > self.threshold:
                    raise ConfigError(f"AlertRule.failure_rate(clear_below=...) must be at most above="
                                      f"{shown(self.threshold)}, got {shown(self.clear_below)}")
                object.__setattr__(self, "clear_below", clear)
        elif self.kind == "breaker_open":
            check_duration("AlertRule.breaker_open(for_s=...)", self.threshold)  # 0: as soon as it opens
        elif self.kind == "stalled":
            # 0 would be true at every instant: fired at the start, never resolved.
            check_duration("AlertRule.stalled(for_s=...)", self.threshold, positive=True)
        elif self.kind == "budget_burn":
            _check_share("AlertRule.budget_burn(share=...)", self.threshold, zero_ok=False)
        self._check_unused()
        object.__setattr__(self, "threshold", float(self.threshold))
        if not self.name:
            object.__setattr__(self, "name", self._default_name())

    def _check_unused(self) -> None:
        """The plain constructor takes every field: one its kind does not use must keep its
        default, or a rule would silently mean something else than it says."""
        unused: dict[str, float | None] = {"window_s": 0.0, "min_records": 0, "clear_below": None}
        if self.kind == "failure_rate":
            unused = {}
        elif self.kind == "aborted":
            unused["threshold"] = 0.0
        for name, default in unused.items():
            value = getattr(self, name)
            if value is None and default is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != default:
                raise ConfigError(f"AlertRule {self.kind!r} does not use {name}, got {shown(value)}; "
                                  f"build rules with AlertRule.{self.kind}(...)")

    def _default_name(self) -> str:
        t = self.threshold
        return {
            "failure_rate": f"failure rate above {t:.0%} over {self.window_s:g}s",
            "breaker_open": f"breaker open for {t:g}s",
            "budget_burn": f"{t:.0%} of the error budget used",
            "stalled": f"no record finished for {t:g}s",
            "aborted": "run aborted",
        }[self.kind]

    @classmethod
    def failure_rate(cls, above: float = 0.2, window_s: float = 60.0, *, notify: Notify,
                     min_records: int = 10, clear_below: float | None = None, name: str = "") -> AlertRule:
        """Fires when more than ``above`` of the records finished in the last ``window_s``
        seconds were dead-lettered (judged once at least ``min_records`` finished in it);
        resolves when that share falls to ``above`` again, or, with ``clear_below``, to
        ``clear_below`` (a rate hovering at ``above`` then stays one episode)."""
        return cls("failure_rate", notify, above, window_s, min_records, name, clear_below)

    @classmethod
    def breaker_open(cls, for_s: float = 30.0, *, notify: Notify, name: str = "") -> AlertRule:
        """Fires when the circuit breaker has been open (or probing, half-open) for ``for_s``
        seconds without closing; resolves when it closes."""
        return cls("breaker_open", notify, for_s, name=name)

    @classmethod
    def budget_burn(cls, share: float = 0.5, *, notify: Notify, name: str = "") -> AlertRule:
        """Fires once ``share`` of the error budget (``max_failures``) is used: for a count,
        ``failed / max_failures``; for a rate, the failure rate over that rate. The run must
        have ``max_failures``."""
        return cls("budget_burn", notify, share, name=name)

    @classmethod
    def stalled(cls, for_s: float = 120.0, *, notify: Notify, name: str = "") -> AlertRule:
        """Fires when no record has finished (succeeded or dead-lettered) for ``for_s``
        seconds; resolves when one does. Its figures are the counts as last seen: the engines
        hand a snapshot over with an outcome at most every 0.1 s, so a stall is timed from up
        to 0.1 s early, and the records that finished in that last 0.1 s are not counted yet."""
        return cls("stalled", notify, for_s, name=name)

    @classmethod
    def aborted(cls, *, notify: Notify, name: str = "") -> AlertRule:
        """Fires when the run stops early: its error budget or breaker stopped it, a fatal
        error, Ctrl-C (or a cancelled task), or an exception raised out of the run."""
        return cls("aborted", notify, name=name)


def default_rules(notify: Notify, *, max_failures: int | float | None = None) -> list[AlertRule]:
    """The rules ``batchguard run --alert-webhook`` sets: failure rate above 20 % over 60 s
    (resolved at 10 % or below, so a rate hovering at 20 % pages once), breaker open for 60 s,
    no record finished for 300 s, run aborted, and, with ``max_failures``, half of the error
    budget used."""
    rules = [AlertRule.failure_rate(0.2, 60.0, clear_below=0.1, notify=notify),
             AlertRule.breaker_open(60.0, notify=notify),
             AlertRule.stalled(300.0, notify=notify), AlertRule.aborted(notify=notify)]
    if max_failures is not None:
        rules.append(AlertRule.budget_burn(0.5, notify=notify))
    return rules
