"""What the report tells a person to do next, and the run's threshold verdict.

Every command carries the run's own options (``--dlq``, ``--store``, the job or the run, the
``--fn``), shell-quoted and with passwords redacted, so it can be pasted as it is printed.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..errors import InputParseError
from ..validation.issues import ValidationBlocked
from .patterns import FailurePattern
from .rules import fill

if TYPE_CHECKING:
    from ..results import BatchReport

__all__ = ["RETRYABLE_KINDS", "CliContext", "CommandFlags", "NextStep", "judged", "next_steps"]

RETRYABLE_KINDS: Final = frozenset({"retry_budget", "timeout", "rate_limit", "server_error", "connection"})
"""Recommendation kinds whose records usually succeed when retried once the cause has passed."""
_RETRY_STEPS: Final = 3  # error types given a retry step of their own (the most frequent)
_FIXED_IN_THE_INPUT: Final = frozenset({InputParseError.__name__, ValidationBlocked.__name__})
"""Error types ``dlq retry`` cannot help: it leaves an unparsed line in the queue, and would feed
a blocked record's stored (still invalid) payload to ``fn`` unchecked. Their step is a review."""


@dataclass(frozen=True, slots=True)
class NextStep:
    """Something to do about the run, and the command that does it (if there is one)."""

    action: str
    command: str | None = None


@dataclass(frozen=True, slots=True)
class CliContext:
    """Where the ``batchguard`` command that made a report keeps its dead letters and job, and
    the ``--fn`` it ran.

    With a context the commands name a non-default DLQ (``--dlq``) and job store (``--store``),
    the run's ``--fn``, and finish a job with ``batchguard jobs resume``. The URLs are shown as
    given: pass them redacted.
    """

    dlq_url: str | None
    """The DLQ the run's dead letters went to."""
    store_url: str | None
    """The job store of the run's job."""
    default_url: str
    """What the command uses when no ``--dlq`` / ``--store`` is given: left out of commands."""
    fn_spec: str | None = None
    """The run's ``--fn MODULE:CALLABLE`` (None: commands show a placeholder)."""

    def flag(self, name: str, url: str | None) -> str:
        """`` --name URL`` for a command to print (shell-quoted), or nothing for no URL or the
        default one."""
        return "" if url is None or url == self.default_url else f" {name} {shlex.quote(url)}"

    def named(self, url: str | None) -> str | None:
        """``url`` if a command must name it, None for no URL or the default one."""
        return None if url is None or url == self.default_url else url


@dataclass(frozen=True, slots=True)
class CommandFlags:
    """The options every printed command of one report carries (see ``rules.fill``)."""

    dlq: str | None = None
    store: str | None = None
    job: str | None = None
    run_id: str | None = None
    fn: str | None = None

    @classmethod
    def of(cls, report: BatchReport, cli: CliContext | None) -> CommandFlags:
        # A replay's failures are in the entries it replayed, under their first run's ids:
        # its commands select by error type alone.
        job, run_id = (report.job_id, report.run_id) if report.entries_carry_run else (None, None)
        if cli is None:
            return cls(job=job, run_id=run_id)
        return cls(dlq=cli.named(cli.dlq_url), store=cli.named(cli.store_url), job=job, run_id=run_id,
                   fn=cli.fn_spec)

    def fill(self, command: str, error_type: str = "") -> str:
        """``command`` with its placeholders filled from these options."""
        return fill(command, error_type=error_type, dlq=self.dlq, store=self.store, job=self.job,
                    run_id=self.run_id, fn=self.fn)

    def pattern_command(self, pattern: FailurePattern) -> str | None:
        """The command of ``pattern``'s recommendation, filled."""
        command = pattern.recommendation.command
        return None if command is None else self.fill(command, pattern.error_type)


def _rate(value: float) -> str:
    return f"{100.0 * value:.1f}%"


def judged(report: BatchReport) -> tuple[str, ...]:
    """What the run was judged against (``success_threshold``, ``max_failures``) and the verdict.

    Nothing when neither was set: then any run that finishes is complete or partial success.
    """
    lines = []
    total, failed = report.total, report.failure_count
    threshold = report.success_threshold
    if threshold is not None:
        rate = report.success_count / total if total else 1.0
        verdict = "met" if rate >= threshold else "NOT met: the run failed"
        lines.append(f"success threshold {_rate(threshold)}: success rate {_rate(rate)}, {verdict}")
    budget = report.max_failures
    if budget is not None:
        limit = f"{budget:,}" if isinstance(budget, int) else f"{_rate(budget)} of the records"
        if report.stopped_reason == "max_failures":
            verdict = "passed: the run stopped"
        else:
            verdict = f"not passed ({failed:,} failed)"
        lines.append(f"max failures {limit}: {verdict}")
    return tuple(lines)


def next_steps(report: BatchReport, patterns: Sequence[FailurePattern], cli: CliContext | None,
               flags: CommandFlags) -> tuple[NextStep, ...]:
    """Review the failures, retry the most frequent error types, retry a job's failures, finish
    what was not processed: each as the command that does it."""
    steps: list[NextStep] = []
    failed = report.failure_count
    if failed:
        # dlq review fills its retry commands with --fn when given one: only the run's own.
        fn = "" if flags.fn is None else flags.fill("{fn}")
        # A rolled-back atomic batch's undone records have entries (BatchRolledBack) too.
        entries = len(report.errors) if report.compensated_count else failed
        steps.append(NextStep(f"review the {entries} dead-lettered records, pattern by pattern",
                              f"batchguard dlq review{flags.fill('{scope}')}{fn}{flags.fill('{dlq}')}"))
        by_type: dict[str, tuple[int, str]] = {}
        for pattern in patterns:
            count, kind = by_type.get(pattern.error_type, (0, pattern.recommendation.kind))
            by_type[pattern.error_type] = (count + pattern.count, kind)
        ranked = sorted(by_type.items(), key=lambda item: -item[1][0])
        for error_type, (count, kind) in ranked[:_RETRY_STEPS]:
            if error_type in _FIXED_IN_THE_INPUT:
                steps.append(NextStep(f"fix the {count} {error_type} records in the input, then skip "
                                      "their entries (a retry would not run them as fixed)",
                                      flags.fill("batchguard dlq review --error-type {error_type}"
                                                 "{scope}{fn}{dlq}", error_type)))
                continue
            when = ("once the cause has passed" if kind in RETRYABLE_KINDS
                    else "once the input or --fn is fixed")
            steps.append(NextStep(f"retry the {count} {error_type} records ({kind.replace('_', ' ')}) {when}",
                                  flags.fill("batchguard dlq retry --error-type {error_type}{scope}{fn}{dlq}",
                                             error_type)))
        if report.job_id is not None and cli is not None:
            steps.append(NextStep(f"or retry every failed record of job {report.job_id}",
                                  f"batchguard jobs retry-failed {shlex.quote(report.job_id)}"
                                  + flags.fill("{fn}{store}{dlq}")))
    pending = report.pending_count
    if pending and report.job_id is not None and cli is not None:
        steps.append(NextStep(f"finish the {pending} records not processed",
                              f"batchguard jobs resume {shlex.quote(report.job_id)}"
                              f"{cli.flag('--store', cli.store_url)}"))
    elif pending and report.job_id is not None:
        steps.append(NextStep(f"resume the job to finish the {pending} records not processed "
                              f"(run it again with job={report.job_id!r})"))
    elif pending:
        steps.append(NextStep(f"run the {pending} records not processed again (the run stopped early)"))
    return tuple(steps)
