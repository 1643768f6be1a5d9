"""Resumable jobs: a job store keeps each job's state and a checkpoint per finished batch.

``run_batches(records, fn, job="nightly", store="sqlite:///jobs.db")`` runs a *job*. The store
records the job (status, totals, an input fingerprint, the configuration) and commits every
batch once all its records are final. Running the same job again resumes it: finished batches
are read past, not run. A completed job does not run again unless ``force=True``.

Crash safety. A batch is marked done only after its dead letters are durable:

* when the store and the DLQ live in the same SQLite file, or the same PostgreSQL database, the
  batch's DLQ entries and its checkpoint are committed in **one transaction**;
* otherwise the entries are sent first and the checkpoint committed second, so a crash between
  the two leaves the batch not done (it reruns), never done with entries missing.

DLQ entry ids are derived from (job, stage, record index), and ``send`` upserts, so a batch that
reruns replaces its entries instead of duplicating them; when a rerun batch completes, the
entries of its records that now succeeded are removed. Processing is therefore
**at-least-once for the batches in flight at a crash** (their records may be given to ``fn``
again) and exactly-once for everything recorded: each record ends succeeded or with exactly
one DLQ entry.

>>> import os, tempfile
>>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "jobs.db")
>>> from batchguard import run_batches
>>> run_batches(range(10), lambda x: x, batch_size=4, job="doc", store=url).status
'complete'
>>> s = job_status("doc", store=url)
>>> s.status, s.succeeded, s.batches_done, s.percent_complete
('completed', 10, 3, 100.0)
>>> run_batches(range(10), lambda x: x, batch_size=4, job="doc", store=url).skipped_batches
3
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

from ._files import FILE_MODE, create_private
from .dlq.sqlite import enable_wal, write_transaction
from ._outcome import entry_id, new_run_id
from .dlq.base import DeadLetter, DeadLetterQueue, MemoryDLQ
from .dlq.codec import check_storable
from .dlq.urls import redact, require_module
from .errors import ConfigError, JobConflictError, JobError
from .policies import MAX_DURATION_S, check_count, check_duration
from .results import BatchReport, BatchStats

if TYPE_CHECKING:
    import psycopg

    from .api import Plan

__all__ = [
    "DEFAULT_STORE_URL",
    "FINGERPRINT_VERSION",
    "JobNotFoundError",
    "JobStatus",
    "JobStore",
    "JobStoreUnavailableError",
    "PostgresJobStore",
    "SqliteJobStore",
    "fingerprint_records",
    "job_status",
    "list_jobs",
    "open_job_store",
    "run_job",
]

logger = logging.getLogger("batchguard")

DEFAULT_STORE_URL: Final = "sqlite:///batchguard.db"
"""Where jobs are kept when no store is given (a file in the working directory)."""

FINGERPRINT_VERSION: Final = "v1"

JobState = Literal["running", "completed", "failed", "aborted"]
_FINISHED: Final = frozenset({"completed", "failed"})
# A DLQ that keeps entries only in memory would lose a job's failures with the process.
_UNBOUNDED_TRACEBACKS: Final = 1 << 62


class JobNotFoundError(JobError, LookupError):
    """No job of that name is in the store."""


class JobStoreUnavailableError(JobError, ConnectionError):
    """The job store could not be opened, reached or written: a damaged, empty, read-only or
    unreachable store is refused before any record runs; a store that fails later (a full
    disk) stops the run with this error. The message names the store and the cause."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job as its store knows it (the seed's ``get_batch_status``).

    Totals count the records of *finished* batches: a batch that was running when the job
    stopped counts once it completes on resume.

    >>> s = JobStatus(name="n", status="running", total=200, succeeded=90, failed=10,
    ...               batches_done=1, batch_size=100, stage="process", fingerprint="v1:ab",
    ...               config={}, runs=1, last_run_id="run-1", error=None,
    ...               created_at="2024-06-01T00:00:00.000+00:00",
    ...               updated_at="2024-06-01T00:00:01.000+00:00", finished_at=None)
    >>> s.processed, s.progress, s.percent_complete, s.batches_total, s.pending
    (100, 0.5, 50.0, 2, 100)
    """

    name: str
    status: JobState
    """running (or stopped by a crash: see ``active``), completed, failed (every batch done but
    the success rate is below the run's ``success_threshold``) or aborted (stopped early)."""
    total: int | None
    """Records in the input; None while unknown (a generator that has not been read to the end)."""
    succeeded: int
    failed: int
    """Records dead-lettered. A replay that tells the store (``replay(..., store=)``, or the
    job's default DLQ in the store's own database) moves the records it fixed to ``succeeded``;
    entries removed by hand are still counted here."""
    batches_done: int
    batch_size: int
    stage: str
    fingerprint: str
    config: Mapping[str, Any]
    runs: int
    """How many times the job was started (first run, resumes and forced reruns)."""
    last_run_id: str | None
    error: str | None
    """Why the last run stopped, when it stopped early."""
    created_at: str
    updated_at: str
    finished_at: str | None
    active: bool = False
    """A process is running the job right now (it holds the job's lock). A job whose status is
    "running" while ``active`` is False was stopped by a crash and can be resumed."""

    @property
    def processed(self) -> int:
        """Records final in finished batches (succeeded + dead-lettered)."""
        return self.succeeded + self.failed

    @property
    def batches_total(self) -> int | None:
        return None if self.total is None else -(-self.total // self.batch_size)

    @property
    def pending(self) -> int | None:
        """Records not yet final; None while the total is unknown."""
        return None if self.total is None else max(0, self.total - self.processed)

    @property
    def progress(self) -> float | None:
        """Fraction of records final, 0..1 (the seed's ``progress``); None if the total is unknown."""
        if self.total is None:
            return 1.0 if self.status in _FINISHED else None
        return self.processed / self.total if self.total else 1.0

    @property
    def percent_complete(self) -> float | None:
        progress = self.progress
        return None if progress is None else 100.0 * progress

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.processed if self.processed else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; includes the seed's keys (``batch_id``, ``processed``, ``progress``)."""
        return {
            "name": self.name,
            "batch_id": self.name,
            "status": self.status,
            "active": self.active,
            "total": self.total,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "progress": self.progress,
            "batches_done": self.batches_done,
            "batches_total": self.batches_total,
            "batch_size": self.batch_size,
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "runs": self.runs,
            "last_run_id": self.last_run_id,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "config": dict(self.config),
        }


# ---------------------------------------------------------------------------- fingerprint

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 32


def _canonical(value: Any, depth: int = 0) -> Any:
    """A JSON-ready form of ``value`` that is the same in every process for equal records."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > _MAX_DEPTH:
        return _stable_repr(value)
    if isinstance(value, Mapping):
        pairs = [(_canonical(k, depth + 1), _canonical(v, depth + 1)) for k, v in value.items()]
        # Sorted by the keys' JSON so that dicts equal but built in another order agree.
        pairs.sort(key=lambda kv: json.dumps(kv[0], sort_keys=True, default=str))
        return {"__map__": pairs}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        # A set's iteration order changes with PYTHONHASHSEED: sort the members' JSON.
        return {"__set__": sorted(json.dumps(_canonical(v, depth + 1), sort_keys=True) for v in value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": bytes(value).hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__qualname__,
                "fields": {f.name: _canonical(getattr(value, f.name), depth + 1)
                           for f in dataclasses.fields(value)}}
    return {"__type__": f"{type(value).__module__}.{type(value).__qualname__}",
            "repr": _stable_repr(value)}


def _stable_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not stop the job
        text = "<unrepresentable>"
    return _ADDRESS.sub("", text)


def fingerprint_records(first_batch: Iterable[Any]) -> str:
    """The input fingerprint of a job: sha256 over the canonical JSON of its first batch.

    It is cheap (one batch, however long the input) and the same for a list, a generator or
    the CLI reading the same data. What it can detect: a different source (other first
    records), records edited or reordered within the first batch. What it cannot: changes
    after the first batch. The job also compares the input's length when both runs know it
    (``len()`` works), and its ``batch_size`` and ``stage``, with their own messages.

    >>> fingerprint_records([{"id": 1}, {"id": 2}]) == fingerprint_records([{"id": 1}, {"id": 2}])
    True
    >>> fingerprint_records([{"id": 1}]) == fingerprint_records([{"id": 2}])
    False
    """
    digest = hashlib.sha256(f"batchguard-input-{FINGERPRINT_VERSION}\0".encode())
    count = 0
    for record in first_batch:
        digest.update(json.dumps(_canonical(record), sort_keys=True, ensure_ascii=False,
                                 separators=(",", ":")).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
        count += 1
    return f"{FINGERPRINT_VERSION}:{count}:{digest.hexdigest()}"


def _first_batch(records: Iterable[Any], batch_size: int) -> tuple[Iterable[Any], list[Any]]:
    """The first batch, and ``records`` still whole (a generator's first batch is chained back)."""
    if isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
        return records, list(records[:batch_size])
    iterator = iter(records)
    first = list(itertools.islice(iterator, batch_size))
    return itertools.chain(first, iterator), first


# ---------------------------------------------------------------------------- the store protocol


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
                     dlq: DeadLetterQueue, stale: Sequence[str]) -> None: ...

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


# ---------------------------------------------------------------------------- claims (locks)

_held_lock = threading.Lock()
_held: set[tuple[str, str]] = set()


@contextlib.contextmanager
def _in_process_claim(scope: str, job: str, where: str) -> Iterator[None]:
    """Two runs of one job in one process: the OS locks below cannot see those."""
    key = (scope, job)
    with _held_lock:
        if key in _held:
            raise JobError(f"job {job!r} is already running in this process ({where})")
        _held.add(key)
    try:
        yield
    finally:
        with _held_lock:
            _held.discard(key)


def _held_here(scope: str, job: str) -> bool:
    with _held_lock:
        return (scope, job) in _held


def _lock_offset(job: str) -> int:
    # One byte per job in a shared lock file; 2**48 slots make a collision negligible.
    return int.from_bytes(hashlib.sha256(job.encode("utf-8", "surrogatepass")).digest()[:6], "big")


class _LockFile:
    """Per-job advisory locks as POSIX record locks on one byte each of a side file.

    The kernel drops them when the process dies, SIGKILL included, so a crashed run never
    leaves a stale lock. POSIX locks belong to the process and vanish when *any* descriptor of
    the file closes, so one descriptor per file is shared by every store of the process. (For
    the same reason the locks are not taken on the database file itself: SQLite's connections
    open and close it, which would drop them, and the locks SQLite holds there too.) The file is
    named after the store's resolved path, so every path to the store meets the same locks.
    """

    _lock = threading.Lock()
    _files: dict[str, tuple[int, int]] = {}  # path -> (fd, users)

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        with _LockFile._lock:
            fd, users = _LockFile._files.get(self.path, (-1, 0))
            if fd < 0:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)  # private, like the store it guards
            _LockFile._files[self.path] = (fd, users + 1)
        self._fd = fd
        self._closed = False
        try:
            import fcntl  # noqa: F401 - POSIX only; elsewhere only in-process claims apply
        except ImportError:
            self.posix = False
        else:
            self.posix = True

    def try_lock(self, job: str) -> bool:
        import fcntl

        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _lock_offset(job))
        except OSError:
            return False
        return True

    def unlock(self, job: str) -> None:
        self.unlock_byte(_lock_offset(job))

    def lock_byte(self, offset: int) -> None:
        """Wait for, then hold, the lock on the byte at ``offset``."""
        if not self.posix:
            return
        import fcntl

        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, offset)

    def unlock_byte(self, offset: int) -> None:
        if not self.posix:
            return
        import fcntl

        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        with _LockFile._lock:
            if self._closed:
                return
            self._closed = True
            fd, users = _LockFile._files[self.path]
            if users <= 1:
                del _LockFile._files[self.path]
                os.close(fd)
            else:
                _LockFile._files[self.path] = (fd, users - 1)


