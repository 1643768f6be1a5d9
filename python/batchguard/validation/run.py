"""Running the phases on the engine: the dry-run (checks only) and the sample (``fn`` on a
few records); a full run's guard is in :mod:`batchguard.validation.full`.

Every phase is a run of the ordinary engine (either one, sync or async, with its batches,
concurrency and progress), over a plan derived from the caller's:

* **dry-run**: ``fn`` is replaced by the check, which never raises (a check that raises, or
  returns something that is not issues, blocks its record with an issue saying so); no retry,
  breaker, error budget, DLQ or job. Records travel as ``(index, record)`` so each verdict knows
  its record's place and id; the collector keeps counts for all and a bounded listing.
* **sample**: one pass over the input chooses the records (:class:`SampleSelector`), then the
  engine runs ``fn`` on them with the run's retry, timeout, classifier, rate limit and breaker;
  nothing is written to a DLQ. With a job store (``store=`` or ``job=``), the sampled records
  that succeeded are kept there with their values, for ``batchguard rollback`` (seed 003's
  ``--rollback-batch``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .._run.entries import default_id_of
from .._run.execute import arun, execute
from .._run.plan import Plan, is_coroutine_function
from ..jobs.rollback import keep_sample
from ..policies import RetryPolicy
from ..results import BatchReport
from .issues import ValidationIssue, averdict_of, is_blocked, verdict_of
from .report import ValidationCollector, ValidationReport
from .sample import SampleItem, SampleReport, SampleSelector, default_sample_steps

__all__ = ["adry_run", "asample", "dry_run", "sample"]


def _record_id(plan: Plan, record: Any, index: int) -> Any:
    """The record's id as a DLQ entry would hold it: ``id_of(record)``, else the mapping's
    ``id``/``entity_id``, else its index (also when ``id_of`` raises)."""
    if plan.id_of is None:
        return default_id_of(record, index)
    try:
        return plan.id_of(record)
    except Exception:  # noqa: BLE001 - the index names the record, as the recorder does
        return index


# --- dry-run ---------------------------------------------------------------------------------

def _dry_plan(plan: Plan, collector: ValidationCollector) -> Plan:
    check = plan.validate
    assert check is not None

    def verdict_id(pair: tuple[int, Any]) -> Any:
        return _record_id(plan, pair[1], pair[0])

    if is_coroutine_function(check):
        async def acheck(pair: tuple[int, Any]) -> None:
            collector.add(pair[0], verdict_id(pair), await averdict_of(check, pair[1]))
        fn: Callable[[Any], Any] = acheck
    else:
        def scheck(pair: tuple[int, Any]) -> None:
            collector.add(pair[0], verdict_id(pair), verdict_of(check, pair[1]))
        fn = scheck
    # Checks only: one try each (a check never raises out of the wrapper; a timeout is the only
    # failure left), no breaker or error budget, no key order, nothing written anywhere. A sync
    # check is not timed: it cannot be interrupted, so a late one has already given its verdict
    # (counted once it returns), which the engine would discard and count again as a failure.
    # An async check past the timeout is cancelled before its verdict: blocked (_dry_report).
    is_async = is_coroutine_function(check)
    timeout = plan.timeout if is_async else None
    config = replace(plan.config, retry=RetryPolicy(max_attempts=1), breaker=None,
                     max_failures=None, key_of=None, skip_batches=frozenset(), timeout=timeout,
                     collect_retries=False)
    # hooks=(): the run's hooks and metrics watch the run, not its checks
    return replace(plan, records=enumerate(plan.records), fn=fn, is_async=is_async, config=config,
                   timeout=timeout, dlq=None, reopen_dlq=None, id_of=verdict_id, bulk=False,
                   success_threshold=None, job=None, store=None, force=False, hooks=())


def _dry_report(collector: ValidationCollector, report: BatchReport[Any]) -> ValidationReport:
    for error in report.errors:  # a check that timed out: blocked, as one that raised
        collector.add(error.record_index, error.record_id, (ValidationIssue(
            "<check>", f"the check failed: {error.error_type}: {error.error_message}",
            "make the check finish within the run's timeout, or raise the timeout"),))
    return collector.report(total=report.total, unchecked=report.pending_count,
                            duration_s=report.duration_s)


def dry_run(plan: Plan) -> ValidationReport:
    """Check every record on the engine, calling no ``fn``; the validation report."""
    collector = ValidationCollector()
    return _dry_report(collector, execute(_dry_plan(plan, collector)))


async def adry_run(plan: Plan) -> ValidationReport:
    """:func:`dry_run` from inside an event loop."""
    collector = ValidationCollector()
    return _dry_report(collector, await arun(_dry_plan(plan, collector)))


# --- sample ----------------------------------------------------------------------------------

def _select(plan: Plan) -> tuple[SampleSelector, int]:
    selector = SampleSelector(plan.sample_count, plan.sample_key)
    check = plan.validate
    seen = 0
    runner = asyncio.Runner() if check is not None and is_coroutine_function(check) else None
    try:
        for index, record in enumerate(plan.records):
            seen += 1
            key = selector.key_of(index, record)
            if not selector.wants(index, key):
                continue
            if check is not None:
                issues = (runner.run(averdict_of(check, record)) if runner is not None
                          else verdict_of(check, record))
                if is_blocked(issues):
                    selector.blocked()
                    continue
            selector.admit(index, key, record)
    finally:
        if runner is not None:
            runner.close()
    return selector, seen


async def _aselect(plan: Plan) -> tuple[SampleSelector, int]:
    selector = SampleSelector(plan.sample_count, plan.sample_key)
    check = plan.validate
    is_async = check is not None and is_coroutine_function(check)
    seen = 0
    for index, record in enumerate(plan.records):
        seen += 1
        key = selector.key_of(index, record)
        if not selector.wants(index, key):
            continue
        if check is not None:
            issues = await averdict_of(check, record) if is_async else verdict_of(check, record)
            if is_blocked(issues):
                selector.blocked()
                continue
        selector.admit(index, key, record)
    return selector, seen


class _Timings:
    """Per sampled record (calls may run on many threads): time spent in ``fn``, tries, and
    whether a call returned (a record that neither returned nor failed is pending)."""

    def __init__(self, size: int) -> None:
        self.lock = threading.Lock()
        self.seconds = [0.0] * size
        self.calls = [0] * size
        self.returned = [False] * size

    def add(self, positions: Iterable[int], seconds: float, *, returned: bool) -> None:
        with self.lock:
            for pos in positions:
                self.seconds[pos] += seconds
                self.calls[pos] += 1
                self.returned[pos] = self.returned[pos] or returned


def _timed(plan: Plan, timings: _Timings) -> Callable[[Any], Any]:
    """``fn`` over ``(position, record)`` pairs, timing each call."""
    fn, clock = plan.fn, time.perf_counter
    if plan.bulk and plan.is_async:
        async def abulk(pairs: list[tuple[int, Any]]) -> Any:
            start, returned = clock(), False
            try:
                values = await fn([record for _, record in pairs])
                returned = True
                return values
            finally:
                timings.add((pos for pos, _ in pairs), clock() - start, returned=returned)
        return abulk
    if plan.bulk:
        def bulk(pairs: list[tuple[int, Any]]) -> Any:
            start, returned = clock(), False
            try:
                values = fn([record for _, record in pairs])
                returned = True
                return values
            finally:
                timings.add((pos for pos, _ in pairs), clock() - start, returned=returned)
        return bulk
    if plan.is_async:
        async def aone(pair: tuple[int, Any]) -> Any:
            start, returned = clock(), False
            try:
                value = await fn(pair[1])
                returned = True
                return value
            finally:
                timings.add((pair[0],), clock() - start, returned=returned)
        return aone

    def one(pair: tuple[int, Any]) -> Any:
        start, returned = clock(), False
        try:
            value = fn(pair[1])
            returned = True
            return value
        finally:
            timings.add((pair[0],), clock() - start, returned=returned)
    return one


Chosen = list[tuple[str, int, Any, float]]


def _sample_plan(plan: Plan, chosen: Chosen, timings: _Timings) -> tuple[Plan, list[Any]]:
    ids = [_record_id(plan, record, index) for _, index, record, _ in chosen]
    key_of = plan.config.key_of
    config = replace(plan.config, skip_batches=frozenset(), collect_retries=False,
                     key_of=None if key_of is None else (lambda pair: key_of(pair[1])))
    # hooks=(): a sample's records cross the engine as (position, record) pairs, which the run's
    # hooks and metrics must not be handed as records
    sampled = replace(plan, records=[(pos, c[2]) for pos, c in enumerate(chosen)], total=len(chosen),
                      fn=_timed(plan, timings), config=config, dlq=None, reopen_dlq=None,
                      id_of=lambda pair: ids[pair[0]], success_threshold=None, job=None,
                      store=None, force=False, expected_total=None, hooks=())
    return sampled, ids


def _sample_report(chosen: Chosen, ids: list[Any], timings: _Timings, report: BatchReport[Any],
                   selector: SampleSelector, seen: int) -> SampleReport:
    errors = {error.record_index: error for error in report.errors}
    # A sync call that returned after its timeout counts as a failure: errors win.
    succeeded = [pos for pos in range(len(chosen)) if pos not in errors and timings.returned[pos]]
    values = dict(zip(succeeded, report.successful, strict=False))
    items = []
    for pos, (label, index, _record, key) in enumerate(chosen):
        seconds, calls, error = timings.seconds[pos], timings.calls[pos], errors.get(pos)
        if error is not None:
            items.append(SampleItem(label, index, ids[pos], key, False, seconds, error.attempts,
                                    error_type=error.error_type, error_message=error.error_message,
                                    error_class=error.error_class))
        elif pos in values:
            items.append(SampleItem(label, index, ids[pos], key, True, seconds, calls, value=values[pos]))
        else:
            why = report.stopped_reason or "interrupted"
            items.append(SampleItem(label, index, ids[pos], key, False, seconds, calls,
                                    error_type="NotRun", error_message=f"the run stopped first ({why})",
                                    error_class="pending"))
    result = SampleReport(tuple(items), seen, selector.blocked_skipped, report.duration_s)
    return result.with_next_steps(default_sample_steps(result))


def _kept(plan: Plan, chosen: Chosen, ids: list[Any], result: SampleReport) -> SampleReport:
    """``result``, its succeeded records kept for a rollback when the plan names a job store."""
    if plan.store is None and plan.job is None:
        return result
    succeeded = [(item.record_index, ids[pos], chosen[pos][2], item.value)
                 for pos, item in enumerate(result.items) if item.ok]
    kept = replace(result, rollback_id=keep_sample(plan.store, succeeded, pickle_payloads=plan.pickle_payloads))
    return kept.with_next_steps(default_sample_steps(kept))


def sample(plan: Plan) -> SampleReport:
    """Run ``fn`` on ``plan.sample_count`` records spread over the input; the sample report."""
    selector, seen = _select(plan)
    chosen = selector.chosen()
    timings = _Timings(len(chosen))
    sampled, ids = _sample_plan(plan, chosen, timings)
    return _kept(plan, chosen, ids, _sample_report(chosen, ids, timings, execute(sampled), selector, seen))


async def asample(plan: Plan) -> SampleReport:
    """:func:`sample` from inside an event loop."""
    selector, seen = await _aselect(plan)
    chosen = selector.chosen()
    timings = _Timings(len(chosen))
    sampled, ids = _sample_plan(plan, chosen, timings)
    return _kept(plan, chosen, ids, _sample_report(chosen, ids, timings, await arun(sampled), selector, seen))
