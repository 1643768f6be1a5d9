"""The report model: everything the final report of a run says, before it is rendered.

>>> from batchguard import RetryPolicy, run_batches
>>> report = run_batches([1, 0, 2], lambda x: 10 // x, retry=RetryPolicy(max_attempts=1))
>>> model = build(report)
>>> model.headline, model.succeeded, model.failed
('BATCH COMPLETE (Partial Success)', 2, 1)
>>> [(p.error_type, p.template, p.count, p.example_ids) for p in model.patterns]
[('ZeroDivisionError', 'integer division or modulo by zero', 1, (1,))]
>>> model.next_steps[0].command  # doctest: +ELLIPSIS
'batchguard dlq review --run-id run-...'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .._stored import REPORT_SAMPLE
from ..dlq.codec import clean_text
from ..steering import ConcurrencyLimit, RetriesOverBudget
from .patterns import FailurePattern, json_safe
from .rules import ROLLED_BACK_TYPE, RecommendationRule
from .steps import CliContext, CommandFlags, NextStep, judged, next_steps

if TYPE_CHECKING:
    from ..results import BatchReport

__all__ = ["CliContext", "ErrorPattern", "FailedSample", "NextStep", "ReportModel", "build"]

HEADLINES: Final = {
    "complete": "BATCH COMPLETE",
    "partial_success": "BATCH COMPLETE (Partial Success)",
    "failed": "BATCH FAILED",
    "aborted": "BATCH ABORTED",
}
"""The headline of each run status (a status not listed here is shown upper-cased)."""

NOTHING_SUCCEEDED: Final = "BATCH FAILED (no record succeeded)"
"""The headline of a finished run where every record was dead-lettered: its status is
"partial_success" when no ``success_threshold`` judged it (DESIGN §8), but it is no success."""


def headline(status: str, *, succeeded: int, failed: int) -> str:
    """The headline of a run: its status's, unless no record succeeded (then not "complete").

    >>> headline("partial_success", succeeded=0, failed=3)
    'BATCH FAILED (no record succeeded)'
    >>> headline("partial_success", succeeded=1, failed=3)
    'BATCH COMPLETE (Partial Success)'
    """
    if status == "partial_success" and failed and not succeeded:
        return NOTHING_SUCCEEDED
    return HEADLINES.get(status, status.upper())


@dataclass(frozen=True, slots=True)
class ErrorPattern:
    """How many dead-lettered records failed with one exception type (the summary line of the
    failure patterns, which tell them apart by class, HTTP status and message)."""

    error_type: str
    count: int
    share: float
    """Of the dead-lettered records, 0..1."""


@dataclass(frozen=True, slots=True)
class FailedSample:
    """One dead-lettered record, as the report shows it."""

    record_id: Any
    record_index: int
    batch_index: int
    error_class: str
    error_type: str
    error_message: str
    attempts: int
    first_error: str | None = None
    """"Type: message" of the error the record first failed with, when it differs from this
    one: a replay's record that fails again (an earlier run dead-lettered it)."""


