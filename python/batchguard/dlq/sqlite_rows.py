"""How a :class:`~batchguard.dlq.SqliteDLQ` row holds an entry, and how rows are written.

A failure-heavy run writes hundreds of thousands of entries that differ in little but their
record, and what SQLite does per byte (the row, its WAL copy, the checkpoint's copy) and per
bound value is most of its cost. So a row keeps each fact once:

* ``id, run_id, job_id, stage, error_class, error_type`` are columns (the filters need them),
  so the row's JSON (``entry``) leaves them out;
* the JSON leaves out ``error_message`` when it is the last attempt's, the last attempt's
  ``error_type`` when it is the entry's, ``first_failed_at`` and ``last_failed_at`` when they
  are the first and last attempts' ``at``, and what reading defaults to (``payload_encoding``
  "json", an attempt's null ``delay_s``, the status fields of an open entry);
* a traceback is left out when it is **shared**: its text is ``P + error_message + "\\n"``,
  where ``P`` (the stack and the exception's type, the same for every record that failed at
  the same place) is stored once in :data:`TRACEBACKS`, named by its digest in the row's
  ``traceback_digest``. ``P`` is shared once two entries of one write use it, or once it is
  stored; an entry whose traceback is its own (a chain quoting the record, say) keeps it in its
  JSON, so the shared table holds only texts that repeat.

Reading puts every field back (:func:`entry_of`), and a key present in the JSON wins: a row
written before this format, with the whole entry in its JSON, reads as it did. Shared texts are
never deleted (removing an entry leaves its text), so a writer that stored one may name it in
later rows without looking again.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import orjson

from .codec import clean_text, encode, storable_as_is
from .entry import Attempt, DeadLetter
from .status import DEFAULT_STATUS

__all__ = [
    "NO_VALUE",
    "SELECT_ROWS",
    "TABLE",
    "TRACEBACKS",
    "Rows",
    "SharedTracebacks",
    "digest_of",
    "entry_of",
    "one_statement",
    "rows_of",
    "write_rows",
]

TABLE: Final = "dead_letters"
TRACEBACKS: Final = "dead_letter_tracebacks"

SELECT_ROWS: Final = (
    f"SELECT d.seq, d.id, d.run_id, d.job_id, d.stage, d.error_class, d.error_type, d.entry, "
    f"d.traceback_digest, t.text FROM {TABLE} AS d LEFT JOIN {TRACEBACKS} AS t ON t.digest = d.traceback_digest"
)
"""What :func:`entry_of` reads, ``seq`` first; add ``WHERE ...`` on the ``dead_letters`` columns."""

_COLUMNS: Final = "id, run_id, job_id, stage, error_class, error_type, entry, traceback_digest"

# Updating every column but `seq` keeps an upserted entry at the place of its first send.
_ON_CONFLICT: Final = """
    ON CONFLICT (id) DO UPDATE SET
        run_id = excluded.run_id, job_id = excluded.job_id, stage = excluded.stage,
        error_class = excluded.error_class, error_type = excluded.error_type, entry = excluded.entry,
        traceback_digest = excluded.traceback_digest, status = excluded.status
