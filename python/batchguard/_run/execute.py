"""Running a plan: pick the engine and the driver, feed the recorder, assemble the report.

:func:`execute` is what ``run_batches`` runs, :func:`arun` what ``arun_batches`` awaits; a job
(``jobs.run``), a replay and the CLI call them too, with the sink a batch's outcome goes to (an
:class:`~batchguard._run.sink.OutcomeSink`: a job's checkpoint, a replay) and the batches to skip.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .. import _native
from .._async import drive, loop_factory
from .._native import RunSummary
from .._outcome import RunRecorder
from ..compensation import RunCompensation
from ..executors.driver import run_on_executor
from ..executors.recorder import ExecutorRecorder
from ..hooks import HookDispatch, ProgressTee
from ..reference import Scheduler, _Classify, run_reference
from ..results import BatchReport
from ..steering import ConcurrencyLimit, RetriesOverBudget
from .entries import new_run_id
from .plan import Plan
from .reference_async import ReferenceAsyncRun
from .retry_end import RetryEnd
from .sink import OutcomeSink, ResultsOut
from .sync_fn import StopSignal, in_thread_until_cancelled

__all__ = ["aexecute", "arun", "execute", "execute_nothing"]


def recorder_for(plan: Plan, run_id: str | None, job_id: str | None, sink: OutcomeSink | None,
                 kind: type[RunRecorder] = RunRecorder) -> RunRecorder:
    """The recorder (a ``kind``) a run of ``plan`` reports to."""
    hooks = HookDispatch(plan.hooks) if plan.hooks else None
    total, expected = plan.total, plan.expected_total
    if plan.config.skip_batches:
        # Progress covers what this run takes on: a resumed job's finished batches are not in it.
        size = plan.config.batch_size
        total, expected = (None if n is None else
                           max(0, n - sum(max(0, min(size, n - b * size)) for b in plan.config.skip_batches))
                           for n in (total, expected))
    recorder = kind(run_id=run_id or new_run_id(), job_id=job_id, stage=plan.stage,
                    dlq=plan.dlq, on_progress=_watched(plan.on_progress, hooks), total=total,
                    batch_size=plan.config.batch_size, id_of=plan.id_of,
                    pickle_payloads=plan.pickle_payloads, sink=sink,
                    reopen_dlq=plan.reopen_dlq, expected_total=expected,
                    hooks=hooks)
    recorder.retry_end = RetryEnd.for_config(plan.config, recorder.run_id)
    budget = plan.config.retry_budget
    if budget is not None and budget.over_budget == "dead_letter":
        recorder.refusing_budget = budget
    return recorder


def _watched(on_progress: Any, hooks: HookDispatch | None) -> Any:
    """``on_progress``, or, when a hook target watches progress (alerts), a tee that feeds it
    too: the engines take snapshots only for a recorder whose ``on_progress`` is set."""
    if hooks is None or not hooks.wants_progress:
        return on_progress
    return ProgressTee(hooks, on_progress)


def _close_hooks(recorder: RunRecorder, error: BaseException) -> None:
    """The run raises ``error``: its hook targets hear it (``run_closed``) and stop their threads."""
    if recorder.hooks is not None:
        recorder.hooks.run_closed(error)


def _finish_writes(recorder: RunRecorder) -> None:
    """Every dead letter durable before the run returns; a DLQ that fails here closes the hooks."""
    try:
        recorder.finish_writes()
    except BaseException as exc:
        _close_hooks(recorder, exc)
        raise


def _with_skips(plan: Plan, skip_batches: frozenset[int]) -> Plan:
    """``plan`` skipping ``skip_batches``; with compensation (or ``keep_outcomes``) its engine
    also hands each batch's successes (positions and values) with the batch's end: what
    ``batchguard.compensation`` matches records to values by."""
    config = plan.config
    if skip_batches:
        config = replace(config, skip_batches=frozenset(skip_batches))
    if plan.compensation is not None and not config.values_per_batch:
        config = replace(config, values_per_batch=True)
    return plan if config is plan.config else replace(plan, config=config)


def _from_scheduler(scheduler: Scheduler) -> RunSummary:
    """The reference scheduler's final state as the native engine returns it."""
    scheduler.results.sort(key=lambda pair: pair[0])
    limits, over_budget = scheduler.steering()
    return RunSummary(
        succeeded=scheduler.succeeded, failed=scheduler.failed, records_read=scheduler.next_index,
        exhausted=scheduler.exhausted, retries=scheduler.retries,
        successful=[value for _, value in scheduler.results], stop_reason=scheduler.stop_reason,
        breaker_trips=scheduler.breaker.trips if scheduler.breaker is not None else 0,
        skipped_records=scheduler.skipped_records, concurrency_limits=limits,
        retries_over_budget=over_budget)


