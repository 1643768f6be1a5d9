"""``batchguard dlq review``: the triage screen of seed 003 -- which run or job, the totals by
status, the error patterns with a recommendation each, then each failed entry with its
attempt history, its error and the exact commands that retry, skip or inspect it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import click

from .._report.patterns import FailurePattern, PatternCounter, PatternKey, message_template
from .._report.rules import PLACEHOLDER_FN
from .._report.text import percent
from .._urls import redact
from ..dlq.base import STATUSES, DeadLetter, DeadLetterQueue
from ..dlq.status import ALL, CLAIMED, DEFAULT_STATUS
from ..replay import PARSE_ERROR, is_unparsed_line
from .console import one_line
from .dlq_queue import open_queue, status_option
from .options import DEFAULT_URL, dlq_option, filter_options, filters, url_flag

__all__ = ["actions", "review"]

SCAN: Final = 100_000
"""``dlq review`` groups at most this many entries into patterns (one pass, bounded memory)."""
_RULE: Final = "━" * 72
_NAMED: Final = 3  # runs or jobs named in the header before "and N more"
_ATTEMPTS_SHOWN: Final = 5
_LIMIT: Final = 10


def _flag(option: str, value: str | None) -> str:
    return "" if value is None else f" {option} {shlex.quote(value)}"


def actions(entry: DeadLetter, dlq_url: str, *, fn: str | None) -> list[str]:
    """The exact commands that act on ``entry``: retry, skip and inspect it (an entry already
    resolved or replayed: retry it anyway, or reopen its story with show)."""
    where = url_flag("--dlq", dlq_url)
    entry_id = shlex.quote(entry.id)
    fn_flag = f" --fn {PLACEHOLDER_FN if fn is None else shlex.quote(fn)}"
    found = [f"investigate:  batchguard dlq show {entry_id}{where}"]
    if is_unparsed_line(entry):
        retry = ("fix:          the payload is an input line that did not parse: correct it in the input "
                 "and run that line again (dlq retry leaves such entries alone unless given "
                 "--include-parse-errors, which feeds --fn the raw text)")
    elif entry.status == DEFAULT_STATUS:
        retry = f"retry:        batchguard dlq retry {entry_id}{fn_flag}{where}"
    else:
        retry = f"retry anyway: batchguard dlq retry {entry_id} --status all{fn_flag}{where}"
    skip = (f"skip:         batchguard dlq skip {entry_id} --reason 'WHY'{where}"
            if entry.status == DEFAULT_STATUS else f"remove:       batchguard dlq remove {entry_id}{where}")
    return [retry, skip, *found]


@dataclass
class _Scan:
    """One pass over the matching entries: their patterns and where they come from."""

    counter: PatternCounter = field(default_factory=PatternCounter)
    runs: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    first: str | None = None
    last: str | None = None
    scanned: int = 0

    def add(self, entry: DeadLetter) -> None:
        self.counter.add(entry.id, entry.error_type, str(entry.error_class), entry.http_status, entry.error_message)
        self.scanned += 1
        for seen, key in ((self.runs, entry.run_id), (self.jobs, entry.job_id)):
            if key is not None and (key in seen or len(seen) <= _NAMED):
                seen[key] = seen.get(key, 0) + 1
            elif key is not None:
                seen[""] = seen.get("", 0) + 1  # entries of runs or jobs past the ones named
        if entry.first_failed_at and (self.first is None or entry.first_failed_at < self.first):
            self.first = entry.first_failed_at
        if entry.last_failed_at and (self.last is None or entry.last_failed_at > self.last):
            self.last = entry.last_failed_at


def _scan(queue: DeadLetterQueue, status: str, selected: dict[str, Any]) -> _Scan:
    scan = _Scan()
    for entry in queue.iter(status=status, **selected):
        if scan.scanned >= SCAN:
            break
        scan.add(entry)
    return scan


def _names(seen: dict[str, int]) -> str:
    named = [name for name in seen if name]
    shown = ", ".join(named[:_NAMED])
    return shown + (" and more" if len(named) > _NAMED or "" in seen else "")


def _pattern_of(entry: DeadLetter, patterns: tuple[FailurePattern, ...]) -> int | None:
    """The number of ``entry``'s pattern on the screen (None: counted among "other")."""
    key = PatternKey(entry.error_type, str(entry.error_class), entry.http_status, message_template(entry.error_message))
    for number, pattern in enumerate(patterns, 1):
        if PatternKey(pattern.error_type, pattern.error_class, pattern.http_status, pattern.template) == key:
            return number
    return None


