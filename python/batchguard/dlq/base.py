"""The queue protocol every backend implements, what the backends share, and the in-memory queue."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self, runtime_checkable

from .._db.role import Database
from .._files import atomic_writer, same_file
from .._report.patterns import FailurePattern, PatternCounter
from .._report.rules import RecommendationRule
from ..errors import ConfigError, ConfigTypeError, DLQError
from .codec import encode
from .entry import STATUSES, Attempt, DeadLetter, StatusChange
from .status import (
    DEFAULT_STATUS,
    action_of,
    check_status,
    claim_of,
    new_change,
    not_found,
    refuse_claimed,
    unclaimed,
    unique_ids,
    with_change,
)

__all__ = [
    "FILTER_FIELDS",
    "STATUSES",
    "Attempt",
    "DeadLetter",
    "DeadLetterQueue",
    "Decide",
    "MemoryDLQ",
    "QueueBase",
    "StatusChange",
    "TransactionalDLQ",
    "check_filters",
    "matches",
    "select",
]

FILTER_FIELDS = ("run_id", "job_id", "stage", "error_class", "error_type")

@runtime_checkable
class DeadLetterQueue(Protocol):
    """Where failed records go. Every backend passes ``tests/test_dlq_conformance.py``.

    ``send`` is batched and durable when it returns; it upserts by ``DeadLetter.id`` (the entry
    sent replaces the stored one, status included). Filters (keyword arguments) are exact
    matches on ``FILTER_FIELDS``. ``status`` selects by triage status: ``"open"`` (the
    default: entries that still need attention), ``"resolved"``, ``"replayed"``, or ``"all"``
    (also None). ``get`` and ``remove`` ignore the status.
    """

    def send(self, entries: Sequence[DeadLetter]) -> None: ...

    def count(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> int: ...

    def list(self, *, limit: int | None = None, offset: int = 0, status: str | None = DEFAULT_STATUS,
             **filters: Any) -> list[DeadLetter]: ...

    def iter(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> Iterator[DeadLetter]:
        """The matching entries in list order, read a page at a time."""
        ...

    def get(self, entry_id: str) -> DeadLetter | None: ...

    def remove(self, ids: Iterable[str]) -> int: ...

    def set_status(self, ids: Iterable[str], status: str, *, reason: str | None = None,
                   by: str | None = None, force: bool = False) -> int:
        """Move the entries ``ids`` to ``status`` (one of STATUSES), recording who, why and when in
        each one's history; all of them or, when an id names no entry, none
        (DeadLetterNotFoundError naming it), or when a running replay has claimed one, none
        (DeadLetterClaimedError naming the replay) unless ``force``. Returns how many entries
        changed."""
        ...

    def resolve(self, ids: Iterable[str], reason: str, *, by: str | None = None, force: bool = False) -> int:
        """``set_status(ids, "resolved", reason=reason, by=by, force=force)``; ``reason`` is required."""
        ...

    def patterns(self, *, rules: Sequence[RecommendationRule] | None = None,
                 status: str | None = DEFAULT_STATUS, **filters: Any) -> tuple[FailurePattern, ...]:
        """The matching entries grouped into failure patterns, each with a recommendation."""
        ...

    def export(self, path: str | os.PathLike[str] | IO[str], *, overwrite: bool = False,
               status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """Write the matching entries as JSON lines to a new file (atomically, 0600; an existing
        file only with ``overwrite=True``; never the queue's own file) or a text stream."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TransactionalDLQ(DeadLetterQueue, Protocol):
    """A queue whose writes can join a transaction of the database it lives in
    (:class:`~batchguard.dlq.SqliteDLQ`, :class:`~batchguard.dlq.PostgresDLQ`).

    A job store in the same database (``store.database.same_database(dlq.database)``) commits a
    batch's entries, the removal of its stale ones and its checkpoint in one transaction::

        with dlq.transaction() as cur:
            dlq.write_entries(cur, entries)
            dlq.remove(stale)  # joins the transaction
            cur.execute("INSERT INTO job_batches ...")
    """

    @property
    def database(self) -> Database:
        """The database the entries are written to."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """Hold the queue's lock and run one transaction, yielding its cursor; commit on exit,
        roll back on error. ``send`` and ``remove`` called inside it join it."""
        ...

    def write_entries(self, cursor: Any, entries: Iterable[DeadLetter]) -> None:
        """Upsert ``entries`` with ``cursor`` without committing: the caller owns the transaction."""
        ...


Decide = Callable[[dict[str, DeadLetter]], dict[str, DeadLetter]]
"""What :meth:`QueueBase.swap` applies: the present entries (by id) in, those to write back out."""


class QueueBase:
    """What every backend does alike: ``with queue:`` closes it, ``len(queue)`` counts the open
    entries, and the triage operations and a replay's claims, built on the backend's ``_swap``."""

    def count(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        raise NotImplementedError

    def list(self, *, limit: int | None = None, offset: int = 0, status: str | None = DEFAULT_STATUS,
             **filters: Any) -> list[DeadLetter]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def iter(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> Iterator[DeadLetter]:
        """The matching entries in list order, read a page at a time: the queue may hold more
        than fits in memory."""
        return self._iter(select(filters, status))

    def set_status(self, ids: Iterable[str], status: str, *, reason: str | None = None,
                   by: str | None = None, force: bool = False) -> int:
        """Move the entries ``ids`` to ``status`` (``"open"``, ``"resolved"`` or ``"replayed"``).

        Each entry's ``status_reason``/``status_by``/``status_at`` describe the change and its
        ``history`` gains it; ``by`` defaults to the OS user. Atomic: when an id names no entry,
        nothing changes and :class:`~batchguard.errors.DeadLetterNotFoundError` names the
        unknown ids. Returns how many entries changed (repeated ids count once).

        An entry a running replay has claimed (``replaying``) is not changed under it: nothing
        changes and :class:`~batchguard.errors.DeadLetterClaimedError` names the replay. With
        ``force=True`` the change wins: the claim is dropped, and the replay, finding the entry
        no longer its own, leaves it as set here. A stale claim (its replay gone) never stops a
        change.
        """
        wanted = unique_ids(ids, "set_status")
        change = new_change(status, reason=reason, by=by)
        if not wanted:
            return 0
        action = action_of(change.status)

        def decide(found: dict[str, DeadLetter]) -> dict[str, DeadLetter]:
            unknown = [entry_id for entry_id in wanted if entry_id not in found]
            if unknown:
                raise not_found(unknown, action)
            now = datetime.now(UTC)
            held = [e for e in found.values() if (claim := claim_of(e)) is not None and not claim.stale(now)]
            if held and not force:
                raise refuse_claimed(held, action, now)
            return {entry_id: with_change(unclaimed(entry), change) for entry_id, entry in found.items()}

        self._swap(wanted, decide)
        return len(wanted)

    def swap(self, ids: Iterable[str], decide: Decide) -> dict[str, DeadLetter]:
        """Read the entries ``ids``, let ``decide`` choose what to write back, write it: one
        atomic step, which no other writer (thread, process or machine) interleaves with.

        ``decide`` gets the present entries by id (an unknown id is left out) and returns the
        entries to store (same ids, a subset); if it raises, nothing is written and its error
        propagates. Returns every present entry as it is afterwards. A replay claims, renews,
        settles and releases its entries with it (compare-and-set on their claim).
        """
        wanted = unique_ids(ids, "swap")
        return self._swap(wanted, decide) if wanted else {}

    def resolve(self, ids: Iterable[str], reason: str, *, by: str | None = None, force: bool = False) -> int:
        """Mark the entries ``ids`` resolved: skipped on purpose, for ``reason`` (required), by
        ``by`` (default: the OS user). They leave the default (open) view and stay in the queue
        for the audit trail; see :meth:`set_status`.

        >>> q = MemoryDLQ()
        >>> q.resolve([], "nothing to do")
        0
        """
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError("resolve needs a reason (a non-empty str): it is what the next person "
                              f"reading the entry learns about why it was skipped; got {reason!r:.60}")
        return self.set_status(ids, "resolved", reason=reason, by=by, force=force)

    def patterns(self, *, rules: Sequence[RecommendationRule] | None = None,
                 status: str | None = DEFAULT_STATUS, **filters: Any) -> tuple[FailurePattern, ...]:
        """The matching entries (default: the open ones) grouped into failure patterns -- error
        type, class, HTTP status and message template -- most frequent first, each with the
        recommendation of the first rule of ``rules`` (default:
        :data:`batchguard.triage.DEFAULT_RULES`) that matches it.

        One pass over the entries, a page at a time, in bounded memory (see
        :class:`~batchguard.triage.PatternCounter`). A pattern's ``example_ids`` are entry ids
        (what ``get``, ``resolve``, ``replay(ids=...)`` and ``batchguard dlq show`` take), the
        first ones in list order.

        >>> q = MemoryDLQ(); q.patterns()
        ()
        """
        counter = PatternCounter()
        for entry in self.iter(status=status, **filters):
            counter.add(entry.id, entry.error_type, str(entry.error_class), entry.http_status, entry.error_message)
        return counter.patterns(rules)

    def _iter(self, wanted: dict[str, Any]) -> Iterator[DeadLetter]:
        raise NotImplementedError

    def _swap(self, ids: builtins.list[str], decide: Decide) -> dict[str, DeadLetter]:
        """:meth:`swap` for ``ids`` (no repeats): read the present ones, call ``decide`` once,
        store what it returns, atomically (nothing stored if it raises); return the present
        entries as they are afterwards."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()


def check_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """Validate filter names and value types; drop filters set to None. A value of the wrong
    type (``run_id=5``) would otherwise match nothing, silently (or fail in the database)."""
    unknown = set(filters) - set(FILTER_FIELDS)
    if unknown:
        raise TypeError(
            f"unknown DLQ filter(s) {', '.join(sorted(unknown))}; filters are {', '.join(FILTER_FIELDS)}"
        )
    wanted = {k: v for k, v in filters.items() if v is not None}
    for name, value in wanted.items():
        if not isinstance(value, str):
            raise ConfigTypeError(f"DLQ filter {name} must be a str, got {type(value).__name__} {value!r:.60}")
    if "error_class" in wanted:
        wanted["error_class"] = str(wanted["error_class"])  # an ErrorClass is stored as its value
    return wanted


def select(filters: dict[str, Any], status: str | None) -> dict[str, Any]:
    """:func:`check_filters` plus the status: the exact matches a backend applies, ``status``
    among them unless every status is wanted."""
    wanted = check_filters(filters)
    chosen = check_status(status)
    if chosen is not None:
        wanted["status"] = chosen
    return wanted


def matches(entry: DeadLetter, filters: dict[str, Any]) -> bool:
    return all(getattr(entry, name) == value for name, value in filters.items())


def check_page(limit: int | None, offset: int) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")


def write_jsonl(target: str | os.PathLike[str] | IO[str], entries: Iterable[DeadLetter], *,
                overwrite: bool = False, sources: Sequence[str | os.PathLike[str]] = ()) -> int:
    """Write entries as JSON lines (the export format of every backend); returns how many.

    ``target`` is a path or a writable text stream (``sys.stdout``; left open). A path is
    written atomically (a 0600 temp file in the same directory, fsync, rename), so a failed
    export never leaves a truncated file. It must not be one of ``sources`` (the queue's own
    files, through symlinks and hard links): exporting a queue onto itself would destroy it.
    An existing file is replaced only with ``overwrite=True``.
    """
    if not isinstance(target, (str, os.PathLike)):
        if not callable(getattr(target, "write", None)):
            raise TypeError(f"export target must be a path or a writable text stream, "
                            f"got {type(target).__name__}")
        if isinstance(target, (io.RawIOBase, io.BufferedIOBase)):
            raise TypeError(f"export writes text, and {type(target).__name__} is a binary stream: "
                            "pass a text stream (sys.stdout, not sys.stdout.buffer)")
        return _write_lines(target, entries)
    path = Path(target)
    for source in sources:
        if same_file(path, source):
            raise DLQError(f"refusing to export to {path}: it is the dead-letter queue's own file "
                           f"{source}, which the export would destroy; choose another path")
    if path.is_dir():
        raise DLQError(f"cannot export to {path}: it is a directory")

    def exists(where: Path) -> DLQError:
        return DLQError(f"refusing to export to {where}: the file exists "
                        f"(pass overwrite=True, or --force on the command line, to replace it)")

    try:
        with atomic_writer(path, overwrite=overwrite, exists_error=exists) as out:
            return _write_lines(out, entries)
    except OSError as exc:
        raise DLQError(f"cannot export to {path}: {exc.strerror or exc}") from exc


def _write_lines(out: IO[str], entries: Iterable[DeadLetter]) -> int:
    written = 0
    for entry in entries:
        out.write(entry.to_json())
        out.write("\n")
        written += 1
    out.flush()
    return written


class MemoryDLQ(QueueBase):
    """A thread-safe, in-process dead-letter queue: for tests, notebooks and short runs.

    >>> q = MemoryDLQ(); q.count()
    0
    """

    def __init__(self) -> None:
        self._entries: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryDLQ({len(self._entries)} entries)"

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(self.list())

    def send(self, entries: Sequence[DeadLetter]) -> None:
        # Kept as a durable backend would store it (odd ids as strings, and so on).
        stored = [encode(entry, full=True)[1] for entry in entries]  # full: the bytes are not kept
        with self._lock:
            for entry in stored:
                self._entries[entry.id] = entry

    def count(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        wanted = select(filters, status)
        with self._lock:
            if not wanted:
                return len(self._entries)
            return sum(1 for e in self._entries.values() if matches(e, wanted))

    def list(self, *, limit: int | None = None, offset: int = 0, status: str | None = DEFAULT_STATUS,
             **filters: Any) -> builtins.list[DeadLetter]:
        wanted = select(filters, status)
        check_page(limit, offset)
        with self._lock:
            selected = [e for e in self._entries.values() if matches(e, wanted)]
        end = None if limit is None else offset + limit
        return selected[offset:end]

    def get(self, entry_id: str) -> DeadLetter | None:
        with self._lock:
            return self._entries.get(entry_id)

    def remove(self, ids: Iterable[str]) -> int:
        removed = 0
        with self._lock:
            for entry_id in ids:
                if self._entries.pop(entry_id, None) is not None:
                    removed += 1
        return removed

    def export(self, path: str | os.PathLike[str] | IO[str], *, overwrite: bool = False,
               status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """Write the matching entries to ``path`` (or a text stream) as JSON lines; see :func:`write_jsonl`."""
        return write_jsonl(path, self.list(status=status, **filters), overwrite=overwrite)

    def close(self) -> None:
        """Nothing to release; present for the protocol."""

    def _iter(self, wanted: dict[str, Any]) -> Iterator[DeadLetter]:
        with self._lock:
            selected = [e for e in self._entries.values() if matches(e, wanted)]
        return iter(selected)

    def _swap(self, ids: builtins.list[str], decide: Decide) -> dict[str, DeadLetter]:
        with self._lock:
            found = {entry_id: self._entries[entry_id] for entry_id in ids if entry_id in self._entries}
            changed = decide(dict(found))
            stored = [encode(entry, full=True)[1] for entry in changed.values() if entry.id in found]
            for entry in stored:
                self._entries[entry.id] = entry
            found.update((entry.id, entry) for entry in stored)
        return found
