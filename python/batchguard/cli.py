"""The ``batchguard`` command: run a callback over a file, manage dead letters and jobs, demo.

Exit codes: 0 the run completed (every record succeeded); 1 it ended partial_success, failed
or aborted; 2 it could not start (bad usage, unreadable input, a ``--fn`` that does not import,
a bad or unreachable DLQ / job store, a job name reused with different input); 130 interrupted.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final, NoReturn, TypeVar

import click

from . import __version__
from ._files import private_dir
from ._inputs import FORMATS, InputError, RecordSource, StreamSource, guard_parse_errors, open_input
from .dlq.base import FILTER_FIELDS, DeadLetter, DeadLetterQueue
from .dlq.urls import redact
from .errors import (BatchguardError, ConfigError, DLQError, DLQUnavailableError, JobError,
                     PickleNotAllowedError)
from .jobs import DEFAULT_STORE_URL, JobNotFoundError, JobStatus, JobStoreUnavailableError
from .policies import ErrorClass, RetryPolicy
from .results import BatchProgress, BatchReport

__all__ = ["DEFAULT_URL", "load_callable", "main"]

DEFAULT_URL: Final = DEFAULT_STORE_URL
"""Default DLQ and job store: ``batchguard.db`` in the working directory."""

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_F = TypeVar("_F", bound=Callable[..., Any])
_PLAIN_PROGRESS_EVERY_S: Final = 5.0
_PATTERN_SCAN: Final = 10_000


class CannotStart(click.ClickException):
    """Nothing ran: bad configuration, input or backend (exit 2)."""

    exit_code = EXIT_USAGE


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, stderr=stderr, highlight=False, soft_wrap=False,
                   force_terminal=_is_tty(stream) or None)


# ---------------------------------------------------------------------------- --fn


def load_callable(spec: str) -> Callable[[Any], Any]:
    """The callable named by ``MODULE:CALLABLE`` (or ``path/to/file.py:CALLABLE``).

    The working directory is importable, as with ``python -m``. Errors name the spec.

    >>> load_callable("json:dumps")([1])
    '[1]'
    >>> load_callable("no_such_module_xyz:f")
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: cannot import 'no_such_module_xyz:f': No module named 'no_such_module_xyz'
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not MODULE:CALLABLE (e.g. mypackage.tasks:process)",
                                 param_hint="'--fn'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ImportError(f"no file {module_name}")
            unit = importlib.util.spec_from_file_location(path.stem, path)
            if unit is None or unit.loader is None:
                raise ImportError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(unit)
            sys.modules.setdefault(path.stem, module)
            unit.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the module raises, the spec is at fault
        detail = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        raise click.BadParameter(f"cannot import {spec!r}: {detail}", param_hint="'--fn'") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise click.BadParameter(f"cannot import {spec!r}: {module_name!r} has no attribute "
                                     f"{attr!r}", param_hint="'--fn'") from None
    if not callable(target):
        raise click.BadParameter(f"{spec!r} is a {type(target).__name__}, not a callable",
                                 param_hint="'--fn'")
    return target  # type: ignore[no-any-return]


def _portable_spec(spec: str) -> str:
    """``spec`` with a file path made absolute, so ``jobs resume`` finds it from anywhere."""
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        return f"{os.path.abspath(module_name)}:{attr}"
    return spec


