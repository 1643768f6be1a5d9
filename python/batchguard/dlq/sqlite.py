"""A dead-letter queue in a SQLite file: durable, indexed, no dependency beyond the stdlib."""

from __future__ import annotations

import builtins
import contextlib
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
from .sqlite_rows import (
    SELECT_ROWS,
    TABLE,
    TRACEBACKS,
    Rows,
    SharedTracebacks,
    entry_of,
    one_statement,
    rows_of,
    write_rows,
)
from .status import DEFAULT_STATUS

__all__ = ["BackgroundWrites", "SqliteDLQ"]

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
        status TEXT NOT NULL DEFAULT 'open',
        traceback_digest INTEGER
    )""",
    # A traceback many entries share, stored once (see sqlite_rows): never deleted, so a
    # writer that stored one may name it in later rows without looking.
    f"CREATE TABLE IF NOT EXISTS {TRACEBACKS} (digest INTEGER PRIMARY KEY, text TEXT NOT NULL)",
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

_PAGE: Final = 1000
_IDS_PER_QUERY: Final = 500  # below SQLite's oldest limit on bound parameters (999)


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
    the former). An entry is stored as one indexed column per filter field and a JSON of the
    rest; a traceback many entries repeat is stored once (see :mod:`.sqlite_rows`).

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
        self._shared = SharedTracebacks()
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
        """Create the ``dead_letters`` table, the shared tracebacks' table and the indexes if
        they are missing, and migrate a table made by an earlier version (idempotent).

        The migrations add the ``status`` column, every existing entry ``'open'`` (their JSON has
        no status, which reads as open too), and the ``traceback_digest`` column, NULL in every
        existing row (whose JSON holds its whole entry, which reads as it did). They run in the
        opening write transaction (``BEGIN IMMEDIATE``), so two processes opening the same old
        queue at once take turns: the second finds the columns there.
        """
        for statement in _SCHEMA:
            cursor.execute(statement)
        columns = {row[1] for row in cursor.execute(f"PRAGMA table_info({TABLE})")}
        if "status" not in columns:
            cursor.execute(f"ALTER TABLE {TABLE} ADD COLUMN status TEXT NOT NULL DEFAULT 'open'")
        if "traceback_digest" not in columns:
            cursor.execute(f"ALTER TABLE {TABLE} ADD COLUMN traceback_digest INTEGER")
        for statement in _STATUS_INDEXES:
            cursor.execute(statement)

    @staticmethod
    def write_entries(cursor: sqlite3.Cursor, entries: Iterable[DeadLetter]) -> None:
        """Upsert ``entries`` with ``cursor`` without committing: the caller owns the transaction.

        Works on any connection to a database where :meth:`create_schema` has run. A traceback
        shared by several of ``entries`` is stored (once) in the same transaction.
        """
        write_rows(cursor, rows_of(entries))

    # -- the DeadLetterQueue protocol -------------------------------------------------------

    def send(self, entries: Sequence[DeadLetter]) -> None:
        """Upsert ``entries`` by id in one transaction; durable when it returns."""
        if not entries:
            return
        self._write(self._rows(entries))  # encode before taking the lock

    def background_writes(self) -> BackgroundWrites:
        """A writer that sends each batch on its own thread while the caller goes on, one batch
        behind: see :class:`BackgroundWrites` (a run's recorder uses it)."""
        return BackgroundWrites(self)

    def _rows(self, entries: Iterable[DeadLetter]) -> Rows:
        """The rows of ``entries``, naming the tracebacks this queue shares."""
        return rows_of(entries, self._shared)

    def _write(self, rows: Rows) -> None:
        """Write ``rows`` (from :meth:`_rows`) in one transaction; durable when it returns.

        Rows that fit one statement and store no new shared traceback are written by that
        statement alone, which SQLite commits as its own transaction: on a writer thread each
        statement is a GIL hand-off (SQLite releases the GIL while it works, and taking it back
        waits out the run thread's switch interval), and BEGIN and COMMIT were two more.
        """
        with self._db.errors("send"), self._db.lock:
            connection = self._db.connection
            nested = connection.in_transaction  # in a caller's transaction(): it commits later
            single = None if nested else one_statement(connection, rows)
            if single is not None:
                connection.execute(*single)
            else:
                with self.transaction() as cur:
                    stored = write_rows(cur, rows)
                if stored and not nested:
                    self._shared.stored_now(stored)

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
        sql = f"{SELECT_ROWS} WHERE {_where(wanted)} ORDER BY seq LIMIT ? OFFSET ?"
        params = (*wanted.values(), -1 if limit is None else limit, offset)
        with self._db.errors("list"):
            rows = self._db.query(sql, params)
        return [entry_of(row) for row in rows]

    def get(self, entry_id: str) -> DeadLetter | None:
        """The entry with this id, or None."""
        with self._db.errors("get"):
            rows = self._db.query(f"{SELECT_ROWS} WHERE d.id = ?", (entry_id,))
        return entry_of(rows[0]) if rows else None

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
                found.update((row[1], entry_of(row)) for row in
                             cur.execute(f"{SELECT_ROWS} WHERE d.id IN ({marks})", chunk))
            changed = {entry_id: entry for entry_id, entry in decide(dict(found)).items() if entry_id in found}
            if changed:
                # An upsert, not an UPDATE of the status alone: a change may move any filter
                # column (a replayed entry's error type), and the entry keeps its place.
                write_rows(cur, self._rows(changed.values()))
            found.update(changed)
        return found

    def _iter(self, wanted: dict[str, Any]) -> Iterator[DeadLetter]:
        # Keyset pages: the lock is held per page only, never while the caller consumes entries.
        sql = f"{SELECT_ROWS} WHERE {_where(wanted)} AND seq > ? ORDER BY seq LIMIT {_PAGE}"
        after = -1
        while True:
            rows = self._db.query(sql, (*wanted.values(), after))
            for row in rows:
                yield entry_of(row)
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
        rows = self.dlq._rows(entries)  # while the previous batch is still being written
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="batchguard-dlq-writer")
        self._pending = self._pool.submit(self.dlq._write, rows)

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
