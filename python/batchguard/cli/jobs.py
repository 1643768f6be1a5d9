"""``batchguard jobs``: list jobs, show one (its batches, one record), resume one, retry its
dead letters."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import warnings
from typing import Any

import click

from .._urls import redact
from ..errors import ConfigError, JobError, JobNotFoundError, JobStoreUnavailableError, PickleNotAllowedError
from ..jobs import JobStatus, job_batches, job_status, list_jobs
from ..jobs.store import held_idle, opened_store
from ..replay import replay
from .callables import load_callable
from .console import table
from .dlq_queue import blocked_note, claims_note, interrupted_replay, replayed_among, validate_option
from .jobs_status import (
    dead_letter_counts,
    job_dlq,
    locate,
    print_batch_page,
    print_record,
    print_status,
    saved_cli,
    saved_fn,
    shown_status,
)
from .options import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CannotStart,
    cannot_start,
    dlq_option,
    file_of,
    retry_policy,
    store_option,
    url_flag,
)
from .phases import saved_phase
from .progress import ProgressView
from .report import print_report
from .run import execute_run, open_source
from .settings import ENGINE_KEYS, EngineSettings, engine_options, resumed_settings

__all__ = ["jobs"]


@click.group()
def jobs() -> None:
    """List jobs, show one, resume one, retry its dead letters."""


def _store_exists(url: str) -> bool:
    path = file_of(url)
    return path is None or path.exists()


@jobs.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON array (as jobs status --json).")
def jobs_list(store_url: str, as_json: bool) -> None:
    """Every job in the store, most recently updated first."""
    if not _store_exists(store_url):
        click.echo("[]" if as_json else f"no jobs: no job store at {redact(store_url)}")
        return
    try:
        states = list_jobs(store_url)
    except (ConfigError, JobStoreUnavailableError, TypeError, ModuleNotFoundError) as exc:
        cannot_start(exc)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in states], indent=2, default=str))
        return
    if not states:
        click.echo(f"no jobs in {redact(store_url)}")
        return
    rows = [[s.name, shown_status(s),
             "-" if s.percent_complete is None else f"{s.percent_complete:.1f}%",
             f"{s.succeeded:,}", f"{s.failed:,}",
             f"{s.batches_done}/{s.batches_total}" if s.batches_total is not None else str(s.batches_done),
             str(s.runs), s.updated_at[:19]] for s in states]
    table(f"Jobs in {redact(store_url)}:",
          ["job", "status", "progress", "succeeded", "failed", "batches", "runs", "updated (UTC)"], rows)


def _load_job(name: str, store_url: str) -> JobStatus:
    if not _store_exists(store_url):
        raise CannotStart(f"no job store at {redact(store_url)}")
    try:
        return job_status(name, store=store_url)
    except JobNotFoundError as exc:
        raise CannotStart(str(exc)) from None
    except (ConfigError, JobStoreUnavailableError, TypeError, ModuleNotFoundError) as exc:
        cannot_start(exc)


@jobs.command("status")
@click.argument("name")
@store_option
@dlq_option(None, "The job's dead-letter queue [default: the one the job was started with]")
@click.option("--record", "record_id", metavar="ID",
              help="Where this record stands: succeeded, dead-lettered (its entry) or pending. Looked up "
                   "in the input the job was started on (with its --id-field), else among its dead letters. "
                   "Exits 1 when it cannot place the record (UNKNOWN).")
@click.option("--index", type=click.IntRange(min=0), default=None, metavar="N",
              help="Like --record, for the record at position N of the input (0-based).")
@click.option("--batches", "each_batch", is_flag=True,
              help="One row per batch (a page: --offset, --limit) instead of the folded table.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="With --batches: first batch.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="With --batches: page size.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def jobs_status(name: str, store_url: str, dlq_url: str | None, record_id: str | None, index: int | None,
                each_batch: bool, offset: int, limit: int, as_json: bool) -> None:
    """Status of job NAME: totals, dead letters by status, and its batches (done, stopped in
    flight when a run stopped, pending), consecutive batches in one state folded into a row."""
    if record_id is not None and index is not None:
        raise click.UsageError("give --record ID or --index N, not both")
    state = _load_job(name, store_url)
    if each_batch:
        print_batch_page(name, store_url, offset, limit, as_json)
        return
    with job_dlq(state, store_url, dlq_url) as dlq:
        if record_id is not None or index is not None:
            where = locate(state, store_url, dlq, record_id, index)
            print_record(where, dlq, store_url, as_json, saved_fn(state))
            if where.state == "unknown":
                sys.exit(EXIT_INCOMPLETE)  # a script asking for a record must not take "unknown" for found
            return
        try:
            batches = job_batches(name, store=store_url)
            counts = None if dlq.queue is None else dead_letter_counts(dlq.queue, name)
        except (ConfigError, JobStoreUnavailableError, TypeError) as exc:
            cannot_start(exc)
        print_status(state, batches, store_url, dlq, counts, as_json)


@jobs.command("resume")
@click.argument("name")
@store_option
@dlq_option(None, "Dead-letter queue URL [default: the one the job was started with]")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Records in flight at once [default: the job's saved setting].")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Tries per record [default: the job's saved setting].")
@click.option("--base-delay", type=click.FloatRange(min=0.0), default=None, metavar="S",
              help="First retry delay [default: the job's saved setting].")
@click.option("--force", is_flag=True, help="Run the job again from scratch, even if completed.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@engine_options
@click.pass_context
def jobs_resume(ctx: click.Context, /, name: str, store_url: str, dlq_url: str | None, force: bool,
                quiet: bool, config_path: str | None, **given: Any) -> None:
    """Resume job NAME with the input and --fn it was started with (finished batches are skipped).

    Settings come from the command line, then --config, then what the job saved (its last run's
    settings), then the defaults; the resume says what it changed, and saves it for the next one.
    The batch size cannot change: the finished batches would not line up.
    """
    state = _load_job(name, store_url)
    cli = saved_cli(state)
    if cli is None:
        raise CannotStart(f"job {name!r} was not started from the command line: resume it by calling "
                          f"run_batches(..., job={name!r}) again with the same input")
    if state.status in ("completed", "failed") and not force:
        dead = (f"; {state.failed:,} records are dead-lettered: batchguard jobs status {shlex.quote(name)}"
                f"{url_flag('--store', store_url)}" if state.failed else "")
        click.echo(f"Job {name!r} is already {state.status}: nothing to do; --force runs it again{dead}.")
        sys.exit(EXIT_OK)
    if cli["input"] == "-":
        raise CannotStart(f"job {name!r} read its input from stdin: pipe it again with "
                          f"batchguard run - --job {shlex.quote(name)} --fn {shlex.quote(cli['fn'])}")
    saved_dlq = cli.get("dlq")
    if dlq_url is None and saved_dlq is not None and "***" in saved_dlq:
        raise CannotStart(f"job {name!r} used the DLQ {saved_dlq}; passwords are not stored: pass --dlq again")
    values, changed = resumed_settings(ctx, cli, dict(given), config_path)
    settings = EngineSettings({k: values[k] for k in ENGINE_KEYS if values.get(k) is not None})
    settings.check(int(values["max_attempts"]), float(values["base_delay"]))
    if changed:
        click.echo(f"Resuming job {name!r} with " + ", ".join(changed) + ".", err=True)
    source = open_source(cli["input"], cli.get("format"))
    cwd = cli.get("cwd")
    if cwd and cwd not in sys.path:
        sys.path.insert(0, cwd)
    fn = load_callable(cli["fn"])
    code = execute_run(source=source, fn=fn, fn_spec=cli["fn"], dlq_url=dlq_url or saved_dlq, job=name,
                       store_url=store_url, batch_size=int(cli["batch_size"]),
                       concurrency=int(values["concurrency"]), max_attempts=int(values["max_attempts"]),
                       base_delay=float(values["base_delay"]), force=force, quiet=quiet, title=f"job {name}",
                       settings=settings, phase=saved_phase(cli), output=_saved_output(cli))
    sys.exit(code)


def _saved_output(cli: dict[str, Any]) -> str | None:
    """The job's ``--output``, which a resume appends to; a URL saved with its password hidden
    cannot be written again, so the resume refuses rather than keep the values in memory."""
    output = cli.get("output")
    if output is not None and "***" in output:
        raise click.UsageError(f"the job's --output {output} was saved without its password: run "
                               f"batchguard run again with --job and the full --output URL to resume it")
    return output


@jobs.command("retry-failed", short_help="Replay a job's dead letters through a fixed --fn.")
@click.argument("name")
@click.option("--fn", "fn_spec", required=True, metavar="MODULE:CALLABLE", help="The (fixed) callback.")
@store_option
@dlq_option(None, "The job's dead-letter queue [default: the one the job was started with]")
@click.option("--error-type", metavar="NAME", help="Only the entries that failed with this exception type.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="[default: the job's saved setting, else 1]")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="[default: the job's saved setting, else 3]")
@click.option("--base-delay", type=click.FloatRange(min=0.0), default=None, metavar="S",
              help="[default: the job's saved setting, else 1]")
@click.option("--reclaim", is_flag=True,
              help="Take over the entries a killed replay still holds (status replaying) at once, "
                   "not once their lease runs out.")
@validate_option
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def jobs_retry_failed(name: str, fn_spec: str, store_url: str, dlq_url: str | None, error_type: str | None,
                      concurrency: int | None, max_attempts: int | None, base_delay: float | None,
                      reclaim: bool, validate_spec: str | None, quiet: bool) -> None:
    """Replay the dead letters of job NAME through --fn (seed 004's retry_failed_records): the
    records that succeed move from the job's dead-lettered total to its succeeded total, the
    others stay with their attempt history extended. Exit 0 when every entry now succeeded."""
    state = _load_job(name, store_url)
    saved = saved_cli(state) or {}
    fn = load_callable(fn_spec)
    check = None if validate_spec is None else load_callable(validate_spec)
    retry = retry_policy(max_attempts or int(saved.get("max_attempts", 3)),
                         float(saved.get("base_delay", 1.0)) if base_delay is None else base_delay)
    view = ProgressView(title=f"retry job {name}", quiet=quiet)
    wanted: dict[str, Any] = {"job_id": name, **({} if error_type is None else {"error_type": error_type})}
    with job_dlq(state, store_url, dlq_url) as dlq, warnings.catch_warnings(), contextlib.ExitStack() as held:
        if dlq.queue is None:
            raise CannotStart(f"cannot retry job {name!r}: {dlq.why_not}")
        warnings.simplefilter("ignore")  # the counts left aside are printed below instead
        try:
            # The job's run lock for the whole replay, as rollback holds it: a run of the job
            # meanwhile would checkpoint over the totals the replay moves, and replay its own
            # dead letters' records while they are still being written.
            store = held.enter_context(opened_store(store_url))
            held.enter_context(held_idle(store, name, "retried"))
        except (JobError, JobStoreUnavailableError) as exc:
            cannot_start(exc)
        replayed_before = replayed_among(dlq.queue, None, wanted)
        try:
            with view.running():
                report = replay(dlq.queue, fn, concurrency=concurrency or int(saved.get("concurrency", 1)),
                                retry=retry, on_progress=None if quiet else view, store=store,
                                validate=check, reclaim=reclaim, **wanted)
        except PickleNotAllowedError as exc:
            report = exc.report
            click.echo(f"error: {report.pickle_refused:,} entries store their record as pickle and were not "
                       "loaded; replay them with batchguard dlq retry --allow-pickle", err=True)
        except KeyboardInterrupt:
            command = (f"batchguard jobs retry-failed {shlex.quote(name)} --fn {shlex.quote(fn_spec)}"
                       f"{url_flag('--store', store_url)}"
                       + ("" if dlq_url is None else f" --dlq {shlex.quote(redact(dlq_url))}")
                       + ("" if error_type is None else f" --error-type {shlex.quote(error_type)}"))
            click.echo("\n" + interrupted_replay(dlq.queue, None, "open", wanted, replayed_before, command),
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (ConfigError, JobStoreUnavailableError) as exc:
            cannot_start(exc)
        shown_dlq = dlq.url
    left = report.not_replayable + report.parse_skipped + report.pickle_refused
    blocked = blocked_note(report, check is not None)
    if report.total:
        print_report(report, dlq_url=shown_dlq, fn_spec=fn_spec)
    elif not (left or report.blocked_skipped):  # an empty replay's report: "... every record succeeded"
        of_type = "" if error_type is None else f" of type {error_type}"
        where = url_flag("--dlq", shown_dlq) if shown_dlq else ""
        click.echo(f"nothing was replayed: job {name!r} has no open dead letter{of_type}; its entries: "
                   f"batchguard dlq list --job {shlex.quote(name)} --status all{where}")
    click.echo(f"{report.removed:,} dead letters of job {name!r} succeeded; {report.kept:,} failed again and "
               "stay (attempt history extended)"
               + (f"; {left:,} were not replayed (stored as repr or pickle, or input lines that did not "
                  "parse): batchguard dlq list --job " + shlex.quote(name) if left else "") + blocked)
    claims_note(report, shown_dlq or "")
    after = job_status(name, store=store_url)
    pending = "" if not after.pending else f", {after.pending:,} pending (batchguard jobs resume {shlex.quote(name)})"
    click.echo(f"Job {name!r}: {after.succeeded:,} succeeded, {after.failed:,} dead-lettered{pending}.")
    sys.exit(EXIT_OK if report.status == "complete" and not (left or report.blocked_skipped) else EXIT_INCOMPLETE)
