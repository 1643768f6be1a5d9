"""SQLite as every batchguard store uses it: WAL, explicit write transactions that nest as
savepoints, one lock per database object, errors that name the store and the cause."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from .._files import create_private
from .role import Database, Role

__all__ = ["SYNCHRONOUS", "SqliteDatabase", "Synchronous", "enable_wal", "not_writable", "write_transaction"]

Synchronous = Literal["FULL", "EXTRA", "NORMAL"]
SYNCHRONOUS: Final = ("FULL", "EXTRA", "NORMAL")


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection, cur: sqlite3.Cursor) -> Iterator[None]:
    """One write transaction on an autocommit connection: commit on exit, roll back on error.
    IMMEDIATE takes the write lock up front: two processes that both started reading and then
    try to write would otherwise fail with SQLITE_BUSY."""
    cur.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    cur.execute("COMMIT")


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL. When two processes open a new database at once, the switch can fail with
    "database is locked" without SQLite's busy handler ever waiting, so retry it ourselves."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def not_writable(path: str) -> str | None:
    """Why the existing file or directory ``path`` cannot be written, or None if it can.

    Asked with access() and statvfs(), never by opening the file: closing any descriptor of a
    file drops every POSIX lock the process holds on it, SQLite's own included.
    """
    if os.access(path, os.W_OK):
        return None
    try:
        if hasattr(os, "statvfs") and os.statvfs(path).f_flag & os.ST_RDONLY:  # POSIX only
            return "on a read-only file system"
    except OSError:
        pass
    return "not writable (an immutable file or its permissions)"


def _cause(exc: BaseException, path: str) -> str:
    """``exc``'s message, with the operating system's reason when SQLite's message hides it."""
    text = str(exc)
    if isinstance(exc, sqlite3.Error) and ("unable to open" in text or "readonly" in text):
        for target in (path, os.path.dirname(path) or "."):
            reason = not_writable(target) if os.path.exists(target) else None
            if reason is not None:
                return f"{text} ({target} is {reason})"
    return text


class SqliteDatabase(Database):
    """One SQLite file, shared by the threads of a store (``check_same_thread=False``, every use
    under :attr:`lock`).

    The connection is in autocommit mode: :meth:`transaction` opens each write transaction
    (``BEGIN IMMEDIATE``), and a transaction opened inside another on the same thread joins it
    as a savepoint, so a job store's checkpoint and the DLQ's entries commit or vanish together.
    """

    def __init__(self, path: str | os.PathLike[str], *, role: Role, timeout: float,
                 synchronous: Synchronous = "FULL") -> None:
        """Nothing is opened until :meth:`open`."""
        self.path = Path(path)
        self.role = role
        self.timeout = timeout
        self.name = f"SQLite {role.noun} {self.path}"
        """The database in messages: "SQLite dead-letter queue dlq.db"."""
        self.lock = threading.RLock()
        self._synchronous = synchronous
        self._savepoints = itertools.count()
        self._conn: sqlite3.Connection | None = None

    def open(self, create_schema: Callable[[sqlite3.Cursor], None]) -> None:
        """Connect (creating the file 0600 if missing), switch to WAL and ``synchronous``, and run
        ``create_schema`` in a write transaction; ``role.unavailable`` (naming the cause) if any
        of it fails."""
        try:
            if str(self.path) != ":memory:":
                # Stores hold records (often personal data): 0600, and SQLite gives its -wal and
                # -shm files the database file's mode. An existing file keeps its mode.
                create_private(self.path)
            conn = self._conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                                check_same_thread=False)
            enable_wal(conn, self.timeout)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            with self.transaction() as cur:
                create_schema(cur)
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise self.role.unavailable(
                f"cannot open the {self.name}: {_cause(exc, os.path.realpath(self.path))}") from exc

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (``role.closed`` once closed); use it under :attr:`lock`."""
        if self._conn is None:
            raise self.role.closed(f"{self.name} is closed")
        return self._conn

    @property
    def closed(self) -> bool:
        return self._conn is None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """Hold the lock and run one write transaction; commit on exit, roll back on error.
        Nested (on the same thread) it is a savepoint of the outer transaction."""
        with self.lock:
            conn = self.connection
            cur = conn.cursor()
            try:
                if conn.in_transaction:
                    name = f"batchguard_{next(self._savepoints)}"
                    cur.execute(f"SAVEPOINT {name}")
                    try:
                        yield cur
                    except BaseException:
                        cur.execute(f"ROLLBACK TO {name}")
                        cur.execute(f"RELEASE {name}")
                        raise
                    cur.execute(f"RELEASE {name}")
                else:
                    with write_transaction(conn, cur):
                        yield cur
            finally:
                cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read, under the lock."""
        with self.lock:
            return self.connection.execute(sql, tuple(params)).fetchall()

    @contextlib.contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn SQLite's errors during ``action`` into ``role.failed`` naming the store and the cause."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.role.failed(
                f"{self.name}: {action} failed: {_cause(exc, os.path.realpath(self.path))}") from exc

    def same_database(self, other: Database) -> bool:
        """The same file (through any path, symlinks included)."""
        if not isinstance(other, SqliteDatabase):
            return False
        try:
            return os.path.samefile(self.path, other.path)
        except OSError:
            return False

    def close(self) -> None:
        """Close the connection; closing twice is fine."""
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
