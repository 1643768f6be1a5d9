"""The report model as plain text: what ``BatchReport.summary()`` returns and the command prints
off a terminal."""

from __future__ import annotations

from typing import Final

from .._checks import printable
from .model import ReportModel
from .patterns import FailurePattern
from .rules import ROLLED_BACK_TYPE

__all__ = ["MAX_PATTERNS_SHOWN", "duration", "examples", "fell_back", "pattern_title", "percent", "render_text",
           "step_line"]

_RULE: Final = "-" * 64
_MESSAGE_WIDTH: Final = 200
MAX_PATTERNS_SHOWN: Final = 10
"""Patterns a rendering lists with their recommendation (the JSON has all of them)."""


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: "1.25 s", "3 min 5 s", "2 h 0 min 1 s"."""
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {secs} s" if hours else f"{minutes} min {secs} s"


def percent(share: float | None) -> str:
    """A 0..1 share as "12.5%" ("-" for None: a share of nothing)."""
    return "-" if share is None else f"{100.0 * share:.1f}%"


def step_line(action: str, command: str | None) -> str:
    """One next step on one line."""
    return f"{action}: {command}" if command else action


def pattern_title(pattern: FailurePattern) -> str:
    """"ValueError, permanent" with ", HTTP 503" when the pattern has a status."""
    status = "" if pattern.http_status is None else f", HTTP {pattern.http_status}"
    return f"{pattern.error_type}, {pattern.error_class}{status}"


def examples(pattern: FailurePattern) -> str:
    """The pattern's example record ids, as ``repr`` (a string id in quotes, as the samples show)."""
    return ", ".join(repr(i) for i in pattern.example_ids)


def _pattern_lines(model: ReportModel) -> list[str]:
    shown = model.patterns[:MAX_PATTERNS_SHOWN]
    lines = [f"FAILURE PATTERNS ({len(model.patterns)}, most frequent first):"]
    for n, pattern in enumerate(shown, 1):
        advice = pattern.recommendation
        if pattern.error_type == ROLLED_BACK_TYPE:
            lines.append(f"{n}. {model.rolled_back_title(pattern)} ({percent(pattern.share)})")
        else:
            lines.append(f"{n}. {pattern_title(pattern)}: {pattern.count} ({percent(pattern.share)})")
        lines.append(f"   message:  {pattern.template}")
        lines.append(f"   examples: {examples(pattern)}"[:_MESSAGE_WIDTH])
        lines.append(f"   likely:   {advice.kind.replace('_', ' ')}")
        lines.append(f"   check:    {advice.check}")
        lines.append(f"   change:   {advice.change}")
        command = model.pattern_command(pattern)
        if command:
            lines.append(f"   run:      {command}")
    if len(model.patterns) > len(shown):
        rest = sum(p.count for p in model.patterns[len(shown):])
        lines.append(f"... and {len(model.patterns) - len(shown)} more patterns ({rest} records): "
                     "report.to_json() lists them all")
    return lines


def fell_back(model: ReportModel) -> str:
    """What the report's fallback count means (the text and the panel say it alike)."""
    budget = "; counted by max_failures" if model.max_failures is not None else ""
    return f"succeeded with the fallback value{budget}"


def render_text(model: ReportModel) -> str:
    """The report as plain text lines, control characters escaped (:func:`printable`): record
    ids and error messages are other people's text, printed on the operator's terminal."""
    return printable(_render_text(model))


def _render_text(model: ReportModel) -> str:
    lines = [model.headline,
             f"Run ID: {model.run_id}" + (f"   Job: {model.job_id}" if model.job_id else "")]
    if model.stopped_reason:
        lines.append(f"Stopped early: {model.stopped_reason.replace('_', ' ')}")
    lines += [
        f"Total records: {model.total}",
        f"Succeeded:     {model.succeeded} ({percent(model.success_rate)})",
        f"Failed (DLQ):  {model.failed} ({percent(model.failure_rate)})",
        f"Pending:       {model.pending}",
        *([f"Compensated:   {model.compensated} (succeeded, then undone)"] if model.compensated else []),
        *([f"Fell back:     {model.fallbacks} ({fell_back(model)})"] if model.fallbacks else []),
        f"Retries:       {model.retries}",
        f"Duration:      {duration(model.duration_s)}   ({model.throughput:,.0f} records/s)",
        f"Batches:       {model.batches}" + (
            f" (+{model.skipped_batches} already done)" if model.skipped_batches else ""),
    ]
    if model.breaker_trips:
        lines.append(f"Breaker trips: {model.breaker_trips}")
    lines += [f"{label + ':':<15}{text}" for label, text in model.steering]
    if model.hook_errors:
        lines.append(f"Hook errors:   {model.hook_errors} (see the log)")
    if model.alert_failures:
        lines.append(f"Alerts not delivered: {model.alert_failures} (see the log)")
    lines += [f"Judged against: {line}" for line in model.judged_against]
    if model.failed:
        # A rolled-back batch's undone records are dead letters too: the types below count them.
        also = "" if model.entries is None else f"; {model.entries} dead letters with the records rolled back"
        lines += [_RULE, f"FAILED RECORDS ({model.failed}{also}), by error type:"]
        lines += [f"  {p.error_type}: {p.count} ({percent(p.share)})" for p in model.error_types]
        lines.append("")
        lines += _pattern_lines(model)
        lines.append("")
        for n, sample in enumerate(model.samples, 1):
            lines.append(f"{n}. record {sample.record_id!r} (#{sample.record_index}, batch {sample.batch_index})")
            lines.append(f"   {sample.error_class.upper()} {sample.error_type}: {sample.error_message}"
                         [:_MESSAGE_WIDTH])
            if sample.first_error:
                lines.append(f"   first failed with: {sample.first_error}"[:_MESSAGE_WIDTH])
            lines.append(f"   attempts: {sample.attempts}")
        if model.more_failures > 0:
            lines.append(f"... and {model.more_failures} more (see the dead-letter queue)")
        if model.dlq_url:
            lines.append(f"Dead letters in: {model.dlq_url}")
    lines += [_RULE, "NEXT STEPS:"]
    lines += [f"  {step_line(step.action, step.command)}" for step in model.next_steps]
    if not model.next_steps:
        lines.append("  none: every record succeeded")
    return "\n".join(lines)
