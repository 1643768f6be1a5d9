"""The pure-Python reference engine (``engine="python"``).

It implements the whole contract of DESIGN.md in plain Python. It is the benchmark baseline
and the oracle of the differential tests: ``src/engine.rs`` (the scheduler) and
``src/breaker.rs`` mirror :class:`Scheduler` and :class:`Breaker` decision for decision, so
for the same input and failure plan both engines reach the same outcomes.

The scheduler is a state machine with no I/O and no clock of its own: the driver asks it for
work (``next_work(now)``), runs the callback, and reports the outcome (``complete``). Time is
passed in, so tests can drive it with a virtual clock.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._native import BatchEvent, BreakerEvent, Counters, DeadRecord, FailedAttempt
from ._outcome import deliver
from ._run.config import EngineConfig
from ._clients import retry_after_of
from .errors import ConfigError
from .policies import BackoffState, CircuitBreaker, Classifier, ErrorClass

__all__ = ["Breaker", "EngineConfig", "Scheduler", "run_reference"]

# A rate error budget is judged only once this many records are final: 1 failure out of the
# first 1 record is not a 100% failure rate worth stopping for.
MIN_RATE_SAMPLE = 10
_TRANSIENT, _RECOVERABLE, _PERMANENT, _FATAL = (
    ErrorClass.TRANSIENT, ErrorClass.RECOVERABLE, ErrorClass.PERMANENT, ErrorClass.FATAL)


# ---------------------------------------------------------------------------- breaker


class Breaker:
    """The circuit-breaker state machine (twin of ``src/breaker.rs``).

    ``generation`` changes on every transition; an outcome counts only if its call started in
    the current generation, so calls that were in flight when the breaker tripped do not
    decide the next state.
    """

    __slots__ = ("_abort_rate", "_counts", "_half_open_calls", "_min_calls", "_open_duration",
                 "_threshold", "_window", "failures", "generation", "opened_at", "probes_ok",
                 "probes_started", "state", "transitions", "trips")

    def __init__(self, policy: CircuitBreaker) -> None:
        self._threshold = policy.failure_rate_threshold
        self._min_calls = policy.minimum_calls
        self._open_duration = policy.open_duration
        self._half_open_calls = policy.half_open_calls
        self._abort_rate = policy.abort_failure_rate
        self._counts = frozenset(policy.counts)
        self._window: collections.deque[bool] = collections.deque(maxlen=policy.window)
        self.failures = 0
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


# ------------------------------------------------------------------------ rate limit


class TokenBucket:
    """Attempts start at most ``rate`` per second on average, ``burst`` at once (twin of
    ``src/ratelimit.rs``). Starts full."""

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


class KeyFailed:
    """``key_of`` raised for a record: it is dead-lettered with that error, never run."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


# -------------------------------------------------------------------------- scheduler


class Work:
    """One attempt of one record, handed to a worker."""

    __slots__ = ("attempt", "batch_index", "generation", "index", "key", "record")

    def __init__(self, index: int, batch_index: int, record: Any, attempt: int,
                 key: int | None = None) -> None:
        self.index = index
        self.batch_index = batch_index
        self.record = record
        self.attempt = attempt
        self.generation = 0
        self.key = key


class _Batch:
    __slots__ = ("dead", "failed", "index", "remaining", "retries", "size", "started", "succeeded")

    def __init__(self, index: int, size: int, started: float) -> None:
        self.index = index
        self.size = size
        self.remaining = size
        self.succeeded = 0
        self.failed = 0
        self.retries = 0
        self.started = started
        self.dead: list[DeadRecord] = []


FEED = "feed"
DONE = "done"


class Wait:
    """Nothing can start now: wait until ``until`` (monotonic seconds) or an outcome arrives."""

    __slots__ = ("until",)

    def __init__(self, until: float | None) -> None:
        self.until = until