def _file_of(url: str) -> Path | None:
    """The file of a sqlite:/// or jsonl:/// URL (SQLAlchemy's convention), else None."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("sqlite", "jsonl") and rest.startswith("/") and len(rest) > 1:
        return Path(rest[1:].partition("?")[0])
    return None


def _absolute_url(url: str) -> str:
    """A file URL made absolute (``sqlite:////abs/path``), so it means the same from any cwd."""
    path = _file_of(url)
    if path is None:
        return url
    scheme = url.partition("://")[0]
    return f"{scheme}:///{path.resolve()}"


# ---------------------------------------------------------------------------- live progress


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
        self.live_mode = not quiet and _is_tty(sys.stderr)
        self._live: Any = None
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
        if not self.live_mode:
            self._last_plain = time.monotonic()  # the first plain line after one interval
            yield
            return
        from rich.live import Live

        with Live(self._render(None), console=_console(stderr=True), refresh_per_second=8,
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
        batches = f"{p.batches_completed}/{p.batches_total}" if p.batches_total else str(p.batches_completed)
        percent = f" ({p.percent_complete:.1f}%)" if p.total else ""
        return (f"batches {batches}{percent} | succeeded {p.succeeded} | failed {p.failed} | "
                f"retrying {p.retrying} | {p.rate:,.0f} rec/s | ETA {_eta(p.eta_s)}")

    def _render(self, p: BatchProgress | None) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

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


# ---------------------------------------------------------------------------- the report

_HEADLINES: Final = {
    "complete": ("✅ BATCH COMPLETE", "bold green"),
    "partial_success": ("⚠️  BATCH COMPLETE (Partial Success)", "bold yellow"),
    "failed": ("❌ BATCH FAILED", "bold red"),
    "aborted": ("⛔ BATCH ABORTED", "bold red"),
}


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def print_report(report: BatchReport, *, dlq_url: str | None, job_store: str | None = None) -> None:
    """The final report: rich on a terminal, ``report.summary()`` text otherwise."""
    hints = _next_steps(report, dlq_url, job_store)
    if not _is_tty(sys.stdout):
        # summary() ends with generic next steps; add only what it cannot know: where things are.
        click.echo(report.summary())
        if dlq_url and report.failure_count:
            click.echo(f"Dead letters in: {redact(dlq_url)}")
        for hint in hints:
            if "jobs resume" in hint:
                click.echo(f"  {hint}")
        return
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = _console()
    title, style = _HEADLINES.get(report.status, (report.status.upper(), "bold"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column()
    facts.add_row("Run", report.run_id + (f"   job {report.job_id}" if report.job_id else ""))
    if report.stopped_reason:
        facts.add_row("Stopped early", report.stopped_reason.replace("_", " "))
    facts.add_row("Total records", f"{report.total:,}")
    facts.add_row("Succeeded", Text(f"{report.success_count:,} ({_pct(report.success_count, report.total)})",
                                    style="green"))
    facts.add_row("Failed (DLQ)", Text(f"{report.failure_count:,} ({_pct(report.failure_count, report.total)})",
                                       style="red" if report.failure_count else ""))
    if report.pending_count:
        facts.add_row("Pending", Text(f"{report.pending_count:,}", style="yellow"))
    facts.add_row("Retries", f"{report.retry_count:,}")
    facts.add_row("Duration", f"{report.duration_s:.2f} s   ({report.throughput:,.0f} records/s)")
    batches = f"{len(report.batches)}"
    if report.skipped_batches:
        batches += f" (+{report.skipped_batches} already done)"
    facts.add_row("Batches", batches)
    if report.breaker_trips:
        facts.add_row("Breaker trips", str(report.breaker_trips))
    parts: list[Any] = [Text(title, style=style), facts]
    if report.failure_count:
        by_type = Table(title="Error patterns", title_justify="left", box=None, padding=(0, 2))
        by_type.add_column("error type")
        by_type.add_column("records", justify="right")
        by_type.add_column("share", justify="right")
        for name, count in report.errors_by_type.items():
            by_type.add_row(name, f"{count:,}", _pct(count, report.failure_count))
        parts += [Text(""), by_type]
        first = Table(title="Failed records (first 10)", title_justify="left", box=None, padding=(0, 2))
        for column in ("#", "record", "class", "error", "tries"):
            first.add_column(column, no_wrap=column != "error", overflow="ellipsis")
        for n, err in enumerate(report.errors[:10], 1):
            first.add_row(str(n), str(err.record_id), err.error_class,
                          f"{err.error_type}: {err.error_message}"[:120], str(err.attempts))
        parts += [Text(""), first]
    if hints:
        parts += [Text(""), Text("Next steps", style="bold"), *(Text(f"  {h}") for h in hints)]
    console.print(Panel(Group(*parts), expand=False, border_style=style.split()[-1]))


def _next_steps(report: BatchReport, dlq_url: str | None, job_store: str | None) -> list[str]:
    hints: list[str] = []
    dlq = f" --dlq {redact(dlq_url)}" if dlq_url and dlq_url != DEFAULT_URL else ""
    if report.failure_count:
        hints.append(f"review the dead letters:   batchguard dlq list{dlq}")
        hints.append(f"replay them once fixed:    batchguard dlq retry --fn MODULE:CALLABLE{dlq}")
    if report.pending_count and report.job_id:
        store = f" --store {redact(job_store)}" if job_store and job_store != DEFAULT_URL else ""
        hints.append(f"finish the job:            batchguard jobs resume {report.job_id}{store}")
    return hints


# ---------------------------------------------------------------------------- running


def _retry(max_attempts: int, base_delay: float) -> RetryPolicy:
    try:
        return RetryPolicy(max_attempts=max_attempts, base_delay=base_delay)
    except (ConfigError, TypeError) as exc:
        raise CannotStart(str(exc)) from None


def _cannot_start(exc: BaseException) -> NoReturn:
    raise CannotStart(str(exc)) from None


def execute_run(*, source: RecordSource | StreamSource, fn: Callable[[Any], Any], fn_spec: str,
                dlq_url: str | None, job: str | None, store_url: str | None, batch_size: int,
                concurrency: int, max_attempts: int, base_delay: float, force: bool,
                quiet: bool, title: str = "batchguard") -> int:
    """Run ``fn`` over ``source`` (as a job when ``job`` is given); print the report; exit code."""
    from .api import execute, make_plan
    from .jobs import job_status, run_job

    view = ProgressView(title=title, quiet=quiet)
    effective_dlq = dlq_url if dlq_url is not None else (None if job else DEFAULT_URL)
    try:
        plan = make_plan(source, guard_parse_errors(fn), batch_size=batch_size,
                         concurrency=concurrency, retry=_retry(max_attempts, base_delay),
                         classifier=None, breaker=None, dlq=effective_dlq, id_of=None,
                         on_progress=None if quiet else view, success_threshold=None,
                         max_failures=None, stage="process", engine="native", pickle_payloads=False)
    except (ConfigError, DLQUnavailableError, TypeError, ModuleNotFoundError) as exc:
        _cannot_start(exc)
    try:
        with view.running():
            if job is None:
                report = execute(plan)
            else:
                saved_dlq = None if dlq_url is None else _absolute_url(dlq_url)
                meta = {"cli": {
                    "input": source.path if source.path == "-" else os.path.abspath(source.path),
                    "format": source.format, "fn": _portable_spec(fn_spec), "cwd": os.getcwd(),
                    "dlq": None if saved_dlq is None else redact(saved_dlq),
                    "batch_size": batch_size, "concurrency": concurrency,
                    "max_attempts": max_attempts, "base_delay": base_delay,
                }}
                report = run_job(plan, job=job, store=store_url, force=force, meta=meta)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished batches are saved" + (
            f"; resume with: batchguard jobs resume {job}" if job else ""), err=True)
        return EXIT_INTERRUPTED
    except (ConfigError, JobError, JobStoreUnavailableError, DLQUnavailableError) as exc:
        _cannot_start(exc)
    except BatchguardError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_INCOMPLETE
    finally:
        if plan.dlq is not None and effective_dlq is not None:
            plan.dlq.close()
    shown_dlq = effective_dlq if effective_dlq is not None else (store_url or DEFAULT_URL)
    if job is not None and report.total == 0 and report.skipped_batches:
        state = job_status(job, store=store_url)
        click.echo(f"Job {job!r} is already {state.status} ({state.batches_done} batches, "
                   f"{state.succeeded:,} succeeded, {state.failed:,} dead-lettered, finished "
                   f"{state.finished_at}): nothing to do; --force runs it again from scratch.")
        return EXIT_OK
    print_report(report, dlq_url=shown_dlq, job_store=store_url)
    if job is not None:
        state = job_status(job, store=store_url)
        click.echo(f"Job {job!r}: {state.status}, {state.batches_done}"
                   f"{'/' + str(state.batches_total) if state.batches_total else ''} batches done, "
                   f"{state.succeeded:,} succeeded, {state.failed:,} dead-lettered in all runs.")
    return EXIT_OK if report.status == "complete" else EXIT_INCOMPLETE


def _open_source(path: str, fmt: str | None) -> RecordSource | StreamSource:
    try:
        return open_input(path, fmt)  # type: ignore[arg-type]
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="'INPUT'") from None


# ---------------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchguard")
def main() -> None:
    """Fault-tolerant batch processing: run a callback over records, isolate and retry failures,
    keep dead letters, resume jobs.

    \b
    Start here:   batchguard demo
    Run a file:   batchguard run records.jsonl --fn mymodule:process --job nightly
    """


def _dlq_option(default: str | None = DEFAULT_URL, help_text: str | None = None) -> Callable[[_F], _F]:
    return click.option("--dlq", "dlq_url", metavar="URL", default=default, show_default=default is not None,
                        help=help_text or "Dead-letter queue: sqlite:///x.db, jsonl:///x.jsonl, "
                                          "redis://..., postgresql://...")


def _store_option(fn: _F) -> _F:
    return click.option("--store", "store_url", metavar="URL", default=DEFAULT_URL, show_default=True,
                        help="Job store: sqlite:///x.db or postgresql://...")(fn)


@main.command(short_help="Run --fn over the records of INPUT.")
@click.argument("input_path", metavar="INPUT")
@click.option("--fn", "fn_spec", required=True, metavar="MODULE:CALLABLE",
              help="The callback run on each record (the working directory is importable).")
@_dlq_option(None, "Dead-letter queue URL [default: sqlite:///batchguard.db; with --job, the job "
                   "store's database]")
@click.option("--job", metavar="NAME", help="Run as a resumable job: rerunning it resumes it.")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="Job store URL (with --job) [default: sqlite:///batchguard.db]")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Records in flight at once.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Tries per record, the first included.")
@click.option("--base-delay", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              metavar="S", help="First retry delay in seconds (doubles each retry, with jitter).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Input format [default: from the extension, else the content].")
@click.option("--force", is_flag=True, help="With --job: run a completed job again from scratch.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def run(input_path: str, fn_spec: str, dlq_url: str | None, job: str | None, store_url: str | None,
        batch_size: int, concurrency: int, max_attempts: int, base_delay: float, fmt: str | None,
        force: bool, quiet: bool) -> None:
    """Run --fn over every record of INPUT (JSON lines, CSV, a JSON array; - for stdin).

    A line that does not parse is dead-lettered with a parse error and the run goes on.
    """
    if store_url is not None and job is None:
        raise click.UsageError("--store is only used with --job NAME")
    if force and job is None:
        raise click.UsageError("--force is only used with --job NAME")
    source = _open_source(input_path, fmt)
    fn = load_callable(fn_spec)
    code = execute_run(source=source, fn=fn, fn_spec=fn_spec, dlq_url=dlq_url, job=job,
                       store_url=(store_url or DEFAULT_URL) if job else None, batch_size=batch_size,
                       concurrency=concurrency, max_attempts=max_attempts, base_delay=base_delay,
                       force=force, quiet=quiet)
    sys.exit(code)


