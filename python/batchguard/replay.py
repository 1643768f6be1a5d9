"""``batchguard.replay``: run dead-lettered records again, once their cause is fixed."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

from ._checks import check_duration, check_flag
from ._replay_claims import Claims, swapper
from ._replay_left import PARSE_ERROR, is_blocked_entry, is_failed_undo, is_unparsed_line, warn_left
from ._replay_report import ReplayedFailures, ReplayedRecordError, ReplayReport, Successes
from ._run.entries import new_run_id
from ._run.execute import execute
from ._run.plan import DEFAULT_BATCH_SIZE, make_plan
from ._stored import REPORT_SAMPLE
from .dlq.base import Attempt, DeadLetter, DeadLetterQueue, MemoryDLQ, StatusChange, check_filters, matches, select
from .dlq.status import (
    ALL,
    CLAIMED,
    DEFAULT_LEASE_S,
    DEFAULT_STATUS,
    MIN_LEASE_S,
    check_status,
    claim_of,
    new_change,
    not_found,
    refuse_claimed,
    unclaimed,
    unique_ids,
    with_change,
)
from .dlq.urls import open_dlq
from .errors import ConfigError, PickleNotAllowedError
from .jobs.store import JobStore, replay_store
from .policies import Classifier, ErrorClass, ErrorKey, RetryPolicies, RetryPolicy
from .results import BatchProgress, BatchReport, BatchStats
from .validation.full import finish_full, guard_full

__all__ = ["PARSE_ERROR", "ReplayReport", "ReplayedRecordError", "is_blocked_entry", "is_unparsed_line", "replay"]

logger = logging.getLogger("batchguard")

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
    queue are marked ``replayed`` instead, kept for the audit trail -- where the replay still
    holds them, in the store's transaction when the queue shares its database, as their removal
    was. Everything else (the database, its transaction) is the queue's own."""

    def __init__(self, queue: DeadLetterQueue, claims: Claims, change: StatusChange) -> None:
        self._queue = queue
        self._claims = claims
        self._change = change
        self.done: dict[str, tuple[bool, DeadLetter]] = {}

    def remove(self, ids: Iterable[str]) -> int:
        mark = functools.partial(with_change, change=self._change)
        settled = self._claims.settle(dict.fromkeys(ids, mark))
        self.done.update(settled)
        return len(settled)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class _Replayer:
    """Feeds the matching entries' records to the engine and applies each batch's outcome (the
    run's ``OutcomeSink``).

    Entries are read a page at a time while the queue changes under the reader: every backend
    keeps an upserted entry at the place of its first send, so the next unread entry sits at
    (entries read) - (entries that left the filtered view), and one lock keeps that count and
    the queue in step. Each page is claimed before its records run (``_replay_claims``): an
    entry another replay holds is left to it, and counts as gone from the view.
    """

    every_batch = True  # a batch without failures still removes the entries that succeeded
    # Read by the run's report, which cannot find this run's failures under its own run id.
    entries_stored_elsewhere = ("a replay writes each failure back into the entry it replayed (same "
                                "id and run_id, attempt history extended): list them from the DLQ "
                                "with the filters given to replay()")

    def __init__(self, queue: DeadLetterQueue, wanted: dict[str, Any], page: int,
                 jobs: JobStore | None = None, *, allow_pickle: bool = False,
                 include_parse_errors: bool = False, recheck: bool = False, status: str | None = DEFAULT_STATUS,
                 chosen: Sequence[DeadLetter] | None = None, by: str | None = None, run_id: str,
                 lease_s: float = DEFAULT_LEASE_S, reclaim: bool = False) -> None:
        self.queue = queue
        self.status = ALL if status is None else status
        # The view the replay pages through: an entry whose new status or error takes it out
        # shifts the next page's offset.
        self.view = select(wanted, status)
        self.chosen = chosen
        self.by = by
        self.run_id = run_id  # the replay's run id, for its claims and the status changes' reason
        self.claims = Claims(swapper(queue), run_id, by=by, lease_s=lease_s, reclaim=reclaim, view=self.view)
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
        self.lock = threading.RLock()  # batch_done's settling calls _remember under it
        self.read = 0
        self.left_view = 0
        self.originals: dict[int, DeadLetter] = {}
        self.removed = 0
        self.kept = 0
        self.not_replayable = 0
        self.successes = Successes()
        # Entries sent while we replay (by anyone) go last: stop at what matched at the start.
        self.budget = len(chosen) if chosen is not None else queue.count(status=self.status, **wanted)

    def _pages(self) -> Iterator[list[DeadLetter]]:
        """The entries to run, a page at a time, each page claimed: the view's entries, then
        the stale claims of replays that died holding entries of the view."""
        if self.chosen is not None:
            for start in range(0, len(self.chosen), self.page):
                yield self._claim(self.chosen[start:start + self.page], in_view=False)
            return
        while self.budget > 0:
            with self.lock:
                entries = self.queue.list(limit=min(self.page, self.budget),
                                          offset=self.read - self.left_view, status=self.status,
                                          **self.wanted)
                self.read += len(entries)
                if not entries:
                    break
                self.budget -= len(entries)
                taken = self._claim(entries, in_view=True)
            yield taken
        if self.status == ALL:
            return  # the view had the claimed entries in it: the stale ones were among them
        # After the view is read through: reopened here, such an entry may sit before the
        # view's read position, which only counts the view's own entries.
        stale: list[DeadLetter] = []
        now = datetime.now(UTC)
        for entry in self.queue.iter(status=CLAIMED, **self.wanted):
            claim = claim_of(entry)
            if claim is None or claim.run_id == self.run_id or not matches(unclaimed(entry), self.view):
                continue
            if self.claims.takes_over(claim, now):
                stale.append(entry)
            else:
                self.claims.elsewhere += 1  # a live replay holds it: its own
        for start in range(0, len(stale), self.page):
            yield self._claim(stale[start:start + self.page], in_view=False)

    def _claim(self, entries: Sequence[DeadLetter], *, in_view: bool) -> list[DeadLetter]:
        """Claim the entries of a page whose records can run; the others are counted and left."""
        runnable = [entry for entry in entries if self._runnable(entry)]
        taken, left = self.claims.take(runnable, in_view=in_view)
        self.left_view += left
        return taken

    def _runnable(self, entry: DeadLetter) -> bool:
        if not self.include_parse_errors and is_unparsed_line(entry):
            self.parse_skipped += 1  # raw text, not a record: never fed to fn unless asked
            return False
        if not self.recheck and is_blocked_entry(entry):
            self.blocked_skipped += 1  # fn never ran on it: not without a check
            return False
        if is_failed_undo(entry):
            self.undo_skipped += 1  # {record, value} of an undo that failed: not fn's to run
            return False
        # Decided by the encoding: the record itself is decoded once, from the entry as claimed.
        if entry.payload_encoding == "pickle" and self.allow_pickle is not True:
            self.pickle_refused += 1  # never loaded, never run: the entry stays
            return False
        if entry.payload_encoding not in ("json", "pickle"):
            self.not_replayable += 1  # a repr: it cannot be turned back into the record
            return False
        return True

    def records(self) -> Iterator[Any]:
        index = 0
        for entries in self._pages():
            for entry in entries:
                try:  # as claimed: a send since the page was read may have changed it
                    record = entry.record(allow_pickle=self.allow_pickle)
                except Exception as exc:  # noqa: BLE001 - given back, left as it is
                    if isinstance(exc, PickleNotAllowedError):
                        self.pickle_refused += 1
                    else:  # a repr, or a pickle that no longer loads
                        self.not_replayable += 1
                    self.claims.settle({entry.id: lambda e: e}, ran=False)
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
        updates: dict[str, Callable[[DeadLetter], DeadLetter]] = {}
        places: dict[str, int] = {}
        removals: list[DeadLetter] = []
        for index in range(first, first + stats.size):
            original = self.originals.pop(index, None)
            if original is None:
                continue
            if index in failed:
                updates[original.id] = functools.partial(_extended, again=failed[index], reopen=reopened)
                places[original.id] = index
            elif self.successes.take(index):
                removals.append(original)  # also in a batch the run stopped in: it ran, once
            # else: the run stopped inside this batch before running it: given back at the end.
        with self.lock:
            done = self.claims.settle(updates)
            self.kept += len(done)
            for entry_id, (_, entry) in done.items():
                self._remember(places[entry_id], entry)
            if removals:
                marker = _MarkReplayed(self.queue, self.claims, replayed)
                if self.jobs is not None:
                    # The job store takes the change too: its totals move with it, atomically if it can.
                    try:
                        self.jobs.commit_replayed(removals, cast("DeadLetterQueue", marker))
                    except BaseException:
                        # Rolled back with the store's transaction: still claimed, so given back.
                        self.claims.hold({entry_id: out for entry_id, (out, _) in marker.done.items()})
                        raise
                    self.jobs_updated.update(e.job_id for e in removals if e.job_id is not None)
                else:
                    marker.remove([e.id for e in removals])
                self.removed += len(marker.done)
                done.update(marker.done)
            # The view's count before the read position: claiming took an entry out of it (when
            # the view has one status), and its final status and error may put it back.
            for out, entry in done.values():
                inside = matches(entry, self.view)
                self.left_view += (not out and not inside) - (out and inside)


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
    lease: float = DEFAULT_LEASE_S,
    reclaim: bool = False,
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
    ``report.not_replayable``, and a BatchguardWarning says so.

    Two replays of one queue at once (two processes, two threads) never run one entry twice:
    before its records run, a page of entries is claimed in one atomic step of the queue
    (status ``replaying``, naming this replay's run id; ``dlq list --status replaying`` shows
    them), and an entry another running replay holds is left to it (counted in
    ``report.held_elsewhere``). The replay renews its claims every third of ``lease`` seconds
    (default 60) and gives back, however it ends (a FATAL error, Ctrl-C), those it did not
    run. A replay killed outright leaves its claims, which go stale once ``lease`` passes
    unrenewed: the next replay takes them over and runs their records (at least once: the
    killed one may have run some). ``lease`` is at least 1 s; whether a claim is stale is judged
    by the clock of the replay that finds it, so replays on machines whose clocks differ by more
    than ``lease`` may run an entry twice: keep the clocks in step (NTP) or the lease longer.
    ``reclaim=True`` takes over at once every claim made or last renewed before this replay
    started: a killed replay's, and a running replay's not renewed since (every third of its
    lease), so use it only when you know that replay is gone; a claim made or renewed after
    this replay started is left to its replay. Skipping a claimed entry (``resolve``, ``dlq skip``) is refused while the
    claim is live, unless forced; a forced skip wins, and this replay leaves the entry as it was
    set (counted in ``report.claims_lost``).

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
    if chosen_status == CLAIMED:
        raise ConfigError(f"replay selects entries by the status they have outside a replay (open, resolved, "
                          f"replayed or all): {CLAIMED} entries are held by a running replay, and one whose "
                          "replay is gone is taken over by the next replay of its own status (reclaim=True, "
                          "--reclaim: at once)")
    check_flag("reclaim", reclaim)
    lease = check_duration("lease", lease, positive=True)
    if lease < MIN_LEASE_S:
        raise ConfigError(f"lease must be at least {MIN_LEASE_S:g} s, got {lease:g}: a claim is renewed every "
                          "third of its lease, and one shorter than a renewal's round trip goes stale while "
                          "its replay runs, so another replay takes it over and runs its records too")
    wanted_ids = None if ids is None else unique_ids(ids, "replay")
    if wanted_ids is not None and wanted:
        raise ConfigError(f"replay takes ids or filters, not both (got ids and {', '.join(wanted)}): "
                          "the ids name the entries already")
    queue = open_dlq(dlq)
    jobs: JobStore | None = None
    own_jobs = False
    replayer: _Replayer | None = None
    try:
        chosen = None if wanted_ids is None else _entries_named(queue, wanted_ids, chosen_status, reclaim)
        jobs, own_jobs = replay_store(queue, store)
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        run_id = new_run_id()
        replayer = _Replayer(queue, wanted, size, jobs, allow_pickle=allow_pickle,
                             include_parse_errors=include_parse_errors, recheck=validate is not None,
                             status=chosen_status, chosen=chosen, by=by, run_id=run_id, lease_s=lease,
                             reclaim=reclaim)
        replayer.claims.start()
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
        if replayer is not None:
            _give_back(replayer.claims)
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
                          jobs_updated=tuple(sorted(replayer.jobs_updated)),
                          held_elsewhere=replayer.claims.elsewhere, claims_lost=replayer.claims.lost)
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