@dataclass(frozen=True)
class _Context:
    dlq_url: str
    status: str
    selected: dict[str, Any]
    fn: str | None

    def fill(self, pattern: FailurePattern) -> str | None:
        return pattern.command_line(dlq=None if self.dlq_url == DEFAULT_URL else self.dlq_url,
                                    job=self.selected.get("job_id"), run_id=self.selected.get("run_id"), fn=self.fn)

    def command(self, verb: str, *extra: str) -> str:
        scope = "".join(_flag(f"--{name.replace('_', '-')}", value) for name, value in self.selected.items())
        scope = scope.replace("--job-id", "--job")
        return f"batchguard dlq {verb}{''.join(extra)}{scope}{url_flag('--dlq', self.dlq_url)}"


def _header(ctx: _Context, totals: dict[str, int], scan: _Scan) -> list[str]:
    where = ", ".join(f"{k}={v}" for k, v in ctx.selected.items())
    lines = [f"DEAD LETTER QUEUE REVIEW: {redact(ctx.dlq_url)}" + (f" ({where})" if where else ""), ""]
    if scan.jobs:
        lines.append(f"Job:          {_names(scan.jobs)}")
    if scan.runs:
        lines.append(f"Run:          {_names(scan.runs)}")
    # Claimed entries (replaying) exist only while a replay runs: named only when there are some.
    shown = [s for s in STATUSES if s != CLAIMED or totals[s]]
    lines.append("Entries:      " + ", ".join(f"{totals[s]:,} {s}" for s in shown) + f" ({totals[ALL]:,} in all)")
    if scan.first is not None:
        lines.append(f"Failed:       {scan.first[:19]} .. {(scan.last or scan.first)[:19]} (UTC)")
    return lines


def _pattern_lines(ctx: _Context, patterns: tuple[FailurePattern, ...], scan: _Scan, total: int) -> list[str]:
    basis = "" if scan.scanned >= total else f" (in the first {scan.scanned:,})"
    noun = "entries" if ctx.status == ALL else f"{ctx.status} entries"
    lines = [_RULE, "", f"ERROR PATTERNS of the {noun}{basis}:", ""]
    for number, pattern in enumerate(patterns, 1):
        status = "" if pattern.http_status is None else f", HTTP {pattern.http_status}"
        rec = pattern.recommendation
        lines += [f"{number}. {pattern.error_type} ({pattern.error_class}{status}): {pattern.count:,} "
                  f"{'entry' if pattern.count == 1 else 'entries'} ({percent(pattern.share)})",
                  f"   Message:  {one_line(pattern.template, 100)}",
                  f"   Examples: {', '.join(str(i) for i in pattern.example_ids)}",
                  f"   Check:    {rec.check}",
                  f"   Change:   {rec.change}"]
        command = ctx.fill(pattern)
        if command is not None:
            lines.append(f"   Run:      {command}")
        lines.append("")
    return lines


def _entry_lines(ctx: _Context, number: int, entry: DeadLetter, pattern: int | None) -> list[str]:
    lines = [f"{number}. Record {entry.record_id!r} (index {entry.record_index}, batch {entry.batch_index})",
             f"   ID:       {entry.id}",
             f"   Run:      {entry.run_id}" + (f"   Job: {entry.job_id}" if entry.job_id else "")
             + f"   Stage: {entry.stage}"]
    if entry.status != DEFAULT_STATUS:
        lines.append(f"   Status:   {entry.status} by {entry.status_by or '?'} at {(entry.status_at or '')[:19]}"
                     + (f": {entry.status_reason}" if entry.status_reason else ""))
    lines.append(f"   Error:    {entry.error_type} ({entry.error_class}): {one_line(entry.error_message, 120)}")
    if entry.http_status is not None:
        lines.append(f"   HTTP:     {entry.http_status}")
    if pattern is not None:
        lines.append(f"   Pattern:  {pattern} (see ERROR PATTERNS)")
    lines.append(f"   Attempts: {len(entry.attempts)}")
    shown = entry.attempts[-_ATTEMPTS_SHOWN:]
    if len(entry.attempts) > len(shown):
        lines.append(f"     ... {len(entry.attempts) - len(shown)} earlier attempts (dlq show has them all)")
    for a in shown:
        lines.append(f"     - attempt {a.attempt} ({a.at[:19]}): {a.error_type}: {one_line(a.error_message, 90)}")
    lines.append("   Actions:")
    lines += [f"     {action}" for action in actions(entry, ctx.dlq_url, fn=ctx.fn)]
    return [*lines, ""]


