"""The dead-letter entry, the queue protocol every backend implements, and the in-memory queue."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Protocol, Self, runtime_checkable

from .._db.role import Database
from .._files import atomic_writer, same_file
from ..errors import ConfigTypeError, DLQError, PickleNotAllowedError
from .codec import dumps, encode

__all__ = [
    "FILTER_FIELDS",
    "STATUSES",
    "Attempt",
    "DeadLetter",
    "DeadLetterQueue",
    "MemoryDLQ",
    "QueueBase",
    "StatusChange",
    "TransactionalDLQ",
    "check_filters",
    "matches",
]

FILTER_FIELDS = ("run_id", "job_id", "stage", "error_class", "error_type")

STATUSES: Final = ("open", "resolved", "replayed")
"""An entry's triage status: ``open`` (it needs attention; every new entry), ``resolved``
(skipped on purpose, with a reason), ``replayed`` (its record succeeded on a replay)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed try of a record."""

    attempt: int
    at: str
    """When the try failed (ISO 8601, UTC)."""
    error_type: str
    error_message: str
    delay_s: float | None
    """How long the engine waited before the next try (None for the last one)."""

    def to_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "at": self.at, "error_type": self.error_type,
                "error_message": self.error_message, "delay_s": self.delay_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        return cls(int(data["attempt"]), str(data["at"]), str(data["error_type"]),
                   str(data["error_message"]),
                   None if data.get("delay_s") is None else float(data["delay_s"]))


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One change of an entry's status: to what, when, by whom and why."""

    status: str
    """The status the entry moved to (one of STATUSES)."""
    at: str
    """When (ISO 8601, UTC)."""
    by: str | None = None
    """Who: the OS user by default, or the name the caller gave."""
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "at": self.at, "by": self.by, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatusChange:
        by, reason = data.get("by"), data.get("reason")
        return cls(str(data["status"]), str(data["at"]), None if by is None else str(by),
                   None if reason is None else str(reason))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that failed for good, with everything needed to understand and replay it.

    ``payload`` is the record itself when it is plain JSON data (``payload_encoding="json"``;
    tuples come back as lists), otherwise, when the run opted in with ``pickle_payloads=True``,
    base64 pickle (``"pickle"``, turned back into the record only with ``record(allow_pickle=True)``),
    otherwise its ``repr`` (``"repr"``; ``"<unrepresentable Foo>"`` when even ``repr`` raises).
    ``id`` is derived from the run (or job) and the record's position, so sending the same
    entry twice -- after a crash and resume, say -- replaces it rather than duplicating it.

    ``record_id`` is stored the same way by every backend: ``None``, ``bool``, ``str``, a finite
    ``float`` below 1e16 in magnitude and an ``int`` within signed 64 bits stay as they are;
    everything else becomes a string -- a larger int its decimal digits, another float its
    ``repr`` (``"nan"``, ``"inf"``, ``"1e+22"``: PostgreSQL would return it as an integer),
    a UUID its canonical form, a Decimal ``str()``, a date, time or datetime ``isoformat()``,
    bytes their hex digits, any other object its ``str()``. Lone surrogates and NUL characters,
    which no backend stores as text, become U+FFFD in ids, error messages and tracebacks.
    See :mod:`batchguard.dlq.codec`.

    ``status`` is the entry's triage state (``STATUSES``): a new entry is ``"open"``;
    ``resolve()`` makes it ``"resolved"``, a replay whose record succeeds ``"replayed"``.
    ``status_reason``, ``status_by`` and ``status_at`` describe the latest change, ``history``
    every change, oldest first. ``http_status`` is the HTTP status of the final error, when it
    carried one. Entries stored before these fields existed read as open, with no history.
    """

    id: str
    run_id: str
    job_id: str | None
    record_id: Any
    record_index: int
    batch_index: int
    stage: str
    payload: Any
    payload_encoding: str
    error_class: str
    error_type: str
    error_message: str
    traceback: str | None
    attempts: tuple[Attempt, ...] = field(default=())
    first_failed_at: str = ""
    last_failed_at: str = ""
    http_status: int | None = None
    status: str = "open"
    status_reason: str | None = None
    status_by: str | None = None
    status_at: str | None = None
    history: tuple[StatusChange, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the stored form of an entry in every backend)."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "job_id": self.job_id,
            "record_id": self.record_id,
            "record_index": self.record_index,
            "batch_index": self.batch_index,
            "stage": self.stage,
            "payload": self.payload,
            "payload_encoding": self.payload_encoding,
            "error_class": self.error_class,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "traceback": self.traceback,
            "attempts": [a.to_dict() for a in self.attempts],
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "http_status": self.http_status,
            "status": self.status,
            "status_reason": self.status_reason,
            "status_by": self.status_by,
            "status_at": self.status_at,
            "history": [change.to_dict() for change in self.history],
        }

    def to_json(self) -> str:
        """The stored form: compact JSON, the same document as ``to_dict()`` with every field made
        storable (see :mod:`batchguard.dlq.codec`, the one encoder of every backend)."""
        return dumps(self).decode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeadLetter:
        return cls(
            id=str(data["id"]),
            run_id=str(data["run_id"]),
            job_id=data.get("job_id"),
            record_id=data.get("record_id"),
            record_index=int(data["record_index"]),
            batch_index=int(data["batch_index"]),
            stage=str(data["stage"]),
            payload=data.get("payload"),
            payload_encoding=str(data.get("payload_encoding", "json")),
            error_class=str(data["error_class"]),
            error_type=str(data["error_type"]),
            error_message=str(data["error_message"]),
            traceback=data.get("traceback"),
            attempts=tuple(Attempt.from_dict(a) for a in data.get("attempts") or ()),
            first_failed_at=str(data.get("first_failed_at", "")),
            last_failed_at=str(data.get("last_failed_at", "")),
            # Entries stored before the status existed have none of these: open, no history.
            http_status=None if data.get("http_status") is None else int(data["http_status"]),
            status=str(data.get("status") or "open"),
            status_reason=data.get("status_reason"),
            status_by=data.get("status_by"),
            status_at=data.get("status_at"),
            history=tuple(StatusChange.from_dict(c) for c in data.get("history") or ()),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        return cls.from_dict(json.loads(text))

    def record(self, *, allow_pickle: bool = False) -> Any:
        """The original record, decoded from the payload.

        A ``pickle`` payload is loaded only with ``allow_pickle=True``: loading a pickle runs
        whatever code it names, and anyone who can write to the queue can put one there.
        Without it, :class:`~batchguard.errors.PickleNotAllowedError` says so. Raises
        ValueError for ``repr`` payloads, which cannot be turned back into the record.
        """
        if self.payload_encoding == "json":
            return self.payload
        if self.payload_encoding == "pickle":
            if allow_pickle is not True:
                raise PickleNotAllowedError(
                    f"dead letter {self.id} stores its record as pickle, which is not loaded without "
                    "an explicit opt-in: loading a pickle runs code, and anyone who can write to "
                    "this queue (a shared Redis, PostgreSQL table or file) could have put it there. "
                    "If you trust every writer of the queue, pass allow_pickle=True "
                    "(replay(..., allow_pickle=True), or `batchguard dlq retry --allow-pickle`)")
            import base64
            import pickle

            return pickle.loads(base64.b64decode(self.payload))  # noqa: S301 - the reader opted in
        raise ValueError(
            f"dead letter {self.id}: payload stored as {self.payload_encoding!r} cannot be replayed"
        )


@runtime_checkable
class DeadLetterQueue(Protocol):
    """Where failed records go. Every backend passes ``tests/test_dlq_conformance.py``.

    ``send`` is batched and durable when it returns; it upserts by ``DeadLetter.id``.
    Filters (keyword arguments) are exact matches on ``FILTER_FIELDS``.
    """

    def send(self, entries: Sequence[DeadLetter]) -> None: ...

    def count(self, **filters: Any) -> int: ...

    def list(self, *, limit: int | None = None, offset: int = 0, **filters: Any) -> list[DeadLetter]: ...

    def get(self, entry_id: str) -> DeadLetter | None: ...

    def remove(self, ids: Iterable[str]) -> int: ...

    def export(self, path: str | os.PathLike[str] | IO[str], *, overwrite: bool = False,
               **filters: Any) -> int:
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


class QueueBase:
    """What every durable backend does alike: ``with queue:`` closes it, ``len(queue)`` counts."""

    def count(self, **filters: Any) -> int:
        raise NotImplementedError

    def close(self) -> None:
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


class MemoryDLQ:
    """A thread-safe, in-process dead-letter queue: for tests, notebooks and short runs.

    >>> q = MemoryDLQ(); q.count()
    0
    """

    def __init__(self) -> None:
        self._entries: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryDLQ({len(self._entries)} entries)"

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(self.list())

    def send(self, entries: Sequence[DeadLetter]) -> None:
        # Kept as a durable backend would store it (odd ids as strings, and so on).
        stored = [encode(entry)[1] for entry in entries]
        with self._lock:
            for entry in stored:
                self._entries[entry.id] = entry

    def count(self, **filters: Any) -> int:
        wanted = check_filters(filters)
        with self._lock:
            if not wanted:
                return len(self._entries)
            return sum(1 for e in self._entries.values() if matches(e, wanted))

    def list(self, *, limit: int | None = None, offset: int = 0, **filters: Any) -> list[DeadLetter]:
        wanted = check_filters(filters)
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
               **filters: Any) -> int:
        """Write the matching entries to ``path`` (or a text stream) as JSON lines; see :func:`write_jsonl`."""
        return write_jsonl(path, self.list(**filters), overwrite=overwrite)

    def close(self) -> None:
        """Nothing to release; present for the protocol."""
