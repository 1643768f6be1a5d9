"""The reference engine's drivers: they read the input, run the callback (inline, or on
worker threads), classify failures, and hand outcomes to the scheduler and events to the sink
(the native twins are in ``src/bindings/``). A bulk fn runs on the same drivers, one group per
call (``bulk``). ``batchguard._async`` drives the same scheduler from an event loop.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._clients import retry_after_of
from .._outcome import deliver
from .._run.config import EngineConfig
from ..policies import Classifier, ErrorClass
from ..steering import is_overload
from .bulk import UNLOCKED, Groups, Guard
from .keys import KeyFailed
from .scheduler import Scheduler
from .work import DONE, FEED, Wait, Work

IDLE_RECHECK_S = 1.0
"""Longest an idle worker thread waits for a wake-up before it asks the scheduler again: only a
safety net, as the native engine's ``IDLE_RECHECK`` (``src/bindings/wait.rs``). Every change that
gives a worker something to do wakes one: an outcome with records queued, a read batch, the
run's end; a worker that takes work with more queued passes the wake on."""


class _Classify:
    """How the drivers classify a failure: the classifier's class for it (``Classifier.classify``
    resolves its type rules once per exception type, as the native engine does), PERMANENT
    when the classifier itself raises (that error goes to ``on_error``), and the wait a
    retryable failure asks for (the scheduler caps it)."""

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
                  classifier: Classifier, sink: Any, bulk: bool = False) -> Scheduler:
    """Run ``fn`` over ``records`` and feed outcomes to ``sink``; returns the final scheduler.
    With ``bulk``, ``fn`` takes a list of records and returns their results (``bulk.py``).

    ``sink`` receives ``events(events, counters)`` (``BatchEvent`` and ``BreakerEvent``),
    ``progress(counters)`` snapshots, and ``classifier_error(exc, error)``; it decides what to
    persist and show.
    """
    classify = _Classify(classifier, sink.classifier_error)
    clock = time.monotonic
    scheduler = Scheduler(config, clock())
    try:
        if config.concurrency == 1:
            _drive_inline(scheduler, records, fn, classify, sink, clock, bulk)
        else:
            _drive_threads(scheduler, records, fn, classify, sink, clock, bulk)
    finally:
        # Whatever stopped the run, what was dead-lettered reaches the sink (and the DLQ).
        scheduler.close(clock())
        _drain(scheduler, sink)
    return scheduler


def wants_progress(sink: Any) -> bool:
    """Does the sink pass progress on to anyone (``on_progress``)? Only then are the open
    batches counted for a snapshot (a sink without that attribute gets them always)."""
    return getattr(sink, "on_progress", True) is not None


def progress_every_batch(sink: Any) -> bool:
    """Does the sink want a snapshot at every batch end (``progress_every_batch``, true when
    absent)? Otherwise one at most every progress interval, batch ends included."""
    return bool(getattr(sink, "progress_every_batch", True))


def _drain(scheduler: Scheduler, sink: Any, now: float | None = None) -> None:
    """Hand the scheduler's events to the sink; ``now`` when the open batches are wanted."""
    # The sink consumes the scheduler's own list, so what an interrupt leaves in it is still
    # there for the next drain (the one in run_reference's finally at the latest).
    if scheduler.events:
        deliver(sink, scheduler.events, scheduler.counters(now))


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
             classify: _Classify, clock: Callable[[], float], slow_s: float | None) -> None:
    """One call; ``slow_s``: the breaker's ``slow_call_s`` (the call is timed only then)."""
    started = clock() if slow_s is not None else 0.0
    try:
        value = call_timed(fn, work.record, scheduler.config.timeout)
    except Exception as exc:  # noqa: BLE001 - isolating the user's failures is the point
        if slow_s is not None and clock() - started > slow_s:
            scheduler.slow_call()
        error_class = classify(exc)
        if scheduler.adapts and is_overload(exc):
            scheduler.overloaded(work)
        scheduler.fail(work, error_class, exc, classify.retry_after(exc, error_class), clock(), time.time())
    else:
        if slow_s is not None and clock() - started > slow_s:
            scheduler.slow_call()
        scheduler.succeed(work, value, clock())


def _groups_of(scheduler: Scheduler) -> Callable[[float], Any]:
    """Bulk mode's ``next_work``: ``Scheduler.next_group`` with a retry (which comes alone) as a
    group of one, so that every attempt a bulk driver takes is a list."""
    next_group, limit = scheduler.next_group, scheduler.config.batch_size

    def take(now: float) -> list[Work] | Wait | str:
        group = next_group(now, limit)
        return [group] if isinstance(group, Work) else group

    return take