def _inputs(plan: Plan, recorder: RunRecorder) -> tuple[Iterable[Any], Callable[..., Any]]:
    """The input and fn an engine runs: the plan's own; with compensation (or ``keep_outcomes``)
    the input goes through a copy the recorder reads each batch's records from
    (``batchguard.compensation``)."""
    if not isinstance(plan.results, str):  # a sink: opened now, closed by finish_writes
        recorder.use_results(ResultsOut(plan.results, finished=plan.config.skip_batches,
                                        batch_size=plan.config.batch_size, durable=recorder.checkpoints))
    if plan.compensation is None:
        return plan.records, plan.fn
    compensation = RunCompensation(plan.compensation, batch_size=plan.config.batch_size,
                                   skip_batches=plan.config.skip_batches, retry=plan.config.retry,
                                   classifier=plan.classifier, seed=plan.config.seed,
                                   keep_values=plan.results == "keep")
    recorder.use_compensation(compensation)
    return compensation.records(plan.records), plan.fn


def _report(plan: Plan, recorder: RunRecorder, outcome: RunSummary,
            skip_batches: frozenset[int]) -> BatchReport:
    try:
        recorder.run_ended(outcome.stop_reason)  # an aborted run's undos, with on_abort="compensate"
    except BaseException as exc:  # Ctrl-C in an undo, or the DLQ failing for a failed undo
        _close_hooks(recorder, exc)
        raise
    read = outcome.records_read - outcome.skipped_records
    recorder.final_progress(succeeded=outcome.succeeded, failed=outcome.failed, read=read,
                            exhausted=outcome.exhausted)
    report = recorder.report(succeeded=outcome.succeeded, failed=outcome.failed,
                           read=outcome.records_read - outcome.skipped_records,
                           skipped_records=outcome.skipped_records, exhausted=outcome.exhausted,
                           retries=outcome.retries, successful=outcome.successful,
                           stop_reason=outcome.stop_reason, breaker_trips=outcome.breaker_trips,
                           success_threshold=plan.success_threshold,
                           max_failures=plan.config.max_failures,
                           skipped_batches=len(skip_batches))
    return _ended(plan, recorder, _with_steering(plan, report, outcome))


def _ended(plan: Plan, recorder: RunRecorder, report: BatchReport) -> BatchReport:
    """The run's last steps, whatever it ran: the plan's additions to ``report``, then its hook
    targets hear it end (``on_run_end``, ``run_closed``), and their errors are counted."""
    if plan.finish_report is not None:  # the report the caller gets is the one on_run_end sees
        report = plan.finish_report(report)
    hooks = recorder.hooks
    if hooks is None:
        return report
    hooks.run_end(report)
    hooks.run_closed(None)
    errors, failures = hooks.errors, hooks.alert_failures
    if errors or failures:
        return replace(report, hook_errors=errors, alert_failures=failures)
    return report


def _with_steering(plan: Plan, report: BatchReport, outcome: RunSummary) -> BatchReport:
    """The report with what steered the run: the adaptive limit (final, peak, lowest) and the
    retry budget's counts, when the run had them."""
    limits = outcome.concurrency_limits
    if plan.config.adaptive is not None and limits is not None:
        report = replace(report, concurrency_limit=ConcurrencyLimit(*limits))
    if plan.config.retry_budget is not None:
        report = replace(report, retries_over_budget=RetriesOverBudget(*outcome.retries_over_budget))
    return report


def execute_nothing(plan: Plan, *, job_id: str | None, skipped_batches: int) -> BatchReport:
    """The report of a run with nothing left to do (a finished job run again): no engine runs
    and no record is read, but the run's hook targets see it start and end as any run's
    (``run_started``, ``on_run_end`` with this report, ``run_closed``; ``batchguard.hooks``)."""
    # Nothing is written or drawn: no DLQ, no progress, no threshold to judge zero records by.
    quiet = replace(plan, dlq=None, reopen_dlq=None, on_progress=None, success_threshold=None,
                    total=0, expected_total=None)
    recorder = recorder_for(quiet, None, job_id, None)
    report = recorder.report(succeeded=0, failed=0, read=0, exhausted=True, retries=0, successful=[],
                             stop_reason=None, breaker_trips=0, success_threshold=None,
                             skipped_batches=skipped_batches)
    return _ended(quiet, recorder, report)