# Past every job's byte (those are below 2**48): held while a new store file gets its header.
_INIT_BYTE: Final = 1 << 56
_initialising_here = threading.Lock()


@contextlib.contextmanager
def _initialising(locks: _LockFile) -> Iterator[None]:
    """Hold the store's creation lock: between the creation of the (empty) file and its SQLite
    header, every other batchguard process and thread that finds the file empty waits here,
    so an empty file seen under this lock is one batchguard did not create."""
    with _initialising_here:
        locks.lock_byte(_INIT_BYTE)
        try:
            yield
        finally:
            locks.unlock_byte(_INIT_BYTE)


def _maybe_new(path: str) -> bool:
    """Missing or empty: a store that has never had a SQLite header."""
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:
        return True


def _not_writable(path: str) -> str | None:
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


def _check_writable(path: str, shown: Path) -> None:
    """Refuse an existing store file that cannot be written (read-only file system, an immutable
    file, its mode): SQLite would open it and fail at the first checkpoint, mid-run."""
    if not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise JobStoreUnavailableError(f"cannot open the SQLite job store {shown}: it is a directory; "
                                       "a job store is a file (sqlite:///path/to/jobs.db)")
    reason = _not_writable(path)
    if reason is not None:
        raise JobStoreUnavailableError(f"cannot open the SQLite job store {shown}: the file is {reason}; "
                                       "a job store must be writable")


