"""What the scheduler hands a driver: one attempt of one record (:class:`Work`), or what to
do instead (:class:`Wait`, ``FEED``, ``DONE``). Twin of the same types in ``src/engine/mod.rs``.
"""

from __future__ import annotations

from typing import Any

from ..policies import BackoffState

FEED = "feed"
"""Read the next batch of input and pass it to ``Scheduler.add_batch`` (or ``feed``)."""
DONE = "done"
"""The run is over: nothing is queued, parked or in flight."""


class Wait:
    """Nothing can start now: wait until ``until`` (monotonic seconds) or an outcome arrives."""

    __slots__ = ("until",)

    def __init__(self, until: float | None) -> None:
        self.until = until


class RetryState:
    """What a record carries once it has failed: its history (one ``[attempt, wall time,
    error, delay]`` per failed try) and its backoff stream (twin of ``src/engine/retries.rs``)."""

    __slots__ = ("backoff", "first_failed", "history")

    def __init__(self) -> None:
        self.history: list[list[Any]] = []
        self.backoff: BackoffState | None = None
        # When the first try failed (the scheduler's clock): max_elapsed counts from here.
        self.first_failed = 0.0


class Work:
    """One attempt of one record, handed to a worker and handed back with its outcome."""

    __slots__ = ("attempt", "batch_index", "call", "generation", "index", "key", "record", "retry")

    def __init__(self, index: int, batch_index: int, record: Any, attempt: int,
                 key: int | None = None) -> None:
        self.index = index
        self.batch_index = batch_index
        self.record = record
        self.attempt = attempt
        self.generation = 0
        # Its number among the calls started, when concurrency adapts (0 otherwise).
        self.call = 0
        # Records with the same key run one at a time, in input order (``key_of``).
        self.key = key
        # Present once the record has failed.
        self.retry: RetryState | None = None

    def push_failure(self, error: BaseException, wall: float) -> None:
        """Add this attempt's failure to the record's history (its delay is filled in when
        the retry is scheduled)."""
        retry = self.retry
        if retry is None:
            retry = self.retry = RetryState()
        retry.history.append([self.attempt, wall, error, None])
