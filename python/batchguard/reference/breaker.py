"""The circuit-breaker state machine (twin of ``src/breaker.rs``)."""

from __future__ import annotations

import collections

from ..policies import CircuitBreaker, ErrorClass


class Breaker:
    """Closed, open, half-open: see DESIGN.md section 6.

    ``generation`` changes on every transition; an outcome counts only if its call started in
    the current generation, so calls that were in flight when the breaker tripped do not
    decide the next state.
    """

    __slots__ = ("_abort_rate", "_counts", "_half_open_calls", "_min_calls", "_open_duration",
                 "_slow_threshold", "_slow_window", "_threshold", "_window", "failures", "generation",
                 "opened_at", "probes_ok", "probes_started", "slow_call_s", "slow_calls", "state",
                 "transitions", "trips")

    def __init__(self, policy: CircuitBreaker) -> None:
        self._threshold = policy.failure_rate_threshold
        self._min_calls = policy.minimum_calls
        self._open_duration = policy.open_duration
        self._half_open_calls = policy.half_open_calls
        self._abort_rate = policy.abort_failure_rate
        self._counts = frozenset(policy.counts)
        self._window: collections.deque[bool] = collections.deque(maxlen=policy.window)
        self.failures = 0
        # Slow calls (``slow_call_s``): which calls of the window were slow, and how many.
        self.slow_call_s = policy.slow_call_s
        self._slow_threshold = policy.slow_call_rate_threshold
        self._slow_window: collections.deque[bool] = collections.deque(maxlen=policy.window)
        self.slow_calls = 0
        self.state = "closed"
        self.generation = 0
        self.opened_at = 0.0
        self.probes_started = 0
        self.probes_ok = 0
        self.trips = 0
        self.transitions: list[tuple[float, str, str]] = []

    def counts(self, error_class: ErrorClass) -> bool:
        return error_class in self._counts

    def _move(self, state: str, now: float) -> None:
        self.transitions.append((now, self.state, state))
        self.state = state
        self.generation += 1
        self._window.clear()
        self.failures = 0
        self._slow_window.clear()
        self.slow_calls = 0
        if state == "open":
            self.opened_at = now
            self.trips += 1
        elif state == "half_open":
            self.probes_started = 0
            self.probes_ok = 0

    def gate(self, now: float) -> tuple[bool, float | None]:
        """May a call start now? (allowed, wait_until): wait_until None means 'until an
        outcome arrives'."""
        if self.state == "open":
            reopen = self.opened_at + self._open_duration
            if now < reopen:
                return False, reopen
            self._move("half_open", now)
        if self.state == "half_open" and self.probes_started >= self._half_open_calls:
            return False, None
        return True, None

    def started(self) -> int:
        """Note that a call starts; returns its generation."""
        if self.state == "half_open":
            self.probes_started += 1
        return self.generation

    def record_timed(self, generation: int, failed: bool, slow: bool, now: float) -> bool:
        """Record the outcome of a call that was ``slow`` (longer than ``slow_call_s``): as
        ``record``, and a slow call counts toward the slow-call rate (in half-open, a slow probe
        fails). True when ``abort_failure_rate`` is reached."""
        if generation != self.generation or self._slow_threshold is None:
            return self.record(generation, failed, now)
        if self.state != "closed":
            return self.record(generation, failed or slow, now)
        window = self._slow_window
        if len(window) == window.maxlen and window[0]:
            self.slow_calls -= 1
        window.append(slow)
        if slow:
            self.slow_calls += 1
        abort = self.record(generation, failed, now)
        calls = len(window)
        if (self.state == "closed" and calls >= self._min_calls and self.slow_calls
                and self.slow_calls / calls >= self._slow_threshold):
            self._move("open", now)
        return abort

    def record(self, generation: int, failed: bool, now: float) -> bool:
        """Record one call's outcome; True when ``abort_failure_rate`` is reached."""
        if generation != self.generation:
            return False
        if self.state == "half_open":
            if failed:
                self._move("open", now)
            else:
                self.probes_ok += 1
                if self.probes_ok >= self._half_open_calls:
                    self._move("closed", now)
            return False
        if self.state != "closed":
            return False
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self.failures -= 1
        window.append(failed)
        if failed:
            self.failures += 1
        calls = len(window)
        if calls < self._min_calls:
            return False
        rate = self.failures / calls
        if failed and self._abort_rate is not None and rate >= self._abort_rate:
            return True  # only a failure aborts: a success may have completed the run
        if rate >= self._threshold:
            self._move("open", now)
        return False