class Scheduler:
    """Decides which record runs next, what a failure leads to, and when a batch is done.

    Priorities, in order: nothing starts once the run is stopping; nothing starts while the
    breaker is open; retries that are due run before new records; new records run in input
    order; more input is read when fewer than ``concurrency`` new records are queued.
    """

    def __init__(self, config: EngineConfig, now: float) -> None:
        # api checks both; a scheduler handed 0 anyway would read empty batches forever, or
        # report a run in which no worker ever ran (the native engine refuses them alike).
        for name in ("batch_size", "concurrency"):
            if getattr(config, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")
        self.config = config
        self.max_attempts = config.retry.max_attempts
        # As in src/backoff.rs: a Retry-After of 1e12 must not park a record for 30,000 years.
        self._retry_after_cap = config.retry.retry_after_cap
        self.breaker = Breaker(config.breaker) if config.breaker is not None else None
        self._seed = config.seed
        self._fresh: collections.deque[Work] = collections.deque()
        self._ready: collections.deque[Work] = collections.deque()
        self._unblocked: collections.deque[Work] = collections.deque()
        self._parked: list[tuple[float, int, Work]] = []
        # key -> records of that key waiting for the one in progress (present while active)
        self._active_keys: dict[int, collections.deque[Work]] = {}
        self._key_errors: dict[int, BaseException] = {}
        self._rate = (TokenBucket(config.rate_per_second, config.rate_burst, now)
                      if config.rate_per_second is not None else None)
        self._gap = config.delay_between_batches
        self._last_fresh_batch = -1
        self._last_fresh_at = now
        self._seq = itertools.count()
        self._batches: dict[int, _Batch] = {}
        self._attempts: dict[int, list[list[Any]]] = {}
        self._backoff: dict[int, BackoffState] = {}
        self.results: list[tuple[int, Any]] = []
        self.next_index = 0
        self.next_batch = 0
        self.skipped_records = 0
        self.exhausted = False
        self.stop_reason: str | None = None
        self.in_flight = 0
        self.succeeded = 0
        self.failed = 0
        self.retries = 0
        self.batches_completed = 0
        self.current_batch = 0
        self.traceback_budget = config.traceback_limit
        self.events: list[BatchEvent | BreakerEvent] = []
        self.started_at = now

    # ---------------------------------------------------------------- input

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def wants_input(self) -> bool:
        return (not self.exhausted and self.stop_reason is None
                and len(self._fresh) < self.config.concurrency)

    def add_batch(self, records: list[Any], now: float, keys: list[Any] | None = None) -> None:
        """Queue a batch. ``keys`` (with ``key_of``): per record an int key, None for no
        ordering constraint, or a :class:`KeyFailed`."""
        batch_index = self.next_batch
        self.next_batch += 1
        self._batches[batch_index] = _Batch(batch_index, len(records), now)
        index = self.next_index
        fresh = self._fresh
        if keys is None:
            for record in records:
                fresh.append(Work(index, batch_index, record, 1))
                index += 1
        else:
            for record, key in zip(records, keys):
                if type(key) is KeyFailed:
                    self._key_errors[index] = key.error
                    key = None
                fresh.append(Work(index, batch_index, record, 1, key))
                index += 1
        self.next_index = index

    def skip_batch(self, size: int) -> None:
        """The next batch was finished by an earlier run of the job: skip its indices."""
        self.next_batch += 1
        self.next_index += size
        self.skipped_records += size

    def end_of_input(self) -> None:
        self.exhausted = True

    # ---------------------------------------------------------------- scheduling

    def next_work(self, now: float) -> Work | Wait | str:
        if self.stop_reason is not None:
            return DONE if self.in_flight == 0 else Wait(None)
        breaker = self.breaker
        if breaker is not None:
            allowed, until = breaker.gate(now)
            if breaker.transitions:
                self._take_transitions()
            if not allowed:
                return Wait(until)
        parked = self._parked
        while parked and parked[0][0] <= now:
            self._ready.append(heapq.heappop(parked)[2])
        fresh = self._fresh
        while True:
            if self._ready:
                source = self._ready
            elif self._unblocked:
                source = self._unblocked
            elif fresh:
                head = fresh[0]
                if head.index in self._key_errors:
                    self._key_failed(fresh.popleft(), now)
                    continue
                if head.key is not None:
                    waiting = self._active_keys.get(head.key)
                    if waiting is not None:
                        waiting.append(fresh.popleft())
                        continue
                if (self._gap > 0.0 and self._last_fresh_batch >= 0
                        and head.batch_index != self._last_fresh_batch
                        and now < self._last_fresh_at + self._gap):
                    return Wait(self._last_fresh_at + self._gap)
                source = fresh
            elif not self.exhausted:
                return FEED
            elif parked:
                return Wait(parked[0][0])
            elif self.in_flight:
                return Wait(None)
            else:
                return DONE
            break
        if self._rate is not None:
            until = self._rate.take(now)
            if until is not None:
                return Wait(until)
        work = source.popleft()
        if source is self._ready:
            self.retries += 1
            self._batches[work.batch_index].retries += 1
        elif source is fresh:
            if work.key is not None:
                self._active_keys[work.key] = collections.deque()
            if self._gap > 0.0:
                self._last_fresh_batch = work.batch_index
                self._last_fresh_at = now
        if breaker is not None:
            work.generation = breaker.started()
        self.in_flight += 1
        self.current_batch = work.batch_index
        return work

    def next_group(self, now: float, limit: int) -> Work | list[Work] | Wait | str:
        """Bulk mode: like :meth:`next_work`, but a new record comes with the rest of its
        batch's new records (up to ``limit``), to be run in one call. Retries come alone."""
        first = self.next_work(now)
        if type(first) is not Work or first.attempt != 1:
            return first
        group = [first]
        fresh = self._fresh
        while fresh and len(group) < limit and fresh[0].batch_index == first.batch_index:
            work = fresh.popleft()
            if self.breaker is not None:
                work.generation = self.breaker.started()
            self.in_flight += 1
            group.append(work)
        return group

    def _take_transitions(self) -> None:
        assert self.breaker is not None
        for at, old, new in self.breaker.transitions:
            self.events.append(BreakerEvent(at=at - self.started_at, from_state=old, to_state=new))
        self.breaker.transitions.clear()

    # ---------------------------------------------------------------- outcomes

    def succeed(self, work: Work, value: Any, now: float) -> None:
        self.in_flight -= 1
        if self.breaker is not None:
            self._record_breaker(work, False, now)
        self.results.append((work.index, value))
        if work.key is not None:
            self._release_key(work.key)
        self.succeeded += 1
        batch = self._batches[work.batch_index]
        batch.succeeded += 1
        self._finish(batch, now)

    def fail(self, work: Work, error_class: ErrorClass, exc: BaseException,
             retry_after: float | None, now: float, wall: float) -> None:
        self.in_flight -= 1
        if self.breaker is not None:
            self._record_breaker(work, self.breaker.counts(error_class), now)
        history = self._attempts.get(work.index)
        if history is None:
            history = self._attempts[work.index] = []
        attempt = [work.attempt, wall, exc, None]
        history.append(attempt)
        if self.traceback_budget <= 0:
            exc.__traceback__ = None  # keeps a failure-heavy run's memory bounded
        if error_class is _FATAL:
            self._stop("fatal")
            self._dead_letter(work, error_class, now)
            return
        if error_class is _PERMANENT or work.attempt >= self.max_attempts:
            self._dead_letter(work, error_class, now)
            return
        if self.stop_reason is not None:
            self._pending(work, now)
            return
        if error_class is _TRANSIENT:
            delay = 0.0
        else:
            backoff = self._backoff.get(work.index)
            if backoff is None:
                backoff = self._backoff[work.index] = BackoffState(
                    self.config.retry, work.index, self._seed)
            delay = backoff.next_delay()
        if retry_after is not None:
            retry_after = min(retry_after, self._retry_after_cap)
            if retry_after > delay:
                delay = retry_after
        attempt[3] = delay
        retry = Work(work.index, work.batch_index, work.record, work.attempt + 1, work.key)
        if delay <= 0.0:
            self._ready.append(retry)
        else:
            heapq.heappush(self._parked, (now + delay, next(self._seq), retry))

    def abandon(self, work: Work, now: float) -> None:
        """The attempt never finished (the run was interrupted): the record is pending."""
        self.in_flight -= 1
        self._pending(work, now)

    def _record_breaker(self, work: Work, failed: bool, now: float) -> None:
        assert self.breaker is not None
        if self.breaker.record(work.generation, failed, now):
            self._stop("breaker_abort")
        if self.breaker.transitions:
            self._take_transitions()

    def _key_failed(self, work: Work, now: float) -> None:
        """``key_of`` raised for this record: dead-letter it, unrun, with that error."""
        error = self._key_errors.pop(work.index)
        if self.traceback_budget <= 0:
            error.__traceback__ = None
        self._attempts[work.index] = [[1, time.time(), error, None]]
        self._dead_letter(work, ErrorClass.PERMANENT, now)

    def _release_key(self, key: int) -> None:
        """A record of ``key`` is final: the next one of that key may run."""
        waiting = self._active_keys[key]
        if waiting:
            self._unblocked.append(waiting.popleft())
        else:
            del self._active_keys[key]

    def _dead_letter(self, work: Work, error_class: ErrorClass, now: float) -> None:
        if work.key is not None:
            self._release_key(work.key)
        self._backoff.pop(work.index, None)
        history = self._attempts.pop(work.index)
        if self.traceback_budget > 0:
            self.traceback_budget -= 1
        self.failed += 1
        batch = self._batches[work.batch_index]
        batch.failed += 1
        attempts = [FailedAttempt(attempt=attempt, at=at, error=error, delay=delay)
                    for attempt, at, error, delay in history]
        batch.dead.append(DeadRecord(record_index=work.index, batch_index=work.batch_index,
                                     record=work.record, error_class=error_class.value,
                                     attempts=attempts))
        self._finish(batch, now)
        self._check_budget()

    def _pending(self, work: Work, now: float) -> None:
        if work.key is not None:
            self._release_key(work.key)
        self._attempts.pop(work.index, None)
        self._backoff.pop(work.index, None)

    def _check_budget(self) -> None:
        budget = self.config.max_failures
        if budget is None or self.stop_reason is not None:
            return
        if isinstance(budget, int):
            if self.failed > budget:
                self._stop("max_failures")
        else:
            finished = self.succeeded + self.failed
            if finished >= MIN_RATE_SAMPLE and self.failed / finished > budget:
                self._stop("max_failures")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def interrupt(self) -> None:
        self._stop("interrupt")

    def _finish(self, batch: _Batch, now: float) -> None:
        batch.remaining -= 1
        if batch.remaining == 0:
            del self._batches[batch.index]
            self.batches_completed += 1
            self.events.append(BatchEvent(index=batch.index, size=batch.size,
                                          succeeded=batch.succeeded, failed=batch.failed,
                                          retries=batch.retries, duration=now - batch.started,
                                          pending=0, dead=batch.dead))

    def close(self, now: float) -> int:
        """End of run: report every unfinished batch (with its pending count) and return how
        many records that read are pending."""
        unfinished = 0
        for batch in sorted(self._batches.values(), key=lambda b: b.index):
            unfinished += batch.remaining
            self.events.append(BatchEvent(index=batch.index, size=batch.size,
                                          succeeded=batch.succeeded, failed=batch.failed,
                                          retries=batch.retries, duration=now - batch.started,
                                          pending=batch.remaining, dead=batch.dead))
        self._batches.clear()
        self._fresh.clear()
        self._ready.clear()
        self._unblocked.clear()
        self._active_keys.clear()
        self._parked.clear()
        return unfinished

    def counters(self) -> Counters:
        """What progress reports are made of."""
        blocked = sum(len(q) for q in self._active_keys.values()) if self._active_keys else 0
        return Counters(
            succeeded=self.succeeded, failed=self.failed,
            retrying=len(self._ready) + len(self._parked), in_flight=self.in_flight,
            queued=len(self._fresh) + len(self._unblocked) + blocked,
            batches_completed=self.batches_completed, current_batch=self.current_batch,
            breaker_state=self.breaker.state if self.breaker is not None else "closed",
            records_read=self.next_index)


# --------------------------------------------------------------------------- driver


class _Classify:
    """Classification (with the classifier's per-type cache, as the native engine has), and
    the wait a retryable failure asks for (the scheduler caps it)."""

    def __init__(self, classifier: Classifier, on_error: Callable[[BaseException, BaseException], None]):
        self._classifier = classifier
        self._on_error = on_error

    def __call__(self, exc: BaseException) -> ErrorClass:
        try:
            return self._classifier.classify(exc)
        except Exception as classifier_error:  # noqa: BLE001 - a classifier bug must not kill the run
            self._on_error(exc, classifier_error)
            return ErrorClass.PERMANENT

    def retry_after(self, exc: BaseException, error_class: ErrorClass) -> float | None:
        """The wait ``exc`` asks for (``retry_after``, or a ``Retry-After`` header), read only
        when the record will be retried."""
        if not error_class.retryable:
            return None
        return retry_after_of(exc, time.time())


def run_reference(records: Iterator[Any], fn: Callable[[Any], Any], config: EngineConfig,
                  classifier: Classifier, sink: Any) -> Scheduler:
    """Run ``fn`` over ``records`` and feed outcomes to ``sink``; returns the final scheduler.

    ``sink`` receives ``events(events, counters)`` (``BatchEvent`` and ``BreakerEvent``),
    ``progress(counters)`` snapshots, and ``classifier_error(exc, error)``; it decides what to
    persist and show.
    """
    classify = _Classify(classifier, sink.classifier_error)
    clock = time.monotonic
    scheduler = Scheduler(config, clock())
    try:
        if config.concurrency == 1:
            _drive_inline(scheduler, records, fn, classify, sink, clock)
        else:
            _drive_threads(scheduler, records, fn, classify, sink, clock)
    finally:
        # Whatever stopped the run, what was dead-lettered reaches the sink (and the DLQ).
        scheduler.close(clock())
        _drain(scheduler, sink)
    return scheduler


def _drain(scheduler: Scheduler, sink: Any) -> None:
    # The sink consumes the scheduler's own list, so what an interrupt leaves in it is still
    # there for the next drain (the one in run_reference's finally at the latest).
    if scheduler.events:
        deliver(sink, scheduler.events, scheduler.counters())


def keys_of(batch: list[Any], key_of: Callable[[Any], Any]) -> list[Any]:
    """Each record's ordering key as the scheduler takes it: ``hash(key_of(record))``, or a
    :class:`KeyFailed` when that raises (the record is then dead-lettered, not run)."""
    keys: list[Any] = []
    for record in batch:
        try:
            keys.append(hash(key_of(record)))
        except Exception as exc:  # noqa: BLE001 - one record's bad key must not stop the run
            keys.append(KeyFailed(exc))
    return keys


def feed(scheduler: Scheduler, batch: list[Any], now: float) -> None:
    """Hand one batch of input (short: the last) to the scheduler."""
    config = scheduler.config
    if batch and scheduler.next_batch in config.skip_batches:
        scheduler.skip_batch(len(batch))
    elif batch:
        keys = keys_of(batch, config.key_of) if config.key_of is not None else None
        scheduler.add_batch(batch, now, keys)
    if len(batch) < config.batch_size:
        scheduler.end_of_input()


def _feed(scheduler: Scheduler, records: Iterator[Any], now: float) -> None:
    feed(scheduler, list(itertools.islice(records, scheduler.config.batch_size)), now)


def call_timed(fn: Callable[[Any], Any], record: Any, timeout: float | None) -> Any:
    """``fn(record)``; with a timeout, a call that returns late counts as a TimeoutError (a sync
    call cannot be interrupted, so its value is discarded instead)."""
    if timeout is None:
        return fn(record)
    started = time.monotonic()
    value = fn(record)
    took = time.monotonic() - started
    if took > timeout:
        raise TimeoutError(f"the attempt took {took:.3f} s, over the {timeout:.3f} s timeout; "
                           "its result was discarded")
    return value


def _run_one(scheduler: Scheduler, work: Work, fn: Callable[[Any], Any],
             classify: _Classify, clock: Callable[[], float]) -> None:
    try:
        value = call_timed(fn, work.record, scheduler.config.timeout)
    except Exception as exc:  # noqa: BLE001 - isolating the user's failures is the point
        error_class = classify(exc)
        scheduler.fail(work, error_class, exc, classify.retry_after(exc, error_class), clock(), time.time())
    else:
        scheduler.succeed(work, value, clock())


def _drive_inline(scheduler: Scheduler, records: Iterator[Any], fn: Callable[[Any], Any],
                  classify: _Classify, sink: Any, clock: Callable[[], float]) -> None:
    interval = scheduler.config.progress_interval
    next_progress = clock() + interval
    try:
        while True:
            now = clock()
            work = scheduler.next_work(now)
            if type(work) is Work:
                try:
                    _run_one(scheduler, work, fn, classify, clock)
                except BaseException:
                    scheduler.abandon(work, clock())
                    raise
            elif work is FEED:
                _feed(scheduler, records, now)
            elif work is DONE:
                break
            else:
                assert isinstance(work, Wait)
                until = work.until if work.until is not None else now + interval
                time.sleep(max(0.0, min(until - now, interval)))
            if scheduler.events:
                _drain(scheduler, sink)
                next_progress = clock() + interval
            elif clock() >= next_progress:
                sink.progress(scheduler.counters())
                next_progress = clock() + interval
    except BaseException:
        scheduler.interrupt()
        raise


def _drive_threads(scheduler: Scheduler, records: Iterator[Any], fn: Callable[[Any], Any],
                   classify: _Classify, sink: Any, clock: Callable[[], float]) -> None:
    """Workers run the callback; the calling thread reads input and handles every event, so
    the sink, the DLQ and the input iterator are only ever touched from one thread."""
    lock = threading.Lock()
    changed = threading.Condition(lock)
    interval = scheduler.config.progress_interval
    crashed: list[BaseException] = []

    def worker() -> None:
        with lock:
            while True:
                work = scheduler.next_work(clock())
                if type(work) is Work:
                    lock.release()
                    try:
                        try:
                            value = call_timed(fn, work.record, scheduler.config.timeout)
                        except Exception as exc:  # noqa: BLE001
                            error_class = classify(exc)
                            outcome: tuple[Any, ...] = (False, error_class, exc,
                                                        classify.retry_after(exc, error_class))
                        else:
                            outcome = (True, value)
                    except BaseException as exc:
                        lock.acquire()
                        scheduler.abandon(work, clock())
                        scheduler.interrupt()
                        crashed.append(exc)
                        changed.notify_all()
                        return
                    lock.acquire()
                    if outcome[0]:
                        scheduler.succeed(work, outcome[1], clock())
                    else:
                        scheduler.fail(work, outcome[1], outcome[2], outcome[3], clock(), time.time())
                    changed.notify_all()
                elif work is DONE:
                    changed.notify_all()
                    return
                else:  # FEED is the coordinator's job; wait for it or for a timer
                    until = work.until if isinstance(work, Wait) else None
                    timeout = interval if until is None else max(0.0, min(until - clock(), interval))
                    changed.wait(timeout)

    threads = [threading.Thread(target=worker, name=f"batchguard-ref-{i}", daemon=True)
               for i in range(scheduler.config.concurrency)]
    for thread in threads:
        thread.start()
    next_progress = clock() + interval
    try:
        while True:
            with lock:
                if scheduler.wants_input():
                    _feed(scheduler, records, clock())
                    changed.notify_all()
                finished = not any(t.is_alive() for t in threads)
                if not scheduler.events and not finished and not scheduler.wants_input():
                    changed.wait(interval)
                counters = scheduler.counters() if scheduler.events else None
            if counters is not None:
                # Out of the lock, the sink consumes the scheduler's list while workers append
                # to it (each list operation is atomic): an event is only ever removed once it
                # is handled, so an interrupt here loses none (they are drained at the end).
                deliver(sink, scheduler.events, counters)
                next_progress = clock() + interval
            elif clock() >= next_progress:
                with lock:
                    counters = scheduler.counters()
                sink.progress(counters)
                next_progress = clock() + interval
            if finished:
                break
    except BaseException:
        with lock:
            scheduler.interrupt()
            changed.notify_all()
        for thread in threads:
            thread.join()
        raise
    for thread in threads:
        thread.join()
    if crashed:
        raise crashed[0]
