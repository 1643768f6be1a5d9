"""The retry queue: failed records that will be tried again, due at once or parked on a timer
(twin of ``src/engine/retries.rs``)."""

from __future__ import annotations

import collections
import heapq
import itertools

from .._run.config import EngineConfig
from ..policies import BackoffState, ErrorClass, RetryPolicy
from .work import Work

_TRANSIENT = ErrorClass.TRANSIENT


class Retries:
    """Records waiting for their next try: the due ones in order, the others parked until due."""

    __slots__ = ("_parked", "_ready", "_seed", "_seq", "started")

    def __init__(self, config: EngineConfig) -> None:
        self._seed = config.seed
        self._ready: collections.deque[Work] = collections.deque()
        self._parked: list[tuple[float, int, Work]] = []
        # Parking order, so that records due at the same time leave in the order they came.
        self._seq = itertools.count()
        # Retries started so far.
        self.started = 0

    def delay_for(self, work: Work, error_class: ErrorClass, retry_after: float | None,
                  policy: RetryPolicy) -> float:
        """The wait before the next try of ``work``, which just failed with an error of
        ``error_class`` (retryable, attempts left) under ``policy``: none for a transient error,
        else the next backoff delay, or the wait the error asked for (``retry_after``, capped
        by the policy) when that is longer. Recorded as the last attempt's delay."""
        retry = work.retry
        assert retry is not None, "a failed record has a history"
        if error_class is _TRANSIENT:
            delay = 0.0
        else:
            backoff = retry.backoff
            if backoff is None:
                backoff = retry.backoff = BackoffState(policy, work.index, self._seed)
            delay = backoff.next_delay(policy)
        if retry_after is not None:
            # As in src/backoff.rs: a Retry-After of 1e12 must not park a record for 30,000 years.
            retry_after = min(retry_after, policy.retry_after_cap)
            if retry_after > delay:
                delay = retry_after
        retry.history[-1][3] = delay
        return delay

    def schedule(self, work: Work, delay: float, now: float) -> None:
        """Queue the next try of ``work`` after ``delay`` (:meth:`delay_for`)."""
        work.attempt += 1
        if delay <= 0.0:
            self._ready.append(work)
        else:
            heapq.heappush(self._parked, (now + delay, next(self._seq), work))

    def release_due(self, now: float) -> None:
        """Move the parked records that are due to the ready queue."""
        parked = self._parked
        while parked and parked[0][0] <= now:
            self._ready.append(heapq.heappop(parked)[2])

    def has_ready(self) -> bool:
        return bool(self._ready)

    def pop_ready(self) -> Work:
        """Start the next due retry."""
        self.started += 1
        return self._ready.popleft()

    def next_due(self) -> float | None:
        """When the earliest parked record is due."""
        return self._parked[0][0] if self._parked else None

    def clear(self) -> None:
        """Drop every waiting record (end of run: they are pending)."""
        self._ready.clear()
        self._parked.clear()

    def __len__(self) -> int:
        """Records waiting for a retry, due or not."""
        return len(self._ready) + len(self._parked)
