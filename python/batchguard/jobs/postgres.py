"""Jobs in PostgreSQL: :class:`PostgresJobStore`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Final

from .._db.postgres import PostgresDatabase
from .._db.role import JOB_STORE
from ..dlq.base import DeadLetterQueue
from ..dlq.postgres import PostgresDLQ
from ..errors import ConfigError, JobError, JobStoreUnavailableError
from .locks import claim_attempts, held_here, in_process_claim
from .outcomes import outcomes_table_sql
from .sql import SqlJobStore

__all__ = ["PostgresJobStore"]

_PG_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


_APPLICATION: Final = "batchguard job run"
"""The start of a job run's session name (application_name), then "pid N on host"."""


def _advisory_key(job: str) -> int:
    return int.from_bytes(hashlib.sha256(f"batchguard.job:{job}".encode("utf-8", "surrogatepass"))
                          .digest()[:8], "big", signed=True)


class PostgresJobStore(SqlJobStore):
    """Jobs in PostgreSQL (psycopg 3): tables ``batchguard_jobs``,
    ``batchguard_job_batches`` and ``batchguard_job_stopped_batches``.

    With a :class:`~batchguard.dlq.PostgresDLQ` on the same database (the default when a job is
    given no ``dlq``), every batch commits its dead letters and its checkpoint in one transaction.
    A running job holds a session advisory lock, released by the server if the process dies.

    >>> store = PostgresJobStore("postgresql://app@localhost/jobs")  # doctest: +SKIP
    >>> [s.name for s in store.list()]  # doctest: +SKIP
    ['nightly']
    """

    _db: PostgresDatabase
    _placeholder = "%s"

    def __init__(self, url: str, *, table_prefix: str = "batchguard_", connect_timeout: int = 3) -> None:
        """Connect and create the tables if missing; JobStoreUnavailableError if unreachable."""
        if table_prefix and not _PG_NAME.fullmatch(table_prefix):
            raise ConfigError(f"table_prefix must be letters, digits and _ (at most 41), got {table_prefix!r}")
        self._db = PostgresDatabase(url, role=JOB_STORE, connect_timeout=connect_timeout,
                                    needed_by="PostgresJobStore")
        self.url = self._db.url
        self._connect_timeout = connect_timeout
        self._jobs, self._batches = f"{table_prefix}jobs", f"{table_prefix}job_batches"
        self._stopped = f"{table_prefix}job_stopped_batches"
        self._outcomes = f"{table_prefix}job_outcomes"
        self._scope = f"postgresql:{self._db.location}:{self._jobs}"
        self._db.open()
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
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._stopped} (job text NOT NULL, "
                    "batch_index bigint NOT NULL, size bigint NOT NULL, succeeded bigint NOT NULL, "
                    "failed bigint NOT NULL, pending bigint NOT NULL, run_id text NOT NULL, "
                    "stopped_at text NOT NULL, PRIMARY KEY (job, batch_index))")
                cur.execute(outcomes_table_sql(self._outcomes, postgres=True))
        except JobStoreUnavailableError as exc:
            self.close()
            cause = exc.__cause__ or exc
            raise JobStoreUnavailableError(
                f"cannot create the job tables on PostgreSQL {self._db.location}: {cause}") from cause

    def __repr__(self) -> str:
        return f"PostgresJobStore({self.url!r})"

    def __enter__(self) -> PostgresJobStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _config_param(self, config: Mapping[str, Any]) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(json.loads(json.dumps(config, default=str)))

    @contextlib.contextmanager
    def claim(self, job: str) -> Iterator[None]:
        """Hold ``job``'s advisory lock on a dedicated connection for the whole run."""
        key = _advisory_key(job)
        with in_process_claim(self._scope, job, self._db.location):
            conn = self._db.connect()
            try:
                def take() -> bool:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    return bool(row and row[0])

                if not claim_attempts(take):
                    holder = self._holder(conn, key)
                    raise JobError(f"job {job!r} is already running in another process "
                                   f"({holder + ', ' if holder else ''}store {self._db.location})")
                # Who holds the lock, for the message of anyone who finds it taken: the server
                # knows the session, not the process behind it.
                conn.execute("SELECT set_config('application_name', %s, false)",
                             (f"{_APPLICATION} pid {os.getpid()} on {socket.gethostname()}"[:63],))
                yield
            finally:
                conn.close()  # ends the session: the server drops the lock

    @staticmethod
    def _holder(conn: Any, key: int) -> str:
        """The session holding the advisory lock ``key``: the process a batchguard run named in
        its application_name ("pid N on host"), else the server's backend pid; "" if gone."""
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            "SELECT a.pid, a.application_name, host(a.client_addr) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchone()
        if row is None:
            return ""
        backend, name, client = row
        if isinstance(name, str) and name.startswith(_APPLICATION + " "):
            return name.removeprefix(_APPLICATION + " ")
        return f"server session pid {backend}" + (f" from {client}" if client else "")

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
        return PostgresDLQ(self._db.raw_url, connect_timeout=self._connect_timeout)

    def close(self) -> None:
        self._db.close()
