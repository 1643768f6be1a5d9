"""What a dead-lettered record is stored as: its entry's id, its record id, its payload and history.

:class:`EntryBuilder` turns an engine's :class:`~batchguard._native.DeadRecord` into the
:class:`~batchguard.DeadLetter` every DLQ backend stores, storable whatever the record holds.
"""

from __future__ import annotations

import functools
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from .._error_class import http_status_of
from .._native import DeadRecord
from ..dlq.base import Attempt, DeadLetter
from ..dlq.codec import Fallbacks, clean_text, encode_payload, encode_record_id, type_name
from ..errors import CompensationFailed
from ..validation.issues import VALIDATE_STAGE, ValidationBlocked
from .tracebacks import TracebackFormatter

__all__ = ["EntryBuilder", "IsoTimes", "default_id_of", "entry_id", "http_status", "iso", "message_of", "new_run_id"]

logger = logging.getLogger("batchguard")

COMPENSATE_STAGE = "compensate"
"""The stage of a dead letter whose ``compensate(record, value)`` failed (its payload is
``{"record": ..., "value": ...}``; see ``batchguard.compensation``)."""

_ID_NAMESPACE = uuid.UUID("6f1d7c1e-5b7a-4f0e-9a57-1b2c3d4e5f60")


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"run-{stamp}-{uuid.uuid4().hex[:6]}"


