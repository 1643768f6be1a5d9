"""``run_batches``: validate the arguments, build the plan, run an engine, build the report."""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, replace
from typing import Any, Literal

from ._native import RunSummary
from ._outcome import RunRecorder, new_run_id
from .batching import calculate_batch_size
from .dlq.base import DeadLetterQueue
from .dlq.codec import check_storable
from .errors import ConfigError, ConfigTypeError
from .policies import (CircuitBreaker, Classifier, RateLimit, RetryPolicy, check_count, check_duration,
                       check_flag, is_finite_number, shown)
from ._async import ReferenceAsyncRun, StopSignal, SyncCalls, drive, in_thread_until_cancelled, loop_factory
from ._run.config import EngineConfig
from .reference import Scheduler, _Classify, run_reference
from .results import BatchProgress, BatchReport

__all__ = ["DEFAULT_BATCH_SIZE", "arun_batches", "run_batches"]

DEFAULT_BATCH_SIZE = 1000
ENGINES = ("native", "python")

# Upper bounds, each what the native engine takes on every platform and what a run can sanely use.
MAX_BATCH_SIZE = sys.maxsize
"""What both engines can index a batch with (Python's ``islice`` and Rust's ``isize``): 2**63 - 1
on a 64-bit platform. Any larger input is read lazily, so a batch size past the input's length
is simply the whole input (never an allocation of ``batch_size`` slots)."""
MAX_SYNC_CONCURRENCY = 1024
"""A sync fn gets one thread per unit of concurrency; the native engine's pool is capped at this
many (``_native.MAX_CONCURRENCY``): past it threads cost more memory and switching than they
add in throughput, and an I/O-bound fn that needs more in flight belongs in an ``async def``."""
MAX_ASYNC_CONCURRENCY = 65_536
"""An async fn gets one worker coroutine per unit of concurrency, all created when the run
starts (a few KB each): past this many the workers' memory and the event loop's scheduling
dominate, and no single service takes that many requests in flight."""
MAX_FAILURES_COUNT = 2**63 - 1
"""An error budget count is a u64 in the native engine and an SQLite INTEGER in a job store."""


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name} must be a number in [0, 1], got {type(value).__name__} {shown(value)}")
    if not (is_finite_number(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {shown(value)}")
    return float(value)


def _check_max_failures(value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"max_failures must be an int count or a float rate in (0, 1], got "
                              f"{type(value).__name__} {shown(value)}")
    if isinstance(value, int):
        return check_count("max_failures (a count)", value, minimum=0, maximum=MAX_FAILURES_COUNT,
                           why="a 64-bit count")
    if not 0.0 < value <= 1.0:  # nan and inf fail this too
        raise ConfigError(f"max_failures as a rate must be in (0, 1], got {value!r} (an int is a count)")
    return value


def _check_callable(name: str, value: Any, *, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not callable(value):
        raise ConfigTypeError(f"{name} must be callable, got {type(value).__name__} {shown(value)}")
    return value


@dataclass(frozen=True)
class Plan:
    """A validated run: everything an engine and the recorder need."""

    records: Iterable[Any]
    fn: Callable[[Any], Any]
    total: int | None
    config: EngineConfig
    classifier: Classifier
    dlq: DeadLetterQueue | None
    id_of: Callable[[Any], Any] | None
    on_progress: Callable[[BatchProgress], Any] | None
    success_threshold: float | None
    stage: str
    engine: str
    pickle_payloads: bool
    is_async: bool = False
    timeout: float | None = None
    bulk: bool = False
    reopen_dlq: Callable[[], DeadLetterQueue] | None = None
    """Set when ``dlq`` was opened for this run (from a URL, or as a job store's default queue):
    whoever opened it closes it when the run ends (:func:`close_opened_dlq`), and the report
    reopens it with this to read entries past its in-memory sample."""


def is_coroutine_function(fn: Any) -> bool:
    """``async def`` functions, and callables whose ``__call__`` is one (partials included)."""
    while hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _check_timeout(value: Any) -> float | None:
    """Seconds in (0, MAX_DURATION_S]; None or ``float("inf")`` (the usual Python spelling of
    "no limit") mean no timeout, and are both stored as None."""
    if value is None or (isinstance(value, float) and value == math.inf):
        return None
    return check_duration("timeout", value, positive=True)


def make_plan(records: Any, fn: Any, *, batch_size: Any, concurrency: Any, retry: Any,
              classifier: Any, breaker: Any, dlq: Any, id_of: Any, on_progress: Any,
              success_threshold: Any, max_failures: Any, stage: Any, engine: Any,
              pickle_payloads: bool, timeout: Any = None, rate_limit: Any = None,
              delay_between_batches: Any = 0.0, key_of: Any = None, bulk: Any = False) -> Plan:
    """Check every argument before any record is read; each error names its argument."""
    if isinstance(records, (str, bytes, bytearray)):
        raise ConfigTypeError(f"records must be an iterable of records, not {type(records).__name__}")
    if not isinstance(records, Iterable):
        raise ConfigTypeError(f"records must be iterable (a list, generator, ...), got {type(records).__name__}")
    _check_callable("fn", fn, optional=False)
    total = len(records) if isinstance(records, Sized) else None
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    elif isinstance(batch_size, str):
        if batch_size != "auto":
            raise ConfigTypeError(f'batch_size must be an int >= 1, "auto" or None, got str {shown(batch_size)}')
        if total is None:
            raise ConfigError('batch_size="auto" needs an input with a length (a list, not a generator)')
        batch_size = calculate_batch_size(total)
    else:
        check_count("batch_size", batch_size, minimum=1, maximum=MAX_BATCH_SIZE,
                    why="the largest size either engine can index a batch with")
    is_async = is_coroutine_function(fn)
    if is_async:
        check_count("concurrency", concurrency, minimum=1, maximum=MAX_ASYNC_CONCURRENCY,
                    why="one worker coroutine each, all created up front")
    else:
        check_count("concurrency", concurrency, minimum=1, maximum=MAX_SYNC_CONCURRENCY,
                    why="a sync fn gets one thread each; an async def fn can have more in flight")
    if retry is None:
        retry = RetryPolicy()
    elif not isinstance(retry, RetryPolicy):
        raise ConfigTypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    if classifier is None:
        classifier = Classifier.default()
    elif not isinstance(classifier, Classifier):
        if callable(classifier):
            classifier = Classifier.default().with_callable(classifier)
        else:
            raise ConfigTypeError(f"classifier must be a Classifier or a callable, got {type(classifier).__name__}")
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise ConfigTypeError(f"breaker must be a CircuitBreaker or None, got {type(breaker).__name__}")
    _check_callable("id_of", id_of)
    _check_callable("on_progress", on_progress)
    if success_threshold is not None:
        success_threshold = _check_fraction("success_threshold", success_threshold)
    max_failures = _check_max_failures(max_failures)
    if not isinstance(stage, str):
        raise ConfigTypeError(f"stage must be a non-empty str, got {type(stage).__name__} {stage!r}")
    if not stage:
        raise ConfigError(f"stage must be a non-empty str, got {stage!r}")
    check_storable("stage", stage)
    if not isinstance(engine, str):
        raise ConfigTypeError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got "
                              f"{type(engine).__name__} {shown(engine)}")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {shown(engine)}")
    timeout = _check_timeout(timeout)
    if rate_limit is not None and not isinstance(rate_limit, RateLimit):
        raise ConfigTypeError(f"rate_limit must be a RateLimit(per_second=..., burst=...), got "
                              f"{type(rate_limit).__name__}")
    delay_between_batches = check_duration("delay_between_batches", delay_between_batches)
    _check_callable("key_of", key_of)
    check_flag("bulk", bulk)
    if bulk and key_of is not None:
        raise ConfigError("bulk=True and key_of cannot be combined: a bulk call runs a whole batch at once")
    check_flag("pickle_payloads", pickle_payloads)
    if dlq is not None and not isinstance(dlq, (str, DeadLetterQueue)):
        raise ConfigTypeError(f"dlq must be a DeadLetterQueue or a URL str, got {type(dlq).__name__}")
    seed = (retry.seed if retry.seed is not None else random.getrandbits(64)) & ((1 << 64) - 1)
    config = EngineConfig(batch_size=batch_size, concurrency=concurrency, retry=retry,
                          breaker=breaker, max_failures=max_failures, seed=seed,
                          traceback_limit=1 << 62 if dlq is not None else 100,
                          timeout=timeout,
                          rate_per_second=None if rate_limit is None else float(rate_limit.per_second),
                          rate_burst=1.0 if rate_limit is None else float(rate_limit.burst),
                          delay_between_batches=float(delay_between_batches), key_of=key_of)
    # Opened last, once every argument is known good: a rejected call leaves no queue open.
    queue, reopen_dlq = _open_dlq(dlq)
    return Plan(records, fn, total, config, classifier, queue, id_of, on_progress,
                success_threshold, stage, engine, pickle_payloads, is_async, timeout, bulk,
                reopen_dlq=reopen_dlq)


def _open_dlq(dlq: DeadLetterQueue | str | None) -> tuple[DeadLetterQueue | None,
                                                           Callable[[], DeadLetterQueue] | None]:
    """The queue to run with, and how to open it again when it was opened here from a URL
    (None for the caller's own queue, which the caller keeps open and closes)."""
    if not isinstance(dlq, str):
        return dlq, None
    from .dlq.urls import open_dlq

    return open_dlq(dlq), functools.partial(open_dlq, dlq)


def close_opened_dlq(plan: Plan) -> None:
    """Close the queue ``make_plan`` opened from a URL; a caller's own queue stays open.

    Every entry point calls it when the run ends, however it ends: one descriptor (or
    connection) per call would otherwise pile up until the process runs out."""
    if plan.reopen_dlq is not None and plan.dlq is not None:
        plan.dlq.close()


def _recorder(plan: Plan, run_id: str | None, job_id: str | None, checkpoint: Any) -> RunRecorder:
    total = plan.total
    if total is not None and plan.config.skip_batches:
        # Progress covers what this run takes on: a resumed job's finished batches are not in it.
        size = plan.config.batch_size
        total -= sum(max(0, min(size, total - b * size)) for b in plan.config.skip_batches)
    return RunRecorder(run_id=run_id or new_run_id(), job_id=job_id, stage=plan.stage,
                       dlq=plan.dlq, on_progress=plan.on_progress, total=total,
                       batch_size=plan.config.batch_size, id_of=plan.id_of,
                       pickle_payloads=plan.pickle_payloads, checkpoint=checkpoint,
                       reopen_dlq=plan.reopen_dlq)


def _with_skips(plan: Plan, skip_batches: frozenset[int]) -> Plan:
    if not skip_batches:
        return plan
    return replace(plan, config=replace(plan.config, skip_batches=frozenset(skip_batches)))


def _from_scheduler(scheduler: Scheduler) -> RunSummary:
    """The reference scheduler's final state as the native engine returns it."""
    scheduler.results.sort(key=lambda pair: pair[0])
    return RunSummary(
        succeeded=scheduler.succeeded, failed=scheduler.failed, records_read=scheduler.next_index,
        exhausted=scheduler.exhausted, retries=scheduler.retries,
        successful=[value for _, value in scheduler.results], stop_reason=scheduler.stop_reason,
        breaker_trips=scheduler.breaker.trips if scheduler.breaker is not None else 0,
        skipped_records=scheduler.skipped_records)


def _report(plan: Plan, recorder: RunRecorder, outcome: RunSummary,
            skip_batches: frozenset[int]) -> BatchReport:
    return recorder.report(succeeded=outcome.succeeded, failed=outcome.failed,
                           read=outcome.records_read - outcome.skipped_records,
                           skipped_records=outcome.skipped_records, exhausted=outcome.exhausted,
                           retries=outcome.retries, successful=outcome.successful,
                           stop_reason=outcome.stop_reason, breaker_trips=outcome.breaker_trips,
                           success_threshold=plan.success_threshold,
                           skipped_batches=len(skip_batches))


def execute(plan: Plan, *, run_id: str | None = None, job_id: str | None = None,
            checkpoint: Any = None, skip_batches: frozenset[int] = frozenset()) -> BatchReport:
    """Run a validated plan on its engine and assemble the report.

    ``skip_batches`` (a resumed job's finished batches) are read past, not run; the report
    counts only the records this run took on, and says how many batches it skipped.
    """
    if plan.is_async or plan.bulk:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("run_batches() was called with an async (or bulk) fn from inside a "
                               "running event loop; use `await batchguard.arun_batches(...)` there")
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(aexecute(plan, run_id=run_id, job_id=job_id, checkpoint=checkpoint,
                                       skip_batches=skip_batches))
    plan = _with_skips(plan, skip_batches)
    recorder = _recorder(plan, run_id, job_id, checkpoint)
    if plan.engine == "native":
        from . import _native

        outcome = _native.run(plan.records, plan.fn, plan.config, plan.classifier, recorder,
                              plan.total)
    else:
        outcome = _from_scheduler(run_reference(iter(plan.records), plan.fn, plan.config,
                                                plan.classifier, recorder))
    return _report(plan, recorder, outcome, skip_batches)


async def aexecute(plan: Plan, *, run_id: str | None = None, job_id: str | None = None,
                   checkpoint: Any = None, skip_batches: frozenset[int] = frozenset()) -> BatchReport:
    """:func:`execute` on the running event loop: for an async fn, a bulk fn, or any fn
    that :func:`arun_batches` runs."""
    plan = _with_skips(plan, skip_batches)
    recorder = _recorder(plan, run_id, job_id, checkpoint)
    if plan.engine == "native":
        from . import _native

        run: Any = _native.AsyncRun(plan.config, plan.classifier, recorder)
    else:
        run = ReferenceAsyncRun(Scheduler(plan.config, time.monotonic()),
                                _Classify(plan.classifier, recorder.classifier_error), recorder)
    if plan.is_async:
        outcome = await drive(run, iter(plan.records), plan.fn, plan.config.concurrency,
                              plan.config.batch_size, plan.timeout, plan.bulk)
    else:
        # A sync fn never runs on the loop: it gets `concurrency` threads of its own, and each
        # call is timed on its thread (it cannot be cancelled) rather than by the driver.
        calls = SyncCalls(plan.fn, plan.config.concurrency, plan.timeout)
        try:
            outcome = await drive(run, iter(plan.records), calls, plan.config.concurrency,
                                  plan.config.batch_size, None, plan.bulk)
        finally:
            calls.close()
    if isinstance(outcome, Scheduler):
        outcome = _from_scheduler(outcome)
    return _report(plan, recorder, outcome, skip_batches)


def _execute_until_stopped(plan: Plan, stop: StopSignal) -> BatchReport:
    """A per-record sync fn, as arun_batches runs it: on the threaded drivers (per record, a
    thread hop through the event loop would cost far more than the engine), until ``stop``."""
    return execute(replace(plan, fn=stop.guard(plan.fn), on_progress=stop.guard_progress(plan.on_progress)))


def run_batches(
    records: Iterable[Any],
    fn: Callable[[Any], Any],
    *,
    batch_size: int | Literal["auto"] | None = None,
    concurrency: int = 1,
    retry: RetryPolicy | None = None,
    classifier: Classifier | Callable[[BaseException], Any] | None = None,
    breaker: CircuitBreaker | None = None,
    dlq: DeadLetterQueue | str | None = None,
    id_of: Callable[[Any], Any] | None = None,
    on_progress: Callable[[BatchProgress], Any] | None = None,
    success_threshold: float | None = None,
    max_failures: int | float | None = None,
    stage: str = "process",
    engine: Literal["native", "python"] = "native",
    pickle_payloads: bool = False,
    timeout: float | None = None,
    rate_limit: RateLimit | None = None,
    delay_between_batches: float = 0.0,
    key_of: Callable[[Any], Any] | None = None,
    bulk: bool = False,
    job: str | None = None,
    store: Any = None,
    force: bool = False,
) -> BatchReport:
    """Run ``fn`` over every record, isolating, classifying and retrying failures.

    Every record ends succeeded (its value is in ``report.successful``, in input order),
    dead-lettered (an entry is in ``dlq``, or in ``report.dead_letters`` without one) or
    pending (the run stopped first). See DESIGN.md for the full contract.

    >>> report = run_batches([1, 2, 0], lambda x: 10 // x, retry=RetryPolicy(max_attempts=1))
    >>> report.status, report.successful, report.errors_by_type
    ('partial_success', [10, 5], {'ZeroDivisionError': 1})

    ``fn`` may be an ``async def`` function: run_batches then drives it on an event loop of its
    own, with up to ``concurrency`` coroutines in flight (use :func:`arun_batches` from inside a
    running loop). ``timeout`` bounds each attempt: an async attempt is cancelled and counts as a
    TimeoutError; a sync attempt cannot be interrupted (a thread cannot be killed), so one that
    returns late has its value discarded and counts as a TimeoutError too. ``timeout=None`` (the
    default) or ``float("inf")`` means no timeout.

    Every argument is checked before any record is read: a wrong type raises ConfigTypeError,
    a value out of range ConfigError, naming the argument, the bound and the value. Durations
    are at most :data:`~batchguard.MAX_DURATION_S` (one year); ``concurrency`` is at most
    1024 for a sync fn (a thread each) and 65536 for an async one (a worker coroutine each).

    ``rate_limit=RateLimit(per_second, burst)`` caps how fast attempts start, over all workers;
    ``delay_between_batches`` pauses before the first record of each new batch. With
    ``key_of``, records with equal keys run one at a time in input order (different keys in
    parallel); a record whose key cannot be computed is dead-lettered with that error. With
    ``bulk=True``, ``fn`` takes a list (a batch) and returns a list of results of the same
    length; when it raises, the batch is bisected until each failing record stands alone.

    With ``job="name"`` (and a ``store``, a URL such as ``"sqlite:///jobs.db"`` or a
    ``JobStore``) the run is a resumable job: every finished batch is checkpointed, and calling
    again with the same name and input resumes where it stopped (``force=True`` reruns a
    completed job).
    """
    if job is not None and not isinstance(job, str):
        raise ConfigTypeError(f"job must be a non-empty str, got {type(job).__name__} {job!r}")
    if job is not None and not job:
        raise ConfigError(f"job must be a non-empty str, got {job!r}")
    if job is None and store is not None:
        raise ConfigError("store is only used with job=...: name the job to make the run resumable")
    check_flag("force", force)
    if job is None and force:
        raise ConfigError("force=True is only used with job=...: it reruns a completed job")
    plan = make_plan(records, fn, batch_size=batch_size, concurrency=concurrency, retry=retry,
                     classifier=classifier, breaker=breaker, dlq=dlq, id_of=id_of,
                     on_progress=on_progress, success_threshold=success_threshold,
                     max_failures=max_failures, stage=stage, engine=engine,
                     pickle_payloads=pickle_payloads, timeout=timeout, rate_limit=rate_limit,
                     delay_between_batches=delay_between_batches, key_of=key_of, bulk=bulk)
    try:
        if job is not None:
            from .jobs import run_job

            return run_job(plan, job=job, store=store, force=force)
        return execute(plan)
    finally:
        close_opened_dlq(plan)


async def arun_batches(
    records: Iterable[Any],
    fn: Callable[[Any], Any],
    *,
    batch_size: int | Literal["auto"] | None = None,
    concurrency: int = 1,
    retry: RetryPolicy | None = None,
    classifier: Classifier | Callable[[BaseException], Any] | None = None,
    breaker: CircuitBreaker | None = None,
    dlq: DeadLetterQueue | str | None = None,
    id_of: Callable[[Any], Any] | None = None,
    on_progress: Callable[[BatchProgress], Any] | None = None,
    success_threshold: float | None = None,
    max_failures: int | float | None = None,
    stage: str = "process",
    engine: Literal["native", "python"] = "native",
    pickle_payloads: bool = False,
    timeout: float | None = None,
    rate_limit: RateLimit | None = None,
    delay_between_batches: float = 0.0,
    key_of: Callable[[Any], Any] | None = None,
    bulk: bool = False,
) -> BatchReport:
    """:func:`run_batches` for callers inside an event loop: ``await arun_batches(records, fn)``.

    ``fn`` is normally an ``async def`` function, run on the current loop with up to
    ``concurrency`` coroutines in flight. A sync ``fn`` never runs on the loop: it runs on
    ``concurrency`` threads of its own (the same threaded engine as :func:`run_batches`; a
    sync bulk fn on a pool of that size), so the loop stays responsive.

    Cancelling the task that awaits ``arun_batches`` stops the run as an interrupt does: no new
    record starts, the dead letters so far reach the DLQ, and CancelledError propagates. An
    ``async def`` call in flight is cancelled (its record stays pending); a sync call cannot be,
    so it runs to its end and its outcome is recorded before CancelledError propagates. A run
    waiting on timers (a retry's backoff, an open breaker) notices within a second.

    >>> import asyncio
    >>> async def double(x):
    ...     return 2 * x
    >>> asyncio.run(arun_batches([1, 2, 3], double)).successful
    [2, 4, 6]
    """
    plan = make_plan(records, fn, batch_size=batch_size, concurrency=concurrency, retry=retry,
                     classifier=classifier, breaker=breaker, dlq=dlq, id_of=id_of,
                     on_progress=on_progress, success_threshold=success_threshold,
                     max_failures=max_failures, stage=stage, engine=engine,
                     pickle_payloads=pickle_payloads, timeout=timeout, rate_limit=rate_limit,
                     delay_between_batches=delay_between_batches, key_of=key_of, bulk=bulk)
    try:
        if plan.is_async or plan.bulk:
            return await aexecute(plan)
        return await in_thread_until_cancelled(functools.partial(_execute_until_stopped, plan))
    finally:
        close_opened_dlq(plan)
