"""What the SQLite and PostgreSQL job stores share: the SQL and the checkpoint logic."""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from .._db.postgres import PostgresDatabase
from .._db.sqlite import SqliteDatabase
from ..dlq.base import DeadLetter, DeadLetterQueue, TransactionalDLQ
from ..results import BatchStats
from .outcomes import OUTCOME_COLUMNS, KeptOutcome
from .status import FINISHED, DoneBatch, DoneSpan, JobState, JobStatus, StoppedBatch, timestamp

__all__ = ["SqlJobStore"]

_COLUMNS: Final = ("name, status, total, succeeded, failed, batches_done, batch_size, stage, "
                   "fingerprint, config, runs, last_run_id, error, created_at, updated_at, "
                   "finished_at")


class SqlJobStore(abc.ABC):
    """What the SQLite and PostgreSQL stores share: the SQL (``?`` placeholders, table names as
    ``{jobs}`` and ``{batches}``) and the checkpoint logic."""

    url: str
    _db: SqliteDatabase | PostgresDatabase
    _jobs: str
    _batches: str
    _stopped: str
    """The batches a run stopped inside (records still pending), one row each until done."""
    _outcomes: str
    """The succeeded records of jobs run with ``keep_outcomes=True`` (``jobs.outcomes``)."""
    _placeholder: str

    # -- dialect hooks ---------------------------------------------------------------------

    @abc.abstractmethod
    def _active(self, job: str) -> bool:
        """A process holds ``job``'s lock right now."""

    def _config_param(self, config: Mapping[str, Any]) -> Any:
        return json.dumps(config, sort_keys=True, default=str)

    # -- the database ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._db.errors("write"), self._db.transaction() as cur:
            yield cur

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._db.errors("read"):
            return self._db.query(sql, params)

    def _joined(self, dlq: DeadLetterQueue) -> TransactionalDLQ | None:
        """``dlq`` if it lives in this store's database (its writes can join our transactions)."""
        if isinstance(dlq, TransactionalDLQ) and self._db.same_database(dlq.database):
            return dlq
        return None

    # -- SQL helpers -------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        text = text.format(jobs=self._jobs, batches=self._batches, stopped=self._stopped,
                           outcomes=self._outcomes)
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
        now = timestamp()
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
                cur.execute(self._sql("DELETE FROM {stopped} WHERE job = ?"), (job,))
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
                     dlq: DeadLetterQueue, stale: Sequence[str], outcomes: Sequence[tuple[Any, ...]] = ()) -> None:
        """Make the batch's dead letters durable, then (or atomically) mark it done.

        A batch whose records are not all final (``stats.pending > 0``: the run stopped early)
        keeps its entries but is not marked done: it runs again on resume. ``outcomes``: rows of
        its succeeded records (``jobs.outcomes.encode_outcome``), kept in the same transaction
        as the checkpoint, whether or not the batch is done (what succeeded, happened).
        """
        joined = self._joined(dlq)
        if joined is not None:
            # One transaction: entries, stale removals and the checkpoint commit or vanish together.
            with self._db.errors("checkpoint"), joined.transaction() as cur:
                if entries:
                    joined.write_entries(cur, entries)
                if stale:
                    joined.remove(stale)  # joins the transaction (a savepoint)
                self._mark(cur, job, run_id, stats)
                self._keep_outcomes(cur, outcomes)
            return
        # Crash-safe order: entries first; a crash before the checkpoint reruns the batch and
        # its entries are replaced (same ids), never duplicated.
        if entries:
            dlq.send(entries)
        if stale:
            dlq.remove(stale)
        with self._transaction() as cur:
            self._mark(cur, job, run_id, stats)
            self._keep_outcomes(cur, outcomes)

    def _keep_outcomes(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            cur.executemany(self._sql(
                f"INSERT INTO {{outcomes}} ({OUTCOME_COLUMNS}) VALUES ({marks}) "
                "ON CONFLICT (job, record_index) DO UPDATE SET batch_index = excluded.batch_index, "
                "run_id = excluded.run_id, record_id = excluded.record_id, record = excluded.record, "
                "record_encoding = excluded.record_encoding, value = excluded.value, "
                "value_encoding = excluded.value_encoding"), rows)

    # -- kept outcomes: what ``batchguard rollback`` undoes (batchguard.jobs.rollback) -----------

    def keep_sample(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Keep a sample's succeeded records (rows of ``jobs.outcomes``): a sample is no job, so
        its id is the rows' job and run id alike."""
        with self._transaction() as cur:
            self._keep_outcomes(cur, rows)

    def kept_outcomes(self, name: str, batch: int | None = None) -> tuple[str | None, Sequence[KeptOutcome]]:
        """The kept succeeded records of job ``name`` (or else of the run with that id), newest
        batch first and newest record first within it; with ``batch``, that batch's only.
        Returns the job's name (None when nothing is kept under ``name``) and the records."""
        params: tuple[Any, ...]
        for column in ("job", "run_id"):
            where, params = f"{column} = ?", (name,)
            if batch is not None:
                where, params = where + " AND batch_index = ?", (name, batch)
            rows = self._query(self._sql(f"SELECT {OUTCOME_COLUMNS} FROM {{outcomes}} WHERE {where} "
                                         "ORDER BY batch_index DESC, record_index DESC"), params)
            if rows:
                kept = [KeptOutcome.of_row(row) for row in rows]
                return kept[0].job, kept
            if batch is not None and self._query(self._sql(
                    f"SELECT 1 FROM {{outcomes}} WHERE {column} = ? LIMIT 1"), (name,)):
                return name if column == "job" else None, []
        return None, []

    def undone_in_place(self, job: str, batch: int, records: int) -> None:
        """``records`` of done batch ``batch`` were undone (or their undo failed) and
        dead-lettered, the batch staying done (an abort could not undo it whole): the job
        counts them failed, as a rolled-back atomic batch's, so a replay given the store brings
        the totals back."""
        with self._transaction() as cur:
            cur.execute(self._sql("UPDATE {batches} SET succeeded = succeeded - ?, failed = failed + ? "
                                  "WHERE job = ? AND batch_index = ?"), (records, records, job, batch))
            if cur.rowcount == 1:
                cur.execute(self._sql("UPDATE {jobs} SET succeeded = succeeded - ?, failed = failed + ? "
                                      "WHERE name = ?"), (records, records, job))

    def rolled_back(self, job: str, positions: Sequence[int], batches: Sequence[int], note: str) -> None:
        """Forget the undone records' outcomes; the ``batches`` wholly undone are no longer done
        (their totals leave the job's, and a resume runs them again); the job is "aborted" with
        ``note`` as its error, so that ``jobs resume`` redoes what was rolled back."""
        now = timestamp()
        with self._transaction() as cur:
            for position in positions:
                cur.execute(self._sql("DELETE FROM {outcomes} WHERE job = ? AND record_index = ?"),
                            (job, position))
            for batch in batches:
                cur.execute(self._sql("SELECT succeeded, failed FROM {batches} WHERE job = ? AND batch_index = ?"),
                            (job, batch))
                row = cur.fetchone()
                if row is None:
                    continue
                cur.execute(self._sql("DELETE FROM {batches} WHERE job = ? AND batch_index = ?"), (job, batch))
                cur.execute(self._sql(
                    "UPDATE {jobs} SET succeeded = succeeded - ?, failed = failed - ?, "
                    "batches_done = batches_done - 1 WHERE name = ?"), (int(row[0]), int(row[1]), job))
            cur.execute(self._sql(
                "UPDATE {jobs} SET status = 'aborted', error = ?, updated_at = ?, finished_at = NULL "
                "WHERE name = ?"), (note, now, job))

    def _mark(self, cur: Any, job: str, run_id: str, stats: BatchStats) -> None:
        if stats.pending == 0:
            self._mark_done(cur, job, run_id, stats)
            return
        # The run stopped inside this batch: it reruns on resume; ``jobs status`` shows how far
        # it got. One row per stopped batch (at most the batches in flight), never per record.
        cur.execute(self._sql(
            "INSERT INTO {stopped} (job, batch_index, size, succeeded, failed, pending, run_id, "
            "stopped_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job, batch_index) DO UPDATE "
            "SET size = excluded.size, succeeded = excluded.succeeded, failed = excluded.failed, "
            "pending = excluded.pending, run_id = excluded.run_id, stopped_at = excluded.stopped_at"),
            (job, stats.batch_index, stats.size, stats.succeeded, stats.failed, stats.pending,
             run_id, timestamp()))

    def _mark_done(self, cur: Any, job: str, run_id: str, stats: BatchStats) -> None:
        now = timestamp()
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
            cur.execute(self._sql("DELETE FROM {stopped} WHERE job = ? AND batch_index = ?"),
                        (job, stats.batch_index))

    # -- the batch ledger: what ``jobs status`` shows (batchguard.jobs.ledger) ------------------

    def done_spans(self, job: str) -> tuple[DoneSpan, ...]:
        """Runs of consecutive done batches, in order: (first, last, records, succeeded, failed,
        retries). One query ("gaps and islands"), so 10,000 done batches are a row or a few."""
        rows = self._query(self._sql(
            "SELECT min(batch_index), max(batch_index), sum(size), sum(succeeded), sum(failed), "
            "sum(retries) FROM (SELECT batch_index, size, succeeded, failed, retries, "
            "batch_index - row_number() OVER (ORDER BY batch_index) AS island FROM {batches} "
            "WHERE job = ?) AS done GROUP BY island ORDER BY 1"), (job,))
        return tuple((int(a), int(b), int(c), int(d), int(e), int(f)) for a, b, c, d, e, f in rows)

    def done_batches(self, job: str, first: int, last: int) -> tuple[DoneBatch, ...]:
        """The done batches with an index in [first, last]: (index, size, succeeded, failed,
        retries, duration_s, run_id, done_at)."""
        rows = self._query(self._sql(
            "SELECT batch_index, size, succeeded, failed, retries, duration_s, run_id, done_at "
            "FROM {batches} WHERE job = ? AND batch_index BETWEEN ? AND ? ORDER BY batch_index"),
            (job, first, last))
        return tuple((int(i), int(n), int(s), int(f), int(r), float(d), str(run), str(at))
                     for i, n, s, f, r, d, run, at in rows)

    def stopped_batches(self, job: str) -> tuple[StoppedBatch, ...]:
        """The batches a run stopped inside, not done since: (index, size, succeeded, failed,
        pending, run_id, stopped_at), the counts as they were at the stop."""
        rows = self._query(self._sql(
            "SELECT batch_index, size, succeeded, failed, pending, run_id, stopped_at FROM {stopped} "
            "WHERE job = ? ORDER BY batch_index"), (job,))
        return tuple((int(i), int(n), int(s), int(f), int(p), str(run), str(at))
                     for i, n, s, f, p, run, at in rows)

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
        joined = self._joined(dlq)
        if joined is not None:
            with self._db.errors("replay"), joined.transaction() as cur:
                joined.remove(ids)  # joins the transaction (a savepoint)
                self._move_replayed(cur, moved)
            return
        # Removal first: a crash before the totals move leaves ``failed`` above the DLQ's count,
        # which a resume reports; the other order would count a record's success twice when the
        # still-present entry is replayed again.
        dlq.remove(ids)
        with self._transaction() as cur:
            self._move_replayed(cur, moved)

    def _move_replayed(self, cur: Any, moved: Mapping[tuple[str, int], int]) -> None:
        now = timestamp()
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
        now = timestamp()
        finished = now if status in FINISHED else None
        with self._transaction() as cur:
            cur.execute(self._sql(
                "UPDATE {jobs} SET status = ?, total = COALESCE(?, total), error = ?, "
                "updated_at = ?, finished_at = ? WHERE name = ?"),
                (status, total, error, now, finished, job))