def _bulk_calls(scheduler: Scheduler, fn: Callable[[Any], Any], classify: _Classify,
                clock: Callable[[], float], guard: Guard = UNLOCKED) -> Groups:
    """What runs a bulk driver's groups: each call timed as a per-record attempt is."""
    timeout = scheduler.config.timeout
    return Groups(scheduler, lambda group: call_timed(fn, group, timeout), classify, clock, guard)


def _drive_inline(scheduler: Scheduler, records: Iterator[Any], fn: Callable[[Any], Any],
                  classify: _Classify, sink: Any, clock: Callable[[], float], bulk: bool) -> None:
    interval = scheduler.config.progress_interval
    next_progress = clock() + interval
    wants, every = wants_progress(sink), progress_every_batch(sink)
    take = _groups_of(scheduler) if bulk else scheduler.next_work
    groups = _bulk_calls(scheduler, fn, classify, clock) if bulk else None
    slow_s = scheduler.slow_call_s
    try:
        while True:
            now = clock()
            work = take(now)
            if type(work) is Work:
                try:
                    _run_one(scheduler, work, fn, classify, clock, slow_s)
                except BaseException:
                    scheduler.abandon(work, clock())
                    raise
            elif type(work) is list:
                assert groups is not None
                groups.run(work)  # hands every record back, an interrupt's too
            elif work is FEED:
                _feed(scheduler, records, now)
            elif work is DONE:
                break
            else:
                assert isinstance(work, Wait)
                until = work.until if work.until is not None else now + interval
                time.sleep(max(0.0, min(until - now, interval)))
            if scheduler.events:
                due = wants and (every or clock() >= next_progress)
                _drain(scheduler, sink, clock() if due else None)
                if due or every:
                    next_progress = clock() + interval
            elif clock() >= next_progress:
                sink.progress(scheduler.counters(clock() if wants else None))
                next_progress = clock() + interval
    except BaseException:
        scheduler.interrupt()
        raise


