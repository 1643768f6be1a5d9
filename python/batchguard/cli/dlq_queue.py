"""What the ``dlq`` commands share: opening the queue ``--dlq`` names, finding entries by the ids
a person copied, and the ``--status`` option."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

import click

from .._urls import redact
from ..dlq.base import STATUSES, DeadLetter, DeadLetterQueue
from ..dlq.status import ALL, claim_of
from ..dlq.urls import open_dlq
from ..errors import ConfigError, DLQUnavailableError
from ..replay import ReplayReport
from .options import CannotStart, cannot_start, file_of, url_flag

__all__ = ["blocked_note", "claims_note", "dlq_retry_command", "find_entries", "find_entry", "interrupted_replay",
           "open_queue", "replayed_among", "shown_status", "status_option", "validate_option"]

_F = TypeVar("_F", bound=Callable[..., Any])

SHOWN_MATCHES: Final = 5
"""How many of the entries an ambiguous id prefix matches a message names."""
_MIN_PREFIX: Final = 4


def status_option(default: str = "open", help_text: str | None = None) -> Callable[[_F], _F]:
    """The ``--status open|resolved|replayed|replaying|all`` option."""
    return click.option("--status", type=click.Choice([*STATUSES, ALL]), default=default, show_default=True,
                        help=help_text or "Entries with this triage status (all: every entry).")


def validate_option(command: _F) -> _F:
    """The replay commands' ``--validate MODULE:CALLABLE``: check the records again first."""
    return click.option(
        "--validate", "validate_spec", metavar="MODULE:CALLABLE", default=None,
        help="Check each record again before --fn (as run --validate does): entries blocked by "
             "validation, left in the queue without it, run when now valid and stay, with their "
             "new issues, when still blocked.")(command)


def blocked_note(report: ReplayReport, validated: bool) -> str:
    """What the replay did with records blocked by validation, for its closing line ("" when none)."""
    if report.blocked_skipped:
        return (f"; {report.blocked_skipped:,} were blocked by validation (stage validate) and were "
                "left in the queue, not fed to --fn: fix the records in the input and re-run them, "
                "or check them again with --validate MODULE:CALLABLE")
    blocked = 0 if report.validation is None else report.validation.blocked
    if validated and blocked:
        return (f"; {blocked:,} are still blocked by validation and stay open with their new issues "
                "(batchguard dlq show ID): fix the records in the input")
    return ""


def claims_note(report: ReplayReport, dlq_url: str) -> None:
    """Print what the replay left to other replays, and what it ran but could not mark."""
    if report.held_elsewhere:
        click.echo(f"{report.held_elsewhere:,} matching dead letters are held by another running replay "
                   f"and were left to it: batchguard dlq list --status replaying{url_flag('--dlq', dlq_url)} "
                   "(a replay that was killed holds them until their lease runs out; --reclaim takes "
                   "them now)")
    if report.claims_lost:
        click.echo(f"{report.claims_lost:,} dead letters this replay ran were skipped with --force (or taken "
                   "over by another replay) meanwhile: left as they were set, their outcome here not written")


def shown_status(entry: DeadLetter, now: datetime) -> str:
    """An entry's status for a listing: a claimed one names its replay, and says when its lease
    ran out (its replay is gone: the next replay takes it over)."""
    claim = claim_of(entry)
    if claim is None:
        return entry.status
    return f"{entry.status} ({claim.run_id}" + (", stale)" if claim.stale(now) else ")")


def _open(url: str) -> DeadLetterQueue:
    path = file_of(url)
    if path is not None and not path.exists():
        raise CannotStart(f"no dead-letter queue at {path} (from {redact(url)}): the file does not exist")
    try:
        return open_dlq(url)
    except (ConfigError, DLQUnavailableError, TypeError, ModuleNotFoundError) as exc:
        cannot_start(exc)


@contextlib.contextmanager
def open_queue(url: str) -> Iterator[DeadLetterQueue]:
    """The existing DLQ at ``url`` (exit 2 when there is none), closed on leaving."""
    queue = _open(url)
    try:
        yield queue
    finally:
        queue.close()


def _prefixed(queue: DeadLetterQueue, prefix: str) -> list[str]:
    # Every status: a resolved entry is shown, retried and reopened by its id like any other.
    return [entry.id for entry in queue.iter(status=ALL) if entry.id.startswith(prefix)]


