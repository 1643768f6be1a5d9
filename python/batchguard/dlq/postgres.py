"""A dead-letter queue in a PostgreSQL table: shared, transactional, queryable with SQL."""

from __future__ import annotations

import builtins
import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, Final, cast

from .._db.postgres import PostgresDatabase
from .._db.role import DLQ
from ..errors import ConfigError, DLQUnavailableError
from .base import FILTER_FIELDS, DeadLetter, Decide, QueueBase, check_page, select, write_jsonl
from .codec import dumps
from .status import DEFAULT_STATUS

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["PostgresDLQ"]

_PAGE: Final = 1000
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _row(entry: DeadLetter) -> tuple[Any, ...]:
    return (entry.id, entry.run_id, entry.job_id, entry.stage, str(entry.error_class),
            entry.error_type, dumps(entry).decode(), entry.status)


def _where(sql_mod: Any, wanted: dict[str, Any]) -> sql.Composable:
    if not wanted:
        return cast("sql.Composable", sql_mod.SQL("TRUE"))
    # A closed status repeats the partial index's WHERE, so the planner needs no proof to use it.
    closed = sql_mod.SQL(" AND status <> {}").format(sql_mod.Literal(DEFAULT_STATUS))
    return cast("sql.Composable", sql_mod.SQL(" AND ").join(
        sql_mod.SQL("{} = %s{}").format(
            sql_mod.Identifier(name),
            closed if name == "status" and value != DEFAULT_STATUS else sql_mod.SQL(""))
        for name, value in wanted.items()
    ))


