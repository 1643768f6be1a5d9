"""The one encoder of dead-letter entries: every backend and every export stores what it makes.

An entry must always be storable, whatever the failed record holds, or one odd record would
stop a run (and a resumed job at the same record, every time). So each part of an entry falls
back step by step instead of raising:

* **payload**: JSON when the record is plain JSON data that every backend stores and reads back
  as it was (``payload_encoding="json"``); else, if the user opted in, base64 pickle
  (``"pickle"``); else a safe ``repr`` (``"repr"``); and when even ``repr`` raises, a
  placeholder naming the type, ``"<unrepresentable Foo>"`` (still ``"repr"``).
* **record id**: see :func:`encode_record_id` (the rule is documented on :class:`DeadLetter`).
* **text** (error messages, tracebacks, type names): lone surrogates and NUL characters, which
  no backend can store as UTF-8 text (PostgreSQL rejects NUL even escaped), become U+FFFD.

Plain JSON data here means: ``None``, ``bool``, ``int``, a finite ``float`` below 1e16 in magnitude
(PostgreSQL's jsonb gives larger ones back as integers), ``str`` without lone
surrogates or NUL, lists and tuples of those, and dicts with such ``str`` keys, nested at most
:data:`MAX_DEPTH` deep (deeper documents exceed what JSON parsers such as orjson and PostgreSQL's
accept). Anything else (UUID, datetime, Decimal, bytes, NaN, objects) is not, so its ``repr``
is kept rather than silently turning it into a string that replay would pass to ``fn``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import logging
import math
import operator
import re
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Final

import orjson

from ..errors import BatchguardWarning, ConfigError

if TYPE_CHECKING:
    from .entry import DeadLetter

__all__ = [
    "FLOAT_LIMIT",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DEPTH",
    "MAX_ID_TEXT",
    "MAX_REPR",
    "Fallbacks",
    "check_storable",
    "clean_text",
    "dumps",
    "encode",
    "encode_payload",
    "encode_record_id",
    "normalize",
    "safe_repr",
    "storable_as_is",
    "type_name",
]

logger = logging.getLogger("batchguard")

MAX_DEPTH: Final = 128
"""Deepest nesting of lists and dicts a JSON payload may have; deeper records are kept as repr."""

MAX_REPR: Final = 65_536
"""Longest repr kept as a payload (characters); a longer one is cut and says how long it was."""

MAX_ID_TEXT: Final = 1_024
"""Longest string form of a record id that is not a str itself (an object's ``str``)."""

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

FLOAT_LIMIT: Final = 1e16
"""Floats at least this large are written with an exponent (``1e+16``); PostgreSQL's jsonb keeps
them as exact numbers and gives them back as integers, so they are not plain JSON here."""

_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
_EXPONENT: Final = re.compile(rb"\de[+-]?\d")  # a float orjson wrote as 1e+16 (or a string holding "1e1")
_REPLACEMENT: Final = "\ufffd"

# Types that orjson would silently turn into something else (UUID -> str, Enum -> its value,
# NaN -> null) are caught by comparing the decoded document with the record.
_FAST: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


class Fallbacks:
    """Which fallbacks one run used: each kind is reported once (a BatchguardWarning), never raised.

    A warnings filter set to "error" must not turn a stored entry into a dead run, so such a
    warning is logged instead of raised.
    """

    MESSAGES: Final = {
        "repr": "a {type} record cannot be stored as JSON; the DLQ keeps its repr (pass "
                "pickle_payloads=True to keep such records replayable)",
        "placeholder": "a {type} record has no usable repr either (it raised); the DLQ keeps the "
                       "placeholder '<unrepresentable {type}>'",
        "record_id": "a record id of type {type} is none of the types the id rule names; the "
                     "DLQ keeps its str() as record_id",
        "text": "an error message or traceback held lone surrogates or NUL characters, which no "
                "backend stores; they are replaced by U+FFFD",
    }

    def __init__(self) -> None:
        self.used: set[str] = set()

    def note(self, kind: str, type_name: str = "") -> None:
        if kind in self.used:
            return
        self.used.add(kind)
        message = self.MESSAGES[kind].format(type=type_name)
        try:
            warnings.warn(message, BatchguardWarning, stacklevel=4)
        except Exception:  # noqa: BLE001 - warnings turned into errors: the run goes on
            logger.warning(message)


def _note(fallbacks: Fallbacks | None, kind: str, type_name: str = "") -> None:
    if fallbacks is not None:
        fallbacks.note(kind, type_name)


def clean_text(text: str, fallbacks: Fallbacks | None = None) -> str:
    """``text`` with lone surrogates and NUL replaced by U+FFFD (the same object when it has none)."""
    if _UNSTORABLE.search(text) is None:
        return text
    _note(fallbacks, "text")
    return _UNSTORABLE.sub(_REPLACEMENT, text)


def check_storable(name: str, text: str) -> None:
    """Refuse a name the user gives (a stage, a job) that no backend can store: it is part of every
    entry's filter columns and id, so it cannot be replaced the way a record's text is."""
    found = _UNSTORABLE.search(text)
    if found is not None:
        raise ConfigError(f"{name} {text!r} holds {found[0]!r} at position {found.start()}: a lone "
                          "surrogate or NUL character, which no DLQ or job store can store; use "
                          "valid text")


def type_name(value: Any) -> str:
    """``type(value).__name__``, safe to store (a class name can hold any character)."""
    name = type(value).__name__
    # An identifier holds neither NUL nor a surrogate: nearly every name, at a fraction of the
    # regex's cost (this runs for every attempt of every dead-lettered record).
    return name if name.isidentifier() else _UNSTORABLE.sub(_REPLACEMENT, name)


def _plain_float(value: float) -> bool:
    return math.isfinite(value) and -FLOAT_LIMIT < value < FLOAT_LIMIT


def _int_as_text(value: int) -> str | None:
    """The decimal digits of ``value``, or None past ``sys.get_int_max_str_digits()`` (4300 by
    default), where Python refuses to write an int as text (``str``, ``repr`` and ``json`` raise)."""
    try:
        return str(value)
    except ValueError:
        return None


def _is_plain(value: Any) -> bool:
    """Is ``value`` plain JSON data (see the module docstring)? Iterative: no depth limit of its own.

    A record that holds itself is not plain (its repr shows the cycle as ``[...]``); parts it
    merely shares, such as the empty tuple, are fine.
    """
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    path: set[int] = set()  # the containers between the root and the item: a cycle comes back to one
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            path.discard(id(item))
            continue
        if item is None or item is True or item is False:
            continue
        if isinstance(item, str):
            if _UNSTORABLE.search(item) is not None:
                return False
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX and _int_as_text(item) is None:
                return False  # JSON could not write it
        elif isinstance(item, float):
            if not _plain_float(item):
                return False
        elif isinstance(item, (list, tuple, dict)):
            if depth >= MAX_DEPTH or id(item) in path:
                return False
            path.add(id(item))
            stack.append((item, depth, True))
            if not isinstance(item, dict):
                stack.extend((child, depth + 1, False) for child in item)
                continue
            for key, child in item.items():
                if not isinstance(key, str) or _UNSTORABLE.search(key) is not None:
                    return False
                stack.append((child, depth + 1, False))
        else:
            return False
    return True


def _json_payload(record: Any) -> bool:
    """Can the record be stored as JSON and come back equal (lists for tuples)?"""
    return _json_check(record) is not None


def _json_check(record: Any) -> bool | None:
    """None: not plain JSON data. True: it is, as it is. False: it is, once its tuples are lists."""
    try:
        encoded = orjson.dumps(record, option=_FAST)
    except (TypeError, ValueError, RecursionError):
        return _walk(record)
    if b"\\u0000" in encoded:  # NUL (or a literal backslash-u0000): PostgreSQL refuses NUL
        return _walk(record)
    if encoded.count(b"[") + encoded.count(b"{") >= MAX_DEPTH:  # maybe too deep: the walk measures
        return _walk(record)
    if _EXPONENT.search(encoded) is not None:  # maybe a float beyond FLOAT_LIMIT
        return _walk(record)
    try:
        # Equal means exactly as decoded: a tuple never equals the list it comes back as.
        if orjson.loads(encoded) == record:
            return True
    except Exception:  # noqa: BLE001,S110 - a user type's __eq__ may raise: the walk decides
        pass
    # Not equal: a type orjson converts (UUID, Enum, NaN) or merely a tuple; the walk decides.
    return _walk(record)


def _walk(record: Any) -> bool | None:
    try:
        if not _is_plain(record):
            return None
        return not _has_tuple(record)
    except Exception:  # noqa: BLE001 - a dict or list subclass whose items()/__iter__ raises:
        return None    # not plain JSON data, and its repr (the next fallback) is stored instead


def _lists(value: Any) -> Any:
    """``value`` with its tuples as lists, as every backend gives them back (plain data only)."""
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    return value


def _has_tuple(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def safe_repr(value: Any) -> str | None:
    """``repr(value)``, bounded and storable, or None when repr raises (or recurses too deep)."""
    try:
        text = repr(value)
        if not isinstance(text, str):
            return None
    except Exception:  # noqa: BLE001 - a broken __repr__, a RecursionError on deep nesting
        return None
    if len(text) > MAX_REPR:
        text = f"{text[:MAX_REPR]}... (repr cut at {MAX_REPR:,} of {len(text):,} characters)"
    return _UNSTORABLE.sub(_REPLACEMENT, text)


def encode_payload(record: Any, *, pickle_payloads: bool,
                   fallbacks: Fallbacks | None = None) -> tuple[Any, str]:
    """The stored payload and its ``payload_encoding``; never raises."""
    as_is = _json_check(record)
    if as_is is not None:
        return (record if as_is else _lists(record)), "json"
    if pickle_payloads:
        import base64
        import pickle

        try:
            return base64.b64encode(pickle.dumps(record)).decode("ascii"), "pickle"
        except Exception:  # noqa: BLE001,S110 - not picklable: the repr below
            pass
    text = safe_repr(record)
    if text is not None:
        _note(fallbacks, "repr", type_name(record))
        return text, "repr"
    name = type_name(record)
    _note(fallbacks, "placeholder", name)
    return f"<unrepresentable {name}>", "repr"


def _text_form(value: Any) -> str:
    """``str(value)``, else its repr, else a placeholder; bounded and storable."""
    try:
        text = str(value)
        if not isinstance(text, str):
            raise TypeError
    except Exception:  # noqa: BLE001 - a broken __str__: try repr
        text = safe_repr(value) or f"<unrepresentable {type_name(value)}>"
    if len(text) > MAX_ID_TEXT:
        text = text[:MAX_ID_TEXT] + "..."
    return _UNSTORABLE.sub(_REPLACEMENT, text)


def encode_record_id(value: Any, fallbacks: Fallbacks | None = None) -> Any:
    """A record id as every backend stores it; the same rule everywhere, never raises.

    ``None``, ``bool``, ``str``, a finite ``float`` below 1e16 in magnitude and an ``int`` within
    signed 64 bits stay as they are (a str loses lone surrogates and NUL to U+FFFD). Everything
    else becomes a string: a larger int its decimal digits (``"<int of N bits>"`` past the
    digits Python writes, ``sys.get_int_max_str_digits()``), another float its ``repr``
    (``"nan"``, ``"inf"``, ``"1e+22"``),
    a UUID its canonical form, a Decimal ``str()``, a date/time/datetime ``isoformat()``,
    bytes their hex digits, and any other object its ``str()`` (a BatchguardWarning says so
    once per run).

    >>> import uuid, decimal
    >>> encode_record_id(uuid.UUID(int=1)), encode_record_id(2**70), encode_record_id(b"\\x01\\xff")
    ('00000000-0000-0000-0000-000000000001', '1180591620717411303424', '01ff')
    >>> encode_record_id(decimal.Decimal("1.50")), encode_record_id(7)
    ('1.50', 7)
    """
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if kind is str:
        return clean_text(value)
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        text = _int_as_text(value)
        return f"<int of {value.bit_length()} bits>" if text is None else text
    if kind is float:
        return value if _plain_float(value) else repr(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    # Subclasses (IntEnum, StrEnum, numpy scalars) as the plain scalar they stand for.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return clean_text(str.__str__(value))
    if isinstance(value, int):
        return encode_record_id(int.__index__(value))
    if isinstance(value, float):
        return encode_record_id(float(value))
    if hasattr(type(value), "__index__") and not isinstance(value, (list, tuple, dict)):
        try:
            return encode_record_id(operator.index(value))
        except Exception:  # noqa: BLE001,S110 - not an integer after all
            pass
    _note(fallbacks, "record_id", type_name(value))
    return _text_form(value)


def normalize(entry: DeadLetter) -> DeadLetter:
    """``entry`` with every field storable (the same object when it already is).

    Entries built by a run are storable already; this catches entries a user built by hand.
    """
    payload, encoding = entry.payload, entry.payload_encoding
    if encoding == "json" and not _json_payload(payload):
        payload, encoding = encode_payload(payload, pickle_payloads=False)
    elif encoding != "json" and not isinstance(payload, str):
        payload = _text_form(payload)
    elif isinstance(payload, str):
        payload = clean_text(payload)
    record_id = encode_record_id(entry.record_id)
    traceback = None if entry.traceback is None else clean_text(str(entry.traceback))
    attempts = tuple(
        dataclasses.replace(a, error_type=clean_text(str(a.error_type)),
                            error_message=clean_text(str(a.error_message)),
                            delay_s=a.delay_s if a.delay_s is None or math.isfinite(a.delay_s) else None)
        for a in entry.attempts)
    history = tuple(
        dataclasses.replace(c, by=_maybe_text(c.by), reason=_maybe_text(c.reason)) for c in entry.history)
    return dataclasses.replace(
        entry, payload=payload, payload_encoding=encoding, record_id=record_id,
        error_type=clean_text(str(entry.error_type)), error_message=clean_text(str(entry.error_message)),
        traceback=traceback, attempts=attempts, stage=clean_text(str(entry.stage)),
        status_reason=_maybe_text(entry.status_reason), status_by=_maybe_text(entry.status_by),
        history=history)


def _maybe_text(value: str | None) -> str | None:
    return None if value is None else clean_text(str(value))


# The status fields of an open entry with no history, as orjson writes them: last, in their
# declaration order. The stored form leaves them out (and a null http_status before them), so
# such an entry -- nearly every one a run writes -- is stored byte for byte as before statuses
# existed: rows no larger, writes no slower, and older versions read them unchanged. Reading
# puts the defaults back (DeadLetter.from_dict).
_OPEN_TAIL: Final = b',"status":"open","status_reason":null,"status_by":null,"status_at":null,"history":[]}'
_NO_HTTP_STATUS: Final = b',"http_status":null'


def _compact(encoded: bytes) -> bytes:
    if not encoded.endswith(_OPEN_TAIL):
        return encoded
    encoded = encoded[:-len(_OPEN_TAIL)]
    if encoded.endswith(_NO_HTTP_STATUS):
        encoded = encoded[:-len(_NO_HTTP_STATUS)]
    return encoded + b"}"


def dumps(entry: DeadLetter, *, full: bool = False) -> bytes:
    """The stored form of ``entry``: compact UTF-8 JSON, the document ``to_dict()`` describes
    less the status fields of an open entry with no history (and a null ``http_status``),
    which reading restores; ``full=True`` keeps every field (``DeadLetter.to_json``).

    orjson serializes the dataclass directly; what it cannot (or what PostgreSQL would refuse:
    NUL; or nested deeper than MAX_DEPTH) is normalized first, so this never raises for any
    entry. A run's entries come from :func:`encode_payload`; an entry built by hand with a
    "json" payload that JSON holds only by converting it (a UUID, NaN) is stored as orjson
    converts it.
    """
    encoded, _ = encode(entry, full=full)
    return encoded


def encode(entry: DeadLetter, *, full: bool = False) -> tuple[bytes, DeadLetter]:
    """:func:`dumps`, and the entry those bytes hold (``entry`` itself unless it was normalized):
    a backend that keeps entries in memory keeps that one, as a reader of the stored form sees it."""
    try:
        encoded = orjson.dumps(entry)
    except (TypeError, ValueError, RecursionError):
        encoded, entry = _encode_normalized(entry)
    else:
        # storable_as_is, inlined: this runs for every entry every backend stores.
        if (b"\\u0000" in encoded or not _record_id_kept(entry.record_id)
                or (not _flat(entry.payload) and encoded.count(b"[") + encoded.count(b"{") >= MAX_DEPTH)):
            encoded, entry = _encode_normalized(entry)
    return (encoded if full else _compact(encoded)), entry


def storable_as_is(encoded: bytes, record_id: Any, payload: Any) -> bool:
    """Can ``encoded``, orjson's JSON of an entry (or of a document holding its ``record_id``
    and ``payload``), be stored as it is? No NUL, a record id every backend keeps as it is, and
    not nested deeper than MAX_DEPTH. Else the entry is normalized first (see :func:`encode`)."""
    return (b"\\u0000" not in encoded and _record_id_kept(record_id)
            and (_flat(payload) or encoded.count(b"[") + encoded.count(b"{") < MAX_DEPTH))


_SCALAR_TYPES: Final = frozenset((type(None), bool, int, float, str))
_MAX_FLAT_ITEMS: Final = 16  # past it, counting the document's brackets is the cheaper test


def _flat(payload: Any) -> bool:
    """Is ``payload`` a scalar, or a dict, list or tuple of a few scalars (a flat record)? Its
    entry is then three levels deep at most (the attempts and history are lists of objects of
    scalars), so its brackets need no counting against MAX_DEPTH: counting them was most of
    the cost of checking an entry, every entry a run stores."""
    kind = type(payload)
    if kind in _SCALAR_TYPES:
        return True
    if kind is dict:
        items = payload.values()
    elif kind is list or kind is tuple:
        items = payload
    else:
        return False
    if len(items) > _MAX_FLAT_ITEMS:
        return False
    for item in items:
        if type(item) not in _SCALAR_TYPES:
            return False
    return True


def _record_id_kept(value: Any) -> bool:
    # The common ids need no normalization; anything else goes through encode_record_id.
    kind = type(value)
    return value is None or kind is str or kind is bool or (
        kind is int and INT64_MIN <= value <= INT64_MAX) or (kind is float and _plain_float(value))


def _encode_normalized(entry: DeadLetter) -> tuple[bytes, DeadLetter]:
    clean = normalize(entry)
    try:
        return orjson.dumps(clean), clean
    except (TypeError, ValueError, RecursionError):
        # Plain data orjson cannot encode: ints beyond 64 bits in a JSON payload.
        return json.dumps(clean.to_dict(), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode(), clean
