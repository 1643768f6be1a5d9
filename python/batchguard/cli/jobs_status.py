"""What ``batchguard jobs status`` shows: a job's totals, its dead letters by status, its batch
table (folded, or a page of batches) and where one record stands; plain text or JSON."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from typing import Any, Final

import click

from .._inputs import input_id, open_input
from .._urls import redact
from ..dlq.base import STATUSES, DeadLetterQueue
from ..dlq.status import CLAIMED
from ..dlq.urls import open_dlq
from ..errors import BatchguardError, InputError
from ..jobs import BatchRow, BatchSpan, BatchTable, JobStatus, RecordStatus, job_batches, record_status
from ..jobs.ledger import batch_rows
from ..jobs.run import describe_dlq
from ..jobs.store import opened_store
from ..replay import is_unparsed_line
from .console import plain_table, table
from .options import CannotStart, cannot_start, file_of, url_flag
from .settings import FieldOf

__all__ = ["JobDLQ", "batch_table_lines", "dead_letter_counts", "job_dlq", "print_batch_page", "print_record",
           "print_status", "saved_cli", "shown_status"]

SPAN_ROWS: Final = 30
"""The folded batch table shows at most this many rows (the first and last halves)."""


def shown_status(state: JobStatus) -> str:
    """The job's status as a person reads it: a "running" job no process holds was interrupted."""
    if state.status == "running" and not state.active:
        return "interrupted"
    return state.status


def saved_cli(state: JobStatus) -> dict[str, Any] | None:
    """What ``batchguard run --job`` saved with the job (input, --fn, settings), or None for a
    job started from the library."""
    meta = state.config.get("meta")
    cli = meta.get("cli") if isinstance(meta, dict) else None
    return cli if isinstance(cli, dict) else None


def saved_fn(state: JobStatus) -> str:
    """The job's saved --fn, shell-quoted, for a printed command (MODULE:CALLABLE, a placeholder
    to fill in, for a job started from the library)."""
    fn = (saved_cli(state) or {}).get("fn")
    return shlex.quote(str(fn)) if fn else "MODULE:CALLABLE"


class JobDLQ:
    """The DLQ a job's dead letters are in, opened for reading, or why it cannot be."""

    def __init__(self, queue: DeadLetterQueue | None, url: str | None, why_not: str | None) -> None:
        self.queue = queue
        self.url = url
        """Redacted, for messages."""
        self.why_not = why_not


@contextlib.contextmanager
def job_dlq(state: JobStatus, store_url: str, dlq_url: str | None) -> Iterator[JobDLQ]:
    """The job's DLQ: ``--dlq`` when given; else the one ``batchguard run`` saved (unless its
    password had to be left out); else the store's own database when the job used it."""
    cli = saved_cli(state)
    url = dlq_url if dlq_url is not None else (None if cli is None else cli.get("dlq"))
    if url is not None and dlq_url is None and "***" in url:
        yield JobDLQ(None, url, f"the job's DLQ {url} needs its password, which is not stored: pass --dlq URL")
        return
    missing = None if url is None else file_of(url)
    if url is not None and missing is not None and not missing.exists():  # opening it would create one
        yield JobDLQ(None, redact(url), f"the job's DLQ {missing} does not exist: pass --dlq URL")
        return
    try:
        if url is not None:
            queue = open_dlq(url)
        else:
            with opened_store(store_url) as store:
                queue = store.open_default_dlq()
                if cli is None and describe_dlq(queue) != state.config.get("dlq"):
                    queue.close()
                    yield JobDLQ(None, None, f"the job keeps its dead letters in {state.config.get('dlq')}: "
                                             "pass --dlq URL to include them")
                    return
            url = store_url
    except (BatchguardError, TypeError, ModuleNotFoundError) as exc:
        cannot_start(exc)
    try:
        yield JobDLQ(queue, redact(url), None)
    finally:
        queue.close()


def dead_letter_counts(queue: DeadLetterQueue, job: str) -> dict[str, int]:
    """The job's DLQ entries by status (open, resolved, replayed, replaying), those of stopped
    batches included."""
    return {status: queue.count(job_id=job, status=status) for status in STATUSES}


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _span_cells(span: BatchSpan) -> list[str]:
    where = str(span.first) if span.count == 1 else f"{span.first}-{span.last}"
    note = f"{span.run_id} stopped {span.at[:19]}" if span.state == "stopped" and span.at else ""
    state = {"stopped": "stopped (in flight)"}.get(span.state, span.state)
    return [where, state, _n(span.records), _n(span.succeeded), _n(span.failed), _n(span.pending),
            _n(span.retries), note]


_SPAN_HEADERS: Final = ["batches", "state", "records", "succeeded", "dead-lettered", "pending", "retries",
                        "note"]


