"""What the retry policies decide at a batch's end, for both engines alike (the recorder calls
it before it persists a batch): a dead record whose retries ``max_elapsed`` cut is named so
(:class:`~batchguard.errors.RetryTimeExceeded`), and one whose policy has a ``fallback``
succeeds with the fallback value instead of being dead-lettered.

The engines mark a record whose retry ``max_elapsed`` refused: its last attempt keeps the
refused delay (every other dead record's last attempt has none). Which policy a dead record was
under is looked up again from its last error, as the engines did (predicates should be pure).
"""

from __future__ import annotations

import bisect
import collections
import logging
from collections.abc import Sequence
from typing import Any

from .._error_class import ErrorClass
from .._native import BatchEvent, DeadRecord, FailedAttempt
from .._retry_table import PolicyTable
from ..dlq.codec import type_name
from ..errors import RetryTimeExceeded
from ..policies import RetryPolicy
from ..validation.issues import ValidationBlocked
from .config import EngineConfig
from .entries import message_of

__all__ = ["RetryEnd"]

logger = logging.getLogger("batchguard")


class RetryEnd:
    """One run's batch ends under its retry policies; :meth:`for_config` is None when no policy
    has a fallback or a ``max_elapsed`` (then nothing here runs)."""

    def __init__(self, default: RetryPolicy, table: PolicyTable | None, run_id: str) -> None:
        self._default = default
        self._table = table
        self._run_id = run_id
        # The last batch rewritten (index, event): a batch handed over again after an interrupt
        # (only the one being handled can be) is rewritten once, not counted twice. Only the
        # last: every batch's event, its dead records' payloads and tracebacks, would grow
        # with the input.
        self._last: tuple[int, BatchEvent] | None = None
        # Only while the run keeps its values for the end (results="keep"), for successful():
        # batch index -> (its fallbacks as (record index, value), its dead records' indices),
        # for batches with a fallback; and fn's own successes in each batch that came here
        # (what a tally says, less the fallbacks, and before a compensation changed it).
        self._batches: dict[int, tuple[list[tuple[int, Any]], list[int]]] = {}
        self._own: dict[int, int] = {}
        # The engine hands each batch's successful values over with its event (results= other
        # than "keep"): the fallbacks go there, not into the run's list at the end.
        self._values_in_events = False
        self.count = 0
        """Records that succeeded with a fallback value so far."""

    @classmethod
    def for_config(cls, config: EngineConfig, run_id: str) -> RetryEnd | None:
        table = config.retry_table
        policies = (config.retry,) if table is None else table.policies
        if not any(p.has_fallback or p.max_elapsed is not None for p in policies):
            return None
        return cls(config.retry, table, run_id)

    def _policy(self, exc: BaseException, error_class: str) -> RetryPolicy:
        if self._table is None:
            return self._default
        return self._table.policies[self._table.index_for(exc, ErrorClass(error_class))]

    def batch(self, event: BatchEvent) -> BatchEvent:
        """``event`` with its records cut by ``max_elapsed`` named so and its fallbacks moved
        from the dead to the successes."""
        previous = self._last
        if previous is not None and previous[0] == event.index:
            return previous[1]
        self._values_in_events = self._values_in_events or getattr(event, "indices", None) is not None
        if not self._values_in_events:
            self._own[event.index] = event.succeeded
        dead: list[DeadRecord] = []
        fallbacks: list[tuple[int, Any]] = []
        used: collections.Counter[str] = collections.Counter()
        for record in event.dead or ():
            last = record.attempts[-1]
            error = last.error
            # Never served a fallback: a record blocked on purpose (fn never ran), and the one
            # whose FATAL error stopped the run (a fallback would hide why it stopped).
            if isinstance(error, ValidationBlocked) or record.error_class == ErrorClass.FATAL.value:
                dead.append(record)
                continue
            policy = self._policy(error, record.error_class)
            if last.delay is not None:
                record, error = _timed_out(record, policy)
            if not policy.has_fallback:
                dead.append(record)
                continue
            try:
                value = policy.fallback_for(record.record, error)
            except Exception as fallback_error:  # noqa: BLE001 - the record is dead-lettered instead
                logger.error("the fallback of record %d raised %s: %s; the record is dead-lettered",
                             record.record_index, type_name(fallback_error), message_of(fallback_error),
                             extra={"run_id": self._run_id, "record_index": record.record_index})
                dead.append(record)
                continue
            fallbacks.append((record.record_index, value))
            used[type_name(error)] += 1
        if not fallbacks and len(dead) == len(event.dead or ()) and all(
                a is b for a, b in zip(dead, event.dead or (), strict=True)):
            self._last = (event.index, event)
            return event
        fallbacks.sort(key=lambda pair: pair[0])
        rewritten = _with(event, dead, fallbacks)
        self._last = (event.index, rewritten)
        if fallbacks and not self._values_in_events:
            self._batches[event.index] = (fallbacks, [d.record_index for d in dead])
        self.count += len(fallbacks)
        if fallbacks:
            # The errors the fallbacks stand in for: never silent (DESIGN: nothing surprising).
            logger.warning("fallback_used: %d record%s of batch %d succeeded with the fallback value "
                           "instead of being dead-lettered (%s)", len(fallbacks),
                           "" if len(fallbacks) == 1 else "s", event.index,
                           ", ".join(f"{name} x{n}" for name, n in used.most_common()),
                           extra={"run_id": self._run_id, "batch_index": event.index,
                                  "fallback_count": len(fallbacks), "fallback_errors": dict(used)})
        return rewritten

    def successful(self, values: list[Any], tallies: Sequence[tuple[Any, ...]], batch_size: int) -> list[Any]:
        """The run's successful values (``fn``'s, in input order) with the fallback values
        put in their records' places. ``tallies``: the recorder's per-batch (index, size,
        succeeded, failed, ...pending last), whose counts include the fallbacks."""
        if not self.count or self._values_in_events:
            return values
        # fn's successes per batch (the tallies count the fallbacks as successes too).
        own = {tally[0]: self._own.get(tally[0], tally[2]) for tally in tallies}
        pending = {tally[0]: tally[6] for tally in tallies}
        order = sorted(own)
        before, total = {}, 0
        for batch in order:
            before[batch] = total
            total += own[batch]
        placed: list[tuple[int, Any]] = []  # (position among fn's values, value), in record order
        for batch in sorted(self._batches):
            fallbacks, dead_indices = self._batches[batch]
            dead = sorted([*dead_indices, *(i for i, _ in fallbacks)])
            first = batch * batch_size
            for index, value in fallbacks:
                if pending.get(batch):
                    # A batch the run stopped in: which of its records succeeded is not known,
                    # so its fallbacks follow its successes.
                    within = own.get(batch, 0)
                else:
                    within = index - first - bisect.bisect_left(dead, index)
                placed.append((before.get(batch, 0) + within, value))
        merged: list[Any] = []
        at = 0
        for position, value in placed:
            merged.extend(values[at:position])
            at = max(at, position)
            merged.append(value)
        merged.extend(values[at:])
        return merged