"""

MAX_ROWS_PER_STATEMENT: Final = 1024
"""Entries one upsert statement writes, at most (fewer where SQLite allows fewer bound
parameters: 999 before 3.32)."""

MAX_SHARED: Final = 1024
"""Distinct shared texts a queue keeps in memory to find them again; past it, it starts again."""

MAX_SAME_LENGTH: Final = 8
"""Texts of one length kept to compare an entry's with: a chain whose cause quotes a fixed-width
id makes a new text of the same length for every record, which would each be compared with all
the others. Past it, a text of that length is not kept (it is still shared when a write repeats
it, found by value)."""

NO_VALUE: Final = 0
"""What a row binds for NULL (a job_id or traceback_digest it has none of, and every value of a
padding row): CPython's sqlite3 binds None only after looking for an adapter, which raises and
formats an AttributeError for every value, more than the rest of a row's binding. The upsert
turns it back into NULL (``NULLIF(value, 0)``: a job id is text, a digest never 0)."""

_DIGESTS_PER_QUERY: Final = 500  # below SQLite's oldest limit on bound values (999 before 3.32)

_INSERT_TRACEBACK: Final = f"INSERT OR IGNORE INTO {TRACEBACKS} (digest, text) VALUES (?, ?)"

Row = tuple[Any, ...]

# Where a row's JSON and digest are: (id, run_id, job_id, stage, error_class, error_type, entry,
# digest[, status]), or without run_id, job_id and stage when the write binds them once (common).
_ENTRY, _DIGEST = 6, 7
_COMMON_ENTRY, _COMMON_DIGEST = 3, 4


class Rows(NamedTuple):
    """One write's rows, in order (the first send's order is the list order)."""

    with_status: bool
    """Whether the rows carry their status (not every entry is open): one more value each."""
    common: tuple[str, str | int, str] | None
    """The ``(run_id, job_id, stage)`` of every row (job_id NO_VALUE for NULL), bound once for the
    whole write and left out of the rows; None when the rows differ in them."""
    rows: list[Row]
    tracebacks: dict[int, str]
    """The shared texts the rows name that the queue does not know to be stored: digest -> text,
    written in the same transaction as the rows."""


def digest_of(text: str) -> int:
    """A shared text's name: 64 bits of its BLAKE2b digest, as SQLite's signed integer (the
    table's INTEGER PRIMARY KEY, and bound per row without a copy). Never 0 (NO_VALUE). Two texts
    with one digest are caught when the second is written (:func:`write_rows`)."""
    digest = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)
    return digest or 1


class SharedTracebacks:
    """The shared traceback texts one queue has met (bounded), their digests, and the digests it
    knows are stored in its database. Safe to use from several threads (each step is one
    operation on a dict, list or set: at worst a text is kept twice)."""

    def __init__(self) -> None:
        self._by_length: dict[int, list[str]] = {}
        self._digests: dict[str, int] = {}
        self.stored: dict[int, str] = {}
        """The texts a committed write of this queue stored (rows are never deleted), by digest."""

    def text(self, traceback: str, length: int) -> str | None:
        """``traceback[:length]``, as the same object each time it is met: found by comparing
        (a memcmp), never by hashing a long text for every entry. None when the text holds what
        no backend stores (``codec.clean_text``): such an entry is normalized, not shared."""
        same = self._by_length.get(length)
        if same is not None:
            for known in same:
                if traceback.startswith(known):
                    return known
        known = traceback[:length]
        if clean_text(known) is not known:
            return None
        if same is not None and len(same) >= MAX_SAME_LENGTH:
            return known
        if len(self._digests) >= MAX_SHARED:
            self._by_length.clear()
            self._digests.clear()
        self._by_length.setdefault(length, []).append(known)
        self._digests[known] = digest_of(known)
        return known

    def digest(self, text: str) -> int:
        """The digest of a text :meth:`text` returned."""
        digest = self._digests.get(text)
        return digest_of(text) if digest is None else digest  # None: forgotten since (MAX_SHARED)

    def stored_now(self, texts: dict[int, str]) -> None:
        """Note ``texts`` (by digest) as stored: their write committed."""
        if len(self.stored) >= MAX_SHARED:
            self.stored.clear()  # only a cost: a text not known to be stored is written again
        self.stored.update(texts)


def _shared_length(entry: DeadLetter) -> int:
    """The length of the traceback's part an entry can share (its text less the error message
    and a newline), or -1 when it has none."""
    text, message = entry.traceback, entry.error_message
    if type(text) is not str or type(message) is not str:
        return -1
    length = len(text) - len(message) - 1
    if length > 0 and text.endswith("\n") and text.startswith(message, length):
        return length
    return -1


_Columns = tuple[Any, Any, Any, Any, Any]


def _columns_plain(entry: DeadLetter, checked: dict[_Columns, bool]) -> bool:
    """Are the columns' values strings (``job_id`` may be None) that every backend stores as
    they are? Else the entry is normalized and its JSON keeps every field. ``checked``: the
    answers for the columns but ``id``, which a write's entries nearly always share."""
    shared = (entry.run_id, entry.job_id, entry.stage, entry.error_class, entry.error_type)
    plain = checked.get(shared)
    if plain is None:
        plain = checked[shared] = (
            all(type(value) is str for value in shared[2:]) and type(shared[0]) is str
            and (shared[1] is None or type(shared[1]) is str)
            # orjson raises on a lone surrogate and writes NUL as \u0000: the unstorable cases.
            and b"\\u0000" not in orjson.dumps(shared))
    entry_id = entry.id
    return plain and type(entry_id) is str and (entry_id.isprintable() or clean_text(entry_id) is entry_id)


