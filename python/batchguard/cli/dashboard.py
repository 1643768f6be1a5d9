"""The live dashboard's picture, drawn from progress snapshots (seed 003's "Full Batch
Processing in Progress" screen): a header, a row per batch, the status counts, rate and ETA.

Pure: :func:`render` takes a :class:`Board` (what the snapshots said so far) and a height, and
returns a rich renderable; ``cli/progress.py`` decides when to draw it, on its own thread.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.text import Text

from ..results import ActiveBatch, BatchProgress, BatchStats, FinishedBatches

__all__ = ["Board", "duration", "render"]

KEPT_DONE_ROWS: Final = 512
"""Finished batches kept for drawing: a terminal never shows more; the rest are counted."""
_BAR_WIDTH: Final = 20
_QUEUED_ROWS: Final = 3
"""Queued batches drawn as rows before the rest are counted in one."""
_FIXED_LINES: Final = 10
"""Lines the dashboard takes besides the batch rows (header, rules, counts, rate, breaker)."""


def duration(seconds: float | None, *, tenths: bool = False) -> str:
    """``45 s``, ``3 min 05 s``, ``1 h 02 min``; ``-`` when unknown. ``tenths``: under a minute,
    with tenths (``8.2 s``: a batch's time)."""
    if seconds is None:
        return "-"
    if tenths and seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


@dataclass
class Board:
    """What the snapshots said so far: the latest one, and the finished batches (each snapshot
    lists a finished batch once; the board keeps the newest :data:`KEPT_DONE_ROWS` and counts
    the rest)."""

    title: str
    mode: str | None = None
    concurrency: int | None = None
    header: dict[str, str] = field(default_factory=dict)
    last: BatchProgress | None = None
    done: collections.deque[Sequence[BatchStats]] = field(default_factory=collections.deque)
    """The snapshots' ``finished`` as they came, newest last: taking one in allocates nothing
    per batch (a snapshot after a thousand short batches, on the run's thread, would otherwise
    build a thousand rows, and the collector would walk the whole heap for them)."""
    done_rows: int = 0
    """Rows held in :attr:`done`."""
    done_count: int = 0
    done_succeeded: int = 0
    done_failed: int = 0
    done_retries: int = 0
    newest_done: int = -1
    """The highest batch index among the finished batches."""

    def add(self, progress: BatchProgress) -> None:
        """Take a snapshot in: O(1) allocations however many batches it lists as finished."""
        finished = progress.finished
        if finished:
            if isinstance(finished, FinishedBatches):
                newest, succeeded, failed, retries = finished.totals()
            else:
                newest = max(stats.batch_index for stats in finished)
                succeeded = sum(stats.succeeded for stats in finished)
                failed = sum(stats.failed for stats in finished)
                retries = sum(stats.retries for stats in finished)
            self.done.append(finished)
            self.done_rows += len(finished)
            while self.done_rows - len(self.done[0]) >= KEPT_DONE_ROWS:
                self.done_rows -= len(self.done.popleft())
            self.done_count += len(finished)
            self.done_succeeded += succeeded
            self.done_failed += failed
            self.done_retries += retries
            self.newest_done = max(self.newest_done, newest)
        self.last = progress

    def copy(self) -> Board:
        """A copy the drawing thread renders from while the run's thread adds to this one."""
        return replace(self, done=collections.deque(self.done))

    def recent_done(self, count: int) -> list[BatchStats]:
        """The ``count`` batches that finished last, in the order they finished."""
        rows: list[BatchStats] = []
        for chunk in reversed(self.done):
            if len(rows) >= count:
                break
            rows.extend(reversed(chunk[-(count - len(rows)):]))
        rows.reverse()
        return rows


def _items(index: int, size: int, batch_size: int) -> str:
    if not batch_size:
        return ""
    first = index * batch_size + 1
    return f"(items {first:,}-{first + size - 1:,})"


def _bar(done: float, size: float, width: int = _BAR_WIDTH) -> Text:
    """A bar of ``width`` cells, ``done`` of ``size`` filled (plain text: a rich ProgressBar
    in a table costs several times more to draw)."""
    filled = min(width, int(width * done // max(size, 1)))
    bar = Text("━" * filled, style="green")
    bar.append("━" * (width - filled), style="grey23")
    return bar


class _Rows:
    """The batch table: one line of text per batch, in fixed-width columns."""

    def __init__(self, batches_total: int | None, batch_size: int) -> None:
        self.width = len(f"{batches_total:,}") if batches_total else 3
        self.total = f"/{batches_total:,}" if batches_total else ""
        last = (batches_total or 1) * max(batch_size, 1)
        self.items_width = 2 * len(f"{last:,}") + 9
        self.lines: list[Text] = []

    def add(self, index: int, items: str, bar: Text, percent: float, status: Text,
            detail: str) -> None:
        line = Text(f"Batch {index + 1:>{self.width},}{self.total} ")
        line.append(f"{items:<{self.items_width}} ", style="dim")
        line.append_text(bar)
        line.append(f" {percent:3.0f}% ")
        line.append_text(status)
        line.append(" " * max(0, 18 - len(status)))
        line.append(f" {detail}", style="dim")
        self.lines.append(line)

    def note(self, text: str, style: str = "dim") -> None:
        self.lines.append(Text(text, style=style))

    def text(self) -> Text:
        # One line a row, cut with "…" at the terminal's edge: a wrapped row (20 batches of 1,000
        # in a retry is over 100 columns) took two lines the fold's room did not count.
        rows = Text("\n").join(self.lines)
        rows.no_wrap, rows.overflow = True, "ellipsis"
        return rows


def _done_row(rows: _Rows, b: BatchStats, batch_size: int) -> None:
    retries = f", {b.retries} {'retry' if b.retries == 1 else 'retries'}" if b.retries else ""
    if b.pending:
        status = Text(f"stopped, {b.pending} pending", style="yellow")
    elif b.failed:
        status = Text(f"done, {b.failed} failed", style="yellow")
    else:
        status = Text("done", style="green")
    rows.add(b.batch_index, _items(b.batch_index, b.size, batch_size),
             _bar(b.succeeded + b.failed, b.size), 100.0 * (b.succeeded + b.failed) / max(b.size, 1),
             status, f"({duration(b.duration_s, tenths=True)}{retries})")


def _open_row(rows: _Rows, b: ActiveBatch, batch_size: int) -> None:
    final = b.succeeded + b.failed
    if b.retrying:
        status = Text(f"retrying {b.retrying}", style="yellow")
    elif b.queued == b.size:
        status = Text("queued", style="dim")
    else:
        status = Text("running", style="cyan")
    extra = [f"{duration(b.elapsed, tenths=True)} elapsed"]
    if b.failed:
        extra.append(f"{b.failed} failed")
    if b.retries:
        extra.append(f"{b.retries} {'retry' if b.retries == 1 else 'retries'}")
    rows.add(b.index, _items(b.index, b.size, batch_size), _bar(final, b.size),
             100.0 * final / max(b.size, 1), status, f"({', '.join(extra)})")


def _batch_rows(board: Board, p: BatchProgress, room: int) -> Text:
    """The rows that fit in ``room`` lines: the open batches first, then up to
    :data:`_QUEUED_ROWS` queued ones, then the most recent finished ones; what does not fit is
    folded into one summary row each (finished batches first)."""
    rows = _Rows(p.batches_total, p.batch_size)
    room = max(room, 3)
    open_rows = list(p.batches)
    shown_open = open_rows[: max(1, room - 2)]
    more_open = len(open_rows) - len(shown_open)
    room -= len(shown_open) + (1 if more_open else 0)
    newest = max([b.index for b in open_rows] + [board.newest_done], default=-1)
    unread = max(0, (p.batches_total or 0) - 1 - newest)
    queued = min(unread, _QUEUED_ROWS, room)
    if unread > queued:
        queued = max(0, queued - 1)  # one line says how many more
    room -= queued + (1 if unread > queued else 0)
    done = min(board.done_rows, room)
    if board.done_count > done:
        done = max(0, done - 1)  # one line sums up the rest
    folded = board.done_count - done
    if folded:
        sums = (f"{board.done_succeeded + board.done_failed:,} checked" if board.mode == "dry-run"
                else f"{board.done_succeeded:,} succeeded, {board.done_failed:,} failed, "
                     f"{board.done_retries:,} retries")
        rows.note(f"✓ {folded:,} earlier batch{'es' if folded != 1 else ''} done · all done batches: {sums}",
                  style="green")
    # In batch order, as a person reads them: a batch can finish before an earlier one.
    drawn: list[BatchStats | ActiveBatch] = [*(board.recent_done(done) if done else ()), *shown_open]
    for row in sorted(drawn, key=lambda r: r.batch_index if isinstance(r, BatchStats) else r.index):
        if isinstance(row, BatchStats):
            _done_row(rows, row, p.batch_size)
        else:
            _open_row(rows, row, p.batch_size)
    if more_open:
        rows.note(f"… {more_open:,} more batches running")
    for index in range(newest + 1, newest + 1 + queued):
        size = p.batch_size if p.total is None else min(p.batch_size, p.total - index * p.batch_size)
        rows.add(index, _items(index, size, p.batch_size), _bar(0, size), 0.0,
                 Text("queued", style="dim"), "")
    if unread > queued:
        rest = unread - queued
        rows.note(f"⏸ {rest:,} {'more batches' if queued else 'batches'} queued" if rest != 1
                  else "⏸ 1 more batch queued")
    return rows.text()


def _header(board: Board, p: BatchProgress | None) -> RenderableType:
    total = "unknown" if p is None or p.total is None else f"{p.total:,}"
    facts = [f"Total: {total} records"]
    if p is not None and p.batch_size:
        facts.append(f"Batch size: {p.batch_size:,}")
    if board.concurrency is not None:
        facts.append(f"Concurrency: {board.concurrency}")
    facts.append(f"Mode: {board.mode or 'full'}")
    if p is not None:
        eta = p.eta_s
        facts.append("Estimated duration: " + ("estimating…" if eta is None
                                               else f"~{duration(p.elapsed_s + eta)}"))
    facts += [f"{k}: {v}" for k, v in board.header.items()]
    return Group(Text(board.title, style="bold"), Text(" · ".join(facts)))


def _counts(p: BatchProgress, checks: bool) -> Text:
    """The status counts; for a dry-run (``checks``) how many records were checked: its records
    never run, so "succeeded" would claim what the check did not, blocked records included."""
    unread = 0
    if p.total is not None:
        unread = max(0, p.total - p.records_processed - p.retrying - p.in_flight - p.queued)
    counts = ((("✓ checked", p.succeeded + p.failed, "green"),) if checks
              else (("✓ succeeded", p.succeeded, "green"), ("… in progress", p.in_flight, "cyan"),
                    ("↻ retrying", p.retrying, "yellow"), ("✗ failed", p.failed, "red")))
    text = Text()
    for label, value, style in (*counts, ("⏸ queued", p.queued + unread, "dim")):
        text.append(f"{label} {value:,}", style=style if value else "dim")
        text.append("   ")
    return text


def render(board: Board, height: int) -> RenderableType:
    """The dashboard for a terminal ``height`` lines tall."""
    p = board.last
    if p is None:
        return Group(_header(board, None), Text("starting…", style="dim"))
    batches = (f"Batch {p.batches_completed:,}/{p.batches_total:,}" if p.batches_total
               else f"Batch {p.batches_completed:,}")
    overall = Text(f"{batches} done ", style="bold")
    overall.append_text(_bar(p.percent_complete, 100.0, 40))
    if p.total is not None:
        overall.append(f" {p.percent_complete:5.1f}%")
    parts: list[RenderableType] = [_header(board, p), Rule(style="dim"),
                                   _batch_rows(board, p, height - _FIXED_LINES), Rule(style="dim"),
                                   overall, _counts(p, board.mode == "dry-run"),
                                   Text(f"{p.rate:,.0f} rec/s   ETA {duration(p.eta_s)}   "
                                        f"elapsed {duration(p.elapsed_s)}"
                                        + ("" if p.concurrency_limit is None else f"   limit {p.concurrency_limit}"))]
    if p.breaker_state != "closed":
        parts.append(Text(f"⚠ circuit breaker {p.breaker_state.upper()}: calls are held back",
                          style="bold red"))
    return Group(*parts)
