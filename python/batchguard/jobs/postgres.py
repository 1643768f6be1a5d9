"""Jobs in PostgreSQL: :class:`PostgresJobStore`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from ..dlq.base import DeadLetterQueue
from ..dlq.postgres import PostgresDLQ
from ..dlq.urls import redact, require_module
from ..errors import ConfigError, JobError, JobStoreUnavailableError
from ..policies import MAX_DURATION_S, check_count
from .locks import claim_attempts, held_here, in_process_claim
from .sql import SqlJobStore

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresJobStore"]

_PG_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def _pg_describe(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - psycopg.ProgrammingError carries the whole conninfo, password included
        raise ConfigError(f"invalid PostgreSQL URL {redact(url)!r}") from None
    host = info.get("host") or os.environ.get("PGHOST") or "localhost"
    port = info.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = info.get("dbname") or os.environ.get("PGDATABASE") or info.get("user") or ""
    return f"{host}:{port}/{dbname}"


def _advisory_key(job: str) -> int:
    return int.from_bytes(hashlib.sha256(f"batchguard.job:{job}".encode("utf-8", "surrogatepass"))
                          .digest()[:8], "big", signed=True)


class PostgresJobStore(SqlJobStore):
    """Jobs in PostgreSQL (psycopg 3): tables ``batchguard_jobs`` and ``batchguard_job_batches``.

    With a :class:`~batchguard.dlq.PostgresDLQ` on the same database (the default when a job is
    given no ``dlq``), every batch commits its dead letters and its checkpoint in one transaction.
    A running job holds a session advisory lock, released by the server if the process dies.

    >>> store = PostgresJobStore("postgresql://app@localhost/jobs")  # doctest: +SKIP
    >>> [s.name for s in store.list()]  # doctest: +SKIP
    ['nightly']
    """

    _placeholder = "%s"

    def __init__(self, url: str, *, table_prefix: str = "batchguard_", connect_timeout: int = 3) -> None:
        """Connect and create the tables if missing; JobStoreUnavailableError if unreachable."""
        check_count("PostgresJobStore connect_timeout", connect_timeout, minimum=1, maximum=MAX_DURATION_S,
                    why="one year, batchguard.MAX_DURATION_S")
        self._psycopg = require_module("psycopg", needed_by="PostgresJobStore", extra="postgres")
        if table_prefix and not _PG_NAME.fullmatch(table_prefix):
            raise ConfigError(f"table_prefix must be letters, digits and _ (at most 41), got {table_prefix!r}")
        self._url = url
        self.url = redact(url)
        self._location = _pg_describe(url)
        self._connect_timeout = connect_timeout
        self._jobs, self._batches = f"{table_prefix}jobs", f"{table_prefix}job_batches"
        self._lock = threading.RLock()
        self._closed = False
        self._scope = f"postgresql:{self._location}:{self._jobs}"
        self._conn: psycopg.Connection[Any] | None = self._connect()
        try:
            with self._transaction() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                            (f"batchguard.jobs.schema:{self._jobs}",))
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._jobs} (name text PRIMARY KEY, "
                    "status text NOT NULL, total bigint, succeeded bigint NOT NULL, "
                    "failed bigint NOT NULL, batches_done bigint NOT NULL, batch_size bigint NOT NULL, "
                    "stage text NOT NULL, fingerprint text NOT NULL, config jsonb NOT NULL, "
                    "runs bigint NOT NULL, last_run_id text, error text, created_at text NOT NULL, "
                    "updated_at text NOT NULL, finished_at text)")
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._batches} (job text NOT NULL, "
                    "batch_index bigint NOT NULL, size bigint NOT NULL, succeeded bigint NOT NULL, "
                    "failed bigint NOT NULL, retries bigint NOT NULL, duration_s double precision NOT NULL, "
                    "run_id text NOT NULL, done_at text NOT NULL, PRIMARY KEY (job, batch_index))")
        except JobStoreUnavailableError as exc:
            self.close()
            cause = exc.__cause__ or exc
            raise JobStoreUnavailableError(
                f"cannot create the job tables on PostgreSQL {self._location}: {cause}") from cause

    def __repr__(self) -> str:
        return f"PostgresJobStore({self.url!r})"

    def __enter__(self) -> PostgresJobStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return self._psycopg.connect(self._url, connect_timeout=self._connect_timeout,  # type: ignore[no-any-return]
                                         autocommit=True)
        except self._psycopg.Error as exc:
            raise JobStoreUnavailableError(
                f"cannot reach the PostgreSQL job store at {self._location}: {exc}") from exc

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise JobError(f"PostgreSQL job store {self._location} is closed")
        if self._conn is None or self._conn.broken or self._conn.closed:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = self._connect()
        return self._conn

    def _config_param(self, config: Mapping[str, Any]) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(json.loads(json.dumps(config, default=str)))

    @contextlib.contextmanager
    def _failures(self, action: str) -> Iterator[None]:
        # A connection the server dropped mid-run ("terminating connection due to administrator
        # command") names no server: say which store, as the SQLite store does.
        try:
            yield
        except self._psycopg.Error as exc:
            raise JobStoreUnavailableError(
                f"PostgreSQL job store {self._location}: {action} failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._failures("write"), self._lock:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._failures("read"), self._lock:
            return self._connection().execute(sql, tuple(params)).fetchall()

    def _shares_transaction(self, dlq: DeadLetterQueue) -> bool:
        if not isinstance(dlq, PostgresDLQ):
            return False
        try:
            theirs, ours = dlq.connection.info, self._connection().info
        except Exception:  # noqa: BLE001 - an unusable DLQ fails on send, with its own message
            return False
        return (theirs.host, theirs.port, theirs.dbname, theirs.user) == (
            ours.host, ours.port, ours.dbname, ours.user)

    @contextlib.contextmanager
    def claim(self, job: str) -> Iterator[None]:
        """Hold ``job``'s advisory lock on a dedicated connection for the whole run."""
        key = _advisory_key(job)
        with in_process_claim(self._scope, job, self._location):
            conn = self._connect()
            try:
                def take() -> bool:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    return bool(row and row[0])

                if not claim_attempts(take):
                    raise JobError(f"job {job!r} is already running in another process "
                                   f"(store {self._location})")
                yield
            finally:
                conn.close()  # ends the session: the server drops the lock

    def _active(self, job: str) -> bool:
        if held_here(self._scope, job):
            return True
        key = _advisory_key(job) & 0xFFFFFFFFFFFFFFFF
        rows = self._query(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s::oid AND objid = %s::oid AND objsubid = 1)",
            (key >> 32, key & 0xFFFFFFFF))
        return bool(rows and rows[0][0])

    def open_default_dlq(self) -> DeadLetterQueue:
        """A :class:`~batchguard.dlq.PostgresDLQ` on this database (same-transaction commits)."""
        return PostgresDLQ(self._url, connect_timeout=self._connect_timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
