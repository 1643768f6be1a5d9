"""The report model as a rich panel: what the ``batchguard`` command shows on a terminal."""

from __future__ import annotations

import textwrap
from typing import Final

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .._checks import printable
from .model import ReportModel
from .rules import ROLLED_BACK_TYPE
from .text import MAX_PATTERNS_SHOWN, duration, examples, fell_back, pattern_title, percent

__all__ = ["render_panel", "render_steps"]

_LOOKS: Final = {
    "complete": ("✅", "bold green"),
    "partial_success": ("⚠️ ", "bold yellow"),
    "failed": ("❌", "bold red"),
    "aborted": ("⛔", "bold red"),
}
_MESSAGE_WIDTH: Final = 120
_STEP_WIDTH: Final = 80


def _text(text: str, style: str = "") -> Text:
    """The user's text (a record id, an error message, a URL) as a cell: a Text, so that rich
    reads no markup in it, with its control characters escaped (:func:`printable`), so that
    ``ESC[2J`` in an error message shows as ``\\x1b[2J`` instead of clearing the screen."""
    return Text(printable(text), style=style)


def render_panel(model: ReportModel) -> Panel:
    """The report as a bordered panel: facts, error types, failure patterns with their
    recommendations, failed records. The next steps go below it (:func:`render_steps`)."""
    icon, style = _LOOKS.get(model.tone, ("", "bold"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column()
    # Every cell that holds the user's text (a job name, a URL, a record id, an error message)
    # is a Text: a str cell is parsed as rich markup ("[/]" in a message raised MarkupError).
    facts.add_row("Run", _text(model.run_id + (f"   job {model.job_id}" if model.job_id else "")))
    if model.stopped_reason:
        facts.add_row("Stopped early", model.stopped_reason.replace("_", " "))
    facts.add_row("Total records", f"{model.total:,}")
    facts.add_row("Succeeded", Text(f"{model.succeeded:,} ({percent(model.success_rate)})", style="green"))
    facts.add_row("Failed (DLQ)", Text(f"{model.failed:,} ({percent(model.failure_rate)})",
                                       style="red" if model.failed else ""))
    if model.pending:
        facts.add_row("Pending", Text(f"{model.pending:,}", style="yellow"))
    if model.compensated:
        facts.add_row("Compensated", Text(f"{model.compensated:,} (succeeded, then undone)", style="yellow"))
    if model.fallbacks:
        facts.add_row("Fell back", Text(f"{model.fallbacks:,} ({fell_back(model)})", style="yellow"))
    facts.add_row("Retries", f"{model.retries:,}")
    facts.add_row("Duration", f"{duration(model.duration_s)}   ({model.throughput:,.0f} records/s)")
    facts.add_row("Batches", f"{model.batches}" + (
        f" (+{model.skipped_batches} already done)" if model.skipped_batches else ""))
    if model.breaker_trips:
        facts.add_row("Breaker trips", str(model.breaker_trips))
    for label, text in model.steering:
        facts.add_row(label, text)
    if model.hook_errors:
        facts.add_row("Hook errors", Text(f"{model.hook_errors:,} (see the log)", style="yellow"))
    if model.alert_failures:
        facts.add_row("Alerts not delivered", Text(f"{model.alert_failures:,} (see the log)", style="yellow"))
    for line in model.judged_against:
        facts.add_row("Judged against", line)
    if model.failed and model.dlq_url:
        facts.add_row("Dead letters in", _text(model.dlq_url))
    parts: list[RenderableType] = [Text(f"{icon} {model.headline}".strip(), style=style), facts]
    if model.failed:
        parts += [Text(""), _error_types(model), Text(""), _patterns(model), Text(""), _samples(model)]
    return Panel(Group(*parts), expand=False, border_style=style.split()[-1])


def render_steps(model: ReportModel) -> list[Text]:
    """The failure patterns' commands, then the next steps, outside the panel (in a panel cell a
    command wrapped inside the border, and a copy came out in pieces): each pattern's title, or
    each action, on its line and its command alone on the next, four spaces in (after "action: "
    a command wrapped mid-word even on a 100-column terminal, and a person selecting it picked up
    the action's words too). Print them with ``soft_wrap=True``, so a command longer than the
    terminal is one line the terminal wraps (copied whole). Empty when every record succeeded."""
    lines: list[Text] = []
    commands = [(n, pattern, model.pattern_command(pattern))
                for n, pattern in enumerate(model.patterns[:MAX_PATTERNS_SHOWN], 1)]
    if any(command for _, _, command in commands):
        lines.append(Text("Failure patterns: what to run", style="bold"))
    for n, pattern, command in commands:
        if command:
            lines += [_text(line) for line in textwrap.wrap(f"{n}. {pattern_title(pattern)}:", _STEP_WIDTH,
                                                            initial_indent="  ", subsequent_indent="     ")]
            lines.append(_text(f"    {command}", style="cyan"))
    lines += [Text("Next steps", style="bold")] if model.next_steps else []
    for step in model.next_steps:
        # The action is prose: wrapped here at word boundaries to fit 80 columns (printed with
        # soft_wrap, the terminal would cut it mid-word), two spaces in, as the command is four.
        action = f"{step.action}:" if step.command else step.action
        lines += [_text(line) for line in textwrap.wrap(action, _STEP_WIDTH, initial_indent="  ",
                                                        subsequent_indent="  ")]
        if step.command:
            lines.append(_text(f"    {step.command}"))
    return lines


def _error_types(model: ReportModel) -> Table:
    table = Table(title="Error types", title_justify="left", box=None, padding=(0, 2))
    table.add_column("error type")
    table.add_column("records", justify="right")
    table.add_column("share", justify="right")
    for pattern in model.error_types:
        table.add_row(_text(pattern.error_type), f"{pattern.count:,}", percent(pattern.share))
    return table


def _patterns(model: ReportModel) -> Group:
    """Each pattern: what failed, how often, examples, then its recommendation."""
    shown = model.patterns[:MAX_PATTERNS_SHOWN]
    lines: list[RenderableType] = [Text(f"Failure patterns ({len(model.patterns)}, most frequent first)",
                                        style="bold")]
    for n, pattern in enumerate(shown, 1):
        advice = pattern.recommendation
        if pattern.error_type == ROLLED_BACK_TYPE:
            lines.append(Text.assemble((printable(f"{n}. {model.rolled_back_title(pattern)}"), "bold"),
                                       f"  ({percent(pattern.share)})"))
        else:
            lines.append(Text.assemble((printable(f"{n}. {pattern_title(pattern)}"), "bold"),
                                       f"  {pattern.count:,} records ({percent(pattern.share)})"))
        details = Table.grid(padding=(0, 1))
        details.add_column(style="dim", no_wrap=True)
        details.add_column()
        details.add_row("   message", _text(pattern.template))
        details.add_row("   examples", _text(examples(pattern)))
        details.add_row("   likely", Text(advice.kind.replace("_", " "), style="yellow"))
        details.add_row("   check", _text(advice.check))
        details.add_row("   change", _text(advice.change))
        if model.pattern_command(pattern):
            # Not the command itself: in this cell it wraps inside the border (render_steps).
            details.add_row("   run", Text(f"below the panel, under {n}.", style="cyan"))
        lines.append(details)
    if len(model.patterns) > len(shown):
        rest = sum(p.count for p in model.patterns[len(shown):])
        lines.append(Text(f"... and {len(model.patterns) - len(shown)} more patterns ({rest:,} records): "
                          "--report-json lists them all", style="dim"))
    return Group(*lines)


def _samples(model: ReportModel) -> Table:
    table = Table(title=f"Failed records (first {len(model.samples)})", title_justify="left", box=None,
                  padding=(0, 2))
    for column in ("#", "record", "class", "error", "tries"):
        table.add_column(column, no_wrap=column != "error", overflow="ellipsis")
    for n, sample in enumerate(model.samples, 1):
        error = f"{sample.error_type}: {sample.error_message}"[:_MESSAGE_WIDTH]
        if sample.first_error:
            error += f"\n(first failed with {sample.first_error[:_MESSAGE_WIDTH]})"
        table.add_row(str(n), _text(str(sample.record_id)), sample.error_class, _text(error),
                      str(sample.attempts))
    return table