def _attempts(attempts: tuple[Attempt, ...], error_type: str) -> list[dict[str, Any]]:
    items = []
    for attempt in attempts:
        item = {"attempt": attempt.attempt, "at": attempt.at, "error_type": attempt.error_type,
                "error_message": attempt.error_message}
        if attempt.delay_s is not None:
            item["delay_s"] = attempt.delay_s
        items.append(item)
    if items and attempts[-1].error_type == error_type:
        del items[-1]["error_type"]
    return items


def _document(entry: DeadLetter, shared: bool) -> dict[str, Any]:
    """What the row's JSON holds of ``entry``: the fields no column holds, less those reading
    puts back (module docstring). ``shared``: the traceback is shared, not in the JSON."""
    attempts = entry.attempts
    document: dict[str, Any] = {
        "record_id": entry.record_id, "record_index": entry.record_index, "batch_index": entry.batch_index,
        "payload": entry.payload, "attempts": _attempts(attempts, entry.error_type),
    }
    if entry.payload_encoding != "json":
        document["payload_encoding"] = entry.payload_encoding
    last = attempts[-1] if attempts else None
    if last is None or last.error_message != entry.error_message:
        document["error_message"] = entry.error_message
    if not shared and entry.traceback is not None:
        document["traceback"] = entry.traceback
    if last is None or attempts[0].at != entry.first_failed_at or last.at != entry.last_failed_at:
        document["first_failed_at"] = entry.first_failed_at
        document["last_failed_at"] = entry.last_failed_at
    if entry.http_status is not None:
        document["http_status"] = entry.http_status
    if (entry.status != DEFAULT_STATUS or entry.history or entry.status_reason is not None
            or entry.status_by is not None or entry.status_at is not None):
        document.update(status=entry.status, status_reason=entry.status_reason, status_by=entry.status_by,
                        status_at=entry.status_at, history=[change.to_dict() for change in entry.history])
    return document


def _stored_json(entry: DeadLetter, shared: bool) -> str | None:
    """The row's JSON of ``entry`` (:func:`_document`), or None when it cannot be stored as it is.

    Text at once, never orjson's bytes kept: holding a write's worth of those (each allocated at
    orjson's initial size, then shrunk) cost ~2 us an entry in fresh memory."""
    document = _document(entry, shared)
    try:
        encoded = orjson.dumps(document)
    except (TypeError, ValueError, RecursionError):
        return None
    return encoded.decode() if storable_as_is(encoded, entry.record_id, entry.payload) else None


def _widened(row: Row, common: tuple[Any, Any, Any]) -> Row:
    """A row of the common layout (id, error_class, error_type, JSON, digest) given its own
    run_id, job_id and stage."""
    return (row[0], *common, *row[1:])


