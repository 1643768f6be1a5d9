"""The live progress of a run: a rich display on a terminal, a plain line every few seconds
otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Final

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..results import BatchProgress
from .console import console, is_tty

__all__ = ["ProgressView"]

_PLAIN_PROGRESS_EVERY_S: Final = 5.0


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


class ProgressView:
    """``on_progress`` for the CLI: a live rich display on a terminal, plain lines otherwise."""

    def __init__(self, *, title: str, quiet: bool = False) -> None:
        self.title = title
        self.quiet = quiet
        self.live_mode = not quiet and is_tty(sys.stderr)
        self._live: Live | None = None
        self._last_plain = 0.0
        self.last: BatchProgress | None = None

    def __call__(self, progress: BatchProgress) -> None:
        self.last = progress
        if self._live is not None:
            self._live.update(self._render(progress))
        elif not self.quiet and not self.live_mode:
            now = time.monotonic()
            if now - self._last_plain >= _PLAIN_PROGRESS_EVERY_S:
                self._last_plain = now
                click.echo(self.plain_line(progress), err=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Show the display while the block runs (on a terminal), and its last state after."""
        if not self.live_mode:
            self._last_plain = time.monotonic()  # the first plain line after one interval
            yield
            return
        with Live(self._render(None), console=console(stderr=True), refresh_per_second=8,
                  transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                if self.last is not None:
                    live.update(self._render(self.last))
                self._live = None

    @staticmethod
    def plain_line(p: BatchProgress) -> str:
        """One line of progress, for a log or a pipe."""
        batches = f"{p.batches_completed}/{p.batches_total}" if p.batches_total else str(p.batches_completed)
        percent = f" ({p.percent_complete:.1f}%)" if p.total else ""
        return (f"batches {batches}{percent} | succeeded {p.succeeded} | failed {p.failed} | "
                f"retrying {p.retrying} | {p.rate:,.0f} rec/s | ETA {_eta(p.eta_s)}")

    def _render(self, p: BatchProgress | None) -> RenderableType:
        if p is None:
            return Text(f"{self.title}: starting...", style="bold")
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(width=40)
        head.add_column(no_wrap=True)
        batches = (f"Batch {p.batches_completed}/{p.batches_total}" if p.batches_total
                   else f"Batch {p.batches_completed}")
        bar = ProgressBar(total=100.0, completed=p.percent_complete if p.total else 0.0,
                          pulse=not p.total, width=40)
        head.add_row(Text(f"{self.title}  {batches}", style="bold"), bar,
                     Text(f"{p.percent_complete:5.1f}%" if p.total else ""))
        stats = Table.grid(padding=(0, 3))
        for _ in range(6):
            stats.add_column(no_wrap=True)
        breaker = "" if p.breaker_state == "closed" else f"breaker {p.breaker_state.upper()}"
        stats.add_row(
            Text(f"✓ succeeded {p.succeeded:,}", style="green"),
            Text(f"✗ failed {p.failed:,}", style="red" if p.failed else "dim"),
            Text(f"↻ retrying {p.retrying:,}", style="yellow" if p.retrying else "dim"),
            Text(f"{p.rate:,.0f} rec/s"),
            Text(f"ETA {_eta(p.eta_s)}"),
            Text(breaker, style="bold red"),
        )
        return Group(head, stats)