def batch_table_lines(name: str, store_url: str, batches: BatchTable) -> list[str]:
    """The folded batch table of ``jobs status``: a title, then the table (at most SPAN_ROWS
    rows: the first and last halves, and one line naming the batches left out)."""
    spans = list(batches.spans)
    rows = [_span_cells(s) for s in spans]
    if len(rows) > SPAN_ROWS:
        half = SPAN_ROWS // 2
        hidden = spans[half:-half]
        rows = [*rows[:half], [f"... {len(hidden)} more rows: batches {hidden[0].first}-{hidden[-1].last}",
                               "", "", "", "", "", "", ""], *rows[-half:]]
    page = (f"batchguard jobs status {shlex.quote(name)}{url_flag('--store', store_url)} --batches "
            "--offset N")
    return ["", "BATCHES (consecutive batches in the same state folded; one per row: " + page + "):",
            plain_table(_SPAN_HEADERS, rows)]


def print_status(state: JobStatus, batches: BatchTable, store_url: str, dlq: JobDLQ,
                 counts: dict[str, int] | None, as_json: bool) -> None:
    """``jobs status NAME``: totals, dead letters, batches, settings, and what to do next."""
    if as_json:
        data = {**state.to_dict(), "batches": batches.to_dict(),
                "dead_letters": None if counts is None else {**counts, "dlq": dlq.url},
                "dead_letters_unavailable": dlq.why_not}
        click.echo(json.dumps(data, indent=2, default=str))
        return
    total = "unknown" if state.total is None else f"{state.total:,}"
    percent = "-" if state.percent_complete is None else f"{state.percent_complete:.1f}%"
    pending = "unknown" if state.pending is None else f"{state.pending:,}"
    of = f" of {batches.batches_total:,}" if batches.batches_total is not None else ""
    lines = [
        f"Job:          {state.name}",
        f"Status:       {shown_status(state)}" + (" (a process is running it)" if state.active else ""),
        f"Progress:     {percent} ({state.processed:,} of {total} records final)",
        f"Records:      {state.succeeded:,} succeeded, {state.failed:,} dead-lettered, {pending} pending",
    ]
    if counts is not None:
        # Claimed entries (replaying) exist only while a replay runs: named only when there are some.
        shown = ", ".join(f"{n:,} {status}" for status, n in counts.items() if n or status != CLAIMED)
        in_stopped = sum(s.failed for s in batches.spans if s.state == "stopped")
        rerun = f"; {in_stopped:,} open ones are of stopped batches, which rerun" if in_stopped else ""
        lines.append(f"Dead letters: {shown} (in {dlq.url}{rerun})")
    elif dlq.why_not:
        lines.append(f"Dead letters: {dlq.why_not}")
    lines += [
        f"Batches:      {batches.done:,}{of} done, {batches.stopped:,} stopped in flight, "
        f"{_n(batches.pending)} pending (size {state.batch_size:,})",
        f"Runs:         {state.runs} (last: {state.last_run_id})",
        f"Created:      {state.created_at}",
        f"Updated:      {state.updated_at}",
    ]
    if state.finished_at:
        lines.append(f"Finished:     {state.finished_at}")
    if state.error:
        lines.append(f"Last stop:    {state.error}")
    lines.append(f"Fingerprint:  {state.fingerprint}")
    cli = saved_cli(state)
    if cli:
        lines.append(f"Input:        {cli.get('input')} ({cli.get('format')})   --fn {cli.get('fn')}")
    lines.append("Config:       " + json.dumps({k: v for k, v in state.config.items() if k != "meta"},
                                               sort_keys=True, default=str))
    if state.status in ("running", "aborted") and not state.active:
        lines.append(f"Resume with:  batchguard jobs resume {shlex.quote(state.name)}{url_flag('--store', store_url)}")
    if state.failed:
        lines.append(f"Retry failed: batchguard jobs retry-failed {shlex.quote(state.name)} --fn {saved_fn(state)}"
                     f"{url_flag('--store', store_url)}")
    lines += batch_table_lines(state.name, store_url, batches)
    click.echo("\n".join(lines))


def _row_cells(row: BatchRow) -> list[str]:
    duration = "" if row.duration_s is None else f"{row.duration_s:.2f} s"
    return [str(row.index), row.state, _n(row.size), _n(row.succeeded), _n(row.failed), _n(row.pending),
            _n(row.retries), duration, row.run_id or "", (row.at or "")[:19]]


