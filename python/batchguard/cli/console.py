"""Where the commands write: terminal detection, rich consoles, tables plain or rich."""

from __future__ import annotations

import sys
from typing import IO

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._checks import printable

__all__ = ["console", "is_tty", "one_line", "plain_table", "table"]


def is_tty(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (a closed or odd stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr), styled only on a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, stderr=stderr, highlight=False, soft_wrap=False,
                   force_terminal=is_tty(stream) or None)


def one_line(text: str, width: int) -> str:
    """``text`` with its whitespace folded, cut to ``width`` characters, its control characters
    escaped (:func:`printable`: an error message's ``ESC[2J`` must not clear the screen)."""
    text = printable(" ".join(str(text).split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded with spaces: a table for a pipe or a file, control characters escaped."""
    headers = [printable(h) for h in headers]
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """Print a titled table: rich on a terminal, plain otherwise."""
    if not is_tty(sys.stdout):
        click.echo(title)
        click.echo(plain_table(headers, rows))
        return
    # Text, not str: rich parses a str cell as markup ("[/]" in a message raised MarkupError).
    shown = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, title_style="bold")
    for header in headers:
        # An id is never cut short: it is what `dlq show` and `dlq remove` take.
        shown.add_column(header, overflow="fold" if header in ("message", "error", "id") else "ellipsis")
    for row in rows:
        shown.add_row(*(Text(printable(cell)) for cell in row))
    console().print(shown)
