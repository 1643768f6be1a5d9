"""``batchguard dlq``: review, list, show, count, export, skip, remove and retry dead letters."""

from __future__ import annotations

import json
import shlex
import sys
import warnings
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Final

import click
from rich import box
from rich.table import Table
from rich.text import Text

from .._report.text import percent
from .._urls import redact
from ..dlq.base import STATUSES, DeadLetter
from ..dlq.status import ALL, DEFAULT_STATUS, claim_of, refuse_claimed
from ..errors import (
    ConfigError,
    DeadLetterClaimedError,
    DeadLetterNotFoundError,
    DLQError,
    JobNotFoundError,
    JobStoreUnavailableError,
    PickleNotAllowedError,
)
from ..jobs import job_status
from ..replay import replay
from .callables import load_callable
from .console import console, is_tty, one_line, table
from .dlq_queue import (
    blocked_note,
    claims_note,
    dlq_retry_command,
    find_entries,
    find_entry,
    interrupted_replay,
    open_queue,
    replayed_among,
    shown_status,
    status_option,
    validate_option,
)
from .dlq_review import actions, review
from .options import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CannotStart,
    cannot_start,
    dlq_option,
    filter_options,
    filters,
    retry_policy,
    url_flag,
)
from .progress import ProgressView
from .report import print_report

__all__ = ["dlq", "open_queue"]  # open_queue: for the demo

_PATTERN_SCAN: Final = 10_000
"""``dlq list`` counts the error patterns of at most this many entries."""


@click.group()
def dlq() -> None:
    """Triage dead letters: review, retry, skip, inspect, export and remove them.

    Each entry is open (needs attention), resolved (skipped on purpose, with a reason) or
    replayed (its record succeeded on a retry); the commands show open entries unless given
    --status.
    """


dlq.add_command(review)


@dlq.command("list")
@dlq_option()
@filter_options
@status_option()
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="Print the entries (--limit, --offset, filters) as a JSON array.")
def dlq_list(dlq_url: str, status: str, limit: int, offset: int, as_json: bool, **given: Any) -> None:
    """List dead letters: error patterns, then one row per entry (open ones unless --status)."""
    selected = filters(**given)
    if as_json:
        with open_queue(dlq_url) as queue:
            listed = queue.list(limit=limit, offset=offset, status=status, **selected)
        click.echo(json.dumps([json.loads(e.to_json()) for e in listed], indent=2))
        return
    with open_queue(dlq_url) as queue:
        total = queue.count(status=status, **selected)
        entries = queue.list(limit=limit, offset=offset, status=status, **selected)
        patterns = Counter(e.error_type for e in queue.list(limit=_PATTERN_SCAN, status=status, **selected)
                           ) if total else Counter()
        others = {s: queue.count(status=s, **selected) for s in STATUSES if s != status} if status != ALL else {}
    where = redact(dlq_url) + (" where " + ", ".join(f"{k}={v}" for k, v in selected.items()) if selected else "")
    noun = "entries" if status == ALL else f"{status} entries"
    now = datetime.now(UTC)
    besides = ", ".join(f"{n:,} {s}" for s, n in others.items() if n)
    click.echo(f"DEAD LETTER QUEUE: {total:,} {noun} ({where})" + (f"; also {besides} (--status)" if besides else ""))
    if not total:
        return
    scanned = min(total, _PATTERN_SCAN)
    basis = "" if scanned == total else f" (in the first {scanned:,})"
    table(f"Error patterns{basis}:", ["error type", "entries", "share"],
          [[name, f"{n:,}", percent(n / scanned)] for name, n in patterns.most_common()])
    rows = [[e.id, one_line(str(e.record_id), 16), e.stage, e.error_class, e.error_type,
             one_line(e.error_message, 60), str(len(e.attempts)), e.last_failed_at[:19]]
            + ([shown_status(e, now)] if status != DEFAULT_STATUS else [])
            for e in entries]
    shown = f"{offset + 1}-{offset + len(entries)}" if entries else "none"
    headers = ["id", "record", "stage", "class", "error", "message", "tries", "last failed (UTC)"]
    if status != DEFAULT_STATUS:
        headers.append("status")
    if is_tty(sys.stdout):
        _entries_table(f"Entries {shown} of {total:,}:", headers, rows)
    else:
        table(f"Entries {shown} of {total:,}:", headers, rows)
    more = f"more: --offset {offset + len(entries)}   " if offset + len(entries) < total else ""
    if entries:
        click.echo(f"{more}details: batchguard dlq show {entries[0].id}{url_flag('--dlq', dlq_url)}")
        click.echo(f"triage: batchguard dlq review{url_flag('--dlq', dlq_url)}")
    elif more:
        click.echo(more.rstrip())


