"""``run_batches`` and ``arun_batches``: the public entry points of the run core (``_run``).

Their keyword arguments are declared once, in :class:`~batchguard._run.options.RunOptions`; the
overloads only say what ``fn`` is for each shape of call (per record or bulk, sync or async),
so a checker knows the type of ``report.successful``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar, Unpack, overload

from ._run.execute import arun, execute
from ._run.options import DEFAULT_MODE, RunOptions, spelled_out
from ._run.plan import close_opened_dlq, make_plan
from .jobs.run import arun_job, run_job
from .results import BatchReport
from .validation.full import finish_full, guard_full
from .validation.report import ValidationReport
from .validation.run import adry_run, asample, dry_run, sample
from .validation.sample import SampleReport

__all__ = ["RunOptions", "arun_batches", "run_batches"]

T = TypeVar("T")
R = TypeVar("R")


@overload
def run_batches(records: Iterable[T], fn: Callable[..., Any], *, bulk: bool = ...,
                mode: Literal["dry-run"], **options: Unpack[RunOptions[T]]) -> ValidationReport: ...
@overload
def run_batches(records: Iterable[T], fn: Callable[..., Any], *, bulk: bool = ...,
                mode: Literal["sample"], **options: Unpack[RunOptions[T]]) -> SampleReport: ...
@overload
def run_batches(records: Iterable[T], fn: Callable[[list[T]], Awaitable[Sequence[R]]], *,
                bulk: Literal[True], mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@overload
def run_batches(records: Iterable[T], fn: Callable[[list[T]], Sequence[R]], *,
                bulk: Literal[True], mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@overload
def run_batches(records: Iterable[T], fn: Callable[[T], Awaitable[R]], *,
                bulk: Literal[False] = ..., mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@overload
def run_batches(records: Iterable[T], fn: Callable[[T], R], *,
                bulk: Literal[False] = ..., mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@spelled_out
def run_batches(records: Iterable[Any], fn: Callable[[Any], Any], *, bulk: bool = False,
                mode: str = DEFAULT_MODE, **options: Unpack[RunOptions[Any]]
                ) -> BatchReport[Any] | ValidationReport | SampleReport:
    """Run ``fn`` over every record, isolating, classifying and retrying failures.

    Every record ends succeeded (its value is in ``report.successful``, in input order),
    dead-lettered (an entry is in ``dlq``, or in ``report.dead_letters`` without one),
    compensated (undone by ``compensate=``, below) or pending (the run stopped first). See
    DESIGN.md for the full contract.

    >>> from batchguard import RetryPolicy
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

    ``retry`` is one :class:`~batchguard.RetryPolicy` for every failure, or a policy per kind of
    error: a mapping from an ErrorClass, an exception type (the most specific in the MRO wins)
    or a predicate ``(exc) -> bool`` to a RetryPolicy, or ``RetryPolicies(default=...,
    by_error={...})``. A policy's ``retry_on_result`` retries a returned value it rejects,
    ``max_elapsed`` bounds a record's retrying in seconds, and ``fallback`` (a value, or
    ``callable(record, error)``) is used instead of dead-lettering, counted in
    ``report.fallback_count``.

    ``on_progress(BatchProgress)`` is called at most every 0.1 s, at every batch end (unless the
    callable's ``progress_every_batch`` is False) and once more when the run ends
    (``final=True``); :mod:`batchguard.progress` has ready displays. ``total=N`` tells it how
    many records a generator will yield, for a percentage and an ETA (a wrong one is clamped;
    the report counts the records actually read; an input with a length ignores it).

    ``hooks`` (``batchguard.Hooks(...)``, or any object with some of ``on_retry(record,
    attempt, error, delay)``, ``on_dead_letter(entry)``, ``on_breaker(old, new)``,
    ``on_batch_complete(stats)``, ``on_run_end(report)``) are called on the calling thread, in
    order, as each batch is handed over; one that raises is logged once and counted in
    ``report.hook_errors``, never costing a record (:mod:`batchguard.hooks`). ``metrics=``
    takes a :class:`batchguard.metrics.Prometheus`, which counts the run on those hooks.
    ``alerts=[batchguard.AlertRule.failure_rate(above=0.2, window_s=60, notify=...), ...]``
    tells a callable or a :class:`batchguard.alerts.Webhook` when a run goes wrong (failure
    rate, breaker open too long, error budget burn, no progress, aborted), once per episode and
    again when it clears, from threads of its own (:mod:`batchguard.alerts`); notices that
    could not be delivered are counted in ``report.alert_failures``.

    ``results="keep"`` (the default) keeps every value for ``report.successful``;
    ``results="drop"`` keeps none; a sink (a callable ``sink(indices, values)``, a writer from
    :mod:`batchguard.sinks`, or a path or fsspec URL such as ``"s3://bucket/out.jsonl.gz"``) gets
    each batch's values as the batch ends, before its dead letters and checkpoint, and the run
    keeps none: its memory does not grow with the input (:func:`batchguard.iter_batches` yields
    them instead).

    With ``job="name"`` (and a ``store``, a URL such as ``"sqlite:///jobs.db"`` or a
    ``JobStore``) the run is a resumable job: every finished batch is checkpointed, and calling
    again with the same name and input resumes where it stopped (``force=True`` reruns a
    completed job). ``keep_outcomes=True`` makes the job keep each succeeded record and its
    value, so that ``batchguard.rollback(job, undo)`` (``batchguard rollback``) can undo it later.

    Compensation (``batchguard.compensation``): ``compensate=undo`` is ``undo(record, value)``,
    reversing what ``fn(record)`` did when it returned ``value``. With ``atomic_batches=True`` a
    batch that ends with a dead-lettered record is rolled back: its succeeded records are undone
    (newest first), counted in ``report.compensated_count`` and dead-lettered as
    ``BatchRolledBack`` naming the record that failed. With ``on_abort="compensate"`` an aborted
    run undoes every record it succeeded on, newest batch first. Undos are retried with
    ``retry``; one that still fails is dead-lettered at stage "compensate".

    ``executor=client`` (a ``dask.distributed.Client``, or any
    :class:`batchguard.executors.Executor`) runs the batches on a cluster: this process reads
    the input and keeps the run's state (checkpoints, the report in input order, the error
    budget), each worker runs a batch on the native engine with the run's policies and its
    share of ``rate_limit``. A batch whose worker dies runs again; entry ids are deterministic,
    so the DLQ holds each dead record once (README, "Scaling out").

    Phases (``batchguard.validation``): with ``validate=check`` (``check(record)`` returns the
    record's ValidationIssues, or None), ``mode="dry-run"`` runs only the checks, on the engine,
    and returns a ValidationReport (``fn`` is never called, nothing is written);
    ``mode="sample"`` runs ``fn`` on ``sample_count`` records spread from short to long by
    payload size (or by ``sample_key(record)``), blocked ones never among them, and returns a
    SampleReport (no DLQ or job write); ``mode="full"`` (the default) dead-letters each blocked
    record (stage "validate", PERMANENT, never passed to ``fn``), runs the rest, and counts both
    in ``report.validation``.
    """
    plan = make_plan(records, fn, bulk=bulk, mode=mode, **options)
    try:
        if plan.mode == "dry-run":
            return dry_run(plan)
        if plan.mode == "sample":
            return sample(plan)
        plan, tally = guard_full(plan)
        if plan.job is not None:
            return finish_full(run_job(plan, job=plan.job, store=plan.store, force=plan.force), tally)
        return finish_full(execute(plan), tally)
    finally:
        close_opened_dlq(plan)


@overload
async def arun_batches(records: Iterable[T], fn: Callable[..., Any], *, bulk: bool = ...,
                       mode: Literal["dry-run"], **options: Unpack[RunOptions[T]]) -> ValidationReport: ...
@overload
async def arun_batches(records: Iterable[T], fn: Callable[..., Any], *, bulk: bool = ...,
                       mode: Literal["sample"], **options: Unpack[RunOptions[T]]) -> SampleReport: ...
@overload
async def arun_batches(records: Iterable[T], fn: Callable[[list[T]], Awaitable[Sequence[R]]], *,
                       bulk: Literal[True], mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@overload
async def arun_batches(records: Iterable[T], fn: Callable[[list[T]], Sequence[R]], *,
                       bulk: Literal[True], mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@overload
async def arun_batches(records: Iterable[T], fn: Callable[[T], Awaitable[R]], *,
                       bulk: Literal[False] = ..., mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@overload
async def arun_batches(records: Iterable[T], fn: Callable[[T], R], *,
                       bulk: Literal[False] = ..., mode: Literal["full"] = ...,
                **options: Unpack[RunOptions[T]]) -> BatchReport[R]: ...
@spelled_out
async def arun_batches(records: Iterable[Any], fn: Callable[[Any], Any], *, bulk: bool = False,
                       mode: str = DEFAULT_MODE, **options: Unpack[RunOptions[Any]]
                       ) -> BatchReport[Any] | ValidationReport | SampleReport:
    """:func:`run_batches` for callers inside an event loop: ``await arun_batches(records, fn)``.

    It takes the same arguments, ``job``, ``store`` and ``force`` included (a resumable job run
    from async code). ``fn`` is normally an ``async def`` function, run on the current loop with
    up to ``concurrency`` coroutines in flight. A sync ``fn``, per record or bulk, never runs on
    the loop: it runs on the same sync drivers as :func:`run_batches`, on threads of its own
    (up to ``concurrency`` calls at once), so the loop stays responsive.

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
    plan = make_plan(records, fn, bulk=bulk, mode=mode, **options)
    try:
        if plan.mode == "dry-run":
            return await adry_run(plan)
        if plan.mode == "sample":
            return await asample(plan)
        plan, tally = guard_full(plan)
        if plan.job is not None:
            return finish_full(await arun_job(plan, job=plan.job, store=plan.store, force=plan.force),
                               tally)
        return finish_full(await arun(plan), tally)
    finally:
        close_opened_dlq(plan)
