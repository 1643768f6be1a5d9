"""The final report as text (``BatchReport.summary()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import BatchReport

_RULE = "-" * 64
_HEADLINES = {
    "complete": "BATCH COMPLETE",
    "partial_success": "BATCH COMPLETE (Partial Success)",
    "failed": "BATCH FAILED",
    "aborted": "BATCH ABORTED",
}


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {secs} s" if hours else f"{minutes} min {secs} s"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def render_summary(report: BatchReport, *, max_errors: int = 10) -> str:
    lines = [_HEADLINES.get(report.status, report.status.upper())]
    lines.append(f"Run ID: {report.run_id}" + (f"   Job: {report.job_id}" if report.job_id else ""))
    if report.stopped_reason:
        lines.append(f"Stopped early: {report.stopped_reason.replace('_', ' ')}")
    lines += [
        f"Total records: {report.total}",
        f"Succeeded:     {report.success_count} ({_pct(report.success_count, report.total)})",
        f"Failed (DLQ):  {report.failure_count} ({_pct(report.failure_count, report.total)})",
        f"Pending:       {report.pending_count}",
        f"Retries:       {report.retry_count}",
        f"Duration:      {_duration(report.duration_s)}   ({report.throughput:,.0f} records/s)",
        f"Batches:       {len(report.batches)}" + (
            f" (+{report.skipped_batches} already done)" if report.skipped_batches else ""),
    ]
    if report.breaker_trips:
        lines.append(f"Breaker trips: {report.breaker_trips}")
    if report.failure_count:
        lines += [_RULE, f"FAILED RECORDS ({report.failure_count}), by error type:"]
        for name, count in report.errors_by_type.items():
            lines.append(f"  {name}: {count} ({_pct(count, report.failure_count)})")
        shown = report.errors[:max_errors]
        lines.append("")
        for n, err in enumerate(shown, 1):
            lines.append(f"{n}. record {err.record_id!r} (#{err.record_index}, batch {err.batch_index})")
            lines.append(f"   {err.error_class.upper()} {err.error_type}: {err.error_message}"[:200])
            lines.append(f"   attempts: {err.attempts}")
        if report.failure_count > len(shown):
            lines.append(f"... and {report.failure_count - len(shown)} more (see the dead-letter queue)")
    lines += [_RULE, "NEXT STEPS:"]
    if report.failure_count:
        lines.append(f"  review the {report.failure_count} dead-lettered records: batchguard dlq list")
        lines.append("  replay them once fixed: batchguard dlq retry --fn MODULE:CALLABLE")
    if report.pending_count:
        lines.append(f"  {report.pending_count} records were not processed: resume the job to finish them")
    if not report.failure_count and not report.pending_count:
        lines.append("  none: every record succeeded")
    return "\n".join(lines)
