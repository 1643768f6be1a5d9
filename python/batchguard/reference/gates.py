"""The gates an attempt passes before it starts (circuit breaker, adaptive concurrency limit,
retry budget, rate limit, delay between batches), and the error budget that stops the run (twin
of ``src/engine/gates.rs``)."""

from __future__ import annotations

from .._native import BatchEvent, BreakerEvent, RetryEvent
from .._run.config import EngineConfig
from ..policies import ErrorClass
from .adaptive import Adaptive
from .breaker import Breaker
from .budget import RetryBudget
from .ratelimit import TokenBucket

# A rate error budget is judged only once this many records are final: 1 failure out of the
# first 1 record is not a 100% failure rate worth stopping for.
MIN_RATE_SAMPLE = 10


def over_budget(budget: int | float | None, succeeded: int, failed: int) -> bool:
    """The engines' ``max_failures`` rule: a count is a number of dead letters, a rate is judged
    once :data:`MIN_RATE_SAMPLE` records have finished (the executor's driver applies it too)."""
    if budget is None:
        return False
    if isinstance(budget, int):
        return failed > budget
    finished = succeeded + failed
    return finished >= MIN_RATE_SAMPLE and failed / finished > budget


class Gates:
    """What may hold an attempt back, or stop the run, besides the records themselves."""

    __slots__ = ("_budget", "_delay_between_batches", "_holding", "_last_fresh_at", "_last_fresh_batch",
                 "_rate", "active", "adaptive", "breaker", "retry_budget", "slow_pending", "steers")

    def __init__(self, config: EngineConfig, now: float) -> None:
        self.breaker = Breaker(config.breaker) if config.breaker is not None else None
        self._rate = (TokenBucket(config.rate_per_second, config.rate_burst, now)
                      if config.rate_per_second is not None else None)
        # Seconds from the previous batch's last new record starting to the next batch's first.
        self._delay_between_batches = config.delay_between_batches
        self._last_fresh_batch = -1
        self._last_fresh_at = now
        self._budget = config.max_failures
        self.retry_budget = (RetryBudget(config.retry_budget, now) if config.retry_budget is not None
                             else None)
        self.adaptive = Adaptive(config.adaptive) if config.adaptive is not None else None
        # Is a retry budget or an adaptive limit set? Nothing below is asked otherwise.
        self.steers = self.retry_budget is not None or self.adaptive is not None
        # Ready retries are held back by the budget (wait mode): each one that starts while
        # they are has waited for it.
        self._holding = False
        # The call whose outcome comes next was slower than the breaker's ``slow_call_s``.
        self.slow_pending = False
        # Is any gate configured? When none is, the scheduler need not ask them (each question
        # is a Python call, and the reference engine is the benchmarks' baseline).
        self.active = self.breaker is not None or self._rate is not None or self._delay_between_batches > 0.0

    # ---------------------------------------------------------------- steering

    def concurrency_limit(self) -> int | None:
        """Calls that may be in flight (None: no adaptive limit)."""
        return self.adaptive.limit if self.adaptive is not None else None

    def pass_budget(self, now: float) -> bool:
        """May a due retry start now? In wait mode only when the budget allows one; otherwise
        the retries stay queued (counted as held) and new records run."""
        budget = self.retry_budget
        if budget is None or not budget.waits or budget.allows(now):
            return True
        self._holding = True
        return False

    def budget_frees_at(self) -> float:
        """When a retry held by the budget may pass (the window slides)."""
        return self.retry_budget.next_change() if self.retry_budget is not None else float("inf")

    def retry_started(self, more_ready: bool, now: float) -> None:
        """A due retry starts; ``more_ready``: others are still due after it."""
        budget = self.retry_budget
        if budget is not None and budget.waits:
            budget.retry_started(now)
            if self._holding:
                budget.waited += 1
        self._holding = self._holding and more_ready

    def retry_within_budget(self, now: float) -> bool:
        """A record failed and would be retried: in dead-letter mode the budget takes the retry
        now or refuses it (the record is then dead-lettered). Always true in wait mode."""
        budget = self.retry_budget
        return budget is None or budget.waits or budget.take_or_refuse(now)

    def call_started(self, attempt: int, now: float) -> int:
        """A call starts: a first attempt earns retry budget; with an adaptive limit, returns
        the call's number."""
        if attempt == 1 and self.retry_budget is not None:
            self.retry_budget.first_attempt(now)
        return self.adaptive.start() if self.adaptive is not None else 0

    def steering(self) -> tuple[tuple[int, int, int] | None, tuple[int, int]]:
        """The adaptive limit (now, peak, lowest; None without one) and the retry budget's
        (waited, dead-lettered), for the run's summary."""
        adaptive, budget = self.adaptive, self.retry_budget
        limits = None if adaptive is None else (adaptive.limit, adaptive.peak, adaptive.low)
        return limits, (0, 0) if budget is None else (budget.waited, budget.dead_lettered)

    # ---------------------------------------------------------------- breaker

    def pass_breaker(self, now: float) -> tuple[bool, float | None]:
        """May an attempt start? (allowed, wait_until): not before wait_until, or (None) until
        an outcome arrives. Passing may move an open breaker to half-open: take its
        transitions afterwards."""
        if self.breaker is None:
            return True, None
        return self.breaker.gate(now)

    def started(self) -> int | None:
        """An attempt starts: the breaker generation its outcome belongs to (None: no breaker)."""
        return self.breaker.started() if self.breaker is not None else None

    def breaker_counts(self, error_class: ErrorClass) -> bool | None:
        """Whether a failure of ``error_class`` counts against the breaker (None: no breaker)."""
        return self.breaker.counts(error_class) if self.breaker is not None else None

    def record(self, generation: int, failed: bool, now: float) -> bool:
        """One attempt of ``generation`` ended. True when the breaker's abort rate is reached."""
        breaker = self.breaker
        if breaker is None:
            return False
        if breaker.slow_call_s is not None:
            slow, self.slow_pending = self.slow_pending, False
            return breaker.record_timed(generation, failed, slow, now)
        return breaker.record(generation, failed, now)

    def take_transitions(self, started_at: float,
                         events: list[BatchEvent | BreakerEvent | RetryEvent]) -> None:
        """The breaker's state changes since the last call, as events (times from ``started_at``)."""
        breaker = self.breaker
        if breaker is not None and breaker.transitions:
            for at, old, new in breaker.transitions:
                events.append(BreakerEvent(at=at - started_at, from_state=old, to_state=new))
            breaker.transitions.clear()

    def breaker_state(self) -> str:
        return self.breaker.state if self.breaker is not None else "closed"

    # ---------------------------------------------------------------- rate and delay

    def pass_rate(self, now: float) -> float | None:
        """Take a start from the rate limit: None when granted, else when one will be there."""
        return self._rate.take(now) if self._rate is not None else None

    def batch_delay(self, batch: int, now: float) -> float | None:
        """When the next new record, of ``batch``, may start, if not now: a new batch waits
        ``delay_between_batches`` after the previous batch's last new record started."""
        if not self._delay_between_batches > 0.0 or self._last_fresh_batch < 0:
            return None
        until = self._last_fresh_at + self._delay_between_batches
        return until if batch != self._last_fresh_batch and now < until else None

    def fresh_started(self, batch: int, now: float) -> None:
        """A new record of ``batch`` starts."""
        if self._delay_between_batches > 0.0:
            self._last_fresh_batch = batch
            self._last_fresh_at = now

    # ---------------------------------------------------------------- error budget

    def over_budget(self, succeeded: int, failed: int) -> bool:
        """Are more records dead-lettered than ``max_failures`` allows?"""
        return over_budget(self._budget, succeeded, failed)
