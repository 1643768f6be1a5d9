"""The final report of a command: the report model, as a rich panel on a terminal and as
``report.summary()``'s text otherwise, naming where the dead letters and the job are; and the
same model as JSON in a file (``--report-json PATH``)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from .._files import atomic_writer
from .._report.model import CliContext, ReportModel, build
from .._report.panel import render_panel, render_steps
from .._report.text import render_text
from .._urls import FILE_SCHEMES, parse_url, redact
from ..errors import ConfigError
from ..results import BatchReport
from .console import console, is_tty
from .options import DEFAULT_URL

__all__ = ["check_report_path", "print_model", "print_report", "report_json", "report_json_option", "report_path_clash",
           "save_report_json", "write_report_json"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _context(dlq_url: str | None, job_store: str | None, fn_spec: str | None) -> CliContext:
    return CliContext(dlq_url=None if dlq_url is None else redact(dlq_url),
                      store_url=None if job_store is None else redact(job_store),
                      default_url=DEFAULT_URL, fn_spec=fn_spec)


def report_json(report: BatchReport, *, dlq_url: str | None, job_store: str | None = None,
                fn_spec: str | None = None) -> dict[str, Any]:
    """``report.to_json()`` with the command line's commands (``--dlq`` / ``--store``, redacted,
    and the run's ``--fn``)."""
    return build(report, cli=_context(dlq_url, job_store, fn_spec)).to_json()


def print_report(report: BatchReport, *, dlq_url: str | None, job_store: str | None = None,
                 fn_spec: str | None = None) -> None:
    """Print ``report``: its commands carry ``--dlq`` / ``--store`` unless they are the default,
    and ``fn_spec`` as their ``--fn`` when given."""
    print_model(build(report, cli=_context(dlq_url, job_store, fn_spec)))


def print_model(model: ReportModel) -> None:
    """A report model on stdout: the rich panel and its commands (whole, soft-wrapped) on a
    terminal, plain text otherwise."""
    if is_tty(sys.stdout):
        terminal = console()
        terminal.print(render_panel(model))
        for line in render_steps(model):
            terminal.print(line, soft_wrap=True)
    else:
        click.echo(render_text(model))


def report_json_option(fn: _F) -> _F:
    """``--report-json PATH``: where the command writes its final report as JSON."""
    return click.option(
        "--report-json", "report_json_path", metavar="PATH", default=None,
        callback=_checked_path,
        help="Also write the final report as JSON to PATH (mode 0600, replaced atomically): "
             "counts, the threshold verdict, every failure pattern with its recommendation, "
             "the next steps.")(fn)


def _checked_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    problem = check_report_path(value)
    if problem is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def check_report_path(path: str) -> str | None:
    """Why the report cannot be written to ``path`` (None: it can): checked before the run
    starts, by creating (and removing) a file where the report will go, so a run of hours does
    not end in a report it cannot save."""
    target = Path(os.path.realpath(path))
    if target.is_dir():
        return f"{path} is a directory: give a file path, such as {os.path.join(path, 'report.json')}"
    if target.parent.exists() and not target.parent.is_dir():
        return f"cannot write {path}: {target.parent} is not a directory"
    if not target.parent.is_dir():
        return f"cannot write {path}: the directory {target.parent} does not exist"
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=target.parent)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return None


_SQLITE_SIDE_FILES: Final = ("", "-wal", "-shm", "-journal")


def report_path_clash(path: str, *, input_path: str | None,
                      backends: Sequence[tuple[str, str | None]]) -> str | None:
    """Why the report must not go to ``path`` (None: it may): it is the run's input, or a file
    of one of ``backends`` (label, URL: a sqlite or jsonl DLQ or job store, SQLite's side files
    included). The report replaces what is at its path: given the DLQ's database it destroyed
    every dead letter."""
    target = os.path.realpath(path)
    named: list[tuple[str, str]] = []
    if input_path is not None and input_path != "-":
        named.append((input_path, "the input"))
    for label, url in backends:
        if url is None or url.partition("://")[0].lower() not in FILE_SCHEMES:
            continue
        try:
            file = parse_url(url, label=label, schemes=FILE_SCHEMES, hint="").file_path()
        except ConfigError:
            continue  # a bad URL is reported by the command that opens it
        named += [(file + side, f"a file of the {label} {redact(url)}") for side in _SQLITE_SIDE_FILES]
    for file, what in named:
        if os.path.realpath(file) == target:
            return f"{path} is {what}: the report would replace it; give another path"
    return None


def save_report_json(path: str, data: dict[str, Any]) -> bool:
    """:func:`write_report_json`, after the run: False (and an error on stderr) when it cannot be
    written -- checked before the run, so the directory changed since; the command must then
    not read as a success, and the run's outcome is still printed."""
    try:
        write_report_json(path, data)
    except OSError as exc:
        click.echo(f"Error: cannot write the report to {path}: {exc.strerror or exc}", err=True)
        return False
    return True


def write_report_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON: a private (0600) file, replaced atomically."""
    with atomic_writer(path, overwrite=True, exists_error=FileExistsError) as out:
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
