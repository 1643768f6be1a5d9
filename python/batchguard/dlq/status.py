"""Triage status of dead letters: the status argument every queue reads, status changes, and
the claims of running replays.

An entry is ``open`` until someone resolves it (skipped on purpose, with a reason) or a replay
of its record succeeds (``replayed``). A change never deletes anything: the entry keeps its
payload and attempt history, and its ``history`` gains the change (who, why, when).

While a replay runs an entry's record, the entry is ``replaying``: the replay claimed it, so no
other replay runs it too, and a skip waits (or is forced). A claim is a lock, not a triage
step: it names the replay's run id and lease, the replay renews it while it holds the entry,
and it leaves no trace in the history once the replay settles or releases the entry. A claim
not renewed within its lease (the replay was killed) is stale: the next replay takes it over.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final, Literal

from .._checks import MAX_DURATION_S, closest
from ..errors import ConfigError, ConfigTypeError, DeadLetterClaimedError, DeadLetterNotFoundError
from .codec import clean_text
from .entry import STATUSES, DeadLetter, StatusChange

__all__ = ["ALL", "CLAIMED", "DEFAULT_LEASE_S", "DEFAULT_STATUS", "MIN_LEASE_S", "Claim", "Status", "action_of",
           "check_status", "claim_change", "claim_of", "claimed", "current_user", "new_change", "not_found",
           "refuse_claimed", "renewed", "unclaimed", "unique_ids", "with_change"]

Status = Literal["open", "resolved", "replayed", "replaying", "all"]
"""What a queue's readers accept as ``status=``: one status, or ``"all"`` (also None)."""

ALL: Final = "all"
DEFAULT_STATUS: Final = "open"
"""What ``count``, ``list``, ``iter``, ``export`` and ``replay`` select by default: the entries
that still need attention. A replayed entry leaves this view, as it left the queue before
statuses existed, so ``dlq.count()`` still answers "how many failures are left"."""

_SHOWN: Final = 5

CLAIMED: Final = "replaying"
"""The status of an entry a running replay has claimed (see the module doc)."""
DEFAULT_LEASE_S: Final = 60.0
"""How long a replay's claim lasts unless renewed; a replay renews its claims every third of it."""
MIN_LEASE_S: Final = 1.0
"""The shortest lease a replay takes: a renewal is a round trip to the queue (a lock wait, a
loaded machine's scheduling delay) and a claim's time is stored to the millisecond, so a lease
of milliseconds goes stale between renewals, and two replays take each other's claims over."""
_CLAIM: Final = re.compile(r"claimed by replay (?P<run>\S+) \(lease (?P<lease>[0-9.e+-]+) s\)")


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
    """A change to ``status`` now (UTC), by ``by`` (default: the OS user), for ``reason``;
    never to ``replaying``, which only a replay's claim makes (:func:`claim_change`)."""
    if status not in STATUSES:
        raise ConfigError(f"an entry's status must be one of {', '.join(STATUSES)}, got {status!r:.60}")
    if status == CLAIMED:
        # A claim made here would be held by no replay: every replay would leave the entry,
        # and every skip be refused, for its lease.
        raise ConfigError(f"an entry becomes {CLAIMED} only when a replay claims it (batchguard.replay); "
                          "set it open, resolved or replayed")
    return _change(status, reason=reason, by=by)


def _change(status: str, *, reason: str | None, by: str | None) -> StatusChange:
    """:func:`new_change` for any status, a claim's included (its reason and author checked)."""
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


_ACTIONS: Final = {"open": "reopen", "resolved": "resolve", "replayed": "mark replayed", CLAIMED: "claim"}


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


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """A running replay's hold on an entry: which replay (its run id), since when (``at``, the
    claim or its last renewal), for how long unless renewed, and who started it."""

    run_id: str
    at: datetime
    lease_s: float
    by: str | None

    def stale(self, now: datetime) -> bool:
        """Whether the lease ran out unrenewed: the replay holding it is gone (killed, or its
        machine lost), and another replay may take the entry over. A claim stamped more than
        its lease ahead of ``now`` is stale too: a clock that far off (or a corrupt stamp) is
        judged as one that far behind, and must not hold an entry until the year it names."""
        return abs((now - self.at).total_seconds()) > self.lease_s

    def describe(self, now: datetime) -> str:
        """For messages: "replay run-X (by alice, claimed 3 s ago, lease 60 s)"."""
        age = max((now - self.at).total_seconds(), 0.0)
        state = "stale: its lease ran out" if self.stale(now) else f"lease {self.lease_s:g} s"
        who = f"by {self.by}, " if self.by else ""
        return f"replay {self.run_id} ({who}renewed {age:.0f} s ago, {state})"