def _entries_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """The entries as a rich table whose ids are never folded nor cut: each is on one line,
    whole, as ``dlq show`` and ``dlq remove`` take it (a folded id's first line was a prefix
    that every entry of its run shared). The other columns give way on a narrow terminal."""
    shown = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, title_style="bold")
    id_width = max(len(row[0]) for row in rows) if rows else 2
    for header in headers:
        if header == "id":
            shown.add_column(header, no_wrap=True, min_width=id_width)
        else:
            # Text, not str, in every cell: rich parses a str as markup.
            shown.add_column(header, overflow="fold" if header in ("message", "error") else "ellipsis")
    for row in rows:
        shown.add_row(*(Text(cell) for cell in row))
    console().print(shown)


@dlq.command("show", short_help="One dead letter in full, with its attempts.")
@click.argument("entry_id", metavar="ID")
@dlq_option()
def dlq_show(entry_id: str, dlq_url: str) -> None:
    """One dead letter in full: error, attempt history, payload, traceback (ID or a unique prefix)."""
    with open_queue(dlq_url) as queue:
        entry = find_entry(queue, entry_id, dlq_url)
    lines = [
        f"ID:            {entry.id}",
        f"Record:        {entry.record_id!r} (index {entry.record_index}, batch {entry.batch_index})",
        f"Run:           {entry.run_id}" + (f"   Job: {entry.job_id}" if entry.job_id else ""),
        f"Stage:         {entry.stage}",
        f"Error class:   {entry.error_class}",
        f"Status:        {_status_line(entry)}",
        f"Error:         {entry.error_type}: {entry.error_message}",
        *([f"HTTP status:   {entry.http_status}"] if entry.http_status is not None else []),
        *_first_error_line(entry),
        f"First failed:  {entry.first_failed_at}",
        f"Last failed:   {entry.last_failed_at}",
        f"Attempts:      {len(entry.attempts)}",
    ]
    for a in entry.attempts:
        delay = "" if a.delay_s is None else f", then waited {a.delay_s:.3f} s"
        lines.append(f"  - attempt {a.attempt} ({a.at}): {a.error_type}: {one_line(a.error_message, 100)}{delay}")
    payload = (json.dumps(entry.payload, indent=2, ensure_ascii=False, default=str)
               if entry.payload_encoding == "json" else str(entry.payload))
    lines += [f"Payload ({entry.payload_encoding}):", *("  " + line for line in payload.splitlines())]
    if entry.traceback:
        lines += ["Traceback:", *("  " + line for line in entry.traceback.rstrip().splitlines())]
    if entry.history:
        lines.append("Status history:")
        lines += [f"  - {c.at}: {c.status} by {c.by or '?'}" + (f": {c.reason}" if c.reason else "")
                  for c in entry.history]
    lines += ["Actions:", *("  " + action for action in actions(entry, dlq_url, fn=None))]
    if entry.status == DEFAULT_STATUS:  # for good, not skipped: the review leaves this one out
        lines.append(f"  remove:       batchguard dlq remove {shlex.quote(entry.id)}{url_flag('--dlq', dlq_url)}")
    click.echo("\n".join(lines))