def print_batch_page(name: str, store_url: str, offset: int, limit: int, as_json: bool) -> None:
    """``jobs status NAME --batches``: one row per batch, a page of ``limit`` from ``offset``."""
    try:
        rows = batch_rows(name, first=offset, limit=limit, store=store_url)
        total = job_batches(name, store=store_url).batches_total
    except (BatchguardError, TypeError, ModuleNotFoundError) as exc:
        cannot_start(exc)
    if as_json:
        click.echo(json.dumps({"job": name, "offset": offset, "batches_total": total,
                               "batches": [r.to_dict() for r in rows]}, indent=2, default=str))
        return
    if not rows:
        click.echo(f"job {name!r} has no batch at index {offset} or later"
                   + ("" if total is None else f" (it has {total:,})"))
        return
    of = "" if total is None else f" of {total:,}"
    table(f"Batches {rows[0].index}-{rows[-1].index}{of} of job {name}:",
          ["batch", "state", "records", "succeeded", "dead-lettered", "pending", "retries", "duration",
           "run", "at (UTC)"], [_row_cells(r) for r in rows])
    if total is None or rows[-1].index + 1 < total:
        click.echo(f"next page: batchguard jobs status {shlex.quote(name)}{url_flag('--store', store_url)} "
                   f"--batches --offset {rows[-1].index + 1} --limit {limit}")


def locate(state: JobStatus, store_url: str, dlq: JobDLQ, record_id: str | None,
           index: int | None) -> RecordStatus:
    """Where the record stands: by ``index``, or by ``record_id`` looked up in the input the
    job was started on (read once, with its ``--id-field``), else among its dead letters."""
    records = None
    # The CLI's rule (run.py): a record's own id, else where it was read (file:line, file#row).
    id_of: Callable[[Any], Any] = input_id
    cli = saved_cli(state)
    note = ""
    if record_id is not None and cli is not None and cli.get("input") not in (None, "-"):
        try:
            records = open_input(str(cli["input"]), cli.get("format"))
        except InputError as exc:
            note = f" (the job's input cannot be read: {exc})"
        engine = cli.get("engine") if isinstance(cli.get("engine"), dict) else {}
        if engine and engine.get("id_field"):
            id_of = FieldOf(str(engine["id_field"]))
    if dlq.queue is None and (index is not None or records is not None):
        raise CannotStart(f"cannot tell where the record stands: {dlq.why_not}")
    try:
        where = record_status(state.name, index=index, record_id=record_id, records=records, id_of=id_of,
                              store=store_url, dlq=dlq.queue)
    except (BatchguardError, TypeError) as exc:
        cannot_start(exc)
    if note:
        where = RecordStatus(where.job, where.state, where.record_id, where.record_index, where.batch_index,
                             where.batch_state, where.entry, where.detail + note)
    return where


def print_record(where: RecordStatus, dlq: JobDLQ, store_url: str, as_json: bool, fn_spec: str) -> None:
    """``jobs status NAME --record ID``: the record's state, its batch, its entry, next steps
    (a retry with ``fn_spec``, :func:`saved_fn`)."""
    if as_json:
        click.echo(json.dumps(where.to_dict(), indent=2, default=str))
        return
    # One form whatever the id's type: an id read from the input may be an int, one given on
    # the command line (not found in it) is a str.
    lines = [f"Record {str(where.record_id)!r} of job {where.job!r}: {where.state.upper().replace('_', '-')}"]
    if where.record_index is not None:
        batch = "" if where.batch_index is None else f", batch {where.batch_index} ({where.batch_state})"
        lines.append(f"  position:  #{where.record_index}{batch}")
    entry = where.entry
    if entry is not None:
        why = "" if entry.status_reason is None else f": {entry.status_reason}"
        by = "" if entry.status_by is None else f" by {entry.status_by}"
        lines.append(f"  entry:     {entry.id} ({entry.status}{by}{why})")
        lines.append(f"  error:     {entry.error_class.upper()} {entry.error_type}: {entry.error_message}"[:300])
        lines.append(f"  attempts:  {len(entry.attempts)}, last failed {entry.last_failed_at}")
    lines.append(f"  how known: {where.detail}")
    dlq_flag = "" if dlq.url is None or dlq.url == redact(store_url) else url_flag("--dlq", dlq.url)
    if entry is not None and where.state == "dead_lettered":
        lines.append(f"  details:   batchguard dlq show {entry.id}{dlq_flag}")
        if is_unparsed_line(entry):
            # dlq retry leaves an input line that did not parse in the queue (and exits 1): the
            # step that helps is fixing the line, as dlq review says.
            lines.append("  fix it:    correct the line in the input (it did not parse: a retry leaves it "
                         "queued), then skip it")
        else:
            lines.append(f"  retry it:  batchguard dlq retry {entry.id} --fn {fn_spec}{dlq_flag}")
        lines.append(f"  skip it:   batchguard dlq skip {entry.id} --reason TEXT{dlq_flag}")
    elif where.state == "pending":
        lines.append(f"  finish it: batchguard jobs resume {shlex.quote(where.job)}{url_flag('--store', store_url)}")
    click.echo("\n".join(lines))
