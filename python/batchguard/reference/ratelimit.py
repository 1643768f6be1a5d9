"""The token bucket behind ``rate_limit`` (twin of ``src/ratelimit.rs``)."""

from __future__ import annotations


class TokenBucket:
    """Attempts start at most ``rate`` per second on average, ``burst`` at once. Starts full."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float) -> float | None:
        """Take a token: None when granted, else the time one will be there."""
        if now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
        if self._tokens >= 1.0 - 1e-9:  # rounding must not leave a waiter spinning
            self._tokens = max(0.0, self._tokens - 1.0)
            return None
        return now + (1.0 - self._tokens) / self._rate
