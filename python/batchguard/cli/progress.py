"""The live progress of a run: a dashboard on a terminal, plain lines otherwise.

On a terminal, ``on_progress`` only stores the snapshot (and adds its finished batches to the
board); a rich ``Live`` redraws the dashboard (``cli/dashboard.py``) from the latest one on its
own thread, at most :data:`REFRESH_PER_SECOND` times a second and only when a new snapshot came
in, so drawing never runs on the run's thread and costs it at most that many draws a second,
however fast records finish.

Off a terminal (a pipe, a file, CI logs), plain lines, each ``key value`` pairs separated by
``|`` so a person and a grep both read them:

* every :data:`PLAIN_PROGRESS_EVERY_S` seconds, the run's line
  (``batches 3/10 (30.0%) | succeeded 27 | failed 3 | retrying 2 | 15 rec/s | ETA 5 s``, then
  ``| breaker OPEN`` when the breaker is not closed; a dry-run's say ``checked 30`` in place of
  the succeeded, failed and retrying counts: its records are checked, not run);
* one line per finished batch when batches are slow: a batch line is printed only when the
  previous line is at least :data:`PLAIN_BATCH_EVERY_S` old, so a fast run prints no more than
  the run's lines and a slow one says when each batch ends
  (``batch 4/9 done | succeeded 5 | failed 0 | retries 1 | 20.1 s``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Final

import click
from rich.console import Console, RenderableType
from rich.live import Live

from ..results import BatchProgress, BatchStats
from .console import console as make_console
from .console import is_tty
from .dashboard import Board, duration, render

__all__ = ["ProgressView"]

PLAIN_PROGRESS_EVERY_S: Final = 5.0
PLAIN_BATCH_EVERY_S: Final = 1.0
REFRESH_PER_SECOND: Final = 2.0
"""Draws a second at most. A draw of a full terminal takes rich ~5-10 ms of the GIL: twice a
second keeps the dashboard's share of a run of trivial records under 2 %."""


class ProgressView:
    """``on_progress`` for the CLI: the live dashboard on a terminal, plain lines otherwise.

    ``mode`` (``"full"``, ``"dry-run"``, ``"sample"``), ``concurrency`` and ``header`` (more
    ``name: value`` facts) go in the dashboard's header. ``console`` replaces the terminal on
    stderr (a test or a benchmark draws to its own).
    """

    progress_every_batch = False
    """It draws at its own pace: a snapshot at most every 0.1 s is enough (the finished batches
    come in each one's ``finished``), and a run of short batches is not slowed by one per batch."""

    def __init__(self, *, title: str, quiet: bool = False, mode: str | None = None,
                 header: Mapping[str, str] | None = None, concurrency: int | None = None,
                 console: Console | None = None,
                 refresh_per_second: float = REFRESH_PER_SECOND) -> None:
        self.title = title
        self.quiet = quiet
        self._console = console
        self.live_mode = not quiet and (console.is_terminal if console is not None
                                        else is_tty(sys.stderr))
        self.refresh_per_second = refresh_per_second
        self.board = Board(title=title, mode=mode, concurrency=concurrency, header=dict(header or {}))
        self._lock = threading.Lock()  # the run's thread adds, the drawing thread reads
        self._last_plain = 0.0
        self._last_batch_line = 0.0

    @property
    def last(self) -> BatchProgress | None:
        """The latest snapshot."""
        return self.board.last

    def __call__(self, progress: BatchProgress) -> None:
        if self.quiet:
            return
        if self.live_mode:
            with self._lock:
                self.board.add(progress)
            return
        self.board.add(progress)
        now = time.monotonic()
        for stats in progress.finished:
            if now - self._last_batch_line >= PLAIN_BATCH_EVERY_S:
                self._last_batch_line = now
                click.echo(self.batch_line(stats, progress.batches_total, checks=self.checks), err=True)
        if now - self._last_plain >= PLAIN_PROGRESS_EVERY_S and not progress.final:
            self._last_plain = now
            click.echo(self.plain_line(progress, checks=self.checks), err=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Show the dashboard while the block runs (on a terminal), and its last state after,
        however the block ends."""
        if not self.live_mode:
            # The first lines after one interval: a run shorter than that prints only its report.
            self._last_plain = self._last_batch_line = time.monotonic()
            yield
            return
        console = self._console or make_console(stderr=True)
        with Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            stop = threading.Event()
            drawer = threading.Thread(target=self._draw, args=(live, console, stop),
                                      name="batchguard-dashboard", daemon=True)
            drawer.start()
            try:
                yield
            finally:
                stop.set()
                drawer.join()
                live.update(self.renderable(console.size.height), refresh=True)  # the last state

    def _draw(self, live: Live, console: Console, stop: threading.Event) -> None:
        """The drawing thread: redraw from the latest snapshot, at most
        ``refresh_per_second`` times a second, and only when a new snapshot came in (a draw
        takes milliseconds of the GIL: a run waiting on slow batches is not drawn for nothing)."""
        drawn: BatchProgress | None = None
        while not stop.wait(1.0 / self.refresh_per_second):
            if self.board.last is not drawn:
                drawn = self.board.last
                live.update(self.renderable(console.size.height), refresh=True)

    def renderable(self, height: int) -> RenderableType:
        """The dashboard for ``height`` lines, from the latest snapshot (the drawing thread)."""
        with self._lock:  # a copy, taken in microseconds: the run's thread never waits for a draw
            board = self.board.copy()
        return render(board, height)

    def _render(self, progress: BatchProgress | None, height: int = 40) -> RenderableType:
        """The dashboard after ``progress`` (tests draw a hand-made snapshot with it)."""
        if progress is not None and progress is not self.board.last:
            self.board.add(progress)
        return render(self.board, height)

    @property
    def checks(self) -> bool:
        """A dry-run: its records are checked, not run, so its counts are checks, not successes."""
        return self.board.mode == "dry-run"

    @staticmethod
    def plain_line(p: BatchProgress, *, checks: bool = False) -> str:
        """One line of progress, for a log or a pipe (``checks``: a dry-run's)."""
        batches = f"{p.batches_completed}/{p.batches_total}" if p.batches_total else str(p.batches_completed)
        percent = f" ({p.percent_complete:.1f}%)" if p.total else ""
        breaker = "" if p.breaker_state == "closed" else f" | breaker {p.breaker_state.upper()}"
        counts = (f"checked {p.succeeded + p.failed}" if checks
                  else f"succeeded {p.succeeded} | failed {p.failed} | retrying {p.retrying}")
        return (f"batches {batches}{percent} | {counts} | {p.rate:,.0f} rec/s | "
                f"ETA {duration(p.eta_s)}{breaker}")

    @staticmethod
    def batch_line(b: BatchStats, batches_total: int | None, *, checks: bool = False) -> str:
        """One finished batch, for a log or a pipe (``checks``: a dry-run's)."""
        of = f"/{batches_total}" if batches_total else ""
        state = f"stopped | pending {b.pending} | " if b.pending else "done | "
        counts = (f"checked {b.succeeded + b.failed}" if checks
                  else f"succeeded {b.succeeded} | failed {b.failed} | retries {b.retries}")
        return f"batch {b.batch_index + 1}{of} {state}{counts} | {duration(b.duration_s, tenths=True)}"