def _status_line(entry: DeadLetter) -> str:
    claim = claim_of(entry)
    if claim is not None:  # who holds it, and whether that replay still renews its claim
        now = datetime.now(UTC)
        return (f"{entry.status}: held by {claim.describe(now)}"
                + ("; the next replay takes it over" if claim.stale(now) else ""))
    if entry.status_at is None:
        return entry.status
    return (f"{entry.status} (by {entry.status_by or '?'} at {entry.status_at}"
            + (f": {entry.status_reason}" if entry.status_reason else "") + ")")


def _first_error_line(entry: DeadLetter) -> list[str]:
    """The error the record first failed with, when a later try (a replay) failed otherwise."""
    if not entry.attempts:
        return []
    first = entry.attempts[0]
    if (first.error_type, first.error_message) == (entry.error_type, entry.error_message):
        return []
    return [f"First error:   {first.error_type}: {one_line(first.error_message, 200)}"]


@dlq.command("count")
@dlq_option()
@filter_options
@status_option()
def dlq_count(dlq_url: str, status: str, **given: Any) -> None:
    """How many dead letters match the filters and --status."""
    with open_queue(dlq_url) as queue:
        click.echo(str(queue.count(status=status, **filters(**given))))


@dlq.command("export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
@dlq_option()
@filter_options
@status_option()
@click.option("--force", is_flag=True, help="Replace PATH if it exists (never the queue's own file).")
def dlq_export(path: str, dlq_url: str, status: str, force: bool, **given: Any) -> None:
    """Write the matching dead letters to PATH as JSON lines (- for stdout).

    An existing PATH is replaced only with --force, and never when it is the queue's own file
    (through a symlink or a hard link too): exporting a queue onto itself would destroy it.
    """
    to_stdout = path == "-"
    with open_queue(dlq_url) as queue:
        try:
            written = queue.export(sys.stdout if to_stdout else path, overwrite=force, status=status,
                                   **filters(**given))
        except DLQError as exc:
            raise CannotStart(str(exc)) from None
        except OSError as exc:
            raise CannotStart(f"cannot write {path}: {exc.strerror or exc}") from None
    # With -, stdout holds the entries only: the tally goes to stderr.
    only = "" if status == ALL else f" (status {status}; --status all exports every entry)"
    click.echo(f"exported {written:,} dead letters to {'stdout' if to_stdout else path}{only}", err=to_stdout)


@dlq.command("remove", short_help="Remove dead letters by ID or filter.")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@dlq_option()
@filter_options
@status_option(ALL, "With filters or --all: only entries with this status.")
@click.option("--all", "remove_all", is_flag=True, help="Remove every entry (when no ID or filter is given).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also remove entries a running replay holds (status replaying).")
def dlq_remove(ids: tuple[str, ...], dlq_url: str, status: str, remove_all: bool, yes: bool, force: bool,
               **given: Any) -> None:
    """Remove dead letters for good: the given IDs, or every entry matching the filters and
    --status. To set an entry aside and keep it for the audit trail, `dlq skip` it instead.
    Entries a running replay holds (status replaying) are refused (exit 2, naming the replay)
    unless --force."""
    selected = filters(**given)
    if not ids and not selected and not remove_all and status == ALL:
        raise click.UsageError("give IDs, filters or --status, or --all to remove every dead letter")
    with open_queue(dlq_url) as queue:
        found = find_entries(queue, ids, dlq_url) if ids else list(queue.iter(status=status, **selected))
        now = datetime.now(UTC)
        held = [e for e in found if (claim := claim_of(e)) is not None and not claim.stale(now)]
        if held and not force:
            cannot_start(refuse_claimed(held, "remove", now))
        targets = [e.id for e in found]
        if not targets:
            click.echo("nothing to remove")
            return
        if not yes:
            if not is_tty(sys.stdin):
                raise click.UsageError(f"this removes {len(targets):,} dead letters: pass --yes to confirm")
            click.confirm(f"Remove {len(targets):,} dead letters from {redact(dlq_url)}?", abort=True)
        removed = queue.remove(targets)
    click.echo(f"removed {removed:,} dead letters")


@dlq.command("retry", short_help="Replay dead letters (by ID or filter) through a fixed --fn.")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--fn", "fn_spec", required=True, metavar="MODULE:CALLABLE", help="The (fixed) callback.")
@dlq_option()
@filter_options
@status_option(help_text="Replay entries with this status (all: resolved and replayed ones too).")
@click.option("--by", metavar="NAME", help="Who marks the entries replayed [default: the OS user].")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--base-delay", type=click.FloatRange(min=0.0), default=1.0, show_default=True, metavar="S")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="Job store whose jobs' totals follow the replay [default: the DLQ's own "
                   "database, when it holds the job store]")
