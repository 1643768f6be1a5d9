"""Running a job: check the input against the store, skip finished batches, checkpoint the rest."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from .._run.entries import default_id_of, entry_id, new_run_id
from .._run.execute import arun, execute, execute_nothing
from .._run.plan import Plan
from .._urls import redact
from ..compensation import Outcome
from ..dlq.base import DeadLetter, DeadLetterQueue, MemoryDLQ
from ..dlq.codec import Fallbacks, check_storable
from ..errors import ConfigError, JobConflictError
from ..results import BatchReport, BatchStats
from .fingerprint import changed_file, fingerprint_records, first_batch, input_files, same_records
from .outcomes import encode_outcome
from .status import FINISHED, JobState, JobStatus
from .store import JobStore, opened_store

__all__ = ["arun_job", "describe_dlq", "run_job"]

logger = logging.getLogger("batchguard")

# A DLQ that keeps entries only in memory would lose a job's failures with the process.
_UNBOUNDED_TRACEBACKS: Final = 1 << 62


def describe_dlq(dlq: DeadLetterQueue) -> str:
    """How a job's config names its DLQ (its type and redacted URL or path)."""
    for attr in ("url", "path"):
        value = getattr(dlq, attr, None)
        if value is not None:
            return f"{type(dlq).__name__}({redact(str(value))})"
    return type(dlq).__name__


def _plan_config(plan: Plan, dlq: DeadLetterQueue, meta: Mapping[str, Any] | None,
                 files: list[dict[str, Any]] | None) -> dict[str, Any]:
    cfg = plan.config
    # Described, not copied: a fallback value may be a client no deepcopy can copy.
    retry = cfg.retry.describe() if cfg.retry_table is None else cfg.retry_table.describe()
    breaker = None if cfg.breaker is None else {
        k: (list(map(str, v)) if k == "counts" else v) for k, v in dataclasses.asdict(cfg.breaker).items()}
    config: dict[str, Any] = {
        "batch_size": cfg.batch_size, "concurrency": cfg.concurrency, "retry": retry,
        "breaker": breaker, "max_failures": cfg.max_failures, "stage": plan.stage,
        # concurrency is then Adaptive.max: the policy says the run was not at a fixed one.
        "adaptive": None if cfg.adaptive is None else dataclasses.asdict(cfg.adaptive),
        "retry_budget": None if cfg.retry_budget is None else dataclasses.asdict(cfg.retry_budget),
        "engine": plan.engine, "success_threshold": plan.success_threshold,
        "dlq": describe_dlq(dlq),
    }
    if meta:
        config["meta"] = dict(meta)
    if files is not None:
        config["input_files"] = files  # names the file that changed when a resume is refused
    return config


def _check_same_input(job: str, existing: JobStatus, *, fingerprint: str, total: int | None,
                      batch_size: int, stage: str, files: list[dict[str, Any]] | None) -> None:
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
    same_first_batch, same_files = same_records(existing.fingerprint, fingerprint)
    if same_first_batch and not same_files and files is not None:
        change = changed_file(existing.config.get("input_files"), files)
        raise JobConflictError(f"the input files of job {job!r} changed since it started: {change}; "
                               f"resuming would mix two versions of the input; {advice}")
    if not same_first_batch:
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
    # Every status: a resolved (skipped) entry is still a failed record of the job, and a
    # replayed one is more than the store counts, which is allowed.
    found = dlq.count(job_id=job, status="all")
    if found >= existing.failed:
        return
    started_with = existing.config.get("dlq")
    now = describe_dlq(dlq)
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
    """A job's outcome sink (``OutcomeSink``): each finished batch, its entries and the entries
    a rerun made stale go to the store's ``commit_batch`` together."""

    every_batch = True  # a batch without failures is checkpointed too
    entries_stored_elsewhere = None

    def __init__(self, store: JobStore, job: str, run_id: str, stage: str, batch_size: int,
                 dlq: DeadLetterQueue, *, rerun: bool, plan: Plan | None = None) -> None:
        self.store = store
        self.job = job
        self.run_id = run_id
        self.stage = stage
        self.batch_size = batch_size
        self.dlq = dlq
        self.rerun = rerun
        # keep_outcomes: the recorder hands each batch's succeeded records over just before
        # its batch_done (batch_outcomes); they go into the checkpoint's transaction.
        self._plan = plan
        self._outcomes: dict[int, list[tuple[Any, ...]]] = {}
        self._fallbacks = Fallbacks()

    def batch_outcomes(self, batch: int, outcomes: Sequence[Outcome]) -> None:
        """Keep ``outcomes`` (batch ``batch``'s succeeded records) with its checkpoint."""
        plan = self._plan
        if plan is None or not outcomes:
            return
        id_of = plan.id_of
        rows = []
        for position, record, value in outcomes:
            try:
                record_id = default_id_of(record, position) if id_of is None else id_of(record)
            except Exception:  # noqa: BLE001 - as a dead letter's: an id_of that raises gives the index
                record_id = position
            rows.append(encode_outcome(self.job, self.run_id, batch, position, record, value,
                                       record_id=record_id, pickle_payloads=plan.pickle_payloads,
                                       fallbacks=self._fallbacks))
        self._outcomes[batch] = rows

    def batches_undone(self, undone: Mapping[int, Sequence[int]], whole: Sequence[int],
                       undo_failed: int = 0) -> None:
        """An aborted run with ``on_abort="compensate"`` undid ``undone`` (batch -> positions):
        their kept outcomes are forgotten (``keep_outcomes``), and the batches undone ``whole``
        are no longer done (a resume runs them again). A batch where some undo failed
        (``undo_failed`` of them) stays done: its undone records have DLQ entries to replay
        instead, and the job counts them, and those whose undo failed, as failed."""
        rolled_back = getattr(self.store, "rolled_back", None)
        if rolled_back is None or not undone:
            return
        in_place = getattr(self.store, "undone_in_place", None)
        for batch, positions in undone.items():
            if batch not in whole and in_place is not None and (positions or undo_failed):
                in_place(self.job, batch, len(positions) + undo_failed)
        positions = [position for batch in undone.values() for position in batch]
        reopened = sorted(whole)
        rolled_back(self.job, positions, reopened,
                    f"aborted and compensated (on_abort=\"compensate\"): batches {', '.join(map(str, reopened))} "
                    "were undone and run again on resume"[:1000])

    def batch_done(self, stats: BatchStats, entries: Sequence[DeadLetter]) -> None:
        if stats.compensated:
            # A rolled-back atomic batch: each undone record has an entry to replay, and the
            # store counts what has an entry as failed (a replay moves it to succeeded).
            stats = replace(stats, failed=stats.failed + stats.compensated)
        stale: list[str] = []
        if self.rerun and stats.pending == 0:
            # An earlier run may have dead-lettered records of this batch that succeed now.
            first = stats.batch_index * self.batch_size
            failed = {entry.record_index for entry in entries}
            stale = [entry_id(self.job, self.stage, index)
                     for index in range(first, first + stats.size) if index not in failed]
        outcomes = self._outcomes.pop(stats.batch_index, None)
        if outcomes:
            self.store.commit_batch(self.job, self.run_id, stats, entries, self.dlq, stale, outcomes=outcomes)
        else:  # a store of your own need not know keep_outcomes
            self.store.commit_batch(self.job, self.run_id, stats, entries, self.dlq, stale)


