"""The reference scheduler, composed of the same parts as ``src/engine/mod.rs``: ``Fresh``
(the input and its unstarted records), ``Keys`` (keyed ordering), ``Retries`` (the retry queue
and its timers), ``Batches`` (the open batches and their events) and ``Gates`` (breaker, rate
limit, delay between batches, error budget), each in the module of the same name as its Rust
twin.

The scheduler is a state machine with no I/O and no clock of its own: the driver asks it for
work (``next_work(now)``), runs the callback, and reports the outcome (``succeed``, ``fail``).
Time is passed in, so tests can drive it with a virtual clock.
"""

from __future__ import annotations

import time
from typing import Any

from .._native import BatchEvent, BreakerEvent, Counters, DeadRecord, FailedAttempt, RetryEvent
from .._run.config import EngineConfig
from ..errors import ConfigError
from ..policies import ErrorClass
from .batches import Batches
from .breaker import Breaker
from .fresh import Fresh
from .gates import Gates
from .keys import KeyFailed, Keys
from .retries import Retries
from .work import DONE, FEED, Wait, Work

_PERMANENT, _FATAL = ErrorClass.PERMANENT, ErrorClass.FATAL
# Where next_work takes its record from (compared by identity).
_READY, _UNBLOCKED, _FRESH = "ready", "unblocked", "fresh"


