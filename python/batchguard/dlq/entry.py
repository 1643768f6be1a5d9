"""A dead letter: the entry every backend stores, with its attempt and status histories."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import PickleNotAllowedError
from .codec import dumps

__all__ = ["STATUSES", "Attempt", "DeadLetter", "StatusChange"]

STATUSES: Final = ("open", "resolved", "replayed", "replaying")
"""An entry's triage status: ``open`` (it needs attention; every new entry), ``resolved``
(skipped on purpose, with a reason), ``replayed`` (its record succeeded on a replay), and
``replaying`` while a running replay has claimed it (see ``dlq/status.py``)."""


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
        """Compact JSON, the same document as ``to_dict()`` (every field, the status ones included)
        with every field made storable (see :mod:`batchguard.dlq.codec`, the one encoder of every
        backend, whose stored form leaves out the status fields of an open entry)."""
        return dumps(self, full=True).decode()

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