def _nothing_to_do(plan: Plan, job: str, existing: JobStatus) -> BatchReport:
    logger.info("job %r already %s; nothing to do (force=True runs it again)", job, existing.status,
                extra={"job_id": job, "job_status": existing.status})
    # A run that took on no record, and still a run: its hooks see it start and end.
    return execute_nothing(plan, job_id=job, skipped_batches=existing.batches_done)


@dataclass(frozen=True)
class _Started:
    """A job run that passed its checks and began in the store: run ``plan`` with these, then
    :meth:`finish` with the report."""

    store: JobStore
    job: str
    plan: Plan
    run_id: str
    checkpoint: _Checkpoint
    skip_batches: frozenset[int]

    def finish(self, report: BatchReport) -> BatchReport:
        status, total, error = _outcome(self.store, self.job, self.plan, report)
        self.store.finish(self.job, status, total=total, error=error)
        return report


@contextlib.contextmanager
def _job_run(plan: Plan, job: str, store: JobStore | str | None, force: bool,
             meta: Mapping[str, Any] | None) -> Iterator[_Started | BatchReport]:
    """Claim the job, check the input against it and begin it: yields the run to make, or the
    report of a job that has nothing left to do. A run that raises marks the job aborted."""
    if not isinstance(job, str) or not job:
        raise ConfigError(f"job must be a non-empty str, got {job!r}")
    check_storable("job", job)
    if isinstance(plan.dlq, MemoryDLQ):
        raise ConfigError("a job's dead letters must outlive the process: MemoryDLQ would lose them; "
                          "pass a durable dlq (sqlite:///..., a URL) or none to use the job store's database")
    batch_size = plan.config.batch_size
    # The store first: a wrong one is refused before the caller's input is read.
    with opened_store(store) as opened, opened.claim(job):
        files = input_files(plan.records)
        records, first = first_batch(plan.records, batch_size)
        fingerprint = fingerprint_records(first, files)
        del first
        plan = replace(plan, records=records)
        existing = opened.get(job)
        if existing is not None and not force:
            _check_same_input(job, existing, fingerprint=fingerprint, total=plan.total,
                              batch_size=batch_size, stage=plan.stage, files=files)
            if existing.status in FINISHED:
                yield _nothing_to_do(plan, job, existing)
                return
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
                                config=_plan_config(plan, dlq, meta, files), reset=force)
            checkpoint = _Checkpoint(opened, job, run_id, plan.stage, batch_size, dlq,
                                     rerun=existing is not None,
                                     plan=plan if plan.compensation and plan.compensation.keep_outcomes else None)
            try:
                yield _Started(opened, job, plan, run_id, checkpoint, frozenset(done))
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    opened.finish(job, "aborted", error=f"{type(exc).__name__}: {exc}"[:1000])
                raise
        finally:
            if own_dlq:
                dlq.close()


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
    with _job_run(plan, job, store, force, meta) as run:
        if isinstance(run, BatchReport):
            return run
        return run.finish(execute(run.plan, run_id=run.run_id, job_id=job, sink=run.checkpoint,
                                  skip_batches=run.skip_batches))


async def arun_job(plan: Plan, *, job: str, store: JobStore | str | None = None, force: bool = False,
                   meta: Mapping[str, Any] | None = None) -> BatchReport:
    """:func:`run_job` for a caller inside an event loop (``arun_batches(..., job=)`` awaits
    it): the same checks, checkpoints and resume, with the plan run as :func:`arun_batches`
    runs it."""
    # The store's own reads and writes (the claim, a checkpoint per batch) are short blocking
    # calls made on the loop, as a DLQ's sends are.
    with _job_run(plan, job, store, force, meta) as run:
        if isinstance(run, BatchReport):
            return run
        return run.finish(await arun(run.plan, run_id=run.run_id, job_id=job, sink=run.checkpoint,
                                     skip_batches=run.skip_batches))


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
