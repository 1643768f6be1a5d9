"""Where jobs live: the :class:`JobStore` protocol, :func:`open_job_store`, and the queries
users run on a store (:func:`job_status`, :func:`list_jobs`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from .._urls import parse_url
from ..dlq.base import DeadLetter, DeadLetterQueue
from ..dlq.postgres import PostgresDLQ
from ..dlq.sqlite import SqliteDLQ
from ..errors import ConfigTypeError, JobError, JobNotFoundError
from ..results import BatchStats
from .postgres import PostgresJobStore
from .sqlite import SqliteJobStore
from .status import JobState, JobStatus

__all__ = ["DEFAULT_STORE_URL", "SCHEMES", "JobStore", "held_idle", "job_status", "list_jobs",
           "open_job_store", "opened_store", "replay_store"]

DEFAULT_STORE_URL: Final = "sqlite:///batchguard.db"
"""Where jobs are kept when no store is given (a file in the working directory)."""

SCHEMES: Final = ("sqlite", "postgresql", "postgres")
"""The URL schemes :func:`open_job_store` accepts."""
_HINT: Final = "use sqlite:///path.db or postgresql://..."


@runtime_checkable
class JobStore(Protocol):
    """Where jobs and their batch checkpoints live: :class:`SqliteJobStore`,
    :class:`PostgresJobStore`, or your own. :func:`open_job_store` builds one from a URL.

    ``commit_batch`` is the crash-safety point: it must make ``entries`` durable in ``dlq`` and
    remove ``stale`` ids from it *before or atomically with* marking the batch done.
    """

    url: str
    """Where the store is, for messages (passwords hidden)."""

    def claim(self, job: str) -> contextlib.AbstractContextManager[None]:
        """Hold the right to run ``job`` (raise JobError if another run holds it)."""
        ...

    def get(self, job: str) -> JobStatus | None: ...

    def list(self) -> list[JobStatus]: ...

    def begin(self, job: str, *, run_id: str, fingerprint: str, total: int | None,
              batch_size: int, stage: str, config: Mapping[str, Any], reset: bool) -> frozenset[int]:
        """Create the job, or start its next run (``reset``: from scratch); return its done batches."""
        ...

    def commit_batch(self, job: str, run_id: str, stats: BatchStats, entries: Sequence[DeadLetter],
                     dlq: DeadLetterQueue, stale: Sequence[str],
                     outcomes: Sequence[tuple[Any, ...]] = ()) -> None:
        """``outcomes``: the batch's succeeded records, with ``keep_outcomes=True`` only
        (``jobs.outcomes``), kept in the checkpoint's transaction."""
        ...

    def finish(self, job: str, status: JobState, *, total: int | None = None,
               error: str | None = None) -> None: ...

    def commit_replayed(self, removed: Sequence[DeadLetter], dlq: DeadLetterQueue) -> None:
        """Remove ``removed`` from ``dlq`` (their records succeeded on replay) and move the ones
        the store counted (entries of its jobs' finished batches) from failed to succeeded.

        Like ``commit_batch``: atomically with the removal when the store shares the DLQ's
        database, else the removal first.
        """
        ...

    def open_default_dlq(self) -> DeadLetterQueue:
        """The DLQ a job uses when none is given: durable, next to the store."""
        ...

    def close(self) -> None: ...