def _bulk_lines(ctx: _Context, patterns: tuple[FailurePattern, ...]) -> list[str]:
    fn = f" --fn {PLACEHOLDER_FN if ctx.fn is None else shlex.quote(ctx.fn)}"
    lines = [_RULE, "", "BULK ACTIONS:", ""]
    # dlq retry leaves input lines that did not parse in the queue: no retry is offered for them.
    retryable = [p.error_type for p in patterns if p.error_type != PARSE_ERROR]
    if ctx.status == DEFAULT_STATUS and (retryable or not patterns):
        lines += ["Retry every open entry shown here:", f"  {ctx.command('retry', fn)}"]
        if retryable and "error_type" not in ctx.selected:
            lines += ["Retry one error type only:",
                      f"  {ctx.command('retry', ' --error-type ' + shlex.quote(retryable[0]), fn)}"]
    lines += ["Export them for manual processing:",
              f"  {ctx.command('export', ' dead-letters.jsonl', _status_flag(ctx.status))}"]
    return lines


@click.command("review", short_help="The triage screen: totals, error patterns, each entry's actions.")
@dlq_option()
@filter_options
@status_option()
@click.option("--fn", "fn_spec", metavar="MODULE:CALLABLE",
              help="The fixed callback, to fill in the retry commands shown.")
@click.option("--limit", type=click.IntRange(min=0), default=_LIMIT, show_default=True,
              help="Entries shown in detail (the patterns cover every matching entry).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the screen's data as one JSON document.")
def review(dlq_url: str, status: str, fn_spec: str | None, limit: int, offset: int, as_json: bool,
           **given: Any) -> None:
    """Triage dead letters: which runs and jobs, the totals by status, the ERROR PATTERNS (error
    type, class, HTTP status, message template) with what to check, what to change and the
    command to run, then each entry (--limit at a time) with its attempts, its error and the
    exact commands that retry, skip or inspect it. Open entries unless --status."""
    ctx = _Context(dlq_url, status, filters(**given), fn_spec)
    with open_queue(dlq_url) as queue:
        totals = {s: queue.count(status=s, **ctx.selected) for s in (*STATUSES, ALL)}
        scan = _scan(queue, status, ctx.selected)
        entries = queue.list(limit=limit, offset=offset, status=status, **ctx.selected)
    patterns = scan.counter.patterns()
    total = totals[status]
    if as_json:
        click.echo(json.dumps(_json(ctx, totals, scan, patterns, entries, offset, total), indent=2, default=repr))
        return
    lines = _header(ctx, totals, scan)
    if not total:
        noun = "entries" if status == ALL else f"{status} entries"
        lines += ["", f"No {noun} to review." + ("" if status != DEFAULT_STATUS or not totals[ALL] else
                                              f" Others: {ctx.command('review', ' --status all')}")]
        click.echo("\n".join(lines))
        return
    lines += ["", *_pattern_lines(ctx, patterns, scan, total), _RULE, ""]
    shown = (f"{offset + 1}-{offset + len(entries)} of {total:,}" if entries
             else f"none of {total:,} at --offset {offset}")
    lines += [f"FAILED ITEMS ({shown}):", ""]
    for number, entry in enumerate(entries, offset + 1):
        lines += _entry_lines(ctx, number, entry, _pattern_of(entry, patterns))
    if offset + len(entries) < total:
        page = f" --offset {offset + len(entries)}" + ("" if limit == _LIMIT else f" --limit {limit}")
        lines += [f"more: {ctx.command('review', page, _status_flag(status), _flag('--fn', ctx.fn))}", ""]
    lines += _bulk_lines(ctx, patterns)
    click.echo("\n".join(lines))


def _status_flag(status: str) -> str:
    return "" if status == DEFAULT_STATUS else f" --status {status}"


def _json(ctx: _Context, totals: dict[str, int], scan: _Scan, patterns: tuple[FailurePattern, ...],
          entries: Iterable[DeadLetter], offset: int, total: int) -> dict[str, Any]:
    dlq = None if ctx.dlq_url == DEFAULT_URL else ctx.dlq_url
    listed = list(entries)
    return {
        "dlq": redact(ctx.dlq_url), "filters": ctx.selected, "status": ctx.status, "totals": totals,
        "runs": [name for name in scan.runs if name], "jobs": [name for name in scan.jobs if name],
        "first_failed_at": scan.first, "last_failed_at": scan.last, "scanned": scan.scanned,
        "patterns": [p.to_json(dlq=dlq, job=ctx.selected.get("job_id"), run_id=ctx.selected.get("run_id"),
                               fn=ctx.fn) for p in patterns],
        "entries": [{**json.loads(e.to_json()), "pattern": _pattern_of(e, patterns),
                     "actions": actions(e, ctx.dlq_url, fn=ctx.fn)} for e in listed],
        "offset": offset, "next_offset": offset + len(listed) if offset + len(listed) < total else None,
    }
