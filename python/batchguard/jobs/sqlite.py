"""Jobs in a SQLite file: :class:`SqliteJobStore`."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from .._checks import check_duration
from .._db.role import JOB_STORE
from .._db.sqlite import SqliteDatabase, not_writable
from .._files import create_private
from ..dlq.base import DeadLetterQueue
from ..dlq.sqlite import SqliteDLQ
from ..errors import JobError, JobStoreUnavailableError
from .locks import LockFile, claim_attempts, held_here, in_process_claim, initialising
from .outcomes import outcomes_table_sql
from .sql import SqlJobStore

__all__ = ["SqliteJobStore"]


def _maybe_new(path: str) -> bool:
    """Missing or empty: a store that has never had a SQLite header."""
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:
        return True


def _check_writable(path: str, shown: Path) -> None:
    """Refuse an existing store file that cannot be written (read-only file system, an immutable
    file, its mode): SQLite would open it and fail at the first checkpoint, mid-run."""
    if not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise JobStoreUnavailableError(f"cannot open the SQLite job store {shown}: it is a directory; "
                                       "a job store is a file (sqlite:///path/to/jobs.db)")
    reason = not_writable(path)
    if reason is not None:
        raise JobStoreUnavailableError(f"cannot open the SQLite job store {shown}: the file is {reason}; "
                                       "a job store must be writable")


class SqliteJobStore(SqlJobStore):
    """Jobs in a SQLite file (tables ``jobs``, ``job_batches``, ``job_stopped_batches``; WAL,
    ``synchronous=FULL``).

    Put the DLQ in the same file (the default when a job is given no ``dlq``) and every batch
    commits its dead letters and its checkpoint in one transaction.

    >>> import os, tempfile
    >>> store = SqliteJobStore(os.path.join(tempfile.mkdtemp(), "jobs.db"))
    >>> store.list()
    []
    >>> store.close()
    """

    _db: SqliteDatabase
    _placeholder = "?"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        """Open (creating if needed) the store at ``path``; JobStoreUnavailableError if it cannot.

        An existing file must be a SQLite database batchguard can write: a damaged file, a
        read-only file or file system, a full disk are refused with the cause. So is an *empty*
        (0-byte) file that this call did not create: SQLite would take it for a new database
        and every job in it would silently start over, while batchguard never leaves a store
        file empty (a new file gets its header under the store's creation lock, before any other
        batchguard process may look). Delete such a file to start a new store.
        """
        check_duration("SqliteJobStore timeout", timeout)
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._jobs, self._batches, self._stopped = "jobs", "job_batches", "job_stopped_batches"
        self._outcomes = "job_outcomes"
        self._timeout = timeout
        self._db = SqliteDatabase(self.path, role=JOB_STORE, timeout=timeout)
        self._locks: LockFile | None = None
        # Locks and in-process claims follow the file, not the name: a symlink reaches the same job.
        real = self._real = os.path.realpath(self.path)
        self._scope = f"sqlite:{real}"
        try:
            lock_path = f"{real}-joblock"
            try:
                self._locks = LockFile(Path(lock_path))
            except OSError as exc:
                raise JobStoreUnavailableError(
                    f"cannot open the {self._db.name}: cannot open its lock file "
                    f"{lock_path} ({exc.strerror})") from exc
            _check_writable(real, self.path)
            if _maybe_new(real):
                with initialising(self._locks):
                    created = create_private(real)
                    if not created and _maybe_new(real):
                        raise JobStoreUnavailableError(
                            f"cannot open the {self._db.name}: the file is empty (0 bytes) "
                            "and batchguard did not create it (a store file truncated or replaced "
                            "outside batchguard?); its jobs cannot be resumed from it. Restore it from "
                            "a backup, or delete it to start a new store")
                    try:
                        self._db.open(self.create_schema)
                    except BaseException:
                        if created:  # ours and never initialised: leave no empty file behind
                            for suffix in ("", "-wal", "-shm"):
                                with contextlib.suppress(OSError):
                                    os.unlink(real + suffix)
                        raise
            else:
                self._db.open(self.create_schema)
        except JobStoreUnavailableError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise JobStoreUnavailableError(f"cannot open the {self._db.name}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteJobStore({str(self.path)!r})"

    def __enter__(self) -> SqliteJobStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @staticmethod
    def create_schema(cursor: sqlite3.Cursor) -> None:
        """Create the ``jobs``, ``job_batches``, ``job_stopped_batches`` and ``job_outcomes``
        tables if missing (idempotent: a store made before a table existed gains it when next
        opened)."""
        cursor.execute(outcomes_table_sql("job_outcomes", postgres=False))
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS jobs (name TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "total INTEGER, succeeded INTEGER NOT NULL, failed INTEGER NOT NULL, "
            "batches_done INTEGER NOT NULL, batch_size INTEGER NOT NULL, stage TEXT NOT NULL, "
            "fingerprint TEXT NOT NULL, config TEXT NOT NULL, runs INTEGER NOT NULL, "
            "last_run_id TEXT, error TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
            "finished_at TEXT)")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS job_batches (job TEXT NOT NULL, batch_index INTEGER NOT NULL, "
            "size INTEGER NOT NULL, succeeded INTEGER NOT NULL, failed INTEGER NOT NULL, "
            "retries INTEGER NOT NULL, duration_s REAL NOT NULL, run_id TEXT NOT NULL, "
            "done_at TEXT NOT NULL, PRIMARY KEY (job, batch_index)) WITHOUT ROWID")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS job_stopped_batches (job TEXT NOT NULL, "
            "batch_index INTEGER NOT NULL, size INTEGER NOT NULL, succeeded INTEGER NOT NULL, "
            "failed INTEGER NOT NULL, pending INTEGER NOT NULL, run_id TEXT NOT NULL, "
            "stopped_at TEXT NOT NULL, PRIMARY KEY (job, batch_index)) WITHOUT ROWID")

    def _lock_file(self) -> LockFile | None:
        if self._locks is None:
            raise JobError(f"{self._db.name} is closed")
        return self._locks if self._locks.posix else None

    @contextlib.contextmanager
    def claim(self, job: str) -> Iterator[None]:
        """Hold ``job``'s lock for a run: JobError if another run (any process) holds it."""
        with in_process_claim(self._scope, job, str(self.path)):
            self._check_single_name()
            locks = self._lock_file()
            if locks is None:
                yield
                return
            if not claim_attempts(lambda: locks.try_lock(job)):
                pid = locks.holder(job)
                holder = "" if pid is None else f"pid {pid}, "
                raise JobError(f"job {job!r} is already running in another process ({holder}store {self.path})")
            try:
                yield
            finally:
                locks.unlock(job)

    def _check_single_name(self) -> None:
        """The lock file sits next to the store's resolved path, which a symlink shares but a
        hard link does not: a run through another hard link would take another lock. SQLite
        also names its -wal file after the name used, so two names can corrupt the database."""
        try:
            links = os.stat(self._real).st_nlink
        except OSError:
            return
        if links > 1:
            raise JobError(f"job store {self.path} has {links} hard links: a job's lock cannot follow "
                           "them, and SQLite may corrupt a database reached by two names; keep one "
                           "name (remove the other links, or use a symlink)")

    def _active(self, job: str) -> bool:
        if held_here(self._scope, job):
            return True
        locks = self._lock_file()
        if locks is None:
            return False
        if locks.try_lock(job):
            locks.unlock(job)
            return False
        return True

    def open_default_dlq(self) -> DeadLetterQueue:
        """A :class:`~batchguard.dlq.SqliteDLQ` in this store's file (same-transaction commits)."""
        return SqliteDLQ(self.path, timeout=self._timeout)

    def close(self) -> None:
        """Close the connection (and release this store's hold on the lock file)."""
        with self._db.lock:
            self._db.close()
            if self._locks is not None:
                self._locks.close()
                self._locks = None