def _give_back(claims: Claims) -> None:
    """Stop renewing the replay's claims and give back those it holds (never run): on every
    exit path. A queue that fails now must not hide the error the replay is raising: the
    claims then go stale, and the next replay takes them over."""
    claims.stop()
    try:
        claims.release()
    except Exception:  # logged: the claims expire with their lease
        logger.warning("replay %s could not give back its claims: they go stale after their lease "
                       "(%g s), then the next replay takes them over", claims.run_id, claims.lease_s,
                       exc_info=True, extra={"run_id": claims.run_id})


def _entries_named(queue: DeadLetterQueue, ids: list[str], status: str | None, reclaim: bool) -> list[DeadLetter]:
    """The entries ``ids`` names, in that order; every id must name one with ``status`` (a
    stale claim counts as the status it had before), and none may be held by a live replay."""
    found = {entry_id: queue.get(entry_id) for entry_id in ids}
    unknown = [entry_id for entry_id, entry in found.items() if entry is None]
    if unknown:
        raise not_found(unknown, "replay")
    now = datetime.now(UTC)
    entries = [entry for entry in found.values() if entry is not None]
    held = [e for e in entries if (claim := claim_of(e)) is not None and not (reclaim or claim.stale(now))]
    if held:
        raise refuse_claimed(held, "replay", now)
    other = [entry for entry in entries if status is not None and unclaimed(entry).status != status]
    if other:
        named = ", ".join(f"{e.id} ({e.status}" + (f": {e.status_reason}" if e.status_reason else "") + ")"
                          for e in other[:5]) + (", ..." if len(other) > 5 else "")
        raise ConfigError(f"replay: {len(other):,} of the entries named are not {status}: {named}; pass "
                          "status='all' (--status all) to replay them anyway")
    return entries
