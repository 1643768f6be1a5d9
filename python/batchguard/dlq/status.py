"""Triage status of dead letters: the status argument every queue reads, and status changes.

An entry is ``open`` until someone resolves it (skipped on purpose, with a reason) or a replay
of its record succeeds (``replayed``). A change never deletes anything: the entry keeps its
payload and attempt history, and its ``history`` gains the change (who, why, when).
"""

from __future__ import annotations

import dataclasses
import getpass
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final, Literal

from .._checks import closest
from ..errors import ConfigError, ConfigTypeError, DeadLetterNotFoundError
from .codec import clean_text
from .entry import STATUSES, DeadLetter, StatusChange

__all__ = ["ALL", "DEFAULT_STATUS", "Status", "action_of", "check_status", "current_user", "new_change", "not_found",
           "unique_ids", "with_change"]

Status = Literal["open", "resolved", "replayed", "all"]
"""What a queue's readers accept as ``status=``: one status, or ``"all"`` (also None)."""

ALL: Final = "all"
DEFAULT_STATUS: Final = "open"
"""What ``count``, ``list``, ``iter``, ``export`` and ``replay`` select by default: the entries
that still need attention. A replayed entry leaves this view, as it left the queue before
statuses existed, so ``dlq.count()`` still answers "how many failures are left"."""

_SHOWN: Final = 5


def check_status(status: str | None) -> str | None:
    """The status to select entries by, or None for every status (``"all"`` or None).

    >>> check_status("open"), check_status("all"), check_status(None)
    ('open', None, None)
    >>> check_status("resovled")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    batchguard.errors.ConfigError: status must be one of ..., got 'resovled'; did you mean 'resolved'?
    """
    if status is None or status == ALL:
        return None
    if not isinstance(status, str):
        raise ConfigTypeError(f"status must be a str (open, resolved, replayed or all), got "
                              f"{type(status).__name__} {status!r:.60}")
    if status not in STATUSES:
        guess = closest(status, (*STATUSES, ALL))
        raise ConfigError(f"status must be one of {', '.join(STATUSES)} or {ALL}, got {status!r:.60}"
                          + (f"; did you mean {guess!r}?" if guess else ""))
    return status


def current_user() -> str:
    """Who is changing an entry when the caller does not say: the OS user's login name."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container's uid without a passwd entry)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def new_change(status: str, *, reason: str | None, by: str | None) -> StatusChange:
    """A change to ``status`` now (UTC), by ``by`` (default: the OS user), for ``reason``."""
    if status not in STATUSES:
        raise ConfigError(f"an entry's status must be one of {', '.join(STATUSES)}, got {status!r:.60}")
    for name, value in (("reason", reason), ("by", by)):
        if value is not None and not isinstance(value, str):
            raise ConfigTypeError(f"{name} must be a str or None, got {type(value).__name__} {value!r:.60}")
    who = current_user() if by is None or not by.strip() else by.strip()
    why = None if reason is None else clean_text(reason.strip()) or None
    return StatusChange(status, datetime.now(UTC).isoformat(timespec="milliseconds"), clean_text(who), why)


def with_change(entry: DeadLetter, change: StatusChange) -> DeadLetter:
    """``entry`` with ``change`` applied: its status fields describe it, its history ends with it."""
    return dataclasses.replace(entry, status=change.status, status_reason=change.reason,
                               status_by=change.by, status_at=change.at,
                               history=(*entry.history, change))


def unique_ids(ids: Iterable[str], action: str) -> list[str]:
    """``ids`` without repeats, in order, each a str (a single str is refused: it is one id, not
    an iterable of its characters)."""
    if isinstance(ids, str):
        raise ConfigTypeError(f"{action} takes a list of ids, got the str {ids!r:.60}: wrap it in a list")
    found = list(dict.fromkeys(ids))
    for entry_id in found:
        if not isinstance(entry_id, str):
            raise ConfigTypeError(f"{action}: ids must be str, got {type(entry_id).__name__} {entry_id!r:.60}")
    return found


_ACTIONS: Final = {"open": "reopen", "resolved": "resolve", "replayed": "mark replayed"}


def action_of(status: str) -> str:
    """What moving entries to ``status`` is called in messages ("resolve")."""
    return _ACTIONS.get(status, f"set status {status}")


def not_found(unknown: Sequence[str], action: str) -> DeadLetterNotFoundError:
    """The error for ids that name no entry: it names them (the first few) and says nothing changed.

    >>> str(not_found(["x1"], "resolve"))
    "resolve: no dead letter has the id 'x1' in this queue; nothing was changed"
    """
    if len(unknown) == 1:
        return DeadLetterNotFoundError(f"{action}: no dead letter has the id {unknown[0]!r} in this queue; "
                                       "nothing was changed", tuple(unknown))
    named = ", ".join(repr(i) for i in unknown[:_SHOWN]) + (", ..." if len(unknown) > _SHOWN else "")
    return DeadLetterNotFoundError(f"{action}: {len(unknown):,} ids name no dead letter in this queue "
                                   f"({named}); nothing was changed", tuple(unknown))
