"""The report model as plain text: what ``BatchReport.summary()`` returns and the command prints
off a terminal."""

from __future__ import annotations

from typing import Final

from .model import ReportModel

__all__ = ["duration", "percent", "render_text", "step_line"]

_RULE: Final = "-" * 64
_MESSAGE_WIDTH: Final = 200


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


def render_text(model: ReportModel) -> str:
    """The report as plain text lines."""
    lines = [model.headline,
             f"Run ID: {model.run_id}" + (f"   Job: {model.job_id}" if model.job_id else "")]
    if model.stopped_reason:
        lines.append(f"Stopped early: {model.stopped_reason.replace('_', ' ')}")
    lines += [
        f"Total records: {model.total}",
        f"Succeeded:     {model.succeeded} ({percent(model.success_rate)})",
        f"Failed (DLQ):  {model.failed} ({percent(model.failure_rate)})",
        f"Pending:       {model.pending}",
        f"Retries:       {model.retries}",
        f"Duration:      {duration(model.duration_s)}   ({model.throughput:,.0f} records/s)",
        f"Batches:       {model.batches}" + (
            f" (+{model.skipped_batches} already done)" if model.skipped_batches else ""),
    ]
    if model.breaker_trips:
        lines.append(f"Breaker trips: {model.breaker_trips}")
    if model.failed:
        lines += [_RULE, f"FAILED RECORDS ({model.failed}), by error type:"]
        lines += [f"  {p.error_type}: {p.count} ({percent(p.share)})" for p in model.patterns]
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
