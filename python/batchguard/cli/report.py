"""The final report of a command: the report model, as a rich panel on a terminal and as
``report.summary()``'s text otherwise, naming where the dead letters and the job are."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._report.model import CliContext, build
from .._report.panel import render_panel
from .._report.text import render_text
from .._urls import redact
from ..results import BatchReport
from .console import console, is_tty
from .options import DEFAULT_URL

__all__ = ["print_report", "report_json"]


def _context(dlq_url: str | None, job_store: str | None) -> CliContext:
    return CliContext(dlq_url=None if dlq_url is None else redact(dlq_url),
                      store_url=None if job_store is None else redact(job_store),
                      default_url=DEFAULT_URL)


def report_json(report: BatchReport, *, dlq_url: str | None, job_store: str | None = None) -> dict[str, Any]:
    """``report.to_json()`` with the command line's next steps (``--dlq`` / ``--store``, redacted)."""
    return build(report, cli=_context(dlq_url, job_store)).to_json()


def print_report(report: BatchReport, *, dlq_url: str | None, job_store: str | None = None) -> None:
    """Print ``report``: its next steps carry ``--dlq`` / ``--store`` unless they are the default."""
    model = build(report, cli=_context(dlq_url, job_store))
    if is_tty(sys.stdout):
        console().print(render_panel(model))
    else:
        click.echo(render_text(model))
