"""``batchguard jobs``: list jobs, show one, resume one."""

from __future__ import annotations

import json
import shlex
import sys

import click

from .._urls import redact
from ..errors import ConfigError, JobNotFoundError, JobStoreUnavailableError
from ..jobs import JobStatus, job_status, list_jobs
from .callables import load_callable
from .console import table
from .options import EXIT_OK, CannotStart, cannot_start, dlq_option, file_of, store_option, url_flag
from .run import execute_run, open_source
from .settings import EngineSettings

__all__ = ["jobs"]


@click.group()
def jobs() -> None:
    """List jobs, show one, resume one."""


def _store_exists(url: str) -> bool:
    path = file_of(url)
    return path is None or path.exists()


def _shown_status(state: JobStatus) -> str:
    if state.status == "running" and not state.active:
        return "interrupted"
    return state.status


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
    rows = [[s.name, _shown_status(s),
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
        lines.append(f"Resume with:  batchguard jobs resume {shlex.quote(state.name)}{url_flag('--store', store_url)}")
    click.echo("\n".join(lines))


@jobs.command("resume")
@click.argument("name")
@store_option
@dlq_option(None, "Dead-letter queue URL [default: the one the job was started with]")
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
                          f"batchguard run - --job {shlex.quote(name)} --fn {shlex.quote(cli['fn'])}")
    saved_dlq = cli.get("dlq")
    if dlq_url is None and saved_dlq is not None and "***" in saved_dlq:
        raise CannotStart(f"job {name!r} used the DLQ {saved_dlq}; passwords are not stored: pass --dlq again")
    source = open_source(cli["input"], cli.get("format"))
    cwd = cli.get("cwd")
    if cwd and cwd not in sys.path:
        sys.path.insert(0, cwd)
    fn = load_callable(cli["fn"])
    code = execute_run(source=source, fn=fn, fn_spec=cli["fn"], dlq_url=dlq_url or saved_dlq, job=name,
                       store_url=store_url, batch_size=int(cli["batch_size"]),
                       concurrency=concurrency or int(cli["concurrency"]),
                       max_attempts=int(cli["max_attempts"]), base_delay=float(cli["base_delay"]),
                       force=force, quiet=quiet, title=f"job {name}",
                       settings=EngineSettings.from_saved(cli.get("engine")))
    sys.exit(code)