def execute(plan: Plan, *, run_id: str | None = None, job_id: str | None = None,
            sink: OutcomeSink | None = None, skip_batches: frozenset[int] = frozenset()) -> BatchReport:
    """Run a validated plan on its engine and assemble the report.

    ``skip_batches`` (a resumed job's finished batches) are read past, not run; the report
    counts only the records this run took on, and says how many batches it skipped.
    """
    # A sync fn, bulk or not, runs on the sync drivers (inline, or threads) of either engine;
    # only an async fn needs an event loop.
    if plan.is_async:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("run_batches() was called with an async fn from inside a running "
                               "event loop; use `await batchguard.arun_batches(...)` there")
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(aexecute(plan, run_id=run_id, job_id=job_id, sink=sink,
                                       skip_batches=skip_batches))
    plan = _with_skips(plan, skip_batches)
    recorder = recorder_for(plan, run_id, job_id, sink,
                            RunRecorder if plan.executor is None else ExecutorRecorder)
    try:
        if plan.executor is not None:
            assert isinstance(recorder, ExecutorRecorder)
            outcome = run_on_executor(plan, plan.executor, recorder)
        elif plan.engine == "native":
            records, fn = _inputs(plan, recorder)
            outcome = _native.run(records, fn, plan.config, plan.classifier, recorder,
                                  plan.total, bulk=plan.bulk)
        else:
            records, fn = _inputs(plan, recorder)
            outcome = _from_scheduler(run_reference(iter(records), fn, plan.config,
                                                    plan.classifier, recorder, bulk=plan.bulk))
    except BaseException as exc:
        recorder.finish_writes(failing=True)
        _close_hooks(recorder, exc)
        raise
    _finish_writes(recorder)  # every dead letter durable before the run returns
    return _report(plan, recorder, outcome, skip_batches)


async def aexecute(plan: Plan, *, run_id: str | None = None, job_id: str | None = None,
                   sink: OutcomeSink | None = None, skip_batches: frozenset[int] = frozenset()) -> BatchReport:
    """:func:`execute` of an async fn (per record or bulk), on the running event loop. A sync
    fn never comes here: it runs on the sync drivers (:func:`execute`, or :func:`arun` off the
    loop)."""
    assert plan.is_async, "a sync fn runs on the sync drivers, not on the event loop"
    plan = _with_skips(plan, skip_batches)
    recorder = recorder_for(plan, run_id, job_id, sink)
    if plan.engine == "native":
        run: Any = _native.AsyncRun(plan.config, plan.classifier, recorder)
    else:
        run = ReferenceAsyncRun(Scheduler(plan.config, time.monotonic()),
                                _Classify(plan.classifier, recorder.classifier_error), recorder)
    try:
        records, fn = _inputs(plan, recorder)
        outcome = await drive(run, iter(records), fn, plan.config.concurrency,
                              plan.config.batch_size, plan.timeout, plan.bulk)
    except BaseException as exc:
        recorder.finish_writes(failing=True)
        _close_hooks(recorder, exc)
        raise
    _finish_writes(recorder)  # every dead letter durable before the run returns
    if isinstance(outcome, Scheduler):
        outcome = _from_scheduler(outcome)
    return _report(plan, recorder, outcome, skip_batches)


def _execute_until_stopped(plan: Plan, stop: StopSignal, **how: Any) -> BatchReport:
    """A sync fn, per record or bulk, as arun_batches runs it: on the sync drivers, as
    run_batches does (a thread hop through the event loop per call would cost far more),
    until ``stop``: the guarded fn raises :class:`~batchguard._run.sync_fn.RunCancelled` instead
    of starting a call (a bulk call, or one of a bisection's), which stops the run as an
    interrupt does. On an executor the fn is shipped to workers, where the signal is not: the
    driver notices it when the next batch comes back (its progress report raises)."""
    fn = plan.fn if plan.executor is not None else stop.guard(plan.fn)
    guarded = replace(plan, fn=fn, on_progress=stop.guard_progress(plan.on_progress))
    return execute(guarded, **how)


async def arun(plan: Plan, *, run_id: str | None = None, job_id: str | None = None,
               sink: OutcomeSink | None = None, skip_batches: frozenset[int] = frozenset()) -> BatchReport:
    """:func:`execute` for a caller inside an event loop (what ``arun_batches`` awaits): an
    async fn on this loop, a sync fn (per record or bulk) on the sync drivers, off the loop."""
    if plan.is_async:
        return await aexecute(plan, run_id=run_id, job_id=job_id, sink=sink,
                              skip_batches=skip_batches)
    return await in_thread_until_cancelled(functools.partial(
        _execute_until_stopped, plan, run_id=run_id, job_id=job_id, sink=sink,
        skip_batches=skip_batches))