def open_job_store(target: JobStore | str | os.PathLike[str] | None = None) -> JobStore:
    """A job store from a URL (SQLAlchemy's convention), or ``target`` itself if it is one.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, ``postgresql://...``
    (``?table_prefix=`` renames the tables). None means :data:`DEFAULT_STORE_URL`.

    >>> open_job_store("ftp://x")
    Traceback (most recent call last):
    ...
    batchguard.errors.ConfigError: job store URL 'ftp://x' has scheme 'ftp'; use sqlite:///path.db or postgresql://...
    """
    if target is None:
        target = DEFAULT_STORE_URL
    if not isinstance(target, str):
        if isinstance(target, JobStore):
            return target
        hint = " (a path? write it as a URL: sqlite:///jobs.db)" if isinstance(target, os.PathLike) else ""
        raise ConfigTypeError(f"store must be a JobStore or a URL string, got {type(target).__name__}{hint}")
    url = parse_url(target, label="job store URL", schemes=SCHEMES, hint=_HINT)
    if url.scheme == "sqlite":
        path = url.file_path()
        if path == ":memory:":
            raise url.error(" names no file: a job store must outlive the process (sqlite:///jobs.db)")
        return SqliteJobStore(path)
    options, driver_url = url.options(("table_prefix",), scheme="postgresql")
    if "table_prefix" in options:
        return PostgresJobStore(driver_url, table_prefix=options["table_prefix"])
    return PostgresJobStore(driver_url)


@contextlib.contextmanager
def opened_store(store: JobStore | str | os.PathLike[str] | None) -> Iterator[JobStore]:
    """``store`` opened as a JobStore for the block; closed after it unless the caller passed one."""
    owned = not isinstance(store, JobStore)
    opened = open_job_store(store)
    try:
        yield opened
    finally:
        if owned:
            opened.close()


@contextlib.contextmanager
def held_idle(store: JobStore, job: str, doing: str) -> Iterator[None]:
    """Hold ``job``'s run lock for the block, as a run of it would: a run racing the block (a
    rollback, a replay of its dead letters) would mark the job over what the block changes.
    JobError, naming the job and the lock's holder, when a run of it holds the lock now;
    ``doing`` says what was refused ("rolled back")."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(store.claim(job))
        except JobError as exc:
            raise JobError(f"job {job!r} is running and cannot be {doing} meanwhile ({exc}): wait "
                           "for the run to end, or stop it, then try again") from exc
        yield


# ---------------------------------------------------------------------------- public queries


def job_status(job: str, *, store: JobStore | str | None = None) -> JobStatus:
    """The status, totals and progress of ``job`` (JobNotFoundError if the store has none).

    >>> import os, tempfile
    >>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "jobs.db")
    >>> job_status("nope", store=url)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    batchguard.errors.JobNotFoundError: no job named 'nope' in sqlite:///...jobs.db
    """
    with opened_store(store) as opened:
        status = opened.get(job)
        if status is None:
            raise JobNotFoundError(f"no job named {job!r} in {opened.url}")
        return status


def list_jobs(store: JobStore | str | None = None) -> list[JobStatus]:
    """Every job in ``store``, most recently updated first.

    >>> import os, tempfile
    >>> list_jobs("sqlite:///" + os.path.join(tempfile.mkdtemp(), "jobs.db"))
    []
    """
    with opened_store(store) as opened:
        return opened.list()


def replay_store(dlq: DeadLetterQueue, store: JobStore | str | None) -> tuple[JobStore | None, bool]:
    """The job store a replay of ``dlq`` keeps up to date, and whether the caller must close it.

    ``store`` given: that store. None: the DLQ's own database when it holds the job store (a
    job given no ``dlq`` keeps its dead letters there): a SQLite file with a ``jobs`` table, a
    PostgreSQL database with ``batchguard_jobs``. Otherwise None: no job's totals change.
    """
    if store is not None:
        return open_job_store(store), not isinstance(store, JobStore)

    if isinstance(dlq, SqliteDLQ):
        ((tables,),) = dlq.database.query(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('jobs', 'job_batches')")
        return (SqliteJobStore(dlq.path), True) if tables == 2 else (None, False)
    if isinstance(dlq, PostgresDLQ):
        ((found,),) = dlq.database.query("SELECT to_regclass('batchguard_jobs') IS NOT NULL "
                                         "AND to_regclass('batchguard_job_batches') IS NOT NULL")
        return (PostgresJobStore(dlq.database.raw_url), True) if found else (None, False)
    return None, False
