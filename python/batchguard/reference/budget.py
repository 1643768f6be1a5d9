"""The retry budget's state (twin of ``src/engine/budget.rs``): retries may not exceed
``ratio`` of first attempts plus ``min_per_s`` per second over a sliding window of ten slots.
Same slot arithmetic and float operations as the Rust twin, so both decide alike."""

from __future__ import annotations

import math

from ..steering import RetryBudget as RetryBudgetPolicy

SLOTS = 10
"""Slots the window is cut into."""


class RetryBudget:
    """The window's slots (first attempts and retries started in each) and what the budget
    refused. Time is passed in."""

    __slots__ = ("_allowance_floor", "_firsts", "_head", "_ratio", "_retries", "_slot_len",
                 "dead_lettered", "firsts", "retries", "waited", "waits")

    def __init__(self, policy: RetryBudgetPolicy, now: float) -> None:
        self._ratio = policy.ratio
        self._allowance_floor = policy.min_per_s * policy.window_s
        self._slot_len = policy.window_s / SLOTS
        self._firsts = [0] * SLOTS
        self._retries = [0] * SLOTS
        self._head = math.floor(now / self._slot_len)
        self.firsts = 0
        self.retries = 0
        self.waits = policy.over_budget == "wait"
        self.waited = 0
        """Retries that started later than due because the budget held them (wait mode)."""
        self.dead_lettered = 0
        """Retries the budget refused, their records dead-lettered (dead-letter mode)."""

    def _advance(self, now: float) -> None:
        """Move the window to ``now``: slots that fell out of it are emptied."""
        slot = math.floor(now / self._slot_len)
        if slot <= self._head:
            return
        for step in range(1, min(slot - self._head, SLOTS) + 1):
            index = (self._head + step) % SLOTS
            self.firsts -= self._firsts[index]
            self.retries -= self._retries[index]
            self._firsts[index] = self._retries[index] = 0
        self._head = slot

    def first_attempt(self, now: float) -> None:
        """A first attempt starts: it earns ``ratio`` of a retry."""
        self._advance(now)
        self._firsts[self._head % SLOTS] += 1
        self.firsts += 1

    def allows(self, now: float) -> bool:
        """Would one more retry starting at ``now`` stay within the budget?"""
        self._advance(now)
        return float(self.retries + 1) <= self._ratio * float(self.firsts) + self._allowance_floor

    def retry_started(self, now: float) -> None:
        """A retry starts (after ``allows`` said yes)."""
        self._advance(now)
        self._retries[self._head % SLOTS] += 1
        self.retries += 1

    def take_or_refuse(self, now: float) -> bool:
        """Dead-letter mode: take a retry now (True) or refuse it."""
        if self.allows(now):
            self._retries[self._head % SLOTS] += 1
            self.retries += 1
            return True
        self.dead_lettered += 1
        return False

    def next_change(self) -> float:
        """When the window next slides (its oldest slot expires)."""
        at = float(self._head + 1) * self._slot_len
        # (k * len) / len may round below k (k = 42 for a slot of 0.4 s): a time still in the
        # current slot would have a waiting driver wake to the same answer forever.
        while math.floor(at / self._slot_len) <= self._head:
            at += self._slot_len * 1e-6
        return at