@click.option("--allow-pickle", is_flag=True,
              help="Load entries stored as pickle (runs with pickle_payloads=True). Loading a "
                   "pickle runs code: only for a queue whose every writer you trust.")
@click.option("--include-parse-errors", is_flag=True,
              help="Also feed --fn the raw text of input lines that did not parse "
                   "(InputParseError entries), which are left in the queue by default.")
@click.option("--reclaim", is_flag=True,
              help="Take over the entries other replays hold (status replaying) at once, not once "
                   "their lease runs out: only when you know those replays are gone (killed).")
@validate_option
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def dlq_retry(ids: tuple[str, ...], fn_spec: str, dlq_url: str, status: str, by: str | None, concurrency: int,
              max_attempts: int, base_delay: float, store_url: str | None, allow_pickle: bool,
              include_parse_errors: bool, reclaim: bool, validate_spec: str | None, quiet: bool,
              **given: Any) -> None:
    """Replay dead letters through --fn: the IDs given, or the entries matching the filters
    (every open entry without any). Successes are marked replayed (they stay, for the audit
    trail, out of the open view); failures stay open with their attempt history extended.
    Entries of a job move from its failed total to its succeeded total (give --store when the
    job's store is not the DLQ's database).

    Input lines that did not parse (InputParseError) hold raw text, not a record: they stay in
    the queue, counted, unless --include-parse-errors is given; so do records blocked by
    validation (stage validate), unless --validate checks them again.

    Two retries of one queue at once never run an entry twice: each claims the entries it runs
    (status replaying while it runs them) and leaves to the other those it holds. A retry that
    was killed leaves its claims until their lease (60 s) runs out; --reclaim takes them now."""
    selected = filters(**given)
    if ids and selected:
        raise click.UsageError("give IDs or filters (--error-type, --job, ...), not both")
    fn = load_callable(fn_spec)
    check = None if validate_spec is None else load_callable(validate_spec)
    retry = retry_policy(max_attempts, base_delay)
    view = ProgressView(title="replay", quiet=quiet)
    refused: PickleNotAllowedError | None = None
    with open_queue(dlq_url) as queue, warnings.catch_warnings():
        named = [e.id for e in find_entries(queue, ids, dlq_url)] if ids else None
        replayed_before = replayed_among(queue, named, selected)
        warnings.simplefilter("ignore")  # the not-replayable count is printed below instead
        try:
            with view.running():
                report = replay(queue, fn, concurrency=concurrency, retry=retry,
                                on_progress=None if quiet else view, store=store_url,
                                allow_pickle=allow_pickle, include_parse_errors=include_parse_errors,
                                validate=check, ids=named, status=status, by=by, reclaim=reclaim,
                                **selected)
        except PickleNotAllowedError as exc:
            refused = exc  # the others were replayed: their report first, then why these were not
            report = exc.report
        except KeyboardInterrupt:
            command = dlq_retry_command(queue, named, status, selected, fn_spec, dlq_url)
            click.echo("\n" + interrupted_replay(queue, named, status, selected, replayed_before, command),
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (ConfigError, JobStoreUnavailableError, DeadLetterClaimedError) as exc:
            cannot_start(exc)
    if report.total:
        print_report(report, dlq_url=dlq_url, fn_spec=fn_spec)
    elif not (report.parse_skipped or report.not_replayable or report.blocked_skipped or refused is not None):
        # An empty replay's report reads "BATCH COMPLETE ... every record succeeded": a mistyped
        # filter would look like fixed dead letters.
        which = "" if status == ALL else f" {status}"
        matched = ("matches " + ", ".join(f"{k}={v}" for k, v in selected.items()) if selected
                   else "is in the queue")
        click.echo(f"nothing was replayed: no{which} dead letter {matched}; every entry: "
                   f"batchguard dlq list --status all{url_flag('--dlq', dlq_url)}")
    click.echo(f"{report.replayed:,} dead letters succeeded and are marked replayed; {report.kept:,} "
               f"failed again and stay open (attempt history extended)"
               + (f"; {report.not_replayable:,} are stored as repr and cannot be replayed"
                  if report.not_replayable else "")
               + (f"; {report.parse_skipped:,} hold input lines that did not parse (InputParseError) "
                  "and were left in the queue, not fed to --fn: fix the lines in the input, or "
                  "replay their raw text with --include-parse-errors" if report.parse_skipped else "")
               + blocked_note(report, check is not None))
    claims_note(report, dlq_url)
    _show_replayed_jobs(report.jobs_updated, store_url or dlq_url)
    if refused is not None:
        click.echo(f"error: {report.pickle_refused:,} dead letters store their record as pickle and "
                   "were not loaded or run; they stay in the queue. Loading a pickle runs code, and "
                   "anyone who can write to this queue could have put it there: if you trust every "
                   "writer of it, run again with --allow-pickle.", err=True)
    left = report.not_replayable or report.parse_skipped or report.blocked_skipped or refused is not None
    sys.exit(EXIT_OK if report.status == "complete" and not left else EXIT_INCOMPLETE)


@dlq.command("skip", short_help="Resolve dead letters on purpose, with a reason.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why they are skipped: kept in each entry's history for whoever reads it next.")
@click.option("--by", metavar="NAME", help="Who skips them [default: the OS user].")
@click.option("--force", is_flag=True,
              help="Also skip entries a running replay holds (status replaying): the skip wins, "
                   "and that replay leaves them as skipped.")
@dlq_option()
def dlq_skip(ids: tuple[str, ...], reason: str, by: str | None, force: bool, dlq_url: str) -> None:
    """Skip dead letters on purpose: their status becomes resolved, with --reason, who and when.

    They stay in the queue (`dlq list --status resolved`, `dlq show ID`), out of the open view
    that review, list and retry work on. Every ID (or unique prefix) must name an entry, else
    nothing changes (exit 2). An entry a running replay holds (status replaying) is not skipped
    under it: nothing changes (exit 2, naming the replay) unless --force."""
    if not reason.strip():
        raise click.BadParameter("give a reason: it is what the next person reading the entry learns",
                                 param_hint="'--reason'")
    with open_queue(dlq_url) as queue:
        entries = find_entries(queue, ids, dlq_url)
        try:
            changed = queue.resolve([e.id for e in entries], reason, by=by, force=force)
        except (DeadLetterNotFoundError, DeadLetterClaimedError, ConfigError) as exc:  # removed, or claimed
            cannot_start(exc)
        left = queue.count()
    already = sum(1 for e in entries if e.status == "resolved")
    click.echo(f"skipped {changed:,} dead letter{'' if changed == 1 else 's'} (status resolved: {reason.strip()})"
               + (f"; {already:,} of them were resolved already, their reason is updated" if already else "")
               + f"; {left:,} open entries left")
    if left:
        click.echo(f"next: batchguard dlq review{url_flag('--dlq', dlq_url)}")


def _show_replayed_jobs(names: tuple[str, ...], store_url: str) -> None:
    for name in names:
        try:
            state = job_status(name, store=store_url)
        except JobNotFoundError:
            continue
        click.echo(f"Job {name!r}: {state.succeeded:,} succeeded, {state.failed:,} dead-lettered "
                   "(totals updated by this replay).")