@dataclass(frozen=True, slots=True)
class ReportModel:
    """The final report of a run: counts, rates, failure patterns, failed samples, next steps."""

    status: str
    headline: str
    run_id: str
    job_id: str | None
    stopped_reason: str | None
    """Why the run stopped early ("fatal", "max_failures", "breaker_abort"), or None."""
    total: int
    succeeded: int
    failed: int
    """Dead-lettered records."""
    pending: int
    retries: int
    success_rate: float | None
    """Succeeded / total; None for an empty input (no share to show)."""
    failure_rate: float | None
    """Dead-lettered / total; None for an empty input."""
    duration_s: float
    throughput: float
    """Records finished per second (``inf`` when the run took no measurable time)."""
    batches: int
    skipped_batches: int
    """Batches a resumed job had already finished."""
    breaker_trips: int
    dlq_url: str | None
    """Where the dead letters are, when the report knows (the command line does)."""
    error_types: tuple[ErrorPattern, ...]
    """By exception type, most frequent first."""
    patterns: tuple[FailurePattern, ...]
    """Every dead-lettered record, by failure pattern (error type, class, HTTP status, message
    template), most frequent first, each with its recommendation."""
    samples: tuple[FailedSample, ...]
    """The first dead-lettered records, in input order."""
    next_steps: tuple[NextStep, ...]
    """Empty when every record succeeded."""
    judged_against: tuple[str, ...] = ()
    """The ``success_threshold`` / ``max_failures`` the run was judged against, with the
    verdict; empty when neither was set."""
    success_threshold: float | None = None
    max_failures: int | float | None = None
    flags: CommandFlags = field(default_factory=CommandFlags)
    """The options the report's commands carry."""
    compensated: int = 0
    """Records that succeeded and were undone by ``compensate=`` (``batchguard.compensation``)."""
    entries: int | None = None
    """The run's DLQ entries, when more than its dead-lettered records: a rolled-back atomic
    batch's undone records have entries too."""
    hook_errors: int = 0
    """Times a lifecycle hook (``hooks=``, ``metrics=``) raised (each logged)."""
    alert_failures: int = 0
    """Alert notices (``alerts=``) that were never delivered (each logged)."""
    fallbacks: int = 0
    """Records that failed for good and succeeded with their retry policy's fallback value
    (among ``succeeded``; ``max_failures`` counts them as failures)."""
    concurrency_limit: ConcurrencyLimit | None = None
    """With ``concurrency=Adaptive(...)``: the limit at the end, its peak and its lowest."""
    retries_over_budget: RetriesOverBudget | None = None
    """With ``retry_budget=``: retries that waited for it, records it dead-lettered."""
    rollback_causes: tuple[Any, ...] = ()
    """The ids of the records whose failure rolled back their atomic batch (of those in the
    report's in-memory sample), in record order."""

    def rolled_back_title(self, pattern: FailurePattern) -> str:
        """"BatchRolledBack: N records undone because record X failed", for a rolled-back
        batch's pattern (the records named are those of :attr:`rollback_causes`)."""
        causes = self.rollback_causes
        named = ", ".join(repr(c) for c in causes[:_CAUSES_NAMED]) + (", …" if len(causes) > _CAUSES_NAMED else "")
        because = (f" because record {named} failed" if len(causes) == 1
                   else f" because records {named} failed" if causes else "")
        return f"{pattern.error_type}: {pattern.count} records undone{because}"

    @property
    def steering(self) -> tuple[tuple[str, str], ...]:
        """(label, text) of what steered the run's load, for the text and the panel alike."""
        facts = []
        if self.concurrency_limit is not None:
            limit = self.concurrency_limit
            facts.append(("Concurrency", f"adaptive, ended at {limit.final} (peak {limit.peak}, "
                                         f"lowest {limit.low})"))
        if self.retries_over_budget is not None:
            over = self.retries_over_budget
            facts.append(("Retry budget", f"{over.waited} retries waited for it, {over.dead_lettered} records "
                                          "dead-lettered by it"))
        return tuple(facts)

    def pattern_command(self, pattern: FailurePattern) -> str | None:
        """The command of ``pattern``'s recommendation, with the run's options."""
        return self.flags.pattern_command(pattern)

    @property
    def tone(self) -> str:
        """The status whose look a rendering gives the report: "failed" when no record succeeded."""
        return "failed" if self.headline == NOTHING_SUCCEEDED else self.status

    @property
    def more_failures(self) -> int:
        """Dead-lettered records beyond the samples."""
        return (self.failed if self.entries is None else self.entries) - len(self.samples)

    def to_json(self) -> dict[str, Any]:
        """The model as JSON-safe data (``json.dumps`` takes it as is).

        A record id JSON cannot hold is given as its ``repr``; an infinite throughput as None.
        """
        return {
            "status": self.status,
            "headline": self.headline,
            "run_id": self.run_id,
            "job_id": self.job_id,
            "stopped_reason": self.stopped_reason,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "compensated": self.compensated,
            "retries": self.retries,
            "success_rate": self.success_rate,
            "failure_rate": self.failure_rate,
            "duration_s": self.duration_s,
            "throughput": self.throughput if math.isfinite(self.throughput) else None,
            "batches": self.batches,
            "skipped_batches": self.skipped_batches,
            "breaker_trips": self.breaker_trips,
            "hook_errors": self.hook_errors,
            "alert_failures": self.alert_failures,
            "fallbacks": self.fallbacks,
            **({} if self.concurrency_limit is None
               else {"concurrency_limit": self.concurrency_limit.to_dict()}),
            **({} if self.retries_over_budget is None
               else {"retries_over_budget": self.retries_over_budget.to_dict()}),
            "dlq_url": self.dlq_url,
            "success_threshold": self.success_threshold,
            "max_failures": self.max_failures,
            "judged_against": list(self.judged_against),
            "error_types": [{"error_type": p.error_type, "count": p.count, "share": p.share}
                            for p in self.error_types],
            "patterns": [self._pattern_json(p) for p in self.patterns],
            "samples": [{"record_id": json_safe(s.record_id), "record_index": s.record_index,
                         "batch_index": s.batch_index, "error_class": s.error_class,
                         "error_type": s.error_type, "error_message": s.error_message,
                         "attempts": s.attempts, "first_error": s.first_error} for s in self.samples],
            "more_failures": self.more_failures,
            "rollback_causes": [json_safe(c) for c in self.rollback_causes],
            "next_steps": [{"action": n.action, "command": n.command} for n in self.next_steps],
        }


    def _pattern_json(self, pattern: FailurePattern) -> dict[str, Any]:
        flags = self.flags
        return pattern.to_json(dlq=flags.dlq, store=flags.store, job=flags.job, run_id=flags.run_id,
                               fn=flags.fn)