# -- dlq -------------------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Inspect, export, remove and replay dead letters."""


def _filter_options(fn: _F) -> _F:
    options = [
        click.option("--error-type", metavar="NAME", help="Exception type name, e.g. KeyError."),
        click.option("--error-class", type=click.Choice([c.value for c in ErrorClass]),
                     help="How the failure was classified."),
        click.option("--job", "job_id", metavar="NAME", help="Entries of this job."),
        click.option("--stage", metavar="NAME", help="Entries of this stage."),
        click.option("--run-id", metavar="ID", help="Entries of this run."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _filters(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if name in FILTER_FIELDS and value is not None}


def _open_queue(url: str) -> DeadLetterQueue:
    from .dlq.urls import open_dlq

    path = _file_of(url)
    if path is not None and not path.exists():
        raise CannotStart(f"no dead-letter queue at {path} (from {redact(url)}): the file does not exist")
    try:
        return open_dlq(url)
    except (ConfigError, DLQUnavailableError, TypeError, ModuleNotFoundError) as exc:
        _cannot_start(exc)


@contextlib.contextmanager
def _queue(url: str) -> Iterator[DeadLetterQueue]:
    queue = _open_queue(url)
    try:
        yield queue
    finally:
        queue.close()


def _one_line(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _plain_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    if not _is_tty(sys.stdout):
        click.echo(title)
        click.echo(_plain_table(headers, rows))
        return
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, title_style="bold")
    for header in headers:
        # An id is never cut short: it is what `dlq show` and `dlq remove` take.
        table.add_column(header, overflow="fold" if header in ("message", "error", "id") else "ellipsis")
    for row in rows:
        table.add_row(*row)
    _console().print(table)


@dlq.command("list")
@_dlq_option()
@_filter_options
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
def dlq_list(dlq_url: str, limit: int, offset: int, **given: Any) -> None:
    """Review dead letters: error patterns, then one row per entry."""
    filters = _filters(**given)
    with _queue(dlq_url) as queue:
        total = queue.count(**filters)
        entries = queue.list(limit=limit, offset=offset, **filters)
        patterns = Counter(e.error_type for e in queue.list(limit=_PATTERN_SCAN, **filters)) if total else Counter()
    where = redact(dlq_url) + (" where " + ", ".join(f"{k}={v}" for k, v in filters.items()) if filters else "")
    click.echo(f"DEAD LETTER QUEUE: {total:,} entries ({where})")
    if not total:
        return
    scanned = min(total, _PATTERN_SCAN)
    basis = "" if scanned == total else f" (in the first {scanned:,})"
    _table(f"Error patterns{basis}:", ["error type", "entries", "share"],
           [[name, f"{n:,}", _pct(n, scanned)] for name, n in patterns.most_common()])
    rows = [[e.id, _one_line(str(e.record_id), 16), e.stage, e.error_class, e.error_type,
             _one_line(e.error_message, 60), str(len(e.attempts)), e.last_failed_at[:19]]
            for e in entries]
    shown = f"{offset + 1}-{offset + len(entries)}" if entries else "none"
    _table(f"Entries {shown} of {total:,}:",
           ["id", "record", "stage", "class", "error", "message", "tries", "last failed (UTC)"], rows)
    more = f"more: --offset {offset + len(entries)}   " if offset + len(entries) < total else ""
    if entries:
        click.echo(f"{more}details: batchguard dlq show {entries[0].id}{_dlq_flag(dlq_url)}")
    elif more:
        click.echo(more.rstrip())


def _dlq_flag(dlq_url: str) -> str:
    """``--dlq URL`` for a command to print, unless the URL is the default."""
    return "" if dlq_url == DEFAULT_URL else f" --dlq {redact(dlq_url)}"


def _find(queue: DeadLetterQueue, wanted: str) -> DeadLetter:
    entry = queue.get(wanted)
    if entry is not None:
        return entry
    if len(wanted) < 4:
        raise CannotStart(f"no dead letter with id {wanted!r} (give at least 4 characters of an id)")
    found: list[DeadLetter] = []
    offset = 0
    while len(found) < 2:
        page = queue.list(limit=1000, offset=offset)
        if not page:
            break
        found += [e for e in page if e.id.startswith(wanted)]
        offset += len(page)
    if len(found) == 1:
        return found[0]
    if found:
        raise CannotStart(f"id prefix {wanted!r} matches several dead letters; give more characters")
    raise CannotStart(f"no dead letter with id {wanted!r}")


@dlq.command("show", short_help="One dead letter in full, with its attempts.")
@click.argument("entry_id", metavar="ID")
@_dlq_option()
def dlq_show(entry_id: str, dlq_url: str) -> None:
    """One dead letter in full: error, attempt history, payload, traceback (ID or a unique prefix)."""
    with _queue(dlq_url) as queue:
        entry = _find(queue, entry_id)
    lines = [
        f"ID:            {entry.id}",
        f"Record:        {entry.record_id!r} (index {entry.record_index}, batch {entry.batch_index})",
        f"Run:           {entry.run_id}" + (f"   Job: {entry.job_id}" if entry.job_id else ""),
        f"Stage:         {entry.stage}",
        f"Error class:   {entry.error_class}",
        f"Error:         {entry.error_type}: {entry.error_message}",
        f"First failed:  {entry.first_failed_at}",
        f"Last failed:   {entry.last_failed_at}",
        f"Attempts:      {len(entry.attempts)}",
    ]
    for a in entry.attempts:
        delay = "" if a.delay_s is None else f", then waited {a.delay_s:.3f} s"
        lines.append(f"  - attempt {a.attempt} ({a.at}): {a.error_type}: {_one_line(a.error_message, 100)}{delay}")
    payload = (json.dumps(entry.payload, indent=2, ensure_ascii=False, default=str)
               if entry.payload_encoding == "json" else str(entry.payload))
    lines += [f"Payload ({entry.payload_encoding}):", *("  " + line for line in payload.splitlines())]
    if entry.traceback:
        lines += ["Traceback:", *("  " + line for line in entry.traceback.rstrip().splitlines())]
    lines += ["Actions:",
              f"  replay:  batchguard dlq retry --fn MODULE:CALLABLE --error-type {entry.error_type}"
              f"{_dlq_flag(dlq_url)}",
              f"  remove:  batchguard dlq remove {entry.id}{_dlq_flag(dlq_url)}"]
    click.echo("\n".join(lines))


@dlq.command("count")
@_dlq_option()
@_filter_options
def dlq_count(dlq_url: str, **given: Any) -> None:
    """How many dead letters match the filters."""
    with _queue(dlq_url) as queue:
        click.echo(str(queue.count(**_filters(**given))))


@dlq.command("export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
@_dlq_option()
@_filter_options
@click.option("--force", is_flag=True, help="Replace PATH if it exists (never the queue's own file).")
def dlq_export(path: str, dlq_url: str, force: bool, **given: Any) -> None:
    """Write the matching dead letters to PATH as JSON lines (- for stdout).

    An existing PATH is replaced only with --force, and never when it is the queue's own file
    (through a symlink or a hard link too): exporting a queue onto itself would destroy it.
    """
    to_stdout = path == "-"
    with _queue(dlq_url) as queue:
        try:
            written = queue.export(sys.stdout if to_stdout else path, overwrite=force, **_filters(**given))
        except DLQError as exc:
            raise CannotStart(str(exc)) from None
        except OSError as exc:
            raise CannotStart(f"cannot write {path}: {exc.strerror or exc}") from None
    # With -, stdout holds the entries only: the tally goes to stderr.
    click.echo(f"exported {written:,} dead letters to {'stdout' if to_stdout else path}", err=to_stdout)


@dlq.command("remove", short_help="Remove dead letters by ID or filter.")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_dlq_option()
@_filter_options
@click.option("--all", "remove_all", is_flag=True, help="Remove every entry (when no ID or filter is given).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_remove(ids: tuple[str, ...], dlq_url: str, remove_all: bool, yes: bool, **given: Any) -> None:
    """Remove dead letters: the given IDs, or every entry matching the filters."""
    filters = _filters(**given)
    if not ids and not filters and not remove_all:
        raise click.UsageError("give IDs or filters, or --all to remove every dead letter")
    with _queue(dlq_url) as queue:
        if ids:
            targets = [_find(queue, i).id for i in ids]
        else:
            targets = [e.id for e in queue.list(**filters)]
        if not targets:
            click.echo("nothing to remove")
            return
        if not yes:
            if not _is_tty(sys.stdin):
                raise click.UsageError(f"this removes {len(targets):,} dead letters: pass --yes to confirm")
            click.confirm(f"Remove {len(targets):,} dead letters from {redact(dlq_url)}?", abort=True)
        removed = queue.remove(targets)
    click.echo(f"removed {removed:,} dead letters")


@dlq.command("retry", short_help="Replay dead letters through a fixed --fn.")
@click.option("--fn", "fn_spec", required=True, metavar="MODULE:CALLABLE", help="The (fixed) callback.")
@_dlq_option()
@_filter_options
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--base-delay", type=click.FloatRange(min=0.0), default=1.0, show_default=True, metavar="S")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="Job store whose jobs' totals follow the replay [default: the DLQ's own "
                   "database, when it holds the job store]")
@click.option("--allow-pickle", is_flag=True,
              help="Load entries stored as pickle (runs with pickle_payloads=True). Loading a "
                   "pickle runs code: only for a queue whose every writer you trust.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def dlq_retry(fn_spec: str, dlq_url: str, concurrency: int, max_attempts: int, base_delay: float,
              store_url: str | None, allow_pickle: bool, quiet: bool, **given: Any) -> None:
    """Replay the matching dead letters through --fn: successes leave the queue, failures stay
    with their attempt history extended. Entries of a job move from its failed total to its
    succeeded total as they leave (give --store when the job's store is not the DLQ's database)."""
    from .replay import replay

    fn = load_callable(fn_spec)
    retry = _retry(max_attempts, base_delay)
    view = ProgressView(title="replay", quiet=quiet)
    refused: PickleNotAllowedError | None = None
    with _queue(dlq_url) as queue, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the not-replayable count is printed below instead
        try:
            with view.running():
                report = replay(queue, fn, concurrency=concurrency, retry=retry,
                                on_progress=None if quiet else view, store=store_url,
                                allow_pickle=allow_pickle, **_filters(**given))
        except PickleNotAllowedError as exc:
            refused = exc  # the others were replayed: their report first, then why these were not
            report = exc.report
        except KeyboardInterrupt:
            click.echo("\ninterrupted: entries of finished batches are updated", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (ConfigError, JobStoreUnavailableError) as exc:
            _cannot_start(exc)
    print_report(report, dlq_url=dlq_url)
    click.echo(f"{report.removed:,} dead letters succeeded and left the queue; {report.kept:,} failed "
               f"again and stay (attempt history extended)"
               + (f"; {report.not_replayable:,} are stored as repr and cannot be replayed"
                  if report.not_replayable else ""))
    _show_replayed_jobs(report.jobs_updated, store_url or dlq_url)
    if refused is not None:
        click.echo(f"error: {report.pickle_refused:,} dead letters store their record as pickle and "
                   "were not loaded or run; they stay in the queue. Loading a pickle runs code, and "
                   "anyone who can write to this queue could have put it there: if you trust every "
                   "writer of it, run again with --allow-pickle.", err=True)
    sys.exit(EXIT_OK if report.status == "complete" and not report.not_replayable and refused is None
             else EXIT_INCOMPLETE)


def _show_replayed_jobs(names: tuple[str, ...], store_url: str) -> None:
    from .jobs import job_status

    for name in names:
        try:
            state = job_status(name, store=store_url)
        except JobNotFoundError:
            continue
        click.echo(f"Job {name!r}: {state.succeeded:,} succeeded, {state.failed:,} dead-lettered "
                   "(totals updated by this replay).")


# -- jobs ------------------------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """List jobs, show one, resume one."""


def _store_exists(url: str) -> bool:
    path = _file_of(url)
    return path is None or path.exists()


def _shown_status(state: JobStatus) -> str:
    if state.status == "running" and not state.active:
        return "interrupted"
    return state.status


@jobs.command("list")
@_store_option
def jobs_list(store_url: str) -> None:
    """Every job in the store, most recently updated first."""
    from .jobs import list_jobs

    if not _store_exists(store_url):
        click.echo(f"no jobs: no job store at {redact(store_url)}")
        return
    try:
        states = list_jobs(store_url)
    except (ConfigError, JobStoreUnavailableError, TypeError, ModuleNotFoundError) as exc:
        _cannot_start(exc)
    if not states:
        click.echo(f"no jobs in {redact(store_url)}")
        return
    rows = [[s.name, _shown_status(s),
             "-" if s.percent_complete is None else f"{s.percent_complete:.1f}%",
             f"{s.succeeded:,}", f"{s.failed:,}",
             f"{s.batches_done}/{s.batches_total}" if s.batches_total is not None else str(s.batches_done),
             str(s.runs), s.updated_at[:19]] for s in states]
    _table(f"Jobs in {redact(store_url)}:",
           ["job", "status", "progress", "succeeded", "failed", "batches", "runs", "updated (UTC)"], rows)


def _load_job(name: str, store_url: str) -> JobStatus:
    from .jobs import job_status

    if not _store_exists(store_url):
        raise CannotStart(f"no job store at {redact(store_url)}")
    try:
        return job_status(name, store=store_url)
    except JobNotFoundError as exc:
        raise CannotStart(str(exc)) from None
    except (ConfigError, JobStoreUnavailableError, TypeError, ModuleNotFoundError) as exc:
        _cannot_start(exc)


@jobs.command("status")
@click.argument("name")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def jobs_status(name: str, store_url: str, as_json: bool) -> None:
    """Status, totals and progress of job NAME."""
    state = _load_job(name, store_url)
    if as_json:
        click.echo(json.dumps(state.to_dict(), indent=2, default=str))
        return
    total = "unknown" if state.total is None else f"{state.total:,}"
    percent = "-" if state.percent_complete is None else f"{state.percent_complete:.1f}%"
    lines = [
        f"Job:          {state.name}",
        f"Status:       {_shown_status(state)}" + (" (a process is running it)" if state.active else ""),
        f"Progress:     {percent} ({state.processed:,} of {total} records final)",
        f"Succeeded:    {state.succeeded:,}",
        f"Failed (DLQ): {state.failed:,}",
        f"Batches:      {state.batches_done}" + (f" of {state.batches_total}" if state.batches_total else "")
        + f" (size {state.batch_size})",
        f"Runs:         {state.runs} (last: {state.last_run_id})",
        f"Created:      {state.created_at}",
        f"Updated:      {state.updated_at}",
    ]
    if state.finished_at:
        lines.append(f"Finished:     {state.finished_at}")
    if state.error:
        lines.append(f"Last stop:    {state.error}")
    lines.append(f"Fingerprint:  {state.fingerprint}")
    cli = state.config.get("meta", {}).get("cli") if isinstance(state.config.get("meta"), dict) else None
    if cli:
        lines.append(f"Input:        {cli.get('input')} ({cli.get('format')})   --fn {cli.get('fn')}")
    lines.append("Config:       " + json.dumps({k: v for k, v in state.config.items() if k != "meta"},
                                               sort_keys=True, default=str))
    if state.status in ("running", "aborted") and not state.active:
        lines.append(f"Resume with:  batchguard jobs resume {state.name}"
                     + (f" --store {redact(store_url)}" if store_url != DEFAULT_URL else ""))
    click.echo("\n".join(lines))


@jobs.command("resume")
@click.argument("name")
@_store_option
@_dlq_option(None, "Dead-letter queue URL [default: the one the job was started with]")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Override the job's concurrency.")
@click.option("--force", is_flag=True, help="Run the job again from scratch, even if completed.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def jobs_resume(name: str, store_url: str, dlq_url: str | None, concurrency: int | None, force: bool,
                quiet: bool) -> None:
    """Resume job NAME with the input and --fn it was started with (finished batches are skipped)."""
    state = _load_job(name, store_url)
    meta = state.config.get("meta")
    cli = meta.get("cli") if isinstance(meta, dict) else None
    if not isinstance(cli, dict):
        raise CannotStart(f"job {name!r} was not started from the command line: resume it by calling "
                          f"run_batches(..., job={name!r}) again with the same input")
    if state.status in ("completed", "failed") and not force:
        click.echo(f"Job {name!r} is already {state.status}: nothing to do; --force runs it again.")
        sys.exit(EXIT_OK)
    if cli["input"] == "-":
        raise CannotStart(f"job {name!r} read its input from stdin: pipe it again with "
                          f"batchguard run - --job {name} --fn {cli['fn']}")
    saved_dlq = cli.get("dlq")
    if dlq_url is None and saved_dlq is not None and "***" in saved_dlq:
        raise CannotStart(f"job {name!r} used the DLQ {saved_dlq}; passwords are not stored: pass --dlq again")
    source = _open_source(cli["input"], cli.get("format"))
    cwd = cli.get("cwd")
    if cwd and cwd not in sys.path:
        sys.path.insert(0, cwd)
    fn = load_callable(cli["fn"])
    code = execute_run(source=source, fn=fn, fn_spec=cli["fn"], dlq_url=dlq_url or saved_dlq, job=name,
                       store_url=store_url, batch_size=int(cli["batch_size"]),
                       concurrency=concurrency or int(cli["concurrency"]),
                       max_attempts=int(cli["max_attempts"]), base_delay=float(cli["base_delay"]),
                       force=force, quiet=quiet, title=f"job {name}")
    sys.exit(code)


# -- demo ------------------------------------------------------------------------------------


@main.command(short_help="A live run over generated data: start here.")
@click.option("--records", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to put the dataset and the database [default: a new temporary directory].")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def demo(records: int, directory: str | None, quiet: bool) -> None:
    """Process a generated dataset with failing, flaky and corrupt records, and show the report."""
    from . import _demo

    where = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="batchguard-demo-"))
    private_dir(where)  # it will hold records: 0700 when batchguard creates it
    data = where / "demo.jsonl"
    database = where / "demo.db"
    for leftover in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        leftover.unlink(missing_ok=True)
    corrupt = _demo.write_dataset(data, records)
    url = f"sqlite:///{database.resolve()}"
    click.echo(f"batchguard demo: {records:,} records in {data}\n"
               f"  about 1 in {_demo.BAD_EMAIL_EVERY} has a bad email and 1 in {_demo.NO_AMOUNT_EVERY} "
               f"no amount (they fail for good), 1 in {_demo.FLAKY_EVERY} fails once with a "
               f"ConnectionError (retried), {corrupt} lines are corrupt JSON.\n")
    code = execute_run(source=_open_source(str(data), "jsonl"), fn=_demo.process,
                       fn_spec="batchguard._demo:process", dlq_url=None, job="demo", store_url=url,
                       batch_size=1000, concurrency=8, max_attempts=3, base_delay=0.01, force=False,
                       quiet=quiet, title="demo")
    if code == EXIT_INTERRUPTED:
        sys.exit(code)
    with _queue(url) as queue:
        first = queue.list(limit=1)
    click.echo("\nExplore what happened:\n"
               f"  batchguard dlq list --dlq {url}\n"
               f"  batchguard dlq show {first[0].id if first else 'ID'} --dlq {url}\n"
               f"  batchguard jobs status demo --store {url}\n"
               f"  batchguard dlq retry --fn batchguard._demo:process_fixed --dlq {url}")
    sys.exit(EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
