"""The report model as a rich panel: what the ``batchguard`` command shows on a terminal."""

from __future__ import annotations

from typing import Final

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .model import ReportModel
from .text import duration, percent, step_line

__all__ = ["render_panel"]

_LOOKS: Final = {
    "complete": ("✅", "bold green"),
    "partial_success": ("⚠️ ", "bold yellow"),
    "failed": ("❌", "bold red"),
    "aborted": ("⛔", "bold red"),
}
_MESSAGE_WIDTH: Final = 120


def render_panel(model: ReportModel) -> Panel:
    """The report as a bordered panel: facts, error patterns, failed records, next steps."""
    icon, style = _LOOKS.get(model.tone, ("", "bold"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column()
    # Every cell that holds the user's text (a job name, a URL, a record id, an error message)
    # is a Text: a str cell is parsed as rich markup ("[/]" in a message raised MarkupError).
    facts.add_row("Run", Text(model.run_id + (f"   job {model.job_id}" if model.job_id else "")))
    if model.stopped_reason:
        facts.add_row("Stopped early", model.stopped_reason.replace("_", " "))
    facts.add_row("Total records", f"{model.total:,}")
    facts.add_row("Succeeded", Text(f"{model.succeeded:,} ({percent(model.success_rate)})", style="green"))
    facts.add_row("Failed (DLQ)", Text(f"{model.failed:,} ({percent(model.failure_rate)})",
                                       style="red" if model.failed else ""))
    if model.pending:
        facts.add_row("Pending", Text(f"{model.pending:,}", style="yellow"))
    facts.add_row("Retries", f"{model.retries:,}")
    facts.add_row("Duration", f"{duration(model.duration_s)}   ({model.throughput:,.0f} records/s)")
    facts.add_row("Batches", f"{model.batches}" + (
        f" (+{model.skipped_batches} already done)" if model.skipped_batches else ""))
    if model.breaker_trips:
        facts.add_row("Breaker trips", str(model.breaker_trips))
    if model.failed and model.dlq_url:
        facts.add_row("Dead letters in", Text(model.dlq_url))
    parts: list[RenderableType] = [Text(f"{icon} {model.headline}".strip(), style=style), facts]
    if model.failed:
        parts += [Text(""), _patterns(model), Text(""), _samples(model)]
    if model.next_steps:
        parts += [Text(""), Text("Next steps", style="bold"),
                  *(Text(f"  {step_line(step.action, step.command)}") for step in model.next_steps)]
    return Panel(Group(*parts), expand=False, border_style=style.split()[-1])


def _patterns(model: ReportModel) -> Table:
    table = Table(title="Error patterns", title_justify="left", box=None, padding=(0, 2))
    table.add_column("error type")
    table.add_column("records", justify="right")
    table.add_column("share", justify="right")
    for pattern in model.patterns:
        table.add_row(Text(pattern.error_type), f"{pattern.count:,}", percent(pattern.share))
    return table


def _samples(model: ReportModel) -> Table:
    table = Table(title=f"Failed records (first {len(model.samples)})", title_justify="left", box=None,
                  padding=(0, 2))
    for column in ("#", "record", "class", "error", "tries"):
        table.add_column(column, no_wrap=column != "error", overflow="ellipsis")
    for n, sample in enumerate(model.samples, 1):
        error = f"{sample.error_type}: {sample.error_message}"[:_MESSAGE_WIDTH]
        if sample.first_error:
            error += f"\n(first failed with {sample.first_error[:_MESSAGE_WIDTH]})"
        table.add_row(str(n), Text(str(sample.record_id)), sample.error_class, Text(error),
                      str(sample.attempts))
    return table