def rows_of(entries: Iterable[DeadLetter], shared: SharedTracebacks | None = None) -> Rows:
    """The rows of ``entries`` (see the module docstring). ``shared``: the queue's texts, to
    find and name them again across writes; without it (a caller's own transaction, on any
    connection) each write shares what its own entries repeat.

    Each entry's JSON is built from a dict of its fields (orjson writes a dict several times
    faster than the frozen dataclass); an entry that is not storable as it is (a hand-built one
    holding NUL, say) is normalized by :func:`~batchguard.dlq.codec.encode` and stored whole.
    The usual case is built in one pass that keeps nothing but the rows (a write's entries
    share their run, job and stage; their texts repeat or are stored): what it assumed is
    undone afterwards for the rows it was wrong about.
    """
    batch = entries if isinstance(entries, (list, tuple)) else list(entries)
    known = SharedTracebacks() if shared is None else shared
    stored = known.stored
    checked: dict[_Columns, bool] = {}
    rows: list[Row] = []
    common: tuple[Any, Any, Any] | None = None  # every row's (run_id, job_id, stage), while they share it
    own_columns = False  # the rows differ in them: each row holds its own
    uses: dict[str, int] = {}
    unstored: list[tuple[int, str]] = []  # (row, text) of the rows naming a text not known to be stored
    statuses: dict[int, str] = {}  # the rows of entries that are not open
    for index, entry in enumerate(batch):
        text = stored_json = None
        try:
            if _columns_plain(entry, checked):
                length = _shared_length(entry)
                if length > 0:
                    text = known.text(entry.traceback, length)
                stored_json = _stored_json(entry, shared=text is not None)
        except (AttributeError, TypeError, ValueError):  # attempts that are no Attempts, say
            stored_json = None
        digest = NO_VALUE
        if stored_json is None:  # stored whole, normalized, as every other backend stores it
            text = None
            encoded, entry = encode(entry)  # the entry as stored
            stored_json = encoded.decode()
            key: tuple[Any, Any, Any] = (str(entry.run_id), NO_VALUE if entry.job_id is None else str(entry.job_id),
                                         str(entry.stage))
            own = (str(entry.id), str(entry.error_class), str(entry.error_type))
        else:
            key = (entry.run_id, NO_VALUE if entry.job_id is None else entry.job_id, entry.stage)
            own = (entry.id, entry.error_class, entry.error_type)
            if text is not None:
                digest = known.digest(text)
                uses[text] = uses.get(text, 0) + 1
                if stored.get(digest) != text:  # not merely its digest: another text's
                    unstored.append((index, text))
        if not own_columns:
            if common is None:
                common = key
            elif key != common:
                own_columns = True
                rows = [_widened(row, common) for row in rows]
        rows.append((own[0], *key, own[1], own[2], stored_json, digest) if own_columns
                    else (*own, stored_json, digest))
        if entry.status != DEFAULT_STATUS:
            statuses[index] = entry.status
    tracebacks: dict[int, str] = {}
    at = _ENTRY if own_columns else _COMMON_ENTRY
    for index, text in unstored:
        if uses[text] > 1:
            tracebacks[known.digest(text)] = text
        else:  # the only entry of this write with it, and not stored: its own, in its JSON
            own_json = _stored_json(batch[index], shared=False) or encode(batch[index])[0].decode()
            rows[index] = (*rows[index][:at], own_json, NO_VALUE)
    if statuses:
        rows = [(*row, statuses.get(index, DEFAULT_STATUS)) for index, row in enumerate(rows)]
    return Rows(bool(statuses), None if own_columns else common, rows, tracebacks)


@functools.lru_cache(maxsize=64)
def _upsert_statement(rows: int, *, with_status: bool, common: bool) -> str:
    # INSERT ... SELECT from VALUES, not INSERT ... VALUES: padding rows (NO_VALUE throughout)
    # fill a write up to a power of two (see _statements), and the WHERE drops them (an
    # entry's id is text). With common values, ?1-?3 are the run_id, job_id and stage of every
    # row (SQLite numbers each later ? one past the largest number so far: ?4 on).
    if common:
        picked = ["column1", "?1", f"NULLIF(?2, {NO_VALUE})", "?3", "column2", "column3", "column4",
                  f"NULLIF(column5, {NO_VALUE})"]
    else:
        picked = ["column1", "column2", f"NULLIF(column3, {NO_VALUE})", "column4", "column5", "column6",
                  "column7", f"NULLIF(column8, {NO_VALUE})"]
    width = (5 if common else 8) + with_status
    if with_status:
        picked.append(f"column{width}")
    columns = f"{_COLUMNS}, status" if with_status else _COLUMNS
    marks = "(" + ", ".join("?" * width) + ")"
    return (f"INSERT INTO {TABLE} ({columns}) SELECT {', '.join(picked)} "
            f"FROM (VALUES {', '.join([marks] * rows)}) WHERE typeof(column1) = 'text' {_ON_CONFLICT}")


