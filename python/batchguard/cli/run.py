"""``batchguard run``: a callback over the records of a file, as a plain run or a resumable job."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

import click

from .._inputs import FORMATS, RecordSource, StreamSource, input_id, open_input
from .._run.execute import execute
from .._run.plan import close_opened_dlq, make_plan
from .._urls import redact
from ..errors import BatchguardError, ConfigError, DLQUnavailableError, InputError, JobError, JobStoreUnavailableError
from ..jobs import job_status, run_job
from ..metrics import Prometheus
from ..sources.files import is_remote
from ..validation.full import finish_full, guard_full
from .callables import load_callable, portable_spec
from .job_ending import job_ending
from .options import (
    DEFAULT_URL,
    EXIT_INCOMPLETE,
    EXIT_OK,
    Interrupted,
    JsonErrorsCommand,
    RunFailed,
    absolute_url,
    cannot_start,
    dlq_option,
    url_flag,
)
from .phases import Phase, phase_of, phase_options, print_validation, run_phase
from .progress import ProgressView
from .report import print_report, report_json, report_json_option, report_path_clash, save_report_json
from .settings import EngineSettings, apply_config, engine_options, settings_of

__all__ = ["execute_run", "open_source", "run"]


def open_source(path: str, fmt: str | None) -> RecordSource | StreamSource:
    """The records of INPUT, or a usage error (exit 2) naming why it cannot be read."""
    try:
        return open_input(path, fmt)  # type: ignore[arg-type]
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="'INPUT'") from None


def execute_run(*, source: RecordSource | StreamSource, fn: Callable[[Any], Any], fn_spec: str,
                dlq_url: str | None, job: str | None, store_url: str | None, batch_size: int,
                concurrency: int, max_attempts: int, base_delay: float, force: bool,
                quiet: bool, title: str = "batchguard", settings: EngineSettings | None = None,
                as_json: bool = False, report_json_path: str | None = None,
                phase: Phase | None = None, metrics_port: int | None = None,
                output: str | None = None) -> int:
    """Run ``fn`` over ``source`` (as a job when ``job`` is given); print the report; exit code.

    ``as_json``: the report (and the job's state, under ``"job"``) as one JSON document on stdout.
    ``report_json_path``: that document written to a file too (checked before the run).
    ``phase``: a full run's ``--validate`` (blocked records dead-lettered, never run).
    ``metrics_port``: serve the run's Prometheus metrics on 127.0.0.1 at that port.
    ``output``: the results sink's path or URL (``--output``): each batch's values are written
    there (``results=``), none kept in memory.
    """
    view = ProgressView(title=title, quiet=quiet, mode="full", concurrency=concurrency)
    effective_dlq = dlq_url if dlq_url is not None else (None if job else DEFAULT_URL)
    settings = settings or EngineSettings()
    # A record without an id of its own is named by where it was read (file:line, file#row).
    plan_kwargs = {"id_of": input_id, **settings.plan_kwargs()}
    if metrics_port is not None:
        plan_kwargs["metrics"] = _serve_metrics(metrics_port)
    if output is not None:
        plan_kwargs["results"] = output
    alerts = plan_kwargs.get("alerts")
    if alerts:
        click.echo(f"alerts: {len(alerts)} rules, POSTed to {alerts[0].notify.shown_url}", err=True)
    try:
        plan = make_plan(source, settings.guarded(fn), batch_size=batch_size,
                         concurrency=settings.concurrency(concurrency),
                         retry=settings.retry(max_attempts, base_delay), dlq=effective_dlq,
                         on_progress=None if quiet else view,
                         validate=None if phase is None else phase.check_for_input(),
                         job=job, **plan_kwargs)  # the plan checks what needs a job (--keep-outcomes)
    except (ConfigError, DLQUnavailableError, TypeError, ModuleNotFoundError) as exc:
        cannot_start(exc)
    plan, tally = guard_full(plan)
    try:
        with view.running():
            if job is None:
                report = execute(plan)
            else:
                saved_dlq = None if dlq_url is None else absolute_url(dlq_url)
                meta = {"cli": {
                    "input": source.path if source.path == "-" or is_remote(source.path)
                    else os.path.abspath(source.path),
                    "format": source.format, "fn": portable_spec(fn_spec), "cwd": os.getcwd(),
                    "dlq": None if saved_dlq is None else redact(saved_dlq),
                    "batch_size": batch_size, "concurrency": concurrency,
                    "max_attempts": max_attempts, "base_delay": base_delay,
                    "engine": settings.saved(),
                    # a resume checks the records as this run does (cli.phases.saved_phase)
                    "validate": None if phase is None or phase.validate_spec is None
                    else portable_spec(phase.validate_spec),
                    # a resume appends to it (redacted: a URL's password is never stored)
                    "output": None if output is None else redact(
                        output if is_remote(output) else os.path.abspath(output.removeprefix("file://"))),
                }}
                report = run_job(plan, job=job, store=store_url, force=force, meta=meta)
            report = finish_full(report, tally)
    except KeyboardInterrupt:
        raise Interrupted(*_interrupted(job, store_url, dlq_url)) from None
    except (ConfigError, JobError, JobStoreUnavailableError, DLQUnavailableError) as exc:
        cannot_start(exc)
    except BatchguardError as exc:
        raise RunFailed(str(exc)) from None
    finally:
        close_opened_dlq(plan)
    if output is not None and not as_json:
        click.echo(f"results: {report.success_count:,} values written to {redact(output)}", err=True)
    shown_dlq = effective_dlq if effective_dlq is not None else (store_url or DEFAULT_URL)
    # A job's run ends with the job as a whole: its open dead letters of earlier runs, its exit code.
    ending = None if job is None else job_ending(job, report, store_url=store_url or DEFAULT_URL,
                                                 dlq_url=dlq_url, fn_spec=fn_spec)
    unwritten = False  # --report-json could not be written: the command must not read as a success
    if as_json or report_json_path is not None:
        data = report_json(report, dlq_url=shown_dlq, job_store=store_url, fn_spec=fn_spec)
        if report.validation is not None:
            data["validation"] = report.validation.to_dict()
        if ending is not None:
            ending.add_to(data)
        if report_json_path is not None:
            unwritten = not save_report_json(report_json_path, data)
    code = EXIT_OK if report.status == "complete" else EXIT_INCOMPLETE
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return _or_incomplete(code if ending is None else ending.exit_code, unwritten)
    if ending is None:
        print_report(report, dlq_url=shown_dlq, job_store=store_url, fn_spec=fn_spec)
        print_validation(report.validation)
        return _or_incomplete(code, unwritten)
    if report.total == 0 and report.skipped_batches:
        click.echo(ending.nothing_to_do())
    else:
        ending.print_report(report, dlq_url=shown_dlq, store_url=store_url or DEFAULT_URL, fn_spec=fn_spec)
        print_validation(report.validation)
    return _or_incomplete(ending.exit_code, unwritten)


def _serve_metrics(port: int) -> Prometheus:
    """Metrics in the global registry, served at http://127.0.0.1:PORT/metrics until the
    command exits; exit 2 when they cannot be (no prometheus_client, the port is taken)."""
    try:
        metrics = Prometheus()
        metrics.serve(port)
    except ModuleNotFoundError as exc:
        cannot_start(exc)
    except OSError as exc:
        cannot_start(OSError(f"--metrics-port {port}: cannot serve metrics on 127.0.0.1:{port}: "
                             f"{exc.strerror or exc}"))
    click.echo(f"metrics: http://127.0.0.1:{port}/metrics", err=True)
    return metrics


def _or_incomplete(code: int, report_unwritten: bool) -> int:
    """The exit code, at least EXIT_INCOMPLETE when the --report-json file was asked for and
    could not be written (a full disk): a script that waits for it must not read success."""
    return max(code, EXIT_INCOMPLETE) if report_unwritten else code


def _interrupted(job: str | None, store_url: str | None, dlq_url: str | None) -> tuple[str, str | None]:
    """The Ctrl-C message: how many batches the job store holds and the exact command (with a
    non-default ``--store`` and ``--dlq``, redacted and shell-quoted) that resumes the job; and
    that command (None for a run that is not a job)."""
    if job is None:
        return ("interrupted: this run was not a job, so it cannot be resumed (the dead letters of its "
                "finished batches are kept); run with --job NAME to make a run resumable"), None
    store = store_url or DEFAULT_URL
    try:
        state = job_status(job, store=store)
        of = f" of {state.batches_total}" if state.batches_total is not None else ""
        saved = (f"{state.batches_done}{of} batches of job {job!r} are saved "
                 f"({state.succeeded:,} records succeeded, {state.failed:,} dead-lettered)")
    except (BatchguardError, TypeError, ModuleNotFoundError) as exc:
        saved = f"the finished batches of job {job!r} are saved (cannot count them: {exc})"
    command = f"batchguard jobs resume {shlex.quote(job)}{url_flag('--store', store)}"
    if dlq_url is not None and absolute_url(dlq_url) != absolute_url(store):
        command += f" --dlq {shlex.quote(redact(dlq_url))}"
    # On a line of its own: the command's line stays the command, to copy whole.
    urls = [store] if dlq_url is None else [store, dlq_url]
    hidden = _hidden_password_hint(urls) if "***" in command else ""
    return f"interrupted: {saved}; resume with: {command}{hidden}", command


def _hidden_password_hint(urls: list[str]) -> str:
    """What to do about the ``***`` in a printed command, for the kinds of server whose passwords
    it hides: libpq finds a PostgreSQL password without the URL (PGPASSWORD, ~/.pgpass); the
    Redis client (redis-py) reads none from the environment or a file, so there it goes in the URL."""
    hidden = [url for url in urls if "***" in redact(url)]
    schemes = {url.split("://", 1)[0].lower() for url in hidden if "://" in url}
    hint = "\npasswords are shown as ***: type them in their place"
    # A URL without a scheme that hides a password is a libpq "key=value" string.
    if schemes & {"postgres", "postgresql"} or any("://" not in url for url in hidden):
        hint += ", or leave the PostgreSQL one out of the URL and let libpq find it (PGPASSWORD, ~/.pgpass)"
    if schemes & {"redis", "rediss"}:
        hint += ("; the Redis one can only be given in the URL (its client reads no environment variable "
                 "or file for it)")
    return hint


@click.command(cls=JsonErrorsCommand, short_help="Run --fn over the records of INPUT.")
@click.argument("input_path", metavar="INPUT")
@click.option("--fn", "fn_spec", required=True, metavar="MODULE:CALLABLE",
              help="The callback run on each record (the working directory is importable).")
@dlq_option(None, "Dead-letter queue URL [default: sqlite:///batchguard.db; with --job, the job "
                  "store's database]")
@click.option("--job", metavar="NAME", help="Run as a resumable job: rerunning it resumes it.")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="Job store URL (with --job) [default: sqlite:///batchguard.db]")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Records in flight at once. Default 1: one record at a time, in order, on the "
                   "calling thread, so a --fn that is not thread-safe, or a service with no limit of "
                   "its own, is never called in parallel by surprise. For I/O-bound work (HTTP, "
                   "databases) raise it, 16-64 is typical, and cap the load with --rate-limit; at "
                   "most 1024 for a sync --fn, 65536 for an async def one.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Tries per record, the first included.")
@click.option("--base-delay", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              metavar="S", help="First retry delay in seconds (doubles each retry, with jitter).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Input format [default: from the extension, else the content].")
@click.option("--force", is_flag=True, help="With --job: run a completed job again from scratch.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the final report as JSON on stdout (progress stays on stderr).")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535), default=None, metavar="PORT",
              help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics during the run "
                   '(pip install "batchguard[prometheus]").')
@click.option("--output", metavar="URL",
              help="Write each record's result to URL as it is made, instead of keeping them: a "
                   "path or an fsspec URL (s3://...), JSON lines (.jsonl, .ndjson, with .gz, .bz2 "
                   "or .zst) or Parquet (.parquet), one {index, value} per result.")
@report_json_option
@phase_options
@engine_options
@click.pass_context
def run(ctx: click.Context, /, input_path: str, fn_spec: str, dlq_url: str | None, job: str | None,
        store_url: str | None, batch_size: int, concurrency: int, max_attempts: int, base_delay: float,
        fmt: str | None, force: bool, quiet: bool, as_json: bool, report_json_path: str | None,
        config_path: str | None, validate: str | None, mode: str, sample_count: int,
        sample_key: str | None, metrics_port: int | None, output: str | None, **engine: Any) -> None:
    """Run --fn over every record of INPUT (JSON lines, CSV, a JSON array, Parquet; - for stdin).

    INPUT is a path, a glob (quoted: 'data/*.jsonl.gz') or a URL (s3://, gs://, http(s)://);
    .gz, .bz2 and .zst files are decompressed.

    A line that does not parse is dead-lettered with a parse error and the run goes on.
    Engine options (--timeout, --rate-limit, --breaker, ...) can also come from --config FILE.toml.
    """
    given: dict[str, Any] = {"batch_size": batch_size, "concurrency": concurrency,
                             "max_attempts": max_attempts, "base_delay": base_delay, **engine,
                             "validate": validate, "mode": mode, "sample_count": sample_count,
                             "sample_key": sample_key}
    apply_config(ctx, given, config_path)
    batch_size, concurrency = given["batch_size"], given["concurrency"]
    max_attempts, base_delay = given["max_attempts"], given["base_delay"]
    settings = settings_of(given)
    settings.check(max_attempts, base_delay)
    if store_url is not None and job is None and given.get("mode") != "sample":
        raise click.UsageError("--store is only used with --job NAME (or --mode sample, which keeps its "
                               "results there for batchguard rollback)")
    if force and job is None:
        raise click.UsageError("--force is only used with --job NAME")
    if report_json_path is not None:
        # a sample keeps its results in the job store too (batchguard rollback)
        own_store = (store_url or DEFAULT_URL) if job or given.get("mode") == "sample" else None
        clash = report_path_clash(report_json_path, input_path=input_path, backends=(
            ("job store", own_store), ("DLQ", dlq_url or own_store or DEFAULT_URL)))
        if clash is not None:
            raise click.BadParameter(clash, ctx=ctx, param_hint="'--report-json'")
    phase = phase_of(given)
    source = open_source(input_path, fmt)
    fn = load_callable(fn_spec)
    if phase.mode != "full":
        sys.exit(run_phase(ctx, source=source, fn=fn, phase=phase, batch_size=batch_size,
                           concurrency=concurrency, max_attempts=max_attempts, base_delay=base_delay,
                           settings=settings, quiet=quiet, as_json=as_json,
                           report_json_path=report_json_path, store_url=store_url or DEFAULT_URL))
    code = execute_run(source=source, fn=fn, fn_spec=fn_spec, dlq_url=dlq_url, job=job,
                       store_url=(store_url or DEFAULT_URL) if job else None, batch_size=batch_size,
                       concurrency=concurrency, max_attempts=max_attempts, base_delay=base_delay,
                       force=force, quiet=quiet, settings=settings, as_json=as_json,
                       report_json_path=report_json_path, phase=phase, metrics_port=metrics_port,
                       output=output)
    sys.exit(code)