def _timed_out(record: DeadRecord, policy: RetryPolicy) -> tuple[DeadRecord, BaseException]:
    """``record`` whose retry ``max_elapsed`` refused, its last error replaced by a
    RetryTimeExceeded that names the limit and the error (its ``__cause__``)."""
    attempts = record.attempts
    last = attempts[-1]
    original = last.error
    limit = "max_elapsed" if policy.max_elapsed is None else f"max_elapsed={policy.max_elapsed:g} s"
    error = RetryTimeExceeded(
        f"retry {last.attempt} (after a {last.delay or 0.0:.3g} s wait) would start past {limit} from "
        f"the first failure, so it was not scheduled; last error {type_name(original)}: {message_of(original)}")
    error.__cause__ = original
    error.__traceback__ = original.__traceback__
    replaced = FailedAttempt(attempt=last.attempt, at=last.at, error=error, delay=last.delay)
    return DeadRecord(record_index=record.record_index, batch_index=record.batch_index,
                      record=record.record, error_class=record.error_class,
                      attempts=[*attempts[:-1], replaced]), error


def _with(event: BatchEvent, dead: list[DeadRecord], fallbacks: list[tuple[int, Any]]) -> BatchEvent:
    """``event`` with ``dead`` as its dead records and ``fallbacks`` counted as successes (and,
    when the event carries its successes' values, among them in record order)."""
    extra: dict[str, Any] = {}
    indices, values = getattr(event, "indices", None), getattr(event, "values", None)
    if isinstance(indices, list) and isinstance(values, list) and fallbacks:
        pairs = sorted([*zip(indices, values, strict=True), *fallbacks], key=lambda pair: pair[0])
        extra = {"indices": [i for i, _ in pairs], "values": [v for _, v in pairs]}
    elif indices is not None:
        extra = {"indices": indices, "values": values}
    n = len(fallbacks)
    return BatchEvent(index=event.index, size=event.size, succeeded=event.succeeded + n,
                      failed=event.failed - n, retries=event.retries, duration=event.duration,
                      pending=event.pending, dead=dead or None, **extra)