def _lookup(queue: DeadLetterQueue, wanted: str, dlq_url: str) -> DeadLetter | str:
    """The entry ``wanted`` names (its id, or a unique prefix of 4+ characters), else why not.

    The listing command it suggests carries ``dlq_url`` (redacted, quoted) unless it is the
    default: without it the copied command would list another queue."""
    listing = f"`batchguard dlq list --status all{url_flag('--dlq', dlq_url)}`"
    entry = queue.get(wanted)
    if entry is not None:
        return entry
    if len(wanted) < _MIN_PREFIX:
        return (f"no dead letter with id {wanted!r} (give at least {_MIN_PREFIX} characters of an id as "
                f"{listing} prints it)")
    found = _prefixed(queue, wanted)
    if len(found) == 1:
        entry = queue.get(found[0])
        if entry is not None:
            return entry
    if len(found) > 1:
        named = ", ".join(found[:SHOWN_MATCHES]) + (", ..." if len(found) > SHOWN_MATCHES else "")
        return (f"id prefix {wanted!r} matches {len(found):,} dead letters ({named}); give the whole id, "
                f"as {listing} prints it")
    return f"no dead letter with id {wanted!r} in this queue: {listing} prints the ids"


def find_entry(queue: DeadLetterQueue, wanted: str, dlq_url: str) -> DeadLetter:
    """The entry with id ``wanted``, or the only one whose id starts with it (4+ characters).

    Whitespace around it (copied from a table) is ignored; an ambiguous prefix names the first
    entries it matches, an unknown id says where the ids are listed (exit 2)."""
    found = _lookup(queue, wanted.strip(), dlq_url)
    if isinstance(found, str):
        raise CannotStart(found)
    return found


def find_entries(queue: DeadLetterQueue, wanted: Iterable[str], dlq_url: str) -> list[DeadLetter]:
    """The entries the ids (or unique prefixes) name, without repeats; when any names none, exit
    2 naming every one of them, so a typo among twenty ids costs one try, and nothing changes."""
    entries: dict[str, DeadLetter] = {}
    problems: list[str] = []
    for given in wanted:
        found = _lookup(queue, given.strip(), dlq_url)
        if isinstance(found, str):
            problems.append(found)
        else:
            entries.setdefault(found.id, found)
    if problems:
        shown = problems[:SHOWN_MATCHES] + ([f"... and {len(problems) - SHOWN_MATCHES:,} more"]
                                            if len(problems) > SHOWN_MATCHES else [])
        raise CannotStart("nothing was changed: " + ("; ".join(shown) if len(problems) == 1
                                                      else "\n  " + "\n  ".join(shown)))
    return list(entries.values())


def _count(queue: DeadLetterQueue, named: list[str] | None, status: str, selected: dict[str, Any]) -> int:
    """Entries with ``status`` among the ids ``named``, or else among the filters' matches."""
    if named is None:
        return queue.count(status=status, **selected)
    return sum(1 for entry_id in named
               if (entry := queue.get(entry_id)) is not None and (status == ALL or entry.status == status))


def replayed_among(queue: DeadLetterQueue, named: list[str] | None, selected: dict[str, Any]) -> int:
    """How many of the entries a replay works on are marked replayed already (taken before it,
    so that a Ctrl-C can say how many it marked)."""
    return _count(queue, named, "replayed", selected)


def dlq_retry_command(queue: DeadLetterQueue, named: list[str] | None, status: str, selected: dict[str, Any],
                      fn_spec: str, dlq_url: str) -> str:
    """The ``dlq retry`` command that replays what an interrupted one left: the ids given that
    are not replayed yet, or the same filters (replayed entries leave the ``--status`` view)."""
    still = [] if named is None else [
        entry_id for entry_id in named if (entry := queue.get(entry_id)) is not None and entry.status != "replayed"]
    return ("batchguard dlq retry" + "".join(f" {shlex.quote(e)}" for e in still)
            + f" --fn {shlex.quote(fn_spec)}{url_flag('--dlq', dlq_url)}"
            + "".join(f" --{'job' if k == 'job_id' else k.replace('_', '-')} {shlex.quote(str(v))}"
                      for k, v in selected.items())
            + ("" if status == "open" or status == ALL else f" --status {status}"))


def interrupted_replay(queue: DeadLetterQueue, named: list[str] | None, status: str, selected: dict[str, Any],
                       replayed_before: int, command: str) -> str:
    """The Ctrl-C message of a replay (``dlq retry``, ``jobs retry-failed``): every entry whose
    record succeeded is marked, the rest given back untouched, so how many were marked
    replayed, how many are left, and ``command``, which replays those."""
    marked = replayed_among(queue, named, selected) - replayed_before
    left = _count(queue, named, status, selected)
    if status == ALL:
        left -= replayed_among(queue, named, selected)
    which = "are not replayed yet" if status == ALL else f"stay {status}"
    return (f"interrupted: {marked:,} dead letters were marked replayed (every record that succeeded); "
            f"{left:,} {which}, untouched or failed again; replay them with:\n{command}")