def iso(epoch: float) -> str:
    """The UTC time ``epoch`` as ISO 8601 to the millisecond, ``2024-06-01T12:00:00.123+00:00``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


_MILLIS: Final = tuple(f".{ms:03d}+00:00" for ms in range(1000))


class IsoTimes:
    """:func:`iso`, each second's text made once: a failure-heavy run dead-letters dozens of
    records a millisecond, and ``datetime`` cost ~2 us a time, most of it spent writing the
    same date again.

    The millisecond is found as ``datetime.fromtimestamp`` finds it (the fraction of the second
    rounded half to even to microseconds, then cut), so the text is :func:`iso`'s exactly.

    >>> times = IsoTimes()
    >>> times(1717243200.1239), times(1717243200.9999996)
    ('2024-06-01T12:00:00.123+00:00', '2024-06-01T12:00:01.000+00:00')
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = math.nan  # no second yet: NaN equals nothing
        self._prefix = ""

    def __call__(self, epoch: float) -> str:
        # CPython's _PyTime_DoubleToDenominator: modf, scale, round half to even, carry.
        fraction, second = math.modf(epoch)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            micros -= 1_000_000
            second += 1.0
        elif micros < 0:
            micros += 1_000_000
            second -= 1.0
        if second != self._second:
            # "2024-06-01T12:00:00" (isoformat less its "+00:00"), once per second.
            self._prefix = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
            self._second = second
        return self._prefix + _MILLIS[micros // 1000]


@functools.lru_cache(maxsize=64)
def _scope_key(scope: str, stage: str) -> str:
    return uuid.uuid5(_ID_NAMESPACE, f"{scope}\x1f{stage}").hex[:12]


def entry_id(scope: str, stage: str, record_index: int) -> str:
    """Deterministic per (run or job, stage, record), so a resent entry replaces itself, and
    increasing with the record index, so a DLQ's id index grows at its end."""
    return f"{_scope_key(scope, stage)}-{record_index:012d}"


def default_id_of(record: Any, index: int) -> Any:
    """The record's ``entity_id`` or ``id`` when it is a mapping that has one, else its index."""
    if isinstance(record, Mapping):
        for key in ("entity_id", "id"):
            value = record.get(key)
            if value is not None:
                return value
    return index


def message_of(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when its ``__str__`` raises; may hold unstorable characters."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<unprintable {type_name(exc)}>"
    return text if isinstance(text, str) else f"<unprintable {type_name(exc)}>"


_STATUS_HOLDERS: Final = ("status_code", "status", "response")  # what http_status_of reads
_MAX_PLAIN_TYPES: Final = 1024
_plain_types: dict[type, bool] = {}


def _plain_type(kind: type) -> bool:
    """Can an instance of ``kind`` hold an HTTP status only in its own ``__dict__``? (Its class
    has none of the attributes ``http_status_of`` reads, and no hook that makes attributes up.)"""
    plain = _plain_types.get(kind)
    if plain is None:
        plain = (getattr(kind, "__getattribute__", None) is BaseException.__getattribute__
                 and not hasattr(kind, "__getattr__")
                 and not any(hasattr(kind, name) for name in _STATUS_HOLDERS))
        if len(_plain_types) >= _MAX_PLAIN_TYPES:
            _plain_types.clear()
        _plain_types[kind] = plain
    return plain


def http_status(exc: BaseException) -> int | None:
    """The HTTP status ``exc`` carries (``http_status_of``), or None when reading it raises (a
    ``response`` property that fails must not lose the record).

    An exception of a plain type with no attributes of its own (a ValueError a record raised)
    carries none, which is known without the three failed look-ups ``http_status_of`` makes.
    """
    try:
        if not exc.__dict__ and _plain_type(type(exc)):
            return None
        return http_status_of(exc)
    except Exception:  # noqa: BLE001 - an exception's own attribute raised
        return None


def _traceback_of(exc: BaseException, formatter: TracebackFormatter, fallbacks: Fallbacks) -> str | None:
    """The traceback an entry stores: storable text, or None when ``exc`` has none."""
    if exc.__traceback__ is None:
        return None
    try:
        return formatter.storable(exc, fallbacks)
    except Exception:  # noqa: BLE001 - a traceback that cannot be formatted must not lose the record
        return f"<traceback of {type_name(exc)} could not be formatted>"


class EntryBuilder:
    """Builds one run's DLQ entries; remembers which storage fallbacks it used (one warning
    each) and which exception types ``id_of`` raised (one log line each)."""

    def __init__(self, *, run_id: str, job_id: str | None, stage: str,
                 id_of: Callable[[Any], Any] | None, pickle_payloads: bool) -> None:
        self.run_id = run_id
        self.job_id = job_id
        self.stage = stage
        self._id_of = id_of
        self._pickle = pickle_payloads
        self._fallbacks = Fallbacks()
        self._id_of_raised: set[str] = set()
        self._tracebacks = TracebackFormatter()
        self._times = IsoTimes()

    def entry_id(self, record_index: int) -> str:
        """The id of this run's entry for a record (a job's ids outlive its runs)."""
        return entry_id(self.job_id or self.run_id, self.stage, record_index)

    def record_id(self, record: Any, index: int) -> Any:
        """The record's id as every backend stores it (dlq.codec.encode_record_id's rule)."""
        try:
            value = default_id_of(record, index) if self._id_of is None else self._id_of(record)
        except Exception as exc:  # noqa: BLE001 - id_of (or a mapping's get) raised
            name = type_name(exc)
            if name not in self._id_of_raised:  # once per type and run, not once per record
                self._id_of_raised.add(name)
                logger.warning("id_of raised %s for record %d; using its index (for every record "
                               "whose id_of raises %s in this run)", name, index, name)
            return index
        return encode_record_id(value, self._fallbacks)

    def stage_of(self, exc: BaseException) -> str:
        """The stage a record failed at: "validate" when its check blocked it (``fn`` never
        ran), "compensate" when its undo failed (``batchguard.compensation``), else the run's stage."""
        if isinstance(exc, ValidationBlocked):
            return VALIDATE_STAGE
        return COMPENSATE_STAGE if isinstance(exc, CompensationFailed) else self.stage

    def payload(self, record: Any) -> tuple[Any, str]:
        """The stored payload and its encoding (dlq.codec: JSON, pickle if opted in, repr, placeholder)."""
        return encode_payload(record, pickle_payloads=self._pickle, fallbacks=self._fallbacks)

    def dead_letter(self, dead: DeadRecord) -> DeadLetter:
        """The DLQ entry of one failed record: always storable, whatever the record holds."""
        index, record = dead.record_index, dead.record
        exc = dead.attempts[-1].error
        fallbacks = self._fallbacks
        trace = _traceback_of(exc, self._tracebacks, fallbacks)
        payload, encoding = self.payload(record)
        times = self._times
        attempts = tuple(Attempt(a.attempt, times(a.at), type_name(a.error),
                                 clean_text(message_of(a.error), fallbacks), a.delay)
                         for a in dead.attempts)
        return DeadLetter(
            id=self.entry_id(index),
            run_id=self.run_id,
            job_id=self.job_id,
            record_id=self.record_id(record, index),
            record_index=index,
            batch_index=dead.batch_index,
            stage=self.stage_of(exc),
            payload=payload,
            payload_encoding=encoding,
            error_class=dead.error_class,
            error_type=attempts[-1].error_type,
            error_message=attempts[-1].error_message,
            traceback=trace,
            attempts=attempts,
            first_failed_at=attempts[0].at,
            last_failed_at=attempts[-1].at,
            # Read here, from the exception itself: the DLQ keeps only its type and message, and
            # the failure patterns (dlq.patterns, the report's) group by status.
            http_status=http_status(exc),
        )