def _cause(exc: BaseException, path: str) -> str:
    """``exc``'s message, with the operating system's reason when SQLite's message hides it."""
    text = str(exc)
    if isinstance(exc, sqlite3.Error) and ("unable to open" in text or "readonly" in text):
        for target in (path, os.path.dirname(path) or "."):
            reason = _not_writable(target) if os.path.exists(target) else None
            if reason is not None:
                return f"{text} ({target} is {reason})"
    return text


def _claim_attempts(try_claim: Callable[[], bool], seconds: float = 0.3) -> bool:
    # A status check briefly takes the lock too: retry a few times before calling it held.
    deadline = time.monotonic() + seconds
    while True:
        if try_claim():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# ---------------------------------------------------------------------------- SQL stores


_COLUMNS: Final = ("name, status, total, succeeded, failed, batches_done, batch_size, stage, "
                   "fingerprint, config, runs, last_run_id, error, created_at, updated_at, "
                   "finished_at")


class _SqlJobStore:
    """What the SQLite and PostgreSQL stores share: the SQL (``?`` placeholders, table names as
    ``{jobs}`` and ``{batches}``) and the checkpoint logic."""

    url: str
    _jobs: str
    _batches: str
    _placeholder: str

    # -- dialect hooks ---------------------------------------------------------------------

    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _shares_transaction(self, dlq: DeadLetterQueue) -> bool:
        raise NotImplementedError

    def _active(self, job: str) -> bool:
        raise NotImplementedError

    def _failures(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Turns the driver's errors during ``action`` into JobStoreUnavailableError (the SQLite
        store does; psycopg's messages already name the server)."""
        return contextlib.nullcontext()

    def _config_param(self, config: Mapping[str, Any]) -> Any:
        return json.dumps(config, sort_keys=True, default=str)

    # -- SQL helpers -------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        text = text.format(jobs=self._jobs, batches=self._batches)
        return text.replace("?", self._placeholder) if self._placeholder != "?" else text

    def _status(self, row: Sequence[Any], active: bool) -> JobStatus:
        (name, status, total, succeeded, failed, batches_done, batch_size, stage, fingerprint,
         config, runs, last_run_id, error, created_at, updated_at, finished_at) = row
        if isinstance(config, (str, bytes)):
            config = json.loads(config)
        return JobStatus(name=name, status=status, total=total, succeeded=int(succeeded),
                         failed=int(failed), batches_done=int(batches_done),
                         batch_size=int(batch_size), stage=stage, fingerprint=fingerprint,
                         config=config, runs=int(runs), last_run_id=last_run_id, error=error,
                         created_at=str(created_at), updated_at=str(updated_at),
                         finished_at=None if finished_at is None else str(finished_at),
                         active=active)

    # -- the JobStore protocol ---------------------------------------------------------------

    def get(self, job: str) -> JobStatus | None:
        """The job's status, or None if the store has no job of that name."""
        rows = self._query(self._sql(f"SELECT {_COLUMNS} FROM {{jobs}} WHERE name = ?"), (job,))
        return self._status(rows[0], self._active(job)) if rows else None

    def list(self) -> list[JobStatus]:
        """Every job, most recently updated first."""
        rows = self._query(self._sql(f"SELECT {_COLUMNS} FROM {{jobs}} ORDER BY updated_at DESC, name"))
        return [self._status(row, self._active(row[0])) for row in rows]

    def begin(self, job: str, *, run_id: str, fingerprint: str, total: int | None,
              batch_size: int, stage: str, config: Mapping[str, Any], reset: bool) -> frozenset[int]:
        """Create the job or start its next run; returns the batches already done.

        ``reset`` (a forced rerun) forgets every checkpoint and takes the new fingerprint.
        """
        now = _now()
        config_param = self._config_param(config)
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT runs FROM {jobs} WHERE name = ?"), (job,))
            if cur.fetchone() is None:
                cur.execute(self._sql(
                    "INSERT INTO {jobs} (name, status, total, succeeded, failed, batches_done, "
                    "batch_size, stage, fingerprint, config, runs, last_run_id, error, created_at, "
                    "updated_at, finished_at) VALUES (?, 'running', ?, 0, 0, 0, ?, ?, ?, ?, 1, ?, "
                    "NULL, ?, ?, NULL)"),
                    (job, total, batch_size, stage, fingerprint, config_param, run_id, now, now))
                return frozenset()
            if reset:
                cur.execute(self._sql("DELETE FROM {batches} WHERE job = ?"), (job,))
                cur.execute(self._sql(
                    "UPDATE {jobs} SET status = 'running', total = ?, succeeded = 0, failed = 0, "
                    "batches_done = 0, batch_size = ?, stage = ?, fingerprint = ?, config = ?, "
                    "runs = runs + 1, last_run_id = ?, error = NULL, updated_at = ?, "
                    "finished_at = NULL WHERE name = ?"),
                    (total, batch_size, stage, fingerprint, config_param, run_id, now, job))
                return frozenset()
            cur.execute(self._sql(
                "UPDATE {jobs} SET status = 'running', total = COALESCE(?, total), config = ?, "
                "runs = runs + 1, last_run_id = ?, error = NULL, updated_at = ?, finished_at = NULL "
                "WHERE name = ?"), (total, config_param, run_id, now, job))
            cur.execute(self._sql("SELECT batch_index FROM {batches} WHERE job = ?"), (job,))
            return frozenset(int(index) for (index,) in cur.fetchall())

    def commit_batch(self, job: str, run_id: str, stats: BatchStats, entries: Sequence[DeadLetter],
                     dlq: DeadLetterQueue, stale: Sequence[str]) -> None:
        """Make the batch's dead letters durable, then (or atomically) mark it done.

        A batch whose records are not all final (``stats.pending > 0``: the run stopped early)
        keeps its entries but is not marked done: it runs again on resume.
        """
        if self._shares_transaction(dlq):
            # One transaction: entries, stale removals and the checkpoint commit or vanish together.
            with self._failures("checkpoint"), dlq.transaction() as cur:  # type: ignore[attr-defined]
                if entries:
                    dlq.write_entries(cur, entries)  # type: ignore[attr-defined]
                if stale:
                    dlq.remove(stale)  # joins the transaction (a savepoint)
                if stats.pending == 0:
                    self._mark_done(cur, job, run_id, stats)
            return
        # Crash-safe order: entries first; a crash before the checkpoint reruns the batch and
        # its entries are replaced (same ids), never duplicated.
        if entries:
            dlq.send(entries)
        if stale:
            dlq.remove(stale)
        if stats.pending == 0:
            with self._transaction() as cur:
                self._mark_done(cur, job, run_id, stats)

    def _mark_done(self, cur: Any, job: str, run_id: str, stats: BatchStats) -> None:
        now = _now()
        cur.execute(self._sql(
            "INSERT INTO {batches} (job, batch_index, size, succeeded, failed, retries, duration_s, "
            "run_id, done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job, batch_index) DO NOTHING"),
            (job, stats.batch_index, stats.size, stats.succeeded, stats.failed, stats.retries,
             float(stats.duration_s), run_id, now))
        if cur.rowcount == 1:
            cur.execute(self._sql(
                "UPDATE {jobs} SET succeeded = succeeded + ?, failed = failed + ?, "
                "batches_done = batches_done + 1, updated_at = ? WHERE name = ?"),
                (stats.succeeded, stats.failed, now, job))

    def commit_replayed(self, removed: Sequence[DeadLetter], dlq: DeadLetterQueue) -> None:
        """Remove the replayed entries from ``dlq`` and move those of finished batches of this
        store's jobs from failed to succeeded (in one transaction when the DLQ shares the database)."""
        ids = [entry.id for entry in removed]
        moved: dict[tuple[str, int], int] = {}
        for entry in removed:
            if entry.job_id is not None:
                key = (entry.job_id, entry.batch_index)
                moved[key] = moved.get(key, 0) + 1
        if not moved:
            dlq.remove(ids)
            return
        if self._shares_transaction(dlq):
            with self._failures("replay"), dlq.transaction() as cur:  # type: ignore[attr-defined]
                dlq.remove(ids)  # joins the transaction (a savepoint)
                self._move_replayed(cur, moved)
            return
        # Removal first: a crash before the totals move leaves ``failed`` above the DLQ's count,
        # which a resume reports; the other order would count a record's success twice when the
        # still-present entry is replayed again.
        dlq.remove(ids)
        with self._transaction() as cur:
            self._move_replayed(cur, moved)

    def _move_replayed(self, cur: Any, moved: Mapping[tuple[str, int], int]) -> None:
        now = _now()
        for (job, batch_index), n in moved.items():
            # A batch that is not done was never counted: it reruns, and counts, on resume.
            cur.execute(self._sql(
                "UPDATE {batches} SET succeeded = succeeded + ?, failed = failed - ? "
                "WHERE job = ? AND batch_index = ? AND failed >= ?"), (n, n, job, batch_index, n))
            if cur.rowcount == 1:
                cur.execute(self._sql(
                    "UPDATE {jobs} SET succeeded = succeeded + ?, failed = failed - ?, updated_at = ? "
                    "WHERE name = ?"), (n, n, now, job))

    def finish(self, job: str, status: JobState, *, total: int | None = None,
               error: str | None = None) -> None:
        """Record how the run ended (and the total, once a generator has been read through)."""
        now = _now()
        finished = now if status in _FINISHED else None
        with self._transaction() as cur:
            cur.execute(self._sql(
                "UPDATE {jobs} SET status = ?, total = COALESCE(?, total), error = ?, "
                "updated_at = ?, finished_at = ? WHERE name = ?"),
                (status, total, error, now, finished, job))


class SqliteJobStore(_SqlJobStore):
    """Jobs in a SQLite file (tables ``jobs`` and ``job_batches``; WAL, ``synchronous=FULL``).

    Put the DLQ in the same file (the default when a job is given no ``dlq``) and every batch
    commits its dead letters and its checkpoint in one transaction.

    >>> import os, tempfile
    >>> store = SqliteJobStore(os.path.join(tempfile.mkdtemp(), "jobs.db"))
    >>> store.list()
    []
    >>> store.close()
    """

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
        self._jobs, self._batches = "jobs", "job_batches"
        self._lock = threading.RLock()
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._locks: _LockFile | None = None
        # Locks and in-process claims follow the file, not the name: a symlink reaches the same job.
        real = self._real = os.path.realpath(self.path)
        self._scope = f"sqlite:{real}"
        try:
            lock_path = f"{real}-joblock"
            try:
                self._locks = _LockFile(Path(lock_path))
            except OSError as exc:
                raise JobStoreUnavailableError(
                    f"cannot open the SQLite job store {self.path}: cannot open its lock file "
                    f"{lock_path} ({exc.strerror})") from exc
            _check_writable(real, self.path)
            if _maybe_new(real):
                with _initialising(self._locks):
                    created = create_private(real)
                    if not created and _maybe_new(real):
                        raise JobStoreUnavailableError(
                            f"cannot open the SQLite job store {self.path}: the file is empty (0 bytes) "
                            "and batchguard did not create it (a store file truncated or replaced "
                            "outside batchguard?); its jobs cannot be resumed from it. Restore it from "
                            "a backup, or delete it to start a new store")
                    try:
                        self._connect()
                    except BaseException:
                        if created:  # ours and never initialised: leave no empty file behind
                            if self._conn is not None:
                                self._conn.close()
                                self._conn = None
                            for suffix in ("", "-wal", "-shm"):
                                with contextlib.suppress(OSError):
                                    os.unlink(real + suffix)
                        raise
            else:
                self._connect()
        except JobStoreUnavailableError:
            self.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise JobStoreUnavailableError(
                f"cannot open the SQLite job store {self.path}: {_cause(exc, real)}") from exc

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                               check_same_thread=False)
        self._conn = conn
        enable_wal(conn, self._timeout)
        conn.execute("PRAGMA synchronous = FULL")
        cur = conn.cursor()
        try:
            with write_transaction(conn, cur):
                self.create_schema(cur)
        finally:
            cur.close()

    def __repr__(self) -> str:
        return f"SqliteJobStore({str(self.path)!r})"

    def __enter__(self) -> SqliteJobStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @staticmethod
    def create_schema(cursor: sqlite3.Cursor) -> None:
        """Create the ``jobs`` and ``job_batches`` tables if missing (idempotent)."""
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

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JobError(f"SQLite job store {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._failures("write"), self._lock:
            conn = self._connection()
            cur = conn.cursor()
            try:
                with write_transaction(conn, cur):
                    yield cur
            finally:
                cur.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._failures("read"), self._lock:
            return self._connection().execute(sql, tuple(params)).fetchall()

    @contextlib.contextmanager
    def _failures(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise JobStoreUnavailableError(
                f"SQLite job store {self.path}: {action} failed: {_cause(exc, self._real)}") from exc

    def _shares_transaction(self, dlq: DeadLetterQueue) -> bool:
        from .dlq.sqlite import SqliteDLQ

        if not isinstance(dlq, SqliteDLQ):
            return False
        try:
            return os.path.samefile(dlq.path, self.path)
        except OSError:
            return False

    def _lock_file(self) -> _LockFile | None:
        if self._locks is None:
            raise JobError(f"SQLite job store {self.path} is closed")
        return self._locks if self._locks.posix else None

    @contextlib.contextmanager
    def claim(self, job: str) -> Iterator[None]:
        """Hold ``job``'s lock for a run: JobError if another run (any process) holds it."""
        with _in_process_claim(self._scope, job, str(self.path)):
            self._check_single_name()
            locks = self._lock_file()
            if locks is None:
                yield
                return
            if not _claim_attempts(lambda: locks.try_lock(job)):
                raise JobError(f"job {job!r} is already running in another process (store {self.path})")
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
        if _held_here(self._scope, job):
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
        from .dlq.sqlite import SqliteDLQ

        return SqliteDLQ(self.path, timeout=self._timeout)

    def close(self) -> None:
        """Close the connection (and release this store's hold on the lock file)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._locks is not None:
                self._locks.close()
                self._locks = None


_PG_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def _pg_describe(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # psycopg.ProgrammingError carries the whole conninfo, password included
        raise ConfigError(f"invalid PostgreSQL URL {redact(url)!r}") from None
    host = info.get("host") or os.environ.get("PGHOST") or "localhost"
    port = info.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = info.get("dbname") or os.environ.get("PGDATABASE") or info.get("user") or ""
    return f"{host}:{port}/{dbname}"


def _advisory_key(job: str) -> int:
    return int.from_bytes(hashlib.sha256(f"batchguard.job:{job}".encode("utf-8", "surrogatepass"))
                          .digest()[:8], "big", signed=True)


class PostgresJobStore(_SqlJobStore):
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
        from .dlq.postgres import PostgresDLQ

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
        with _in_process_claim(self._scope, job, self._location):
            conn = self._connect()
            try:
                def take() -> bool:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    return bool(row and row[0])

                if not _claim_attempts(take):
                    raise JobError(f"job {job!r} is already running in another process "
                                   f"(store {self._location})")
                yield
            finally:
                conn.close()  # ends the session: the server drops the lock

    def _active(self, job: str) -> bool:
        if _held_here(self._scope, job):
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
        from .dlq.postgres import PostgresDLQ

        return PostgresDLQ(self._url, connect_timeout=self._connect_timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_job_store(target: JobStore | str | os.PathLike[str] | None = None) -> JobStore:
    """A job store from a URL (SQLAlchemy's convention), or ``target`` itself if it is one.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, ``postgresql://...``
    (``?table_prefix=`` renames the tables). None means :data:`DEFAULT_STORE_URL`.

    >>> open_job_store("ftp://x")
    Traceback (most recent call last):
    ...
    batchguard.errors.ConfigError: job store URL 'ftp://x' has scheme 'ftp'; accepted: sqlite:///path.db, postgresql://...
    """
    if target is None:
        target = DEFAULT_STORE_URL
    if not isinstance(target, str):
        if isinstance(target, JobStore):
            return target
        hint = " (a path? write it as a URL: sqlite:///jobs.db)" if isinstance(target, os.PathLike) else ""
        raise TypeError(f"store must be a JobStore or a URL string, got {type(target).__name__}{hint}")
    url = target
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"job store URL {redact(url)!r} has no scheme; use sqlite:///path.db "
                          "or postgresql://...")
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if query:
            raise ConfigError(f"job store URL {redact(url)!r}: a sqlite URL takes no query parameters")
        if not path.startswith("/"):
            raise ConfigError(f"job store URL {redact(url)!r} has a host; use sqlite:///relative.db "
                              "or sqlite:////absolute/path.db")
        from urllib.parse import unquote

        relative = unquote(path[1:])
        if not relative or relative == ":memory:":
            raise ConfigError(f"job store URL {redact(url)!r} names no file: a job store must "
                              "outlive the process (sqlite:///jobs.db)")
        if "\x00" in relative:
            raise ConfigError(f"job store URL {redact(url)!r} names a path holding a NUL character "
                              "(%00), which no file name can hold")
        return SqliteJobStore(relative)
    if scheme in ("postgresql", "postgres"):
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        try:
            parts = urlsplit(url)
        except ValueError as exc:  # "Invalid IPv6 URL": an unbalanced [ or ]
            raise ConfigError(f"job store URL {redact(url)!r} is not a valid URL: {exc}") from None
        ours = dict(kv for kv in parse_qsl(parts.query, keep_blank_values=True) if kv[0] == "table_prefix")
        theirs = urlencode([kv for kv in parse_qsl(parts.query, keep_blank_values=True)
                            if kv[0] != "table_prefix"])
        driver_url = urlunsplit(parts._replace(scheme="postgresql", query=theirs))
        if "table_prefix" in ours:
            return PostgresJobStore(driver_url, table_prefix=ours["table_prefix"])
        return PostgresJobStore(driver_url)
    raise ConfigError(f"job store URL {redact(url)!r} has scheme {scheme!r}; "
                      "accepted: sqlite:///path.db, postgresql://...")


@contextlib.contextmanager
def _opened(store: JobStore | str | os.PathLike[str] | None) -> Iterator[JobStore]:
    owned = not isinstance(store, JobStore)
    opened = open_job_store(store)
    try:
        yield opened
    finally:
        if owned:
            opened.close()


# ---------------------------------------------------------------------------- public queries


def job_status(job: str, *, store: JobStore | str | None = None) -> JobStatus:
    """The status, totals and progress of ``job`` (JobNotFoundError if the store has none).

    >>> import os, tempfile
    >>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "jobs.db")
    >>> job_status("nope", store=url)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    batchguard.jobs.JobNotFoundError: no job named 'nope' in sqlite:///...jobs.db
    """
    with _opened(store) as opened:
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
    with _opened(store) as opened:
        return opened.list()


def replay_store(dlq: DeadLetterQueue, store: JobStore | str | None) -> tuple[JobStore | None, bool]:
    """The job store a replay of ``dlq`` keeps up to date, and whether the caller must close it.

    ``store`` given: that store. None: the DLQ's own database when it holds the job store (a
    job given no ``dlq`` keeps its dead letters there): a SQLite file with a ``jobs`` table, a
    PostgreSQL database with ``batchguard_jobs``. Otherwise None: no job's totals change.
    """
    if store is not None:
        return open_job_store(store), not isinstance(store, JobStore)
    from .dlq.postgres import PostgresDLQ
    from .dlq.sqlite import SqliteDLQ

    if isinstance(dlq, SqliteDLQ):
        (tables,) = dlq.connection.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('jobs', 'job_batches')"
        ).fetchone()
        return (SqliteJobStore(dlq.path), True) if tables == 2 else (None, False)
    if isinstance(dlq, PostgresDLQ):
        row = dlq.connection.execute("SELECT to_regclass('batchguard_jobs') IS NOT NULL "
                                     "AND to_regclass('batchguard_job_batches') IS NOT NULL").fetchone()
        return (PostgresJobStore(dlq._url), True) if row and row[0] else (None, False)
    return None, False


# ---------------------------------------------------------------------------- running a job


def _describe_dlq(dlq: DeadLetterQueue) -> str:
    for attr in ("url", "path"):
        value = getattr(dlq, attr, None)
        if value is not None:
            return f"{type(dlq).__name__}({redact(str(value))})"
    return type(dlq).__name__


def _plan_config(plan: Plan, dlq: DeadLetterQueue, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = plan.config
    retry = dataclasses.asdict(cfg.retry)
    breaker = None if cfg.breaker is None else {
        k: (list(map(str, v)) if k == "counts" else v) for k, v in dataclasses.asdict(cfg.breaker).items()}
    config: dict[str, Any] = {
        "batch_size": cfg.batch_size, "concurrency": cfg.concurrency, "retry": retry,
        "breaker": breaker, "max_failures": cfg.max_failures, "stage": plan.stage,
        "engine": plan.engine, "success_threshold": plan.success_threshold,
        "dlq": _describe_dlq(dlq),
    }
    if meta:
        config["meta"] = dict(meta)
    return config


def _check_same_input(job: str, existing: JobStatus, *, fingerprint: str, total: int | None,
                      batch_size: int, stage: str) -> None:
    advice = "use another job name, or force=True (--force) to restart this job from scratch"
    if existing.batch_size != batch_size:
        raise JobConflictError(
            f"job {job!r} was started with batch_size={existing.batch_size}; this run has "
            f"batch_size={batch_size}, so its finished batches would not line up: keep "
            f"batch_size={existing.batch_size}, or {advice}")
    if existing.stage != stage:
        raise JobConflictError(f"job {job!r} was started with stage={existing.stage!r}, this run "
                               f"has stage={stage!r}; {advice}")
    if existing.total is not None and total is not None and existing.total != total:
        raise JobConflictError(f"job {job!r} was started on {existing.total} records, this input "
                               f"has {total}: different input under the same job name; {advice}")
    if existing.fingerprint != fingerprint:
        raise JobConflictError(f"job {job!r} was started on different input (its first batch of "
                               f"records differs; fingerprint {existing.fingerprint.rpartition(':')[2][:12]} "
                               f"!= {fingerprint.rpartition(':')[2][:12]}); {advice}")


def _check_dlq_holds_the_failures(job: str, existing: JobStatus, dlq: DeadLetterQueue,
                                  store: JobStore) -> None:
    """Refuse to resume when the DLQ holds fewer of the job's entries than the store counted.

    ``existing.failed`` counts the dead-lettered records of finished batches, each with exactly
    one entry (replays that tell the store move theirs out of the count). The DLQ may hold more
    (entries of a batch that was still running when the job stopped), never fewer: fewer means
    the DLQ was emptied or replaced, entries were removed by hand, or this is not the job's DLQ,
    and resuming would finish the job with failures that are nowhere to be found.
    """
    if existing.failed == 0:
        return
    found = dlq.count(job_id=job)
    if found >= existing.failed:
        return
    started_with = existing.config.get("dlq")
    now = _describe_dlq(dlq)
    where = (f"the DLQ {now}" if started_with in (None, now)
             else f"the DLQ {now} (the job was started with {started_with})")
    raise JobConflictError(
        f"job {job!r} cannot resume: its store {store.url} counts {existing.failed} dead-lettered "
        f"records in finished batches, but {where} holds {found} entries of the job. The DLQ was "
        f"emptied or replaced since the job stopped, or entries were removed (by hand, or by a "
        f"replay not given the job store: replay(..., store=), dlq retry --store). Point dlq= "
        f"(--dlq) at the DLQ that holds the job's entries, or restart the job from scratch with "
        f"force=True (--force).")


class _Checkpoint:
    """The RunRecorder's checkpoint: hands every batch event to the store's ``commit_batch``."""

    def __init__(self, store: JobStore, job: str, run_id: str, stage: str, batch_size: int,
                 rerun: bool) -> None:
        self.store = store
        self.job = job
        self.run_id = run_id
        self.stage = stage
        self.batch_size = batch_size
        self.rerun = rerun

    def batch_done(self, stats: BatchStats, entries: list[DeadLetter], dlq: DeadLetterQueue) -> None:
        stale: list[str] = []
        if self.rerun and stats.pending == 0:
            # An earlier run may have dead-lettered records of this batch that succeed now.
            first = stats.batch_index * self.batch_size
            failed = {entry.record_index for entry in entries}
            stale = [entry_id(self.job, self.stage, index)
                     for index in range(first, first + stats.size) if index not in failed]
        self.store.commit_batch(self.job, self.run_id, stats, entries, dlq, stale)


def _nothing_to_do(plan: Plan, job: str, existing: JobStatus) -> BatchReport:
    logger.info("job %r already %s; nothing to do (force=True runs it again)", job, existing.status,
                extra={"job_id": job, "job_status": existing.status})
    from ._outcome import RunRecorder

    # The report of a run that took on no record: built by the recorder, like every report.
    recorder = RunRecorder(run_id=new_run_id(), job_id=job, stage=plan.stage, dlq=None,
                           on_progress=None, total=0, batch_size=plan.config.batch_size,
                           id_of=None, pickle_payloads=False)
    return recorder.report(succeeded=0, failed=0, read=0, exhausted=True, retries=0, successful=[],
                           stop_reason=None, breaker_trips=0, success_threshold=None,
                           skipped_batches=existing.batches_done)


def run_job(plan: Plan, *, job: str, store: JobStore | str | None = None, force: bool = False,
            meta: Mapping[str, Any] | None = None) -> BatchReport:
    """Run ``plan`` as the resumable job ``job`` (``run_batches(..., job=, store=)`` calls this).

    * New job: every batch is checkpointed as it finishes.
    * Existing job, same input: finished batches are skipped (``report.skipped_batches``); the
      report counts only the records this run took on.
    * Completed (or failed) job: nothing runs; the report is empty with every batch skipped,
      unless ``force=True``, which restarts the job from scratch (with this input).
    * Different input, ``batch_size`` or ``stage`` under the same name: JobConflictError.
    * The job is already running elsewhere: JobError.

    Without a ``dlq`` the job uses the store's database (see ``JobStore.open_default_dlq``):
    a job never keeps its failures only in memory. ``meta`` is saved in the job's config
    (the CLI keeps the input path and ``--fn`` there, for ``batchguard jobs resume``).
    """
    if not isinstance(job, str) or not job:
        raise ConfigError(f"job must be a non-empty str, got {job!r}")
    check_storable("job", job)
    if isinstance(plan.dlq, MemoryDLQ):
        raise ConfigError("a job's dead letters must outlive the process: MemoryDLQ would lose them; "
                          "pass a durable dlq (sqlite:///..., a URL) or none to use the job store's database")
    batch_size = plan.config.batch_size
    records, first = _first_batch(plan.records, batch_size)
    fingerprint = fingerprint_records(first)
    del first
    plan = replace(plan, records=records)
    with _opened(store) as opened, opened.claim(job):
        existing = opened.get(job)
        if existing is not None and not force:
            _check_same_input(job, existing, fingerprint=fingerprint, total=plan.total,
                              batch_size=batch_size, stage=plan.stage)
            if existing.status in _FINISHED:
                return _nothing_to_do(plan, job, existing)
        own_dlq = plan.dlq is None
        dlq = opened.open_default_dlq() if plan.dlq is None else plan.dlq
        try:
            if existing is not None and not force:
                _check_dlq_holds_the_failures(job, existing, dlq, opened)
            plan = replace(plan, dlq=dlq, config=replace(plan.config, traceback_limit=_UNBOUNDED_TRACEBACKS),
                           # closed below when the run ends: the report reopens it to read entries
                           reopen_dlq=opened.open_default_dlq if own_dlq else plan.reopen_dlq)
            run_id = new_run_id()
            done = opened.begin(job, run_id=run_id, fingerprint=fingerprint, total=plan.total,
                                batch_size=batch_size, stage=plan.stage,
                                config=_plan_config(plan, dlq, meta), reset=force)
            checkpoint = _Checkpoint(opened, job, run_id, plan.stage, batch_size,
                                     rerun=existing is not None)
            from .api import execute

            try:
                report = execute(plan, run_id=run_id, job_id=job, checkpoint=checkpoint,
                                 skip_batches=done)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    opened.finish(job, "aborted", error=f"{type(exc).__name__}: {exc}"[:1000])
                raise
            status, total, error = _outcome(opened, job, plan, report)
            opened.finish(job, status, total=total, error=error)
            return report
        finally:
            if own_dlq:
                dlq.close()


def _outcome(store: JobStore, job: str, plan: Plan,
             report: BatchReport) -> tuple[JobState, int | None, str | None]:
    """The job's status after a run, its total once known, and why it stopped early."""
    if report.stopped_reason is not None or report.pending_count:
        reason = report.stopped_reason or "stopped with records pending"
        return "aborted", None, f"stopped early: {reason} ({report.pending_count} records pending)"
    state = store.get(job)
    if state is None:  # removed under our feet: report the run as it ended
        return "completed", None, None
    total = state.total if state.total is not None else state.processed
    threshold = plan.success_threshold
    if threshold is not None and total and state.succeeded / total < threshold:
        return "failed", total, (f"success rate {state.succeeded / total:.1%} is below the "
                                 f"threshold {threshold:.1%}")
    return "completed", total, None

