"""A dead-letter queue in a SQLite file: durable, indexed, no dependency beyond the stdlib."""

from __future__ import annotations

import builtins
import contextlib
import functools
import itertools
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final

from .._checks import check_duration
from .._db.role import DLQ
from .._db.sqlite import SYNCHRONOUS, SqliteDatabase, Synchronous
from ..errors import ConfigError, DLQUnavailableError
from .base import DeadLetter, Decide, QueueBase, check_page, select, write_jsonl
from .codec import dumps
from .status import DEFAULT_STATUS

__all__ = ["BackgroundWrites", "SqliteDLQ"]

TABLE: Final = "dead_letters"

# `seq` aliases the rowid, so it costs no extra index. Without AUTOINCREMENT a new row gets
# max(seq) + 1, which is still after every row present: list() order stays the insertion order.
_SCHEMA: Final = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL,
        job_id TEXT,
        stage TEXT NOT NULL,
        error_class TEXT NOT NULL,
        error_type TEXT NOT NULL,
        entry TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open'
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_run_id ON {TABLE} (run_id)",
    # Partial: runs that are not jobs (job_id NULL) pay nothing for it, and SQLite still uses it
    # for `job_id = ?`, which implies `job_id IS NOT NULL`.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_job_id ON {TABLE} (job_id) WHERE job_id IS NOT NULL",
    # stage and error_class are filtered on within a run or job (whose index finds the rows);
    # indexing them too would cost every insert two more B-trees for a rare global query.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_error_type ON {TABLE} (error_type)",
)

# Created once the status column exists (a queue made before it gains it first). Partial: a new
# entry is open, so sends never write to it; a query for a closed status repeats its WHERE
# (`status <> 'open'`, see _where), which SQLite needs to use it. Open entries are found
# through the other indexes (or the table, in seq order), the status checked on each row.
_STATUS_INDEXES: Final = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_closed ON {TABLE} (status, seq) WHERE status <> '{DEFAULT_STATUS}'",
)

# Updating every column but `seq` keeps an upserted entry at the place of its first send.
_COLUMNS: Final = "id, run_id, job_id, stage, error_class, error_type, entry"
_ON_CONFLICT: Final = """
    ON CONFLICT (id) DO UPDATE SET
        run_id = excluded.run_id, job_id = excluded.job_id, stage = excluded.stage,
        error_class = excluded.error_class, error_type = excluded.error_type, entry = excluded.entry,
        status = excluded.status
"""
# An upsert of `rows` entries in one statement: a batch is written in a few statements (see
# _upsert), not one per entry. Open entries (nearly every entry a run sends) leave the status
# to the column's default: the statement a run's sends use stays the one of before statuses
# existed.
@functools.lru_cache(maxsize=32)
def _upsert_statement(rows: int, *, with_status: bool) -> str:
    marks = "(?, ?, ?, ?, ?, ?, ?, ?)" if with_status else "(?, ?, ?, ?, ?, ?, ?)"
    columns = f"{_COLUMNS}, status" if with_status else _COLUMNS
    return f"INSERT INTO {TABLE} ({columns}) VALUES {', '.join([marks] * rows)} {_ON_CONFLICT}"


_MAX_ROWS_PER_STATEMENT: Final = 512
"""Entries one upsert statement writes, at most (and fewer where SQLite allows fewer bound
parameters: 999 before 3.32)."""

_SET_STATUS: Final = f"UPDATE {TABLE} SET status = ?, entry = ? WHERE id = ?"

_PAGE: Final = 1000
_IDS_PER_QUERY: Final = 500  # below SQLite's oldest limit on bound parameters (999)


def _rows(entries: Iterable[DeadLetter]) -> tuple[bool, list[tuple[Any, ...]]]:
    """Whether ``entries`` need their status written (not every one is open), and their rows,
    in order (the first send's order is the list order)."""
    batch = entries if isinstance(entries, (list, tuple)) else list(entries)
    if all(e.status == DEFAULT_STATUS for e in batch):
        return False, [(e.id, e.run_id, e.job_id, e.stage, str(e.error_class), e.error_type,
                        dumps(e).decode()) for e in batch]
    return True, [(e.id, e.run_id, e.job_id, e.stage, str(e.error_class), e.error_type, dumps(e).decode(),
                   e.status) for e in batch]