def _statements(connection: sqlite3.Connection, rows: Rows) -> list[tuple[str, list[Any]]]:
    """The upserts that write ``rows`` in order: full statements of the most rows one may hold,
    then the rest padded up to a power of two, so a connection compiles at most a few dozen of
    these statements whatever the batch sizes. A row that repeats an earlier id of the same
    statement updates it, as the next statement would."""
    common = rows.common
    first: list[Any] = [] if common is None else list(common)
    width = (8 if common is None else 5) + rows.with_status
    limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - len(first)
    most = 1 << (max(min(MAX_ROWS_PER_STATEMENT, limit // width), 1).bit_length() - 1)
    out: list[tuple[str, list[Any]]] = []
    items = rows.rows
    for start in range(0, len(items), most):
        chunk = items[start:start + most]
        size = 1 << (len(chunk) - 1).bit_length()
        params = [*first, *itertools.chain.from_iterable(chunk)]
        if size > len(chunk):
            params.extend(itertools.repeat(NO_VALUE, (size - len(chunk)) * width))
        out.append((_upsert_statement(size, with_status=rows.with_status, common=common is not None), params))
    return out


def one_statement(connection: sqlite3.Connection, rows: Rows) -> tuple[str, list[Any]] | None:
    """The single statement that writes ``rows``, or None when they need several (more rows
    than one statement holds, or shared texts to store first)."""
    if rows.tracebacks or not rows.rows:
        return None
    statements = _statements(connection, rows)
    return statements[0] if len(statements) == 1 else None


def write_rows(cursor: sqlite3.Cursor, rows: Rows) -> dict[int, str]:
    """Write ``rows`` (shared texts first) with ``cursor``, in the caller's transaction; returns
    the shared texts it stored (or found stored), by digest.

    A digest already naming another text (64 bits: it takes billions of distinct texts to
    expect one) is not used: the rows that named it keep their traceback in their JSON."""
    stored: dict[int, str] = {}
    if rows.tracebacks:
        cursor.executemany(_INSERT_TRACEBACK, rows.tracebacks.items())
        digests = list(rows.tracebacks)
        found: dict[int, str] = {}
        # In chunks: one write may store more texts than a statement binds values.
        for start in range(0, len(digests), _DIGESTS_PER_QUERY):
            chunk = digests[start:start + _DIGESTS_PER_QUERY]
            found.update(cursor.execute(f"SELECT digest, text FROM {TRACEBACKS} WHERE digest IN "
                                        f"({', '.join('?' * len(chunk))})", chunk))
        taken = {digest: text for digest, text in rows.tracebacks.items() if found.get(digest) != text}
        stored = {digest: text for digest, text in rows.tracebacks.items() if digest not in taken}
        if taken:
            rows = _inlined(rows, taken)
    for sql, params in _statements(cursor.connection, rows):
        cursor.execute(sql, params)
    return stored


def _inlined(rows: Rows, texts: dict[int, str]) -> Rows:
    """``rows`` with the shared texts ``texts`` put back in the JSON of the rows naming them."""
    at, digest_at = (_ENTRY, _DIGEST) if rows.common is None else (_COMMON_ENTRY, _COMMON_DIGEST)
    out = []
    for row in rows.rows:
        text = texts.get(row[digest_at])
        if text is not None:
            data = json.loads(row[at])
            message = data["error_message"] if "error_message" in data else data["attempts"][-1]["error_message"]
            data["traceback"] = f"{text}{message}\n"
            row = (*row[:at], json.dumps(data, ensure_ascii=False, separators=(",", ":")), NO_VALUE,
                   *row[digest_at + 1:])
        out.append(row)
    return rows._replace(rows=out, tracebacks={d: t for d, t in rows.tracebacks.items() if d not in texts})


_MISSING_TEXT: Final = "<the shared traceback {digest} is missing from " + TRACEBACKS + ">\n"


def entry_of(row: Sequence[Any]) -> DeadLetter:
    """The entry a row of :data:`SELECT_ROWS` holds, every field put back (module docstring)."""
    _, entry_id, run_id, job_id, stage, error_class, error_type, text, digest, shared = row
    data: dict[str, Any] = json.loads(text)
    if "id" not in data:  # a row of this format: the columns hold these
        data.update(id=entry_id, run_id=run_id, job_id=job_id, stage=stage, error_class=error_class,
                    error_type=error_type)
    attempts = data.get("attempts") or ()
    if attempts and "error_type" not in attempts[-1]:
        attempts[-1]["error_type"] = data["error_type"]
    if "error_message" not in data:
        data["error_message"] = attempts[-1]["error_message"] if attempts else ""
    if "traceback" not in data and digest is not None:
        head = _MISSING_TEXT.format(digest=digest) if shared is None else shared
        data["traceback"] = f"{head}{data['error_message']}\n"
    if "first_failed_at" not in data and attempts:
        data["first_failed_at"] = attempts[0]["at"]
        data["last_failed_at"] = attempts[-1]["at"]
    return DeadLetter.from_dict(data)
