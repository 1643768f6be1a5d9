"""PostgreSQL (psycopg 3) as every batchguard store uses it: one autocommit connection per store,
reopened when the server dropped it, explicit transactions, errors that name the server but
never the password."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from .._checks import MAX_DURATION_S, check_count
from .._urls import redact, require_module
from ..errors import ConfigError
from .role import Database, Role

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresDatabase", "describe"]


def describe(url: str) -> str:
    """host:port/dbname of ``url`` for messages: never the password.

    >>> describe("postgresql://app:pw@db.internal:6543/jobs")
    'db.internal:6543/jobs'
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception as exc:  # noqa: BLE001 - psycopg.ProgrammingError carries the whole conninfo, password included
        raise ConfigError(f"invalid PostgreSQL URL {redact(url)!r}: {type(exc).__name__}") from None
    host = info.get("host") or os.environ.get("PGHOST") or "localhost"
    port = info.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = info.get("dbname") or os.environ.get("PGDATABASE") or info.get("user") or ""
    if "@" in f"{host}{port}{dbname}" and "password" not in info:
        # libpq read a password's unescaped "/" as the end of the host: host and port are
        # the user and the password's start, and its end is in the dbname
        return redact(url)
    return f"{host}:{port}/{dbname}"


class PostgresDatabase(Database):
    """One PostgreSQL database reached by a store, shared by its threads (every use under
    :attr:`lock`). The connection is in autocommit mode: :meth:`transaction` opens each
    transaction, and one opened inside another becomes a savepoint of it."""

    def __init__(self, url: str, *, role: Role, connect_timeout: int, needed_by: str, detail: str = "") -> None:
        """Check the arguments and import psycopg; nothing is connected until :meth:`open`.

        ``needed_by`` names the store's class in messages; ``detail`` follows the server in
        them (the DLQ's table).
        """
        # libpq takes whole seconds; 0 would mean wait forever.
        check_count(f"{needed_by} connect_timeout", connect_timeout, minimum=1, maximum=MAX_DURATION_S,
                    why="one year, batchguard.MAX_DURATION_S")
        self.psycopg = require_module("psycopg", needed_by=needed_by, extra="postgres")
        self.role = role
        self.raw_url = url
        """The URL as given, password included: for the driver only, never for messages."""
        self.url = redact(url)
        self.location = describe(url)
        self.name = f"PostgreSQL {role.noun} {self.location}{detail}"
        """The database in messages: "PostgreSQL job store db:5432/jobs"."""
        self.lock = threading.RLock()
        self._connect_timeout = connect_timeout
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        """Connect (``role.unavailable`` if the server cannot be reached)."""
        self._conn = self.connect()

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection to the database (the store's own, or a dedicated one)."""
        try:
            conn = self.psycopg.connect(self.raw_url, connect_timeout=self._connect_timeout, autocommit=True)
            return cast("psycopg.Connection[Any]", conn)
        except self.psycopg.Error as exc:
            raise self.role.unavailable(
                f"cannot reach the PostgreSQL {self.role.noun} at {self.location}: {exc}") from exc

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The open connection, reconnected if the server dropped it (``role.closed`` once
        closed); use it under :attr:`lock`."""
        if self._closed:
            raise self.role.closed(f"{self.name} is closed")
        if self._conn is None or self._conn.broken or self._conn.closed:
            # A restarted server or a dropped connection: reconnect once, outside a transaction.
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = self.connect()
        return self._conn

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """Hold the lock and run one transaction; commit on exit, roll back on error."""
        with self.lock:
            conn = self.connection
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    def query(self, sql: Any, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read, under the lock."""
        with self.lock:
            return self.connection.execute(sql, tuple(params)).fetchall()

    @contextlib.contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn psycopg's errors during ``action`` into ``role.failed`` naming the store: a
        connection the server dropped ("terminating connection due to administrator command")
        names no server."""
        try:
            yield
        except self.psycopg.Error as exc:
            raise self.role.failed(f"{self.name}: {action} failed: {exc}") from exc

    def same_database(self, other: Database) -> bool:
        """The same server, database and user (the same connection parameters once resolved)."""
        if not isinstance(other, PostgresDatabase):
            return False
        try:
            theirs, ours = other.connection.info, self.connection.info
        except Exception:  # noqa: BLE001 - an unusable database fails on use, with its own message
            return False
        return (theirs.host, theirs.port, theirs.dbname, theirs.user) == (
            ours.host, ours.port, ours.dbname, ours.user)

    def close(self) -> None:
        """Close the connection; closing twice is fine."""
        with self.lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
