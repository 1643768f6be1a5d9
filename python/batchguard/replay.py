"""``batchguard.replay``: run dead-lettered records again, once their cause is fixed."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, cast

from ._checks import check_flag
from ._replay_left import PARSE_ERROR, is_blocked_entry, is_failed_undo, is_unparsed_line, warn_left
from ._replay_report import ReplayedFailures, ReplayedRecordError, ReplayReport, Successes
from ._run.entries import new_run_id
from ._run.execute import execute
from ._run.plan import DEFAULT_BATCH_SIZE, make_plan
from ._stored import REPORT_SAMPLE
from .dlq.base import Attempt, DeadLetter, DeadLetterQueue, MemoryDLQ, StatusChange, check_filters, matches, select
from .dlq.status import ALL, DEFAULT_STATUS, check_status, new_change, not_found, unique_ids, with_change
from .dlq.urls import open_dlq
from .errors import ConfigError, PickleNotAllowedError
from .jobs.store import JobStore, replay_store
from .policies import Classifier, ErrorClass, ErrorKey, RetryPolicies, RetryPolicy
from .results import BatchProgress, BatchReport, BatchStats
from .validation.full import finish_full, guard_full

__all__ = ["PARSE_ERROR", "ReplayReport", "ReplayedRecordError", "is_blocked_entry", "is_unparsed_line", "replay"]

REPLAY_STAGE = "replay"
REPLAYED: Final = "replayed"


def _extended(original: DeadLetter, again: DeadLetter, reopen: StatusChange) -> DeadLetter:
    """``original`` with the replay's failed tries appended to its history (same id), open: a
    record that failed again needs attention, whatever its entry's status was (``reopen``
    records the change when it was not open)."""
    if original.status != DEFAULT_STATUS:
        original = with_change(original, reopen)
    base = len(original.attempts)
    attempts = original.attempts + tuple(
        Attempt(base + a.attempt, a.at, a.error_type, a.error_message, a.delay_s)
        for a in again.attempts)
    return dataclasses.replace(
        original, error_class=again.error_class, error_type=again.error_type,
        error_message=again.error_message, traceback=again.traceback, attempts=attempts,
        last_failed_at=again.last_failed_at or original.last_failed_at)


class _MarkReplayed:
    """The queue as a job store's ``commit_replayed`` sees it: the entries it takes out of the
    queue are marked ``replayed`` instead, kept for the audit trail -- in the store's
    transaction when the queue shares its database, as their removal was. Everything else (the
    database, its transaction) is the queue's own."""

    def __init__(self, queue: DeadLetterQueue, change: StatusChange) -> None:
        self._queue = queue
        self._change = change

    def remove(self, ids: Iterable[str]) -> int:
        return self._queue.set_status(ids, self._change.status, reason=self._change.reason,
                                      by=self._change.by)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class _Replayer:
    """Feeds the matching entries' records to the engine and applies each batch's outcome (the
    run's ``OutcomeSink``).

    Entries are read a page at a time while the queue changes under the reader: every backend
    keeps an upserted entry at the place of its first send, so the next unread entry sits at
    (entries read) - (entries that left the filtered view), and one lock keeps that count and
    the queue in step.
    """

    every_batch = True  # a batch without failures still removes the entries that succeeded
    # Read by the run's report, which cannot find this run's failures under its own run id.
    entries_stored_elsewhere = ("a replay writes each failure back into the entry it replayed (same "
                                "id and run_id, attempt history extended): list them from the DLQ "
                                "with the filters given to replay()")

    def __init__(self, queue: DeadLetterQueue, wanted: dict[str, Any], page: int,
                 jobs: JobStore | None = None, *, allow_pickle: bool = False,
                 include_parse_errors: bool = False, recheck: bool = False, status: str | None = DEFAULT_STATUS,
                 chosen: Sequence[DeadLetter] | None = None, by: str | None = None) -> None:
        self.queue = queue
        self.status = ALL if status is None else status
        # The view the replay pages through: an entry whose new status or error takes it out
        # shifts the next page's offset.
        self.view = select(wanted, status)
        self.chosen = chosen
        self.by = by
        self.run_id = ""  # the replay's run id, for the status changes' reason (set once planned)
        self.allow_pickle = allow_pickle
        self.pickle_refused = 0
        self.include_parse_errors = include_parse_errors
        self.parse_skipped = 0
        self.undo_skipped = 0
        self.recheck = recheck  # blocked entries are fed to the run's check, never straight to fn
        self.blocked_skipped = 0
        # Replay index -> the entry as written back, for the report: every one with a MemoryDLQ
        # (the report keeps every failure), else the report's in-memory sample (the first ones).
        self.replayed: dict[int, DeadLetter] = {}
        self.replayed_limit = None if isinstance(queue, MemoryDLQ) else REPORT_SAMPLE
        self.jobs = jobs
        self.jobs_updated: set[str] = set()
        self.wanted = wanted
        self.page = page
        self.batch_size = page
        self.lock = threading.Lock()
        self.read = 0
        self.left_view = 0
        self.originals: dict[int, DeadLetter] = {}
        self.removed = 0
        self.kept = 0
        self.not_replayable = 0
        self.successes = Successes()
        # Entries sent while we replay (by anyone) go last: stop at what matched at the start.
        self.budget = len(chosen) if chosen is not None else queue.count(status=self.status, **wanted)

    def _pages(self) -> Iterator[Sequence[DeadLetter]]:
        if self.chosen is not None:
            yield self.chosen
            return
        while self.budget > 0:
            with self.lock:
                entries = self.queue.list(limit=min(self.page, self.budget),
                                          offset=self.read - self.left_view, status=self.status,
                                          **self.wanted)
                self.read += len(entries)
            if not entries:
                return
            self.budget -= len(entries)
            yield entries

    def records(self) -> Iterator[Any]:
        index = 0
        for entries in self._pages():
            for entry in entries:
                if not self.include_parse_errors and is_unparsed_line(entry):
                    self.parse_skipped += 1  # raw text, not a record: never fed to fn unless asked
                    continue
                if not self.recheck and is_blocked_entry(entry):
                    self.blocked_skipped += 1  # fn never ran on it: not without a check
                    continue
                if is_failed_undo(entry):
                    self.undo_skipped += 1  # {record, value} of an undo that failed: not fn's to run
                    continue
                try:
                    record = entry.record(allow_pickle=self.allow_pickle)
                except PickleNotAllowedError:  # never loaded, never run: the entry stays
                    self.pickle_refused += 1
                    continue
                except Exception:  # noqa: BLE001 - repr payloads, or a pickle that no longer loads
                    self.not_replayable += 1
                    continue
                self.originals[index] = entry
                index += 1
                yield record

    def _remember(self, index: int, entry: DeadLetter) -> None:
        with self.lock:
            self.replayed[index] = entry
            limit = self.replayed_limit
            if limit is not None and len(self.replayed) > 2 * limit:
                for late in sorted(self.replayed)[limit:]:
                    del self.replayed[late]

    def batch_done(self, stats: BatchStats, entries: Sequence[DeadLetter]) -> None:
        replayed = new_change(REPLAYED, reason=f"succeeded on replay (run {self.run_id})", by=self.by)
        reopened = new_change(DEFAULT_STATUS, reason=f"failed again on replay (run {self.run_id})", by=self.by)
        first = stats.batch_index * self.batch_size
        failed = {entry.record_index: entry for entry in entries}
        updates: list[DeadLetter] = []
        removals: list[DeadLetter] = []
        for index in range(first, first + stats.size):
            original = self.originals.pop(index, None)
            if original is None:
                continue
            if index in failed:
                updates.append(_extended(original, failed[index], reopened))
                self._remember(index, updates[-1])
            elif self.successes.take(index):
                removals.append(original)  # also in a batch the run stopped in: it ran, once
            # else: the run stopped inside this batch before running it; the entry stays.
        with self.lock:
            if updates:
                self.queue.send(updates)
            if removals and self.jobs is not None:
                # The job store takes the change too: its totals move with it, atomically if it can.
                marker = cast("DeadLetterQueue", _MarkReplayed(self.queue, replayed))
                self.jobs.commit_replayed(removals, marker)
                self.jobs_updated.update(e.job_id for e in removals if e.job_id is not None)
            elif removals:
                self.queue.set_status([e.id for e in removals], REPLAYED, reason=replayed.reason,
                                      by=replayed.by)
            self.kept += len(updates)
            self.removed += len(removals)
            # An entry whose new status or error no longer matches the view left it.
            done = [with_change(e, replayed) for e in removals]
            self.left_view += sum(1 for e in (*done, *updates) if not matches(e, self.view))


