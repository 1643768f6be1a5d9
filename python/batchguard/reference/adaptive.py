"""The adaptive concurrency limit (twin of ``src/engine/adaptive.rs``): AIMD with slow start,
one decrease per round of calls (a signal from a call that started before the last decrease
changes nothing), growth only while at least half of the limit is in flight."""

from __future__ import annotations

from ..steering import Adaptive as AdaptivePolicy


class Adaptive:
    """The limit and what it has been. Pure: no clock."""

    __slots__ = ("_decrease", "_decreased_at", "_increase", "_limit", "_max", "_min", "_slow_start",
                 "decreases", "low", "peak", "started")

    def __init__(self, policy: AdaptivePolicy) -> None:
        self._min, self._max = policy.min, policy.max
        self._increase, self._decrease = policy.increase, policy.decrease
        self._limit = float(policy.start)
        self._slow_start = True
        self.started = 0
        """Calls started so far; each call carries its number."""
        self._decreased_at = 0
        self.peak = self.low = policy.start
        self.decreases = 0

    @property
    def limit(self) -> int:
        """Calls that may be in flight now."""
        return min(max(int(self._limit), self._min), self._max)

    def start(self) -> int:
        """A call starts: its number, for ``overloaded``."""
        self.started += 1
        return self.started

    def succeeded(self, in_flight: int) -> None:
        """A call succeeded with ``in_flight`` calls (itself included) in flight when it ended."""
        if in_flight * 2 < self.limit:
            return
        step = 1.0 if self._slow_start else self._increase / self._limit
        self._limit = min(self._limit + step, float(self._max))
        self.peak = max(self.peak, self.limit)

    def overloaded(self, call: int) -> bool:
        """Call number ``call`` ended with an overload signal. True when the limit went down."""
        if call <= self._decreased_at:
            return False
        self._slow_start = False
        self._limit = max(self._limit * self._decrease, float(self._min))
        self._decreased_at = self.started
        self.decreases += 1
        self.low = min(self.low, self.limit)
        return True