_CAUSES_NAMED: Final = 3


def _samples(errors: Sequence[Any], max_samples: int, rolled_back: bool) -> list[Any]:
    """The first ``max_samples`` errors; after a rollback, the records that failed first and
    then the rolled-back ones (each failure has up to batch_size - 1 of them before and after
    it: in record order they filled the sample). Looks at the in-memory sample only."""
    if not rolled_back:
        return list(errors[:max_samples])
    window = errors[:REPORT_SAMPLE]
    failed = [e for e in window if e.error_type != ROLLED_BACK_TYPE][:max_samples]
    return failed + [e for e in window if e.error_type == ROLLED_BACK_TYPE][:max_samples - len(failed)]


def _causes(errors: Sequence[Any]) -> tuple[Any, ...]:
    """The records that failed in a batch that has rolled-back records (in the sample)."""
    window = errors[:REPORT_SAMPLE]
    batches = {e.batch_index for e in window if e.error_type == ROLLED_BACK_TYPE}
    return tuple(e.record_id for e in window if e.error_type != ROLLED_BACK_TYPE and e.batch_index in batches)


def build(report: BatchReport, *, max_samples: int = 10, cli: CliContext | None = None,
          rules: Sequence[RecommendationRule] | None = None) -> ReportModel:
    """The model of ``report``, with its first ``max_samples`` dead-lettered records.

    ``cli``: the command line's context, when the ``batchguard`` command made the report.
    ``rules``: the recommendation rule table (default ``DEFAULT_RULES``; ``batchguard.triage``).
    Reads only what the report keeps in memory (for ``max_samples`` up to its sample of 1000).
    """
    failed = report.failure_count
    # A rolled-back atomic batch's undone records have entries too (BatchRolledBack).
    entries = len(report.errors) if report.compensated_count else failed
    total = report.total
    flags = CommandFlags.of(report, cli)
    patterns = report.patterns(rules=rules)
    rolled_back = any(p.error_type == ROLLED_BACK_TYPE for p in patterns)
    return ReportModel(
        status=report.status,
        headline=headline(report.status, succeeded=report.success_count, failed=failed),
        run_id=report.run_id,
        job_id=report.job_id,
        stopped_reason=report.stopped_reason,
        total=total,
        succeeded=report.success_count,
        failed=failed,
        pending=report.pending_count,
        retries=report.retry_count,
        success_rate=report.success_count / total if total else None,
        failure_rate=failed / total if total else None,
        duration_s=report.duration_s,
        throughput=report.throughput,
        batches=len(report.batches),
        skipped_batches=report.skipped_batches,
        breaker_trips=report.breaker_trips,
        dlq_url=None if cli is None else cli.dlq_url,
        error_types=tuple(ErrorPattern(name, count, count / entries if entries else 0.0)
                          for name, count in report.errors_by_type.items()),
        patterns=patterns,
        # Shown as a DLQ stores them: a message kept raw in memory may hold lone surrogates,
        # which no UTF-8 stream can write (print(report) would raise).
        samples=tuple(FailedSample(e.record_id, e.record_index, e.batch_index, e.error_class,
                                   clean_text(e.error_type), clean_text(e.error_message), e.attempts,
                                   _first_error(e))
                      for e in _samples(report.errors, max_samples, rolled_back)),
        next_steps=next_steps(report, patterns, cli, flags),
        judged_against=judged(report),
        success_threshold=report.success_threshold,
        max_failures=report.max_failures,
        flags=flags,
        compensated=report.compensated_count,
        entries=entries if report.compensated_count else None,
        hook_errors=report.hook_errors,
        alert_failures=report.alert_failures,
        fallbacks=report.fallback_count,
        concurrency_limit=report.concurrency_limit,
        retries_over_budget=report.retries_over_budget,
        rollback_causes=_causes(report.errors) if rolled_back else (),
    )


def _first_error(error: Any) -> str | None:
    """A replay's error (batchguard.replay.ReplayedRecordError) names the one its record first
    failed with: shown when it is another error."""
    first_type = getattr(error, "first_error_type", None)
    first_message = getattr(error, "first_error_message", None)
    if first_type is None or (first_type, first_message) == (error.error_type, error.error_message):
        return None
    return clean_text(f"{first_type}: {first_message or ''}")