class PostgresDLQ(QueueBase):
    """Dead letters in a PostgreSQL table (psycopg 3); safe to share between threads and processes.

    The table (created if missing) has the entry as ``jsonb``, one indexed column per filter
    field, and a ``bigserial`` ``seq`` that keeps the order of first sends. Each ``send`` is one
    transaction (``INSERT ... ON CONFLICT (id) DO UPDATE`` for the whole batch), durable when
    it returns. A job store on the same database can commit a checkpoint with its batch's
    dead letters::

        with dlq.transaction() as cur:
            dlq.write_entries(cur, entries)
            cur.execute("UPDATE checkpoints SET next_batch = %s WHERE job = %s", (7, "nightly"))

    >>> q = PostgresDLQ("postgresql://app@localhost/jobs")  # doctest: +SKIP
    >>> q.count(error_type="KeyError")  # doctest: +SKIP
    0
    """

    def __init__(self, url: str, table: str = "batchguard_dead_letters", *,
                 connect_timeout: int = 3) -> None:
        """Connect to ``url`` and create ``table`` if needed (fails fast: DLQUnavailableError).

        ``table`` may be schema-qualified (``"ops.dead_letters"``). ``connect_timeout`` is in
        whole seconds (libpq's unit).
        """
        parts = table.split(".")
        if len(parts) > 2 or not all(_NAME.fullmatch(part) for part in parts):
            raise ConfigError(
                f"table must be a PostgreSQL name (letters, digits, _; at most 63) optionally "
                f"prefixed by a schema, got {table!r}"
            )
        self._db = PostgresDatabase(url, role=DLQ, connect_timeout=connect_timeout, needed_by="PostgresDLQ",
                                    detail=f" ({table})")
        from psycopg import sql as sql_mod

        self._sql = sql_mod
        self.table = table
        self.url = self._db.url
        ident = sql_mod.Identifier(*parts)
        base = parts[-1]
        self._q: dict[str, sql.Composed] = {
            "upsert": sql_mod.SQL(
                "INSERT INTO {t} (id, run_id, job_id, stage, error_class, error_type, entry, status) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s) "
                "ON CONFLICT (id) DO UPDATE SET run_id = EXCLUDED.run_id, "
                "job_id = EXCLUDED.job_id, stage = EXCLUDED.stage, "
                "error_class = EXCLUDED.error_class, error_type = EXCLUDED.error_type, "
                "entry = EXCLUDED.entry, status = EXCLUDED.status"
            ).format(t=ident),
            # FOR UPDATE: a concurrent status change of the same entries waits for ours. ORDER BY
            # id: every swap locks rows in one order (the plan's order changes as updates move
            # rows), so two swaps of overlapping entries wait for each other, never deadlock.
            "lock": sql_mod.SQL("SELECT id, entry FROM {t} WHERE id = ANY(%s) ORDER BY id FOR UPDATE").format(t=ident),
            # The quoted name as regclass text: the parts match _NAME, so they hold no quote.
            "has_status": sql_mod.SQL(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {}::regclass "
                "AND attname = 'status' AND NOT attisdropped)").format(
                sql_mod.Literal(".".join(f'"{part}"' for part in parts))),
            "add_status": sql_mod.SQL(
                "ALTER TABLE {t} ADD COLUMN status text NOT NULL DEFAULT 'open'").format(t=ident),
            "get": sql_mod.SQL("SELECT entry FROM {t} WHERE id = %s").format(t=ident),
            "remove": sql_mod.SQL("DELETE FROM {t} WHERE id = ANY(%s)").format(t=ident),
        }
        self._ident = ident
        # The advisory lock serializes schema creation: concurrent CREATE ... IF NOT EXISTS
        # can otherwise fail with a unique violation in the catalog.
        self._schema = [
            sql_mod.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
                sql_mod.Literal(f"batchguard.dlq.schema:{table}")),
            sql_mod.SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                "seq bigserial NOT NULL, id text PRIMARY KEY, run_id text NOT NULL, job_id text, "
                "stage text NOT NULL, error_class text NOT NULL, error_type text NOT NULL, "
                "entry jsonb NOT NULL, status text NOT NULL DEFAULT 'open')"
            ).format(t=ident),
            sql_mod.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (seq)").format(
                i=sql_mod.Identifier(f"{base}_seq_idx"[:63]), t=ident),
            # (field, seq): a filtered list reads the index in list order and stops at the limit.
            *(sql_mod.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} ({f}, seq)").format(
                i=sql_mod.Identifier(f"{base}_{name}_idx"[:63]), t=ident,
                f=sql_mod.Identifier(name)) for name in FILTER_FIELDS),
        ]
        # After the migration (create_schema): one partial index for the closed statuses, which
        # sends of new (open) entries never write to; open entries are found through the others.
        self._status_indexes = [
            sql_mod.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (status, seq) WHERE status <> {s}").format(
                i=sql_mod.Identifier(f"{base}_closed_idx"[:63]), t=ident, s=sql_mod.Literal(DEFAULT_STATUS))]
        self._db.open()
        try:
            with self._db.transaction() as cur:
                self.create_schema(cur)
        except self._db.psycopg.Error as exc:
            self.close()
            raise DLQUnavailableError(
                f"cannot create the dead-letter table {table} on {self._db.location}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        state = "closed" if self._db.closed else "open"
        return f"PostgresDLQ({self.url!r}, table={self.table!r}, {state})"

    def __iter__(self) -> Iterator[DeadLetter]:
        return self.iter()

    # -- same-transaction use (the TransactionalDLQ protocol) ------------------------------------

    @property
    def database(self) -> PostgresDatabase:
        """The database this queue writes to: a job store on the same database joins its transactions."""
        return self._db

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The underlying connection (autocommit: transactions are explicit, see :meth:`transaction`)."""
        with self._db.lock:
            return self._db.connection

    def transaction(self) -> contextlib.AbstractContextManager[psycopg.Cursor[Any]]:
        """Hold the lock and run one transaction; commit on exit, roll back on error.

        Nested use (``send`` inside a ``transaction`` block, on the same thread) becomes a
        savepoint of the outer transaction.
        """
        return self._db.transaction()

    def create_schema(self, cursor: psycopg.Cursor[Any]) -> None:
        """Create the table and its indexes if they are missing, and migrate a table made before
        entries had a status (idempotent).

        The migration adds the ``status`` column, every existing entry ``'open'`` (their JSON
        has no status, which reads as open too): a catalog-only change on PostgreSQL >= 11,
        whatever the table's size. It runs under the advisory lock that serializes schema
        changes, so two processes opening the same old queue at once take turns, and the column
        is looked up first: ``ADD COLUMN IF NOT EXISTS`` would take the table's exclusive lock
        on every open, blocking its readers.
        """
        for statement in self._schema:
            cursor.execute(statement)
        row = cursor.execute(self._q["has_status"]).fetchone()
        if row is None or not row[0]:
            cursor.execute(self._q["add_status"])
        for statement in self._status_indexes:
            cursor.execute(statement)

    def write_entries(self, cursor: psycopg.Cursor[Any], entries: Iterable[DeadLetter]) -> None:
        """Upsert ``entries`` with ``cursor`` without committing: the caller owns the transaction."""
        rows = [_row(entry) for entry in entries]
        if rows:
            cursor.executemany(self._q["upsert"], rows)

    # -- the DeadLetterQueue protocol -------------------------------------------------------

    def send(self, entries: Sequence[DeadLetter]) -> None:
        """Upsert ``entries`` by id in one transaction; durable when it returns."""
        if not entries:
            return
        rows = [_row(entry) for entry in entries]  # encode before taking the lock
        with self._db.errors("send"), self.transaction() as cur:
            cur.executemany(self._q["upsert"], rows)

    def count(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """How many entries match ``filters`` (exact matches on FILTER_FIELDS) and ``status``."""
        wanted = select(filters, status)
        query = self._sql.SQL("SELECT count(*) FROM {t} WHERE {w}").format(
            t=self._ident, w=_where(self._sql, wanted))
        with self._db.errors("count"):
            rows = self._db.query(query, tuple(wanted.values()))
        return int(rows[0][0]) if rows else 0

    def list(self, *, limit: int | None = None, offset: int = 0, status: str | None = DEFAULT_STATUS,
             **filters: Any) -> list[DeadLetter]:
        """Matching entries in the order of their first send, paged by ``limit``/``offset``."""
        wanted = select(filters, status)
        check_page(limit, offset)
        query = self._sql.SQL("SELECT entry FROM {t} WHERE {w} ORDER BY seq LIMIT %s OFFSET %s").format(
            t=self._ident, w=_where(self._sql, wanted))
        with self._db.errors("list"):
            rows = self._db.query(query, (*wanted.values(), limit, offset))
        return [DeadLetter.from_dict(data) for (data,) in rows]

    def get(self, entry_id: str) -> DeadLetter | None:
        """The entry with this id, or None."""
        with self._db.errors("get"):
            rows = self._db.query(self._q["get"], (entry_id,))
        return DeadLetter.from_dict(rows[0][0]) if rows else None

    def remove(self, ids: Iterable[str]) -> int:
        """Delete the entries with these ids; unknown ids are ignored. Returns how many went."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        with self._db.errors("remove"), self.transaction() as cur:
            cur.execute(self._q["remove"], (wanted,))
            return max(cur.rowcount, 0)

    def export(self, path: str | os.PathLike[str] | IO[str], *, overwrite: bool = False,
               status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """Write the matching entries as JSON lines to a new file, or a text stream; returns how
        many. Refuses an existing file unless ``overwrite=True``; see
        :func:`~batchguard.dlq.base.write_jsonl`."""
        wanted = select(filters, status)
        with self._db.errors("export"):
            return write_jsonl(path, self._iter(wanted), overwrite=overwrite)

    def close(self) -> None:
        """Close the connection; further calls raise DLQError. Closing twice is fine."""
        self._db.close()

    # -- internals -----------------------------------------------------------------------------

    def _swap(self, ids: builtins.list[str], decide: Decide) -> dict[str, DeadLetter]:
        """Lock the entries' rows (FOR UPDATE: another swap of them waits), decide, write back
        the changed ones: one transaction."""
        with self._db.errors("change"), self.transaction() as cur:
            found = {entry_id: DeadLetter.from_dict(data)
                     for entry_id, data in cur.execute(self._q["lock"], (ids,)).fetchall()}
            changed = {entry_id: entry for entry_id, entry in decide(dict(found)).items() if entry_id in found}
            if changed:
                # An upsert, not an UPDATE of the status alone: a change may move any filter
                # column (a replayed entry's error type), and the entry keeps its place (seq).
                cur.executemany(self._q["upsert"], [_row(entry) for entry in changed.values()])
            found.update(changed)
        return found

    def _iter(self, wanted: dict[str, Any]) -> Iterator[DeadLetter]:
        # Keyset pages: the lock is held per page only, never while the caller consumes entries.
        query = self._sql.SQL(
            "SELECT seq, entry FROM {t} WHERE {w} AND seq > %s ORDER BY seq LIMIT {n}"
        ).format(t=self._ident, w=_where(self._sql, wanted), n=self._sql.Literal(_PAGE))
        after = 0
        while True:
            rows = self._db.query(query, (*wanted.values(), after))
            for _, data in rows:
                yield DeadLetter.from_dict(data)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]
