"""Steering a run's load on its dependency: a retry budget and adaptive concurrency.

``run_batches(..., retry_budget=RetryBudget(ratio=0.2, min_per_s=10))`` keeps retries under a
share of first attempts over a sliding window, so that an outage cannot turn the run into a
retry storm; ``run_batches(..., concurrency=Adaptive(min=1, max=256))`` finds how many calls
the dependency takes in flight by AIMD, backing off on its overload signals (HTTP 429/503,
timeouts, Retry-After). Both engines implement them (``src/engine/budget.rs``,
``src/engine/adaptive.rs``; ``reference/budget.py``, ``reference/adaptive.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from ._clients import retry_after_of
from ._error_class import http_status_of
from ._native import BatchEvent, DeadRecord, FailedAttempt
from .errors import ConfigError, ConfigTypeError, RetryBudgetExhausted

__all__ = ["OVERLOAD_STATUSES", "Adaptive", "ConcurrencyLimit", "RetriesOverBudget", "RetryBudget",
           "check_retry_budget", "is_overload", "name_refusals", "split_concurrency"]

OVERLOAD_STATUSES = frozenset({429, 503})
"""HTTP statuses that say the dependency is overloaded (Too Many Requests, Service Unavailable)."""

# The ranges a steering argument must be in: wider ones are unit mistakes (a window of 1e10 s, a
# floor of 1e-10 retries/s) that would let a run wait for ever or steer nothing.
MAX_RETRY_RATIO = 1000.0
MAX_RETRIES_PER_S = 1_000_000.0
MIN_WINDOW_S, MAX_WINDOW_S = 0.1, 3600.0
MAX_ADAPTIVE = 65_536
MIN_INCREASE, MAX_INCREASE = 0.01, 1000.0
MIN_DECREASE, MAX_DECREASE = 0.1, 0.99

# Client timeouts that are not TimeoutError subclasses, by qualified name (no import needed):
# each one is the dependency not answering in time, an overload signal like TimeoutError.
_TIMEOUTS = frozenset({
    "httpx.TimeoutException", "requests.exceptions.Timeout", "urllib3.exceptions.TimeoutError",
    "redis.exceptions.TimeoutError", "sqlalchemy.exc.TimeoutError",
})


def _number(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{owner}.{name} must be a number, got {type(value).__name__}")
    return float(value)


def _within(owner: str, name: str, value: float, low: float, high: float, why: str) -> None:
    """ConfigError naming ``owner.name``, its value and the range, unless ``low <= value <= high``
    (a nan fails too). ``why`` says what the bounds keep out."""
    if not low <= value <= high:
        raise ConfigError(f"{owner}.{name} must be in [{low:g}, {high:g}], got {value:g}: {why}")


def _count(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{owner}.{name} must be an int, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class RetryBudget:
    """Retries may not exceed ``ratio`` of first attempts plus ``min_per_s`` per second, over the
    last ``window_s`` seconds (counted in ten slots, as Finagle's RetryBudget does).

    A retry over budget waits until the window frees room (``over_budget="wait"``: it stays
    queued while new records run) or its record is dead-lettered at once
    (``over_budget="dead_letter"``, counted in ``report.retries_over_budget``). Waiting needs
    ``min_per_s * window_s >= 1``, so that a retry left after the last first attempt can pass.
    Ranges, checked when the budget is made: ``ratio`` in [0, 1000] (Finagle's), ``min_per_s``
    in [0, 1e6], ``window_s`` in [0.1, 3600] seconds.

    >>> import batchguard
    >>> budget = batchguard.RetryBudget(ratio=0.2, min_per_s=10)
    >>> budget.allowance(first_attempts=1000)  # retries allowed over one window
    300.0
    """

    ratio: float = 0.2
    min_per_s: float = 10.0
    window_s: float = 10.0
    over_budget: Literal["wait", "dead_letter"] = "wait"

    def __post_init__(self) -> None:
        ratio = _number("RetryBudget", "ratio", self.ratio)
        floor = _number("RetryBudget", "min_per_s", self.min_per_s)
        window = _number("RetryBudget", "window_s", self.window_s)
        _within("RetryBudget", "ratio", ratio, 0.0, MAX_RETRY_RATIO,
                "retries as a share of first attempts (Finagle's cap too); more steers nothing")
        _within("RetryBudget", "min_per_s", floor, 0.0, MAX_RETRIES_PER_S,
                "retries allowed per second whatever the first attempts; more steers nothing")
        _within("RetryBudget", "window_s", window, MIN_WINDOW_S, MAX_WINDOW_S,
                "the seconds over which retries are counted (in ten slots): a shorter window "
                "is timer noise, a longer one lets a retry wait past an hour for room")
        if self.over_budget not in ("wait", "dead_letter"):
            raise ConfigError(f"RetryBudget.over_budget must be 'wait' or 'dead_letter', got {self.over_budget!r}")
        if self.over_budget == "wait" and floor * window < 1.0:
            raise ConfigError("RetryBudget(over_budget='wait') needs min_per_s * window_s >= 1 (at least one "
                              f"retry per window once no first attempts are left), got {floor} * {window}")
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "min_per_s", floor)
        object.__setattr__(self, "window_s", window)

    def allowance(self, first_attempts: int) -> float:
        """Retries one window allows when it holds ``first_attempts`` first attempts."""
        return self.ratio * first_attempts + self.min_per_s * self.window_s


@dataclass(frozen=True)
class Adaptive:
    """``concurrency=Adaptive(...)``: calls in flight limited by AIMD, between ``min`` and ``max``.

    The limit starts at ``initial`` (None: ``min``) and doubles per round of calls until the
    first overload signal (slow start); then each success adds ``increase / limit`` (``increase``
    per round) and an overload signal multiplies it by ``decrease``. One round's signals cut it
    once: a signal from a call that started before the last cut is ignored (TCP's cool-down),
    so a burst of 429s does not collapse it. Overload signals are HTTP 429 and 503, timeouts
    (TimeoutError, ``timeout=``, the HTTP clients' own) and a Retry-After (:func:`is_overload`).
    The limit is in ``BatchProgress.concurrency_limit``, the report (final, peak, lowest) and
    the Prometheus gauge ``batchguard_concurrency_limit``. Ranges, checked when it is made:
    ``1 <= min <= max <= 65536``, ``increase`` in [0.01, 1000], ``decrease`` in [0.1, 0.99].

    >>> import batchguard
    >>> batchguard.Adaptive(max=64).start
    1
    """

    min: int = 1
    max: int = 256
    initial: int | None = None
    increase: float = 1.0
    decrease: float = 0.7

    def __post_init__(self) -> None:
        low, high = _count("Adaptive", "min", self.min), _count("Adaptive", "max", self.max)
        if low < 1:
            raise ConfigError(f"Adaptive.min must be >= 1, got {low}")
        if high < low:
            raise ConfigError(f"Adaptive.max must be >= min ({low}), got {high}")
        _within("Adaptive", "max", high, low, MAX_ADAPTIVE,
                "calls in flight; no run takes more (an async fn's cap; a sync fn's is 1024)")
        if self.initial is not None and not low <= _count("Adaptive", "initial", self.initial) <= high:
            raise ConfigError(f"Adaptive.initial must be in min..max ({low}..{high}), got {self.initial}")
        increase = _number("Adaptive", "increase", self.increase)
        decrease = _number("Adaptive", "decrease", self.decrease)
        _within("Adaptive", "increase", increase, MIN_INCREASE, MAX_INCREASE,
                "calls added to the limit per round of successes: less never grows it, more "
                "jumps to max")
        _within("Adaptive", "decrease", decrease, MIN_DECREASE, MAX_DECREASE,
                "the factor the limit is multiplied by on overload: below it one 429 collapses "
                "the limit, above it the run barely backs off")
        object.__setattr__(self, "increase", increase)
        object.__setattr__(self, "decrease", decrease)

    @property
    def start(self) -> int:
        """The limit a run starts with."""
        return self.min if self.initial is None else self.initial


def is_overload(exc: BaseException) -> bool:
    """Does this failure say the dependency is overloaded? HTTP 429 or 503 (``status_code``,
    ``status`` or ``response.status_code``), a timeout (TimeoutError, or an HTTP or database
    client's own timeout), or a Retry-After (attribute or header). Both engines ask it, only
    when concurrency adapts."""
    if isinstance(exc, TimeoutError):
        return True
    for klass in type(exc).__mro__:
        if f"{klass.__module__}.{klass.__qualname__}" in _TIMEOUTS:
            return True
    try:
        if http_status_of(exc) in OVERLOAD_STATUSES:
            return True
        return retry_after_of(exc, time.time()) is not None
    except Exception:  # noqa: BLE001 - an exception's broken attribute is no signal
        return False


def split_concurrency(concurrency: Any, *, bulk: bool) -> tuple[Any, Adaptive | None]:
    """``concurrency=``: an int as it is, or an :class:`Adaptive`, whose ``max`` is then the
    workers a run may use (checked by the caller like any concurrency)."""
    if not isinstance(concurrency, Adaptive):
        return concurrency, None
    if bulk:
        raise ConfigError("concurrency=Adaptive(...) limits calls of one record each; a bulk fn's calls "
                          "carry whole batches: give bulk=True a fixed concurrency")
    return concurrency.max, concurrency


def check_retry_budget(retry_budget: object) -> RetryBudget | None:
    """``retry_budget=``: None or a :class:`RetryBudget`."""
    if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
        raise ConfigTypeError(f"retry_budget must be a RetryBudget(ratio=..., min_per_s=...) or None, got "
                              f"{type(retry_budget).__name__}")
    return retry_budget


@dataclass(frozen=True)
class ConcurrencyLimit:
    """``report.concurrency_limit`` of a run with ``concurrency=Adaptive(...)``: the limit when
    the run ended, the highest it reached and the lowest it fell to."""

    final: int
    peak: int
    low: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``report.to_dict()["concurrency_limit"]``)."""
        return {"final": self.final, "peak": self.peak, "low": self.low}


@dataclass(frozen=True)
class RetriesOverBudget:
    """``report.retries_over_budget`` of a run with ``retry_budget=``: retries that started late
    because the budget held them (``over_budget="wait"``), and records dead-lettered instead of
    retried (``over_budget="dead_letter"``)."""

    waited: int
    dead_lettered: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``report.to_dict()["retries_over_budget"]``)."""
        return {"waited": self.waited, "dead_lettered": self.dead_lettered}


def name_refusals(event: BatchEvent, budget: RetryBudget) -> BatchEvent:
    """``event`` with each record the retry budget refused (``DeadRecord.over_budget``) carrying
    a :class:`~batchguard.errors.RetryBudgetExhausted` as its last error, its ``__cause__`` the
    record's own last error: the DLQ entry says why the record was not retried. The recorder
    calls it at a batch's end, for a run with ``over_budget="dead_letter"`` only."""
    dead = event.dead
    if not dead or not any(record.over_budget for record in dead):
        return event
    named = [_named(record, budget) if record.over_budget else record for record in dead]
    return BatchEvent(index=event.index, size=event.size, succeeded=event.succeeded, failed=event.failed,
                      retries=event.retries, duration=event.duration, pending=event.pending, dead=named,
                      indices=event.indices, values=event.values)


def _named(record: DeadRecord, budget: RetryBudget) -> DeadRecord:
    last = record.attempts[-1]
    original = last.error
    error = RetryBudgetExhausted(
        f"attempt {last.attempt + 1} was not scheduled: the retry budget (retries at most {budget.ratio:g} x first "
        f"attempts + {budget.min_per_s:g}/s over {budget.window_s:g} s) was spent; last error "
        f"{type(original).__name__}: {_message(original)}")
    error.__cause__ = original
    error.__traceback__ = original.__traceback__
    attempts = [*record.attempts[:-1], FailedAttempt(attempt=last.attempt, at=last.at, error=error, delay=None)]
    return DeadRecord(record_index=record.record_index, batch_index=record.batch_index, record=record.record,
                      error_class=record.error_class, attempts=attempts, over_budget=True)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<unprintable {type(exc).__name__}>"