def claim_change(run_id: str, lease_s: float, by: str | None) -> StatusChange:
    """The change a replay claims an entry with (status ``replaying``)."""
    return _change(CLAIMED, reason=f"claimed by replay {run_id} (lease {lease_s:g} s)", by=by)


def claim_of(entry: DeadLetter) -> Claim | None:
    """The replay's claim on ``entry``, or None when it is not ``replaying`` (or its claim
    cannot be read: then it is treated as stale, as a claim nobody renews)."""
    if entry.status != CLAIMED:
        return None
    found = _CLAIM.fullmatch(entry.status_reason or "")
    try:
        at = datetime.fromisoformat(entry.status_at or "")
    except ValueError:
        at = datetime.min.replace(tzinfo=UTC)
    if at.tzinfo is None:  # written without an offset (by hand, another tool): claims are stamped in UTC
        at = at.replace(tzinfo=UTC)
    if found is None:
        return Claim("(unknown)", at, 0.0, entry.status_by)
    try:
        lease = float(found["lease"])
    except ValueError:  # "1.2.3": the pattern admits it, no replay wrote it
        lease = 0.0
    if not 0.0 < lease <= MAX_DURATION_S:  # no replay takes such a lease (nan fails this too)
        lease = 0.0
    return Claim(found["run"], at, lease, entry.status_by)


def claimed(entry: DeadLetter, change: StatusChange) -> DeadLetter:
    """``entry`` claimed by ``change`` (from :func:`claim_change`), over any earlier (stale)
    claim: the claim is the last change of its history until the replay settles it."""
    return with_change(unclaimed(entry), change)


def renewed(entry: DeadLetter, now: datetime) -> DeadLetter:
    """``entry``'s claim renewed: its lease starts again at ``now`` (no new history change)."""
    at = now.isoformat(timespec="milliseconds")
    history = entry.history
    if history and history[-1].status == CLAIMED:
        history = (*history[:-1], dataclasses.replace(history[-1], at=at))
    return dataclasses.replace(entry, status_at=at, history=history)


def unclaimed(entry: DeadLetter) -> DeadLetter:
    """``entry`` as it was before its claim: the status, reason, author and time of the change
    before it (open when there was none), the claim gone from its history."""
    if entry.status != CLAIMED:
        return entry
    history = list(entry.history)
    while history and history[-1].status == CLAIMED:
        history.pop()
    if not history:
        return dataclasses.replace(entry, status=DEFAULT_STATUS, status_reason=None, status_by=None,
                                   status_at=None, history=())
    last = history[-1]
    return dataclasses.replace(entry, status=last.status, status_reason=last.reason, status_by=last.by,
                               status_at=last.at, history=tuple(history))


def refuse_claimed(entries: Sequence[DeadLetter], action: str, now: datetime) -> DeadLetterClaimedError:
    """The error for a change of entries that live claims hold: it names the replays."""
    holds = [(entry.id, claim) for entry in entries if (claim := claim_of(entry)) is not None]
    named = ", ".join(f"{entry_id!r} ({claim.describe(now)})" for entry_id, claim in holds[:_SHOWN])
    more = f" and {len(holds) - _SHOWN:,} more" if len(holds) > _SHOWN else ""
    return DeadLetterClaimedError(
        f"{action}: {len(holds):,} of the entries are being replayed right now: {named}{more}; nothing "
        f"was changed. Wait for the replay to end, or force it (force=True, --force): the change then "
        f"wins and the replay leaves those entries as you set them", tuple(entry_id for entry_id, _ in holds))