class Scheduler:
    """Decides which record runs next, what a failure leads to, and when a batch is done.

    Priorities, in order: nothing starts once the run is stopping; nothing starts while the
    breaker is open; retries that are due run before new records; new records run in input
    order; more input is read when fewer than ``concurrency`` new records are queued.

    What is kept here, besides the parts, is the run's own state: how it stops, what is in
    flight, the totals, the values of the successes, and the events for the driver.
    """

    def __init__(self, config: EngineConfig, now: float) -> None:
        # api checks both; a scheduler handed 0 anyway would read empty batches forever, or
        # report a run in which no worker ever ran (the native engine refuses them alike).
        for name in ("batch_size", "concurrency"):
            if getattr(config, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")
        self.config = config
        self.started_at = now
        # The retry policies by index (0: the default) and which one a failure is under.
        self._table = config.retry_table
        self._policies = (config.retry,) if self._table is None else self._table.policies
        self._fresh = Fresh()
        self._keys = Keys()
        self._retries = Retries(config)
        self._batches = Batches(config.values_per_batch)
        self._values_per_batch = config.values_per_batch
        self._gates = Gates(config, now)
        self.events: list[BatchEvent | BreakerEvent | RetryEvent] = []
        # Retries not handed over yet (only with an on_retry hook): they join ``events`` before
        # the next batch end or breaker transition, so retrying never calls the driver sooner.
        self._collect_retries = config.collect_retries
        self._retried: list[RetryEvent] = []
        self.results: list[tuple[int, Any]] = []
        self.stop_reason: str | None = None
        self.in_flight = 0
        self.succeeded = 0
        self.failed = 0
        self.current_batch = 0
        # Dead-lettered records that may still keep their traceback.
        self.traceback_budget = config.traceback_limit

    # ---------------------------------------------------------------- reading state

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    @property
    def next_index(self) -> int:
        """Records read so far (skipped ones included): the index the next one gets."""
        return self._fresh.next_index

    @property
    def next_batch(self) -> int:
        """The index the next batch of input will get."""
        return self._fresh.next_batch

    @property
    def skipped_records(self) -> int:
        """Records that belonged to skipped batches."""
        return self._fresh.skipped

    @property
    def exhausted(self) -> bool:
        return self._fresh.exhausted

    @property
    def retries(self) -> int:
        """Retries started so far."""
        return self._retries.started

    @property
    def breaker(self) -> Breaker | None:
        return self._gates.breaker

    def counters(self, now: float | None = None) -> Counters:
        """What progress reports are made of; with ``now`` (someone reads progress), the open
        batches' counts too."""
        batches = (None if now is None
                   else self._batches.counts(self._fresh.cursor(), now, self.started_at))
        return Counters(
            succeeded=self.succeeded, failed=self.failed, retrying=len(self._retries),
            in_flight=self.in_flight, queued=len(self._fresh) + self._keys.queued(),
            batches_completed=self._batches.completed, current_batch=self.current_batch,
            breaker_state=self._gates.breaker_state(), records_read=self._fresh.next_index,
            batches=batches, concurrency_limit=self._gates.concurrency_limit())

    # ---------------------------------------------------------------- input

    def wants_input(self) -> bool:
        return self.stop_reason is None and self._fresh.wants_input(self.config.concurrency)

    def add_batch(self, records: list[Any], now: float, keys: list[Any] | None = None) -> None:
        """Queue a batch. ``keys`` (with ``key_of``): per record an int key, None for no
        ordering constraint, or a :class:`KeyFailed`."""
        if keys is not None:
            first = self._fresh.next_index
            plain: list[int | None] = []
            for offset, key in enumerate(keys):
                if type(key) is KeyFailed:
                    self._keys.key_failed(first + offset, key.error)
                    key = None
                plain.append(key)
            keys = plain
        first = self._fresh.next_index
        batch = self._fresh.push(records, keys)
        self._batches.open(batch, first, len(records), now)

    def skip_batch(self, size: int) -> None:
        """The next batch was finished by an earlier run of the job: skip its indices."""
        self._fresh.skip(size)

    def end_of_input(self) -> None:
        self._fresh.end_of_input()

    # ---------------------------------------------------------------- scheduling

    def next_work(self, now: float) -> Work | Wait | str:
        if self.stop_reason is not None:
            return DONE if self.in_flight == 0 else Wait(None)
        gates = self._gates
        if gates.breaker is not None:
            allowed, until = gates.pass_breaker(now)
            self._take_transitions()
            if not allowed:
                return Wait(until)
        steers = gates.steers
        if steers and gates.adaptive is not None and self.in_flight >= gates.adaptive.limit:
            return Wait(None)
        retries, keys, fresh = self._retries, self._keys, self._fresh
        retries.release_due(now)
        while True:
            if retries.has_ready() and (not steers or gates.pass_budget(now)):
                source = _READY
            elif keys.has_unblocked():
                source = _UNBLOCKED
            else:
                head = fresh.head()
                if head is None:
                    return self._idle(retries.has_ready())
                error = keys.take_error(head.index)
                if error is not None:
                    self._key_failed(fresh.pop(), error, now)
                    continue
                if head.key is not None and keys.is_active(head.key):
                    keys.wait(fresh.pop())
                    continue
                if gates.active:
                    until = gates.batch_delay(head.batch_index, now)
                    if until is not None:
                        return Wait(until)
                source = _FRESH
            break
        if gates.active:
            until = gates.pass_rate(now)
            if until is not None:
                return Wait(until)
        if source is _READY:
            work = retries.pop_ready()
            if steers:
                gates.retry_started(retries.has_ready(), now)
            self._batches.retried(work.batch_index)
        elif source is _UNBLOCKED:
            work = keys.pop_unblocked()
        else:
            work = fresh.pop()
            if work.key is not None:
                keys.activate(work.key)
            if gates.active:
                gates.fresh_started(work.batch_index, now)
        self._launch(work, now)
        self.current_batch = work.batch_index
        return work

    def _idle(self, held: bool) -> Wait | str:
        """Nothing is queued but retries the budget holds back (``held``): read more input, wait
        for a parked retry, the budget or an outcome, or finish."""
        if not self._fresh.exhausted:
            return FEED
        due = self._retries.next_due()
        if held:
            freed = self._gates.budget_frees_at()
            return Wait(freed if due is None else min(due, freed))
        if due is not None:
            return Wait(due)
        return Wait(None) if self.in_flight else DONE

    def _launch(self, work: Work, now: float) -> None:
        """``work`` starts: it belongs to the breaker's current generation, and is in flight."""
        gates = self._gates
        if gates.active:
            generation = gates.started()
            if generation is not None:
                work.generation = generation
        if gates.steers:
            work.call = gates.call_started(work.attempt, now)
        self.in_flight += 1

    def next_group(self, now: float, limit: int) -> Work | list[Work] | Wait | str:
        """Bulk mode: like :meth:`next_work`, but a new record comes with the rest of its
        batch's new records (up to ``limit``), to be run in one call. Retries come alone."""
        first = self.next_work(now)
        if type(first) is not Work or first.attempt != 1:
            return first
        group = [first]
        fresh = self._fresh
        while len(group) < limit and fresh.head_batch() == first.batch_index:
            work = fresh.pop()
            self._launch(work, now)
            group.append(work)
        return group

    # ---------------------------------------------------------------- outcomes

    def succeed(self, work: Work, value: Any, now: float) -> None:
        self.in_flight -= 1
        gates = self._gates
        if gates.breaker is not None:
            self._record_breaker(work, False, now)
        if gates.steers and gates.adaptive is not None:
            gates.adaptive.succeeded(self.in_flight + 1)
        if work.key is not None:
            self._keys.release(work.key)
        self.succeeded += 1
        if self._values_per_batch:  # the value goes out with its batch's end (``results=``)
            closed = self._batches.succeeded_with(work.batch_index, work.index, value)
        else:
            self.results.append((work.index, value))
            closed = self._batches.succeeded(work.batch_index)
        if closed:
            self._close_batch(work.batch_index, now)

    def fail(self, work: Work, error_class: ErrorClass, exc: BaseException,
             retry_after: float | None, now: float, wall: float) -> None:
        self.in_flight -= 1
        counted = self._gates.breaker_counts(error_class)
        if counted is not None:
            self._record_breaker(work, counted, now)
        work.push_failure(exc, wall)
        if self.traceback_budget <= 0:
            exc.__traceback__ = None  # keeps a failure-heavy run's memory bounded
        table = self._table
        policy = self._policies[0 if table is None else table.index_for(exc, error_class)]
        if error_class is _FATAL:
            self._stop("fatal")
            self._dead_letter(work, error_class, now)
        elif error_class is _PERMANENT or work.attempt >= policy.max_attempts:
            self._dead_letter(work, error_class, now)
        elif self.stop_reason is not None:
            self._pending(work)
        elif self._gates.steers and not self._gates.retry_within_budget(now):
            self._dead_letter(work, error_class, now, over_budget=True)
        else:
            retry = work.retry
            assert retry is not None, "a failed record has a history"
            if len(retry.history) == 1:
                retry.first_failed = now
            delay = self._retries.delay_for(work, error_class, retry_after, policy)
            if policy.max_elapsed is not None and now + delay - retry.first_failed > policy.max_elapsed:
                # The retry would start past the record's max_elapsed: it is dead-lettered, its
                # last attempt keeping the refused delay (the recorder names the reason).
                self._dead_letter(work, error_class, now)
                return
            self._batches.retry_scheduled(work.batch_index)
            attempt = work.attempt
            self._retries.schedule(work, delay, now)
            if self._collect_retries:
                self._retried.append(RetryEvent(
                    record_index=work.index, batch_index=work.batch_index, record=work.record,
                    attempt=attempt, error=exc, error_class=error_class.value, delay=delay))

    @property
    def adapts(self) -> bool:
        """Does concurrency adapt? Then a driver reports each failed call's overload signal
        (``steering.is_overload``) with :meth:`overloaded` before :meth:`fail`."""
        return self._gates.adaptive is not None

    def overloaded(self, work: Work) -> None:
        """The call of ``work`` ended with an overload signal: the concurrency limit goes down,
        unless a signal from the same round of calls already took it down."""
        adaptive = self._gates.adaptive
        if adaptive is not None:
            adaptive.overloaded(work.call)

    @property
    def slow_call_s(self) -> float | None:
        """Seconds past which a call is slow (``CircuitBreaker(slow_call_s=...)``): only then do
        the drivers time calls, and report a slow one with :meth:`slow_call`."""
        breaker = self._gates.breaker
        return breaker.slow_call_s if breaker is not None else None

    def slow_call(self) -> None:
        """The call whose outcome the driver reports next (``succeed`` or ``fail``) was slow."""
        self._gates.slow_pending = True

    def steering(self) -> tuple[tuple[int, int, int] | None, tuple[int, int]]:
        """The adaptive limit (now, peak, lowest) and the retry budget's (waited, dead-lettered)."""
        return self._gates.steering()

    def abandon(self, work: Work, now: float) -> None:
        """The attempt never finished (the run was interrupted): the record is pending."""
        self.in_flight -= 1
        self._pending(work)

    def _pending(self, work: Work) -> None:
        if work.key is not None:
            self._keys.release(work.key)

    def interrupt(self) -> None:
        """Stop the run: nothing new starts; what is in flight finishes."""
        self._stop("interrupt")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def _record_breaker(self, work: Work, failed: bool, now: float) -> None:
        if self._gates.record(work.generation, failed, now):
            self._stop("breaker_abort")
        self._take_transitions()

    def _take_transitions(self) -> None:
        at = len(self.events)
        self._gates.take_transitions(self.started_at, self.events)
        if len(self.events) > at:
            self._flush_retried(at)

    def _flush_retried(self, at: int) -> None:
        """The waiting retry events go into ``events`` at ``at``: they happened first."""
        if self._retried:
            self.events[at:at] = self._retried
            self._retried = []

    def _key_failed(self, work: Work, error: BaseException, now: float) -> None:
        """``key_of`` raised for this record: dead-letter it, unrun, with that error."""
        if self.traceback_budget <= 0:
            error.__traceback__ = None
        work.push_failure(error, time.time())
        self._dead_letter(work, ErrorClass.PERMANENT, now)

    def _dead_letter(self, work: Work, error_class: ErrorClass, now: float, over_budget: bool = False) -> None:
        """``over_budget``: the retry budget refused the record's retry."""
        if work.key is not None:
            self._keys.release(work.key)
        if self.traceback_budget > 0:
            self.traceback_budget -= 1
        self.failed += 1
        history = work.retry.history if work.retry is not None else []
        attempts = [FailedAttempt(attempt=attempt, at=at, error=error, delay=delay)
                    for attempt, at, error, delay in history]
        dead = DeadRecord(record_index=work.index, batch_index=work.batch_index, record=work.record,
                          error_class=error_class.value, attempts=attempts, over_budget=over_budget)
        if self._batches.dead_lettered(dead):
            self._close_batch(work.batch_index, now)
        if self.stop_reason is None and self._gates.over_budget(self.succeeded, self.failed):
            self._stop("max_failures")

    def _close_batch(self, batch: int, now: float) -> None:
        self._flush_retried(len(self.events))
        self.events.append(self._batches.close(batch, now))

    def close(self, now: float) -> int:
        """End of run: report every unfinished batch (with its pending count) and return how
        many records that were read are pending."""
        unfinished = 0
        self._flush_retried(len(self.events))
        for event in self._batches.close_all(now):
            unfinished += event.pending
            self.events.append(event)
        self._fresh.clear()
        self._retries.clear()
        self._keys.clear()
        return unfinished
