"""A full run's validation guard: each record is checked before ``fn``; a blocked one raises
:class:`~batchguard.validation.ValidationBlocked` (PERMANENT whatever the classifier says, stage
"validate" in its DLQ entry) and never reaches ``fn``; the others run, and the records that ran
with warnings are counted in ``report.validation``.

Per record, the check runs before each call except a retry's; with a bulk fn, a call holding a
blocked record fails, so the bisection that follows runs ``fn`` on the halves without one.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .._error_class import ErrorClass
from .._run.plan import Plan, is_coroutine_function
from ..results import BatchReport
from .issues import ValidationBlocked, ValidationIssue, ValidationSummary, averdict_of, is_blocked, verdict_of

__all__ = ["finish_full", "guard_full"]


class _Tally:
    """A full run's validation counts. A warned record whose ``fn`` call raised may be retried:
    it is kept (by identity, with its verdict) until its next call, so a retry is neither
    checked nor counted again. What that costs: one reference per warned record whose last call
    failed, until the run ends; and the same object passed twice in one input, warned both times,
    after its first pass failed for good, is taken for a retry (counted once), since a retry and
    a repeat are the same call ``fn(record)``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warnings = 0
        self.retrying: dict[int, tuple[Any, tuple[ValidationIssue, ...]]] = {}

    def known(self, record: Any) -> tuple[ValidationIssue, ...] | None:
        if not self.retrying:  # the usual case, without the lock: a record's own failed call
            return None        # (which held it) happened before its retry, on any thread
        with self.lock:
            held = self.retrying.pop(id(record), None)
        return None if held is None else held[1]

    def first(self, issues: tuple[ValidationIssue, ...]) -> None:
        if issues:
            with self.lock:
                self.warnings += 1

    def failed(self, record: Any, issues: tuple[ValidationIssue, ...]) -> None:
        if issues:
            with self.lock:
                self.retrying[id(record)] = (record, issues)

    # A bulk fn's record is in one call, then (the call failed) in the calls of a bisection or a
    # retry: a warned record keeps its verdict, counted once, until a call holding it succeeds.

    def held(self, record: Any) -> tuple[ValidationIssue, ...] | None:
        if not self.retrying:  # as known()
            return None
        with self.lock:
            held = self.retrying.get(id(record))
        return None if held is None else held[1]

    def hold(self, record: Any, issues: tuple[ValidationIssue, ...]) -> None:
        with self.lock:
            self.warnings += 1
            self.retrying[id(record)] = (record, issues)

    def succeeded(self, records: list[Any]) -> None:
        with self.lock:
            for record in records:
                self.retrying.pop(id(record), None)


def guard_full(plan: Plan) -> tuple[Plan, _Tally | None]:
    """``plan`` with each record checked before ``fn`` (when it has ``validate``): a blocked one
    raises ValidationBlocked, PERMANENT whatever the classifier says, and never reaches ``fn``."""
    check, fn = plan.validate, plan.fn
    if check is None:
        return plan, None
    tally = _Tally()
    check_async = is_coroutine_function(check)

    def verdict(record: Any) -> tuple[ValidationIssue, ...]:
        known = tally.known(record)
        if known is not None:
            return known
        if check_async:
            # A sync fn's worker thread has no loop: the check gets one of its own, closed when it
            # returns (a loop kept per thread would outlive the run, unclosed).
            issues = asyncio.run(averdict_of(check, record))
        else:
            issues = verdict_of(check, record)
        if is_blocked(issues):
            raise ValidationBlocked(issues)
        tally.first(issues)
        return issues

    def bulk_verdict(record: Any, issues: tuple[ValidationIssue, ...]) -> tuple[ValidationIssue, ...]:
        if issues and not is_blocked(issues):
            tally.hold(record, issues)
        return issues

    def bulk_gate(verdicts: list[tuple[ValidationIssue, ...]]) -> None:
        # A call with a blocked record fails; the bisection that follows runs fn on the halves
        # without one, and the blocked record alone fails with its own issues.
        for issues in verdicts:
            if is_blocked(issues):
                raise ValidationBlocked(issues)

    if plan.bulk and plan.is_async:
        async def abulk(records: list[Any]) -> Any:
            verdicts = []
            for record in records:
                issues = tally.held(record)
                if issues is None:
                    issues = await averdict_of(check, record) if check_async else verdict_of(check, record)
                    issues = bulk_verdict(record, issues)
                verdicts.append(issues)
            bulk_gate(verdicts)
            values = await fn(records)
            tally.succeeded(records)
            return values
        guarded: Callable[[Any], Any] = abulk
    elif plan.bulk:
        def sbulk(records: list[Any]) -> Any:
            verdicts = []
            for record in records:
                issues = tally.held(record)
                if issues is None:
                    issues = (asyncio.run(averdict_of(check, record)) if check_async
                              else verdict_of(check, record))
                    issues = bulk_verdict(record, issues)
                verdicts.append(issues)
            bulk_gate(verdicts)
            values = fn(records)
            tally.succeeded(records)
            return values
        guarded = sbulk
    elif plan.is_async:
        async def aguarded(record: Any) -> Any:
            known = tally.known(record)
            if known is None:
                known = await averdict_of(check, record) if check_async else verdict_of(check, record)
                if is_blocked(known):
                    raise ValidationBlocked(known)
                tally.first(known)
            try:
                return await fn(record)
            except BaseException:
                tally.failed(record, known)
                raise
        guarded = aguarded
    else:
        def sguarded(record: Any) -> Any:
            issues = verdict(record)
            try:
                return fn(record)
            except BaseException:
                tally.failed(record, issues)
                raise
        guarded = sguarded
    user = plan.classifier.func

    def permanent_if_blocked(exc: BaseException) -> Any:
        if isinstance(exc, ValidationBlocked):
            return ErrorClass.PERMANENT
        return None if user is None else user(exc)

    classifier = replace(plan.classifier, func=permanent_if_blocked)
    # The run core attaches the counts before on_run_end, so hooks see the caller's report.
    return replace(plan, fn=guarded, classifier=classifier,
                   finish_report=functools.partial(_with_counts, tally)), tally


def _with_counts(tally: _Tally, report: BatchReport[Any]) -> BatchReport[Any]:
    blocked = report.errors_by_type.get(ValidationBlocked.__name__, 0)
    return replace(report, validation=ValidationSummary(blocked=blocked, warnings=tally.warnings))


def finish_full(report: BatchReport[Any], tally: _Tally | None) -> BatchReport[Any]:
    """The full run's report, with ``validation`` counts when it had a check. The run core
    attaches them already (``Plan.finish_report``, before ``on_run_end``); this fills them in
    for a report it did not build."""
    if tally is None or report.validation is not None:
        return report
    return _with_counts(tally, report)
