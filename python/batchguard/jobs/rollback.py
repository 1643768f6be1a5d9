"""Rolling back a finished job (or one run of it): :func:`rollback`, ``batchguard rollback``.

A job run with ``keep_outcomes=True`` keeps each succeeded record and what ``fn`` returned for
it (:mod:`batchguard.jobs.outcomes`). :func:`rollback` undoes them with ``undo(record, value)``,
newest batch first and newest record first within a batch, each undo retried as a run's calls
are (a :class:`~batchguard.RetryPolicy`, a :class:`~batchguard.Classifier`). An undone record
is forgotten; a batch whose kept records were all undone is no longer done, and the job is
marked "aborted" (so ``jobs resume`` runs the rolled-back batches again). An undo that still
fails keeps its record in the store: nothing is silently half-done, and rolling back again
retries only what is left.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._checks import printable
from .._run.entries import new_run_id
from ..compensation import Outcome, Undoer, check_undo
from ..dlq.codec import Fallbacks
from ..errors import ConfigTypeError, JobNotFoundError
from ..policies import Classifier, RetryPolicy
from .outcomes import encode_outcome
from .store import JobStore, held_idle, opened_store

__all__ = ["RollbackFailure", "RollbackReport", "keep_sample", "rollback"]


@dataclass(frozen=True, slots=True)
class RollbackFailure:
    """A kept record that could not be undone (it stays kept)."""

    record_index: int
    batch_index: int
    record_id: Any
    error_type: str
    error_message: str


@dataclass(frozen=True)
class RollbackReport:
    """What :func:`rollback` did."""

    name: str
    """The job or run id asked for."""
    job: str
    undone: int
    """Records undone (and forgotten by the store)."""
    failed: tuple[RollbackFailure, ...]
    batches_reopened: tuple[int, ...]
    """Batches wholly undone: no longer done, ``jobs resume`` runs them again."""
    is_job: bool = True
    """False for a sample (``mode="sample"``), which has no batches to run again."""

    @property
    def ok(self) -> bool:
        """Every kept record asked for was undone."""
        return not self.failed

    def summary(self) -> str:
        """The rollback as a person reads it."""
        if not self.is_job:
            what = f"sample {self.name}"
        else:
            what = f"job {self.job!r}" if self.name == self.job else f"run {self.name} of job {self.job!r}"
        lines = [f"Rolled back {self.undone} record{'s' * (self.undone != 1)} of {what}."]
        if self.batches_reopened and self.is_job:
            batches = ", ".join(map(str, self.batches_reopened))
            lines.append(f"Batches undone: {batches}; the job is now aborted: `batchguard jobs resume "
                         f"{self.job}` runs them again.")
        if self.failed:
            lines.append(f"{len(self.failed)} could not be undone (still kept; run rollback again to "
                         "retry them):")
            lines += [f"  record {f.record_index} (id {f.record_id!r}, batch {f.batch_index}): "
                      f"{f.error_type}: {f.error_message}" for f in self.failed[:20]]
            if len(self.failed) > 20:
                lines.append(f"  ... and {len(self.failed) - 20} more")
        return printable("\n".join(lines))


def rollback(name: str, undo: Callable[[Any, Any], Any], *, store: JobStore | str | os.PathLike[str] | None = None,
             batch: int | None = None, allow_pickle: bool = False, retry: RetryPolicy | None = None,
             classifier: Classifier | None = None) -> RollbackReport:
    """Undo what job ``name`` (or the run whose id is ``name``) succeeded on, as kept with
    ``keep_outcomes=True``; ``batch``: that batch only.

    ``undo(record, value)`` gets each record and what ``fn`` returned for it, newest batch first.
    JobNotFoundError when nothing is kept under ``name`` (or in ``batch``).

    >>> import os, tempfile
    >>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "jobs.db")
    >>> from batchguard import run_batches
    >>> done = []
    >>> run_batches(range(4), lambda x: x * 10, batch_size=2, job="doc", store=url, keep_outcomes=True).status
    'complete'
    >>> rollback("doc", lambda record, value: done.append(value), store=url).undone, done
    (4, [30, 20, 10, 0])
    """
    check_undo("undo", undo)
    undoer = Undoer(undo, retry or RetryPolicy(), classifier or Classifier.default(), seed=0)
    with opened_store(store) as opened:
        kept_outcomes = getattr(opened, "kept_outcomes", None)
        if kept_outcomes is None:
            raise ConfigTypeError(f"the job store {opened.url} keeps no outcomes (a store of your own)")
        job, kept = kept_outcomes(name, batch)
        if job is None or not kept:
            where = "" if batch is None else f" in batch {batch}"
            raise JobNotFoundError(f"nothing to roll back for {name!r}{where} in {opened.url}: no job or run "
                                   "of that name kept its succeeded records (run the job with "
                                   "keep_outcomes=True, --keep-outcomes)")
        is_job = opened.get(job) is not None
        forget: Callable[[Sequence[int], Sequence[int], str], None] = functools.partial(
            opened.rolled_back, job)  # type: ignore[attr-defined]
        undone: list[int] = []
        failed: list[RollbackFailure] = []
        reopened: list[int] = []
        with _held(opened, job, is_job):
            # Read again once the job is held: a run of it that ended since the first read
            # (while it held the job) kept more, and its batches must be undone too, not left
            # done under a report that says the job was rolled back.
            kept = kept_outcomes(name, batch)[1]
            _undo_kept(kept, name, is_job, undoer, forget, allow_pickle, undone, failed, reopened)
    return RollbackReport(name, job, len(undone), tuple(failed), tuple(reopened) if is_job else (), is_job)


@contextlib.contextmanager
def _held(store: JobStore, job: str, is_job: bool) -> Iterator[None]:
    """Hold ``job``'s run lock while its records are undone: a run racing a rollback would mark
    the job completed over the batches the rollback reopened, or redo what it undoes."""
    if not is_job:  # a sample: nothing runs it again
        yield
        return
    with held_idle(store, job, "rolled back"):
        yield


def _undo_kept(kept: Sequence[Any], name: str, is_job: bool, undoer: Undoer,
               forget: Callable[[Sequence[int], Sequence[int], str], None], allow_pickle: bool,
               undone: list[int], failed: list[RollbackFailure], reopened: list[int]) -> None:
    """Undo ``kept`` (newest batch first), forgetting each record as it is undone; fills
    ``undone``, ``failed`` and ``reopened`` as it goes (they stay right if it is cut short)."""
    for batch_index, rows in itertools.groupby(kept, key=lambda row: row.batch):
        whole = True
        for row in rows:
            try:
                outcome = Outcome(row.position, row.record(allow_pickle=allow_pickle),
                                  row.value(allow_pickle=allow_pickle))
            except ValueError as exc:  # a repr, or a pickle not allowed: it cannot be undone here
                failed.append(RollbackFailure(row.position, row.batch, row.record_id, type(exc).__name__,
                                              str(exc)))
                whole = False
                continue
            dead = undoer.undo_one(outcome, row.batch)
            if dead is not None:
                cause = dead.attempts[-1].error.__cause__ or dead.attempts[-1].error
                failed.append(RollbackFailure(row.position, row.batch, row.record_id, type(cause).__name__,
                                              str(cause)))
                whole = False
                continue
            # Forgotten as soon as it is undone, each in its own transaction: a rollback cut
            # short (Ctrl-C, kill -9) and run again undoes only what is still kept (at worst
            # the one undo that was running again, which is why an undo must bear repeating).
            undone.append(row.position)
            forget([row.position], (), _note(name, is_job, undone, reopened, batch_index))
        if whole and is_job:  # wholly undone: no longer done, a resume runs it again
            reopened.append(batch_index)
            forget((), [batch_index], _note(name, is_job, undone, reopened, batch_index))


def _note(name: str, is_job: bool, undone: Sequence[int], reopened: Sequence[int], batch: int) -> str:
    """The job's error while (and after) ``batchguard rollback name`` rolls it back ("" for a
    sample, which has no status)."""
    if not is_job:
        return ""
    batches = ", ".join(map(str, reopened)) or "none yet"
    return (f"rolled back: {len(undone)} records by batchguard rollback {name} (at batch {batch}; "
            f"batches undone: {batches})")[:1000]


def keep_sample(store: JobStore | str | None, outcomes: Sequence[tuple[int, Any, Any, Any]], *,
                pickle_payloads: bool) -> str:
    """Keep a sample's succeeded records, ``(input position, record id, record, value)`` each,
    in ``store`` (None: the default store); returns the id ``rollback`` undoes them by."""
    sample_id = f"sample-{new_run_id().removeprefix('run-')}"
    fallbacks = Fallbacks()
    rows = [encode_outcome(sample_id, sample_id, 0, position, record, value, record_id=record_id,
                           pickle_payloads=pickle_payloads, fallbacks=fallbacks)
            for position, record_id, record, value in outcomes]
    with opened_store(store) as opened:
        keep = getattr(opened, "keep_sample", None)
        if keep is None:
            raise ConfigTypeError(f"the job store {opened.url} keeps no outcomes (a store of your own)")
        if rows:
            keep(rows)
    return sample_id