def _upsert(cursor: sqlite3.Cursor, with_status: bool, rows: Sequence[tuple[Any, ...]]) -> None:
    """Upsert ``rows`` (from :func:`_rows`) in order, in statements of many rows each.

    One statement per row (``executemany``) costs every row its binding, a step and a reset,
    and on a writer thread a GIL hand-off per row, for SQLite releases the GIL around each
    step: waiting to take it back while the run's thread holds it cost more than the insert.
    A statement of 512 rows is one step. Row counts are powers of two (512, then what is left
    written as 256 + 128 + ...), so a connection compiles at most ten of these statements,
    whatever the batch sizes. A row that repeats an earlier id of the same statement updates
    it, as the next ``executemany`` row would.
    """
    width = 8 if with_status else 7
    limit = min(_MAX_ROWS_PER_STATEMENT, cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    most = 1 << (max(limit, 1).bit_length() - 1)
    start, total = 0, len(rows)
    while start < total:
        size = min(most, 1 << ((total - start).bit_length() - 1))
        cursor.execute(_upsert_statement(size, with_status=with_status),
                       list(itertools.chain.from_iterable(rows[start:start + size])))
        start += size


def _where(wanted: dict[str, Any]) -> str:
    # Names come from select (FILTER_FIELDS and status only), so interpolating them is safe. A
    # closed status repeats the partial index's WHERE so that SQLite can use the index.
    return " AND ".join(
        f"{name} = ?" + (f" AND status <> '{DEFAULT_STATUS}'" if name == "status" and value != DEFAULT_STATUS else "")
        for name, value in wanted.items()) or "1"


class SqliteDLQ(QueueBase):
    """Dead letters in a SQLite database file (table ``dead_letters``), safe to share between threads.

    Each ``send`` is one transaction in WAL mode with ``synchronous=FULL``: when it returns, the
    entries survive a crash of the process *and* of the machine (``NORMAL`` would only survive
    the former). Entries are stored as JSON, next to one indexed column per filter field.

    A job store that keeps its checkpoints in the same file can commit them atomically with
    the batch's dead letters::

        with dlq.transaction() as cur:
            dlq.write_entries(cur, entries)
            cur.execute("UPDATE checkpoints SET next_batch = ? WHERE job = ?", (7, "nightly"))

    >>> import tempfile, os
    >>> q = SqliteDLQ(os.path.join(tempfile.mkdtemp(), "dlq.db"))
    >>> q.count()
    0
    >>> q.close()
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0,
                 synchronous: Synchronous = "FULL") -> None:
        """Open (creating if needed) the database at ``path``.

        ``timeout`` is how long a write waits for another process's write lock, in seconds.
        ``synchronous="NORMAL"`` trades the durability of the last commits on power loss for speed.
        """
        check_duration("SqliteDLQ timeout", timeout)
        if synchronous not in SYNCHRONOUS:
            raise ConfigError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}")
        if sqlite3.sqlite_version_info < (3, 24, 0):
            raise DLQUnavailableError(
                f"SqliteDLQ needs SQLite >= 3.24 (upsert); this Python has {sqlite3.sqlite_version}"
            )
        self.path = Path(path)
        self._db = SqliteDatabase(self.path, role=DLQ, timeout=timeout, synchronous=synchronous)
        self._db.open(self.create_schema)

    def __repr__(self) -> str:
        state = "closed" if self._db.closed else "open"
        return f"SqliteDLQ({str(self.path)!r}, {state})"

    def __iter__(self) -> Iterator[DeadLetter]:
        return self.iter()

    # -- same-transaction use (the TransactionalDLQ protocol) ------------------------------------

    @property
    def database(self) -> SqliteDatabase:
        """The database this queue writes to: a job store in the same file joins its transactions."""
        return self._db

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (autocommit mode: transactions are explicit).

        Use it under :meth:`transaction`, which also holds this queue's lock.
        """
        return self._db.connection

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        """Hold the lock and run one write transaction; commit on exit, roll back on error.

        Nested use (``send`` inside a ``transaction`` block, on the same thread) joins the outer
        transaction through a savepoint, so everything commits or rolls back together.

        >>> import tempfile, os
        >>> q = SqliteDLQ(os.path.join(tempfile.mkdtemp(), "dlq.db"))
        >>> with q.transaction() as cur:
        ...     n = cur.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        >>> n
        0
        >>> q.close()
        """
        return self._db.transaction()

    @staticmethod
    def create_schema(cursor: sqlite3.Cursor) -> None:
        """Create the ``dead_letters`` table and its indexes if they are missing, and migrate a
        table made before entries had a status (idempotent).

        The migration adds the ``status`` column, every existing entry ``'open'`` (their JSON has
        no status, which reads as open too). It runs in the opening write transaction
        (``BEGIN IMMEDIATE``), so two processes opening the same old queue at once take turns:
        the second finds the column there.
        """
        for statement in _SCHEMA:
            cursor.execute(statement)
        columns = {row[1] for row in cursor.execute(f"PRAGMA table_info({TABLE})")}
        if "status" not in columns:
            cursor.execute(f"ALTER TABLE {TABLE} ADD COLUMN status TEXT NOT NULL DEFAULT 'open'")
        for statement in _STATUS_INDEXES:
            cursor.execute(statement)

    @staticmethod
    def write_entries(cursor: sqlite3.Cursor, entries: Iterable[DeadLetter]) -> None:
        """Upsert ``entries`` with ``cursor`` without committing: the caller owns the transaction.

        Works on any connection to a database where :meth:`create_schema` has run.
        """
        _upsert(cursor, *_rows(entries))

    # -- the DeadLetterQueue protocol -------------------------------------------------------

    def send(self, entries: Sequence[DeadLetter]) -> None:
        """Upsert ``entries`` by id in one transaction; durable when it returns."""
        if not entries:
            return
        self._write(*_rows(entries))  # encode before taking the lock

    def background_writes(self) -> BackgroundWrites:
        """A writer that sends each batch on its own thread while the caller goes on, one batch
        behind: see :class:`BackgroundWrites` (a run's recorder uses it)."""
        return BackgroundWrites(self)

    def _write(self, with_status: bool, rows: builtins.list[tuple[Any, ...]]) -> None:
        with self._db.errors("send"), self.transaction() as cur:
            _upsert(cur, with_status, rows)

    def count(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """How many entries match ``filters`` (exact matches on FILTER_FIELDS) and ``status``."""
        wanted = select(filters, status)
        sql = f"SELECT count(*) FROM {TABLE} WHERE {_where(wanted)}"
        with self._db.errors("count"):
            ((n,),) = self._db.query(sql, tuple(wanted.values()))
        return int(n)

    def list(self, *, limit: int | None = None, offset: int = 0, status: str | None = DEFAULT_STATUS,
             **filters: Any) -> list[DeadLetter]:
        """Matching entries in the order of their first send, paged by ``limit``/``offset``."""
        wanted = select(filters, status)
        check_page(limit, offset)
        sql = f"SELECT entry FROM {TABLE} WHERE {_where(wanted)} ORDER BY seq LIMIT ? OFFSET ?"
        params = (*wanted.values(), -1 if limit is None else limit, offset)
        with self._db.errors("list"):
            rows = self._db.query(sql, params)
        return [DeadLetter.from_json(text) for (text,) in rows]

    def get(self, entry_id: str) -> DeadLetter | None:
        """The entry with this id, or None."""
        with self._db.errors("get"):
            rows = self._db.query(f"SELECT entry FROM {TABLE} WHERE id = ?", (entry_id,))
        return DeadLetter.from_json(rows[0][0]) if rows else None

    def remove(self, ids: Iterable[str]) -> int:
        """Delete the entries with these ids; unknown ids are ignored. Returns how many went."""
        params = [(entry_id,) for entry_id in ids]
        if not params:
            return 0
        with self._db.errors("remove"), self.transaction() as cur:
            cur.executemany(f"DELETE FROM {TABLE} WHERE id = ?", params)
            return max(cur.rowcount, 0)

    def export(self, path: str | os.PathLike[str] | IO[str], *, overwrite: bool = False,
               status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """Write the matching entries as JSON lines to a new file, or a text stream; returns how
        many. Refuses this queue's own files, and an existing file unless ``overwrite=True``; see
        :func:`~batchguard.dlq.base.write_jsonl`."""
        wanted = select(filters, status)
        with self._db.errors("export"):
            return write_jsonl(path, self._iter(wanted), overwrite=overwrite, sources=self._files())

    def close(self) -> None:
        """Close the connection; further calls raise DLQError. Closing twice is fine."""
        self._db.close()

    # -- internals -----------------------------------------------------------------------------

    def _files(self) -> tuple[Path, ...]:
        """The database and the side files SQLite keeps next to it: an export must not overwrite any."""
        return (self.path, *(Path(f"{self.path}{suffix}") for suffix in ("-wal", "-shm", "-journal")))

    def _swap(self, ids: builtins.list[str], decide: Decide) -> dict[str, DeadLetter]:
        """Read the entries, decide, write back the changed ones: one write transaction
        (BEGIN IMMEDIATE: another process's swap waits for it, so none reads in between)."""
        with self._db.errors("change"), self.transaction() as cur:
            found: dict[str, DeadLetter] = {}
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start:start + _IDS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                found.update((entry_id, DeadLetter.from_json(text)) for entry_id, text in
                             cur.execute(f"SELECT id, entry FROM {TABLE} WHERE id IN ({marks})", chunk))
            changed = {entry_id: entry for entry_id, entry in decide(dict(found)).items() if entry_id in found}
            cur.executemany(_SET_STATUS, ((entry.status, dumps(entry).decode(), entry_id)
                                          for entry_id, entry in changed.items()))
            found.update(changed)
        return found

    def _iter(self, wanted: dict[str, Any]) -> Iterator[DeadLetter]:
        # Keyset pages: the lock is held per page only, never while the caller consumes entries.
        sql = (f"SELECT seq, entry FROM {TABLE} WHERE {_where(wanted)} AND seq > ? "
               f"ORDER BY seq LIMIT {_PAGE}")
        after = -1
        while True:
            rows = self._db.query(sql, (*wanted.values(), after))
            for _, text in rows:
                yield DeadLetter.from_json(text)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]


class BackgroundWrites:
    """Sends to a :class:`SqliteDLQ` with the insert and the commit's fsync on a writer thread.

    With ``synchronous=FULL`` each send waits for an fsync (milliseconds), and inserting a
    thousand rows takes as long again; the GIL is released for both, so a run can process its
    next batch meanwhile. :meth:`send` encodes a batch on the caller's thread, waits until the
    previous batch is durable (raising its error, if its write failed), hands this one to the
    writer and returns: at most one batch is in flight. :meth:`finish` waits for it. A run's
    entries are durable before the run returns because the run calls :meth:`finish` first;
    the durability of each commit is the queue's (``synchronous``), unchanged.
    """

    def __init__(self, dlq: SqliteDLQ) -> None:
        """Nothing starts until the first :meth:`send`."""
        self.dlq = dlq
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def send(self, entries: Sequence[DeadLetter]) -> None:
        """Encode ``entries``, wait for the previous batch, then write these in the background."""
        if not entries:
            return
        with_status, rows = _rows(entries)  # while the previous batch is still being written
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="batchguard-dlq-writer")
        self._pending = self._pool.submit(self.dlq._write, with_status, rows)

    def wait(self) -> None:
        """Return once every batch sent is durable; raise the error of a write that failed."""
        pending = self._pending
        if pending is not None:
            # Cleared only once it is done: an interrupt while waiting leaves it to wait for again.
            pending.result()
            self._pending = None

    def finish(self) -> None:
        """:meth:`wait`, then stop the writer thread (a later :meth:`send` starts another)."""
        try:
            self.wait()
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True)