class _Bell:
    """Wakes the coordinator: a raw lock used as a binary semaphore, rung by any thread.

    Not a ``threading.Condition`` on the scheduler's lock: a Ctrl-C landing in
    ``Condition.wait`` while it takes that lock back leaves the lock released, and the ``with``
    around it then raised "RuntimeError: release unlocked lock" in place of the
    KeyboardInterrupt (seen at concurrency 64 and 1024). An interrupted ``acquire`` here
    leaves nothing half done.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def ring(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:
            pass  # rung already, not yet heard

    def wait(self, timeout: float) -> None:
        self._lock.acquire(timeout=timeout)


class _Handback:
    """The threaded driver's bulk guard (``bulk.Guard``): the scheduler's lock; after an
    outcome it wakes one parked worker and the coordinator."""

    def __init__(self, lock: threading.Lock, work_ready: threading.Condition, bell: _Bell) -> None:
        self._lock, self._work_ready, self._bell = lock, work_ready, bell

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._lock.release()

    def notify_all(self) -> None:
        self._work_ready.notify()  # one: it passes the wake on if more is runnable
        self._bell.ring()


def _drive_threads(scheduler: Scheduler, records: Iterator[Any], fn: Callable[[Any], Any],
                   classify: _Classify, sink: Any, clock: Callable[[], float], bulk: bool) -> None:
    """Workers run the callback; the calling thread reads input and handles every event, so
    the sink, the DLQ and the input iterator are only ever touched from one thread.

    Wake-ups are counted, as in the native driver (issue 11 item 6): an outcome wakes one
    parked worker when records are queued (at worst it finds nothing and parks again), a
    worker that takes work with more queued wakes the next, a read batch wakes as many as it
    has records, the run's end all of them. Waking every worker on every outcome made 1024
    workers take the GIL ~1000 times per record once the input ran dry; an idle worker that
    woke every progress interval to look again made them ask ~10,000 times a second while an
    adaptive limit held them back. A parked worker with no timer waits up to IDLE_RECHECK_S.
    """
    lock = threading.Lock()
    work_ready = threading.Condition(lock)
    bell = _Bell()
    interval = scheduler.config.progress_interval
    crashed: list[BaseException] = []
    live = [scheduler.config.concurrency]

    def idle(work: object) -> None:
        """Nothing to run (FEED is the coordinator's job): wait to be woken, or for a timer."""
        until = work.until if isinstance(work, Wait) else None
        work_ready.wait(IDLE_RECHECK_S if until is None else max(0.0, min(until - clock(), IDLE_RECHECK_S)))

    def queued() -> bool:
        """Are records read that are neither settled nor in flight (fresh, retrying, waiting
        for their key)? Only then has a parked worker something to run or a timer to set."""
        s = scheduler
        return (s.stop_reason is None
                and s.next_index > s.skipped_records + s.succeeded + s.failed + s.in_flight)

    def handed_back() -> None:
        if queued():
            work_ready.notify()
        if scheduler.events or scheduler.wants_input():
            bell.ring()

    def leaving(target: Callable[[], None]) -> Callable[[], None]:
        """``target``, and whichever way it ends (the run is done or stopping, or a bug),
        the worker is no longer live and everyone looks again."""
        def run() -> None:
            try:
                target()
            finally:
                with lock:
                    live[0] -= 1
                    work_ready.notify_all()
                bell.ring()
        return run

    def stopped_by(exc: BaseException) -> None:
        """An interrupt in a call (its records are pending): the run stops, the coordinator
        re-raises it."""
        scheduler.interrupt()
        crashed.append(exc)

    adapts, slow_s = scheduler.adapts, scheduler.slow_call_s

    def worker() -> None:
        with lock:
            while True:
                work = scheduler.next_work(clock())
                if type(work) is Work:
                    if queued():
                        work_ready.notify()  # pass the wake on: more may be runnable
                    lock.release()
                    started = clock() if slow_s is not None else 0.0
                    try:
                        try:
                            value = call_timed(fn, work.record, scheduler.config.timeout)
                        except Exception as exc:  # noqa: BLE001
                            error_class = classify(exc)
                            outcome: tuple[Any, ...] = (False, error_class, exc,
                                                        classify.retry_after(exc, error_class),
                                                        adapts and is_overload(exc))
                        else:
                            outcome = (True, value)
                    except BaseException as exc:  # noqa: BLE001 - the coordinator re-raises it
                        lock.acquire()
                        scheduler.abandon(work, clock())
                        stopped_by(exc)
                        return
                    slow = slow_s is not None and clock() - started > slow_s
                    lock.acquire()
                    if slow:
                        scheduler.slow_call()
                    if outcome[0]:
                        scheduler.succeed(work, outcome[1], clock())
                    else:
                        if outcome[4]:
                            scheduler.overloaded(work)
                        scheduler.fail(work, outcome[1], outcome[2], outcome[3], clock(), time.time())
                    handed_back()
                elif work is DONE:
                    return
                else:
                    idle(work)

    def bulk_worker() -> None:
        """A worker of a bulk run: one group per call, bisected on failure (``bulk.py``)."""
        take = _groups_of(scheduler)
        groups = _bulk_calls(scheduler, fn, classify, clock, _Handback(lock, work_ready, bell))
        with lock:
            while True:
                work = take(clock())
                if type(work) is list:
                    if queued():
                        work_ready.notify()  # pass the wake on: more may be runnable
                    lock.release()
                    try:
                        groups.run(work)  # takes the lock to hand each outcome back
                    except BaseException as exc:  # noqa: BLE001 - the coordinator re-raises it
                        lock.acquire()
                        stopped_by(exc)
                        return
                    lock.acquire()
                elif work is DONE:
                    return
                else:
                    idle(work)

    threads = [threading.Thread(target=leaving(bulk_worker if bulk else worker), name=f"batchguard-ref-{i}",
                                daemon=True)
               for i in range(scheduler.config.concurrency)]
    for thread in threads:
        thread.start()
    next_progress = clock() + interval
    wants, every = wants_progress(sink), progress_every_batch(sink)
    try:
        while True:
            with lock:
                if scheduler.wants_input():
                    _feed(scheduler, records, clock())
                    work_ready.notify(scheduler.config.batch_size)
                finished = live[0] == 0
                quiet = not scheduler.events and not finished and not scheduler.wants_input()
            if quiet:
                bell.wait(interval)
            with lock:
                due = clock() >= next_progress
                snapshot = wants and (every or due)
                counters = (scheduler.counters(clock() if snapshot else None) if scheduler.events
                            else None)
            if counters is not None:
                # Out of the lock, the sink consumes the scheduler's list while workers append
                # to it (each list operation is atomic): an event is only ever removed once it
                # is handled, so an interrupt here loses none (they are drained at the end).
                deliver(sink, scheduler.events, counters)
                if due or every:
                    next_progress = clock() + interval
            elif clock() >= next_progress:
                with lock:
                    counters = scheduler.counters(clock() if wants else None)
                sink.progress(counters)
                next_progress = clock() + interval
            if finished:
                break
    except BaseException:
        with lock:
            scheduler.interrupt()
            work_ready.notify_all()
        for thread in threads:
            thread.join()
        raise
    for thread in threads:
        thread.join()
    if crashed:
        raise crashed[0]