def replay(
    dlq: DeadLetterQueue | str,
    fn: Callable[[Any], Any],
    *,
    concurrency: int = 1,
    retry: RetryPolicy | RetryPolicies | Mapping[ErrorKey, RetryPolicy] | None = None,
    classifier: Classifier | Callable[[BaseException], Any] | None = None,
    engine: Literal["native", "python"] = "native",
    batch_size: int | None = None,
    on_progress: Callable[[BatchProgress], Any] | None = None,
    store: JobStore | str | None = None,
    allow_pickle: bool = False,
    include_parse_errors: bool = False,
    validate: Callable[[Any], Any] | None = None,
    ids: Iterable[str] | None = None,
    status: str | None = DEFAULT_STATUS,
    by: str | None = None,
    **filters: Any,
) -> ReplayReport:
    """Run the records of the matching DLQ entries through ``fn`` again.

    Entries whose record now succeeds are marked ``replayed`` (who: ``by``, by default the OS
    user; why: the replay's run id); they stay in the queue for the audit trail, out of the
    default (open) view. The others stay open, with the new tries appended to their attempt
    history (same id, new error, ``last_failed_at`` updated). ``retry`` takes what
    ``run_batches`` takes: a RetryPolicy, a RetryPolicies or a mapping from an error (class,
    ErrorClass or predicate) to its policy.

    Which entries: ``ids=[...]`` (every one must name an entry, else
    :class:`~batchguard.errors.DeadLetterNotFoundError` names the unknown ones and nothing
    runs), or the entries matching the filters -- the queue's: ``run_id``, ``job_id``,
    ``stage``, ``error_class``, ``error_type`` -- and ``status`` (default ``"open"``; ``"all"``
    or another status to replay entries already resolved or replayed). ``ids`` and filters do
    not combine; the entries ``ids`` names must have ``status`` too (a ConfigError names those
    that do not). Entries stored as ``repr`` cannot be replayed: they stay, are counted in
    ``report.not_replayable``, and a BatchguardWarning says so. A crash mid-replay leaves the
    entries of unfinished batches in the queue (replay them again: at-least-once).

    Entries of input lines that did not parse (the ``batchguard`` command dead-letters them
    with InputParseError, the raw text as payload) are not fed to ``fn``: they stay, are counted
    in ``report.parse_skipped``, and a BatchguardWarning says so; ``include_parse_errors=True``
    replays their raw text. Entries of records their check blocked (stage "validate") are
    not fed to ``fn`` either: they stay, are counted in ``report.blocked_skipped``, and a
    BatchguardWarning says so; ``validate=check`` checks every replayed record first, as a full
    run does -- one still blocked stays with its new issues, one now valid runs. The report
    names each record by its entry's record id, index and batch, and a record that fails again
    keeps the error it first failed with in its :class:`ReplayedRecordError` (and in its
    entry's attempt history).

    Entries stored as ``pickle`` (runs with ``pickle_payloads=True``) are loaded only with
    ``allow_pickle=True``: loading a pickle runs whatever code it names, and anyone who can
    write to the queue (a shared Redis, PostgreSQL table or file) can put one there. Without
    it they are not loaded, not run and stay in the queue; the other entries are replayed,
    then :class:`~batchguard.errors.PickleNotAllowedError` says how many were left and why,
    with the :class:`ReplayReport` as its ``report`` attribute.

    Entries of a resumable job keep the job's totals right: each one marked replayed
    moves from the job's ``failed`` to its ``succeeded`` (``job_status``), in the job store
    ``store`` (a URL or a JobStore), by default the DLQ's own database when it holds the job
    store, which is where a job given no ``dlq`` keeps its dead letters. Pass ``store`` when
    the job's DLQ is elsewhere (``dlq retry --store``); a replay that cannot find the store
    leaves the totals as they were, and resuming the job then reports the missing entries.

    >>> from batchguard import MemoryDLQ, run_batches, RetryPolicy
    >>> q = MemoryDLQ()
    >>> _ = run_batches([1, 0, 2], lambda x: 10 // x, dlq=q, retry=RetryPolicy(max_attempts=1))
    >>> q.count()
    1
    >>> report = replay(q, lambda x: x, retry=RetryPolicy(max_attempts=1))
    >>> report.replayed, report.kept, q.count(), q.count(status="replayed")
    (1, 0, 0, 1)
    """
    wanted = check_filters(filters)
    chosen_status = check_status(status)
    if wanted.get("error_class") not in (None, *(c.value for c in ErrorClass)):
        # A queue may be asked for any value; replaying nothing for a typo is a surprise.
        raise ConfigError(f"error_class must be one of {', '.join(c.value for c in ErrorClass)}; "
                          f"got {wanted['error_class']!r}")
    check_flag("allow_pickle", allow_pickle)
    check_flag("include_parse_errors", include_parse_errors)
    wanted_ids = None if ids is None else unique_ids(ids, "replay")
    if wanted_ids is not None and wanted:
        raise ConfigError(f"replay takes ids or filters, not both (got ids and {', '.join(wanted)}): "
                          "the ids name the entries already")
    queue = open_dlq(dlq)
    jobs: JobStore | None = None
    own_jobs = False
    try:
        chosen = None if wanted_ids is None else _entries_named(queue, wanted_ids, chosen_status)
        jobs, own_jobs = replay_store(queue, store)
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        replayer = _Replayer(queue, wanted, size, jobs, allow_pickle=allow_pickle,
                             include_parse_errors=include_parse_errors, recheck=validate is not None,
                             status=chosen_status,
                             chosen=chosen, by=by)
        replayer.run_id = run_id = new_run_id()
        # pickle_payloads: the engine's own entries are never stored, so no repr warning for them.
        plan = make_plan(replayer.records(), fn, batch_size=size, concurrency=concurrency,
                         retry=retry, classifier=classifier, breaker=None, dlq=queue, id_of=None,
                         on_progress=on_progress, success_threshold=None, max_failures=None,
                         stage=REPLAY_STAGE, engine=engine, pickle_payloads=True, validate=validate,
                         results=replayer.successes)
        plan, tally = guard_full(plan)
        replayer.batch_size = plan.config.batch_size
        report = finish_full(execute(plan, run_id=run_id, sink=replayer), tally)
    finally:
        if own_jobs and jobs is not None:
            jobs.close()
        if isinstance(dlq, str):
            queue.close()
    warn_left(not_replayable=replayer.not_replayable, parse_skipped=replayer.parse_skipped,
              undo_skipped=replayer.undo_skipped, blocked_skipped=replayer.blocked_skipped)
    values = {f.name: getattr(report, f.name) for f in dataclasses.fields(BatchReport)}
    values["successful"] = replayer.successes.successful()
    if values["_failures"] is not None:
        values["_failures"] = ReplayedFailures(values["_failures"], replayer.replayed)
    result = ReplayReport(**values, removed=replayer.removed, kept=replayer.kept,
                          not_replayable=replayer.not_replayable,
                          pickle_refused=replayer.pickle_refused,
                          parse_skipped=replayer.parse_skipped,
                          blocked_skipped=replayer.blocked_skipped,
                          jobs_updated=tuple(sorted(replayer.jobs_updated)))
    if replayer.pickle_refused:
        refused = PickleNotAllowedError(
            f"{replayer.pickle_refused} dead letters store their record as pickle and were not "
            "replayed: they stay in the queue. Loading a pickle runs code, and anyone who can write "
            "to the queue (a shared Redis, PostgreSQL table or file) could have put it there. If "
            "you trust every writer of this queue, replay them with allow_pickle=True (`batchguard "
            f"dlq retry --allow-pickle`). The other entries were replayed: {result.removed} "
            f"succeeded, {result.kept} failed again (this error's .report has the details)")
        refused.report = result
        raise refused
    return result


def _entries_named(queue: DeadLetterQueue, ids: list[str], status: str | None) -> list[DeadLetter]:
    """The entries ``ids`` names, in that order; every id must name one with ``status``."""
    found = {entry_id: queue.get(entry_id) for entry_id in ids}
    unknown = [entry_id for entry_id, entry in found.items() if entry is None]
    if unknown:
        raise not_found(unknown, "replay")
    entries = [entry for entry in found.values() if entry is not None]
    other = [entry for entry in entries if status is not None and entry.status != status]
    if other:
        named = ", ".join(f"{e.id} ({e.status}" + (f": {e.status_reason}" if e.status_reason else "") + ")"
                          for e in other[:5]) + (", ..." if len(other) > 5 else "")
        raise ConfigError(f"replay: {len(other):,} of the entries named are not {status}: {named}; pass "
                          "status='all' (--status all) to replay them anyway")
    return entries
