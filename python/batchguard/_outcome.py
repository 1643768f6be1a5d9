"""What both engines report to: the failure log, DLQ sends, progress, the batch log line.

An engine produces events (a batch is final, the breaker moved) and counter snapshots; the
:class:`RunRecorder` turns them into DLQ entries, ``batch_complete`` log lines, progress
callbacks and, at the end, the :class:`BatchReport`. Because both engines feed the same
recorder, they cannot differ in how results are presented, only in the outcomes themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ._native import DELIVERY_ATTEMPTS, ActiveBatch, BatchEvent, BreakerEvent, Counters, RetryEvent
from ._run.entries import EntryBuilder
from ._run.failures import DurableFailures, Failures, MemoryFailures
from ._run.retry_end import RetryEnd
from ._run.sink import DLQSend, OutcomeSink, ResultsOut
from .compensation import Outcome, RunCompensation
from .dlq.base import DeadLetterQueue, MemoryDLQ
from .dlq.sqlite import BackgroundWrites, SqliteDLQ
from .hooks import HookDispatch
from .results import BatchProgress, BatchReport, BatchStats, BatchTally, FinishedBatches
from .steering import RetryBudget, name_refusals

__all__ = ["RunRecorder", "deliver"]

logger = logging.getLogger("batchguard")

_monotonic = time.monotonic


def _stats(event: BatchEvent) -> BatchStats:
    """A batch event as the report shows it."""
    return BatchStats(event.index, event.size, event.succeeded, event.failed, event.retries,
                      event.duration, event.pending)


def deliver(sink: Any, events: list[BatchEvent | BreakerEvent | RetryEvent], counters: Counters) -> None:
    """``sink.events(events, counters)``, where the sink removes each event it has handled.

    DESIGN §4: an interrupt flushes what was dead-lettered. A KeyboardInterrupt (any
    BaseException that is not an Exception) raised while the sink persists a batch leaves that
    batch and the later ones in ``events``: they are handed over again, then the interrupt is
    re-raised. An Exception (a broken DLQ) propagates at once, and the events it left are
    dropped, as the native engine drops them: an entry counts as stored only once ``send``
    returned, and the run fails with that error.
    """
    interrupted: BaseException | None = None
    # Interrupts in a row that may cut a delivery short before it is given up (the native
    # engine's bound, one source): the first Ctrl-C still flushes what was dead-lettered; a
    # user who keeps pressing it (a DLQ that hangs) gets out.
    for _ in range(DELIVERY_ATTEMPTS):
        try:
            sink.events(events, counters)
        except Exception:
            events.clear()
            if interrupted is not None:
                raise interrupted from None
            raise
        except BaseException as exc:
            if not events:
                raise
            if interrupted is None:
                interrupted = exc
            continue
        break
    if interrupted is not None:
        raise interrupted


class RunRecorder:
    """Receives an engine's events, persists dead letters, reports progress, builds the report.

    It is only ever called from the thread that called ``run_batches``.
    """

    def __init__(self, *, run_id: str, job_id: str | None, stage: str,
                 dlq: DeadLetterQueue | None, on_progress: Callable[[BatchProgress], Any] | None,
                 total: int | None, batch_size: int, id_of: Callable[[Any], Any] | None,
                 pickle_payloads: bool, sink: OutcomeSink | None = None,
                 reopen_dlq: Callable[[], DeadLetterQueue] | None = None,
                 expected_total: int | None = None, hooks: HookDispatch | None = None) -> None:
        """``sink`` is where each batch's entries go (a job's checkpoint, a replay); by default
        one ``send`` to ``dlq``. ``reopen_dlq`` opens ``dlq`` again after the run closed it (see
        ``Plan.reopen_dlq``): the report reads entries past its in-memory sample through it.
        ``expected_total`` (``total=`` for an input without a length) is for progress only:
        the report counts the records actually read. ``hooks``: the run's lifecycle hooks
        (``batchguard.hooks``), each event passed on once it is handled. ``compensation``: the
        run's (``batchguard.compensation``), set by :meth:`use_compensation`."""
        self.run_id = run_id
        self.job_id = job_id
        self.stage = stage
        self.dlq = dlq
        self.on_progress = on_progress
        self.total = total
        self.batch_size = batch_size
        if sink is None and dlq is not None:
            sink = DLQSend(dlq)
        self.sink = sink
        self._every_batch = sink is not None and sink.every_batch
        # A plain run into SQLite writes each batch while the engine runs the next one (the
        # fsync of synchronous=FULL costs milliseconds); finish_writes() waits for the last.
        # Not with hooks that may read the DLQ at a batch's end, where its entries are stored
        # (a user's may; metrics and alerts never do: reads_dlq = False).
        self._writes: BackgroundWrites | None = (
            dlq.background_writes()
            if isinstance(sink, DLQSend) and isinstance(dlq, SqliteDLQ)
            and (hooks is None or not hooks.reads_dlq) else None)
        self.compensation: RunCompensation | None = None
        # Fallbacks and max_elapsed cuts (``_run.retry_end``), set by the run when a policy has one.
        self.retry_end: RetryEnd | None = None
        # A retry budget that dead-letters what it refuses: its records are named at batch end.
        self.refusing_budget: RetryBudget | None = None
        self.results: ResultsOut | None = None
        self._results_last = -1  # the batch last written to ``results``
        self._last_compensated: tuple[int, BatchEvent] | None = None
        self.entries = EntryBuilder(run_id=run_id, job_id=job_id, stage=stage, id_of=id_of,
                                    pickle_payloads=pickle_payloads)
        self.failures: Failures
        if dlq is None or sink is None or isinstance(dlq, MemoryDLQ):
            self.failures = MemoryFailures(self.entries)
        else:
            self.failures = DurableFailures(self.entries, dlq, reopen=reopen_dlq,
                                            elsewhere=sink.entries_stored_elsewhere)
        self._stats: list[BatchTally] = []
        self.expected_total = expected_total
        # A display that draws at its own pace (progress_every_batch = False: the CLI's, the
        # adapters of batchguard.progress) gets a snapshot at most every progress interval,
        # not one per batch end; the engines read this attribute.
        self.progress_every_batch = getattr(on_progress, "progress_every_batch", True) is not False
        self._reported = 0  # the batches in self._stats some snapshot already listed as finished
        # The adaptive concurrency limit of the latest snapshot (None: a fixed concurrency).
        self._concurrency_limit: int | None = None
        self.breaker_events: list[tuple[float, str, str]] = []
        self.breaker_state = "closed"
        self._classifier_raised: set[tuple[str, str]] = set()  # (its error, what it classified)
        self._persist_failed: Exception | None = None  # what the DLQ or job store raised, if it did
        self.dlq_count = 0
        self.started = time.monotonic()
        self._log_batches = logger.isEnabledFor(logging.INFO)
        self.hooks = hooks
        if hooks is not None:
            hooks.run_started(run_id, stage, job_id)

    # ------------------------------------------------------------------ engine callbacks

    def events(self, events: list[BatchEvent | BreakerEvent | RetryEvent], counters: Counters) -> None:
        """Handle an engine's events, removing each from ``events`` once it is handled: when
        an interrupt cuts this short, what is left is still in the list, and the engine hands
        it back (:func:`deliver`)."""
        # Runs at every batch end: kept lean, details are built only when someone reads them.
        # The handled events are removed at the end (however it ends) in one slice: removing
        # them one by one from the front would cost quadratic time when many have piled up.
        handled = 0
        hooks = self.hooks
        try:
            for event in events:
                if isinstance(event, RetryEvent):
                    pass  # only a run with an on_retry hook gets these: they are the hook's
                elif isinstance(event, BatchEvent):
                    own = event  # as the engine ended it: fn's own successes
                    if event.dead and self.retry_end is not None:
                        event = self.retry_end.batch(event)
                    if event.dead and self.refusing_budget is not None:
                        event = name_refusals(event, self.refusing_budget)
                    if self.compensation is not None:
                        event = self._compensate(event, own)
                    if self.results is not None and event.index != self._results_last:
                        self._write_results(event)  # before its checkpoint (interfaces.md)
                    if event.dead or self._every_batch:
                        self._persist(event)
                    # not the dead records: they are persisted
                    self._stats.append((event.index, event.size, event.succeeded, event.failed,
                                        event.retries, event.duration, event.pending))
                    if self._log_batches:
                        self._log_batch(event, counters)
                else:
                    at, old, new = event.at, event.from_state, event.to_state
                    self.breaker_events.append((at, old, new))
                    self.breaker_state = new
                    logger.warning("circuit breaker %s -> %s", old, new,
                                   extra={"run_id": self.run_id, "breaker_from": old, "breaker_to": new,
                                          "at_s": at})
                handled += 1
                # After the event counts as handled: an interrupt in a hook must not hand a
                # persisted batch over again.
                if hooks is not None:
                    hooks.event(event, self.entries.dead_letter)
        finally:
            del events[:handled]
        if hooks is not None:
            hooks.counters(counters)
        # Between two due snapshots of a display that draws at its own pace, a batch end
        # hands no open batches: nothing to pass on (its stats go out with the next one).
        if self.on_progress is not None and (counters.batches is not None or self.progress_every_batch):
            self.progress(counters)

    def _persist(self, event: BatchEvent) -> None:
        if self._persist_failed is not None:
            # The DLQ (or job store) failed once: the run is failing with that error. Trying it
            # again for every batch a worker still finishes would only add its timeout each
            # time (40 s for a Redis server that hangs, times the workers of an async run).
            raise self._persist_failed
        try:
            self._persist_batch(event)
        except Exception as exc:
            self._persist_failed = exc
            raise

    def _persist_batch(self, event: BatchEvent) -> None:
        dead = event.dead or ()
        if self.sink is None:  # no DLQ: the report keeps the dead records themselves
            self.failures.add(dead, ())
            return
        entries = [self.entries.dead_letter(record) for record in dead]
        if self._writes is not None:
            self._writes.send(entries)  # returns once the previous batch is durable
        else:
            self.sink.batch_done(_stats(event), entries)
        # Counted once the sink returned: an interrupt inside it hands this batch over again.
        self.dlq_count += len(entries)
        self.failures.add(dead, entries)

    def use_compensation(self, compensation: RunCompensation) -> None:
        """Compensate each batch as it ends (``batchguard.compensation``). Its entries are then
        written before the batch end returns: an abort's undos may dead-letter after the run."""
        self.compensation = compensation
        self._writes = None

    def _compensate(self, event: BatchEvent, own: BatchEvent) -> BatchEvent:
        """The batch once compensated (``own``: as the engine ended it); one handed over again
        after an interrupt gets the same outcome (its undos ran once)."""
        assert self.compensation is not None
        last = self._last_compensated
        if last is not None and last[0] == event.index:
            return last[1]
        compensated, outcomes = self.compensation.batch_end(event, own)
        self._last_compensated = (event.index, compensated)
        keep: Callable[[int, list[Outcome]], Any] | None = getattr(self.sink, "batch_outcomes", None)
        if keep is not None and self.compensation.spec.keep_outcomes:
            keep(event.index, outcomes)  # kept with the batch's checkpoint (a job's keep_outcomes)
        return compensated

    def run_ended(self, stop_reason: str | None) -> None:
        """The run's end, before its report: an aborted run with ``on_abort="compensate"``
        undoes what it did; each undo that failed is dead-lettered (stage "compensate")."""
        if self.compensation is None:
            return
        compensation = self.compensation
        undone = getattr(self.sink, "batches_undone", None)
        for event in compensation.run_ended(stop_reason):  # each batch recorded as it is undone
            for n, (i, size, ok, bad, retries, duration, pending) in enumerate(self._stats):
                if i == event.index:  # its undone records are no longer succeeded
                    self._stats[n] = (i, size, ok - event.succeeded - event.failed, bad + event.failed,
                                      retries, duration, pending)
            if event.dead:  # before the job forgets the undone records: their entries first
                self._persist(event)
                if self.hooks is not None:
                    self.hooks.dead_letters(event, self.entries.dead_letter)
            if undone is not None:
                # a job forgets the undone records' outcomes and reopens the batches undone whole
                undone({event.index: compensation.undone_on_abort[event.index]}, compensation.reopen_on_abort,
                       event.failed)
        if self.compensation.interrupted is not None:  # Ctrl-C in an undo: raised once recorded
            raise self.compensation.interrupted

    def use_results(self, out: ResultsOut) -> None:
        """Write each batch's successful values to ``out`` as the batch ends (``results=`` a
        sink), before its dead letters and its checkpoint; :meth:`finish_writes` closes it."""
        self.results = out

    @property
    def checkpoints(self) -> bool:
        """Does every batch end reach a checkpoint (a job)? Its results writes are then synced."""
        return self._every_batch

    def _write_results(self, event: BatchEvent) -> None:
        assert self.results is not None
        if self._persist_failed is not None:
            raise self._persist_failed  # the run is failing with that error (see _persist)
        try:
            self.results.batch(event, self.entries.dead_letter)
        except Exception as exc:
            self._persist_failed = exc
            raise
        # Handed over again after an interrupt that came before the batch counted as handled:
        # written once, not twice.
        self._results_last = event.index

    def finish_writes(self, *, failing: bool = False) -> None:
        """Wait until every entry handed to the DLQ is durable, and close the results sink;
        the run calls it before it returns or raises. ``failing``: the run is raising already,
        so a write's error is logged rather than raised in place of the run's own."""
        results, self.results = self.results, None
        if results is not None:
            try:
                results.close()
            except Exception as exc:
                if not failing:
                    raise
                logger.error("the results sink of run %s may not hold the last values: %s",
                             self.run_id, exc, extra={"run_id": self.run_id})
        if self._writes is None:
            return
        try:
            self._writes.finish()
        except Exception as exc:
            if not failing:
                raise
            logger.error("the last dead letters of run %s may not be stored: %s", self.run_id, exc,
                         extra={"run_id": self.run_id})

    def _log_batch(self, event: BatchEvent, counters: Counters) -> None:
        logger.info("batch_complete", extra={
            "run_id": self.run_id, "job_id": self.job_id, "stage": self.stage,
            "batch_index": event.index, "batch_size": event.size, "batch_success": event.succeeded,
            "batch_failure": event.failed, "batch_retries": event.retries,
            "batch_pending": event.pending, "duration_s": round(event.duration, 6),
            "total_processed": counters.succeeded + counters.failed,
            "total_records": self.total,
        })

    @property
    def batches(self) -> list[BatchStats]:
        return sorted((BatchStats(*tally) for tally in self._stats), key=lambda b: b.batch_index)

    def progress(self, counters: Counters) -> None:
        """A snapshot for ``on_progress``: the counters, the open batches the engine counted
        for it, and the batches finished since the previous snapshot."""
        if self.on_progress is None:
            return
        c = counters
        if c.batches is None and not self.progress_every_batch:
            return  # a batch end between two due snapshots: its stats go out with the next one
        processed = c.succeeded + c.failed
        total = self.total if self.total is not None else self.expected_total
        if total is not None:
            # A total= smaller than the input is raised to what was read: never past 100 %.
            total = max(total, processed + c.retrying + c.in_flight + c.queued)
        fallbacks = 0 if self.retry_end is None else self.retry_end.count  # the engine counts them failed
        self._concurrency_limit = c.concurrency_limit  # the final snapshot shows the last one
        self._snapshot(c.batches_completed, c.current_batch, c.succeeded + fallbacks, c.failed - fallbacks,
                       c.retrying, c.in_flight, c.queued, total, c.breaker_state, c.batches or (), final=False)

    def final_progress(self, *, succeeded: int, failed: int, read: int, exhausted: bool) -> None:
        """The last snapshot, once the run has ended (``final=True``): the batches the end
        closed, and, when the input ran out, the total of the records actually read (a
        ``total=`` that said more is corrected)."""
        if self.on_progress is None:
            return
        if self.retry_end is not None:  # the engine counted the fallbacks failed
            succeeded, failed = succeeded + self.retry_end.count, failed - self.retry_end.count
        total = self.total if self.total is not None else self.expected_total
        if total is not None and exhausted:
            total = read  # a total= that said more (or less) is corrected; no total stays None
        completed = sum(1 for tally in self._stats if not tally[6])  # no record left pending
        current = max((tally[0] for tally in self._stats), default=0)
        self._snapshot(completed, current, succeeded, failed, 0, 0, 0,
                       None if total is None else max(total, read), self.breaker_state, (),
                       final=True, input_done=exhausted and succeeded + failed == read)

    def _snapshot(self, completed: int, current: int, succeeded: int, failed: int, retrying: int,
                  in_flight: int, queued: int, total: int | None, breaker: str,
                  batches: tuple[ActiveBatch, ...], *, final: bool, input_done: bool = False) -> None:
        assert self.on_progress is not None
        processed = succeeded + failed
        if self.compensation is not None:  # undone records are compensated, no longer succeeded
            undone = self.compensation
            succeeded -= undone.compensated + undone.undo_failed
            failed += undone.undo_failed
        # Each finished batch goes out in exactly one snapshot, so an adapter can draw its
        # final row; built here, at snapshot time, from what the recorder keeps anyway.
        finished = FinishedBatches(self._stats[self._reported:])
        self._reported = len(self._stats)
        batches_total = None if total is None else -(-total // self.batch_size)
        self.on_progress(BatchProgress(
            completed, batches_total, current, processed, succeeded, failed, retrying,
            in_flight, queued, _monotonic() - self.started, total, breaker, batches, finished,
            self.batch_size, final, input_done, self._concurrency_limit))

    def classifier_error(self, exc: BaseException, error: BaseException) -> None:
        kind = (type(error).__name__, type(exc).__name__)
        if kind in self._classifier_raised:  # once per kind and run, not once per failure
            return
        self._classifier_raised.add(kind)
        logger.error("classifier raised %s while classifying %s; the record is PERMANENT (and "
                     "so is every %s it raises %s for in this run)", *kind, kind[1], kind[0],
                     extra={"run_id": self.run_id})

    # ------------------------------------------------------------------ the report

    def report(self, *, succeeded: int, failed: int, read: int, exhausted: bool,
               retries: int, successful: list[Any], stop_reason: str | None, breaker_trips: int,
               success_threshold: float | None, skipped_batches: int = 0,
               skipped_records: int = 0, max_failures: int | float | None = None) -> BatchReport:
        """``read`` counts the records this run took on (skipped batches excluded);
        ``success_threshold`` and ``max_failures`` are what the run was judged against."""
        if exhausted or self.total is None:
            total = read
        else:
            total = max(self.total, read)
        fallbacks = 0
        if self.retry_end is not None:  # the engine counted the fallbacks failed
            fallbacks = self.retry_end.count
            succeeded, failed = succeeded + fallbacks, failed - fallbacks
            successful = self.retry_end.successful(successful, self._stats, self.batch_size)
        compensated = rolled_back = 0
        if self.compensation is not None:
            undone = self.compensation
            compensated, rolled_back = undone.compensated, undone.rolled_back
            succeeded -= undone.compensated + undone.undo_failed
            failed += undone.undo_failed
            successful = undone.successful(successful)
        pending = total - succeeded - failed - compensated
        if stop_reason is not None:
            status = "aborted"
        elif succeeded == total:
            status = "complete"
        elif success_threshold is None or succeeded / total >= success_threshold:
            status = "partial_success"
        else:
            status = "failed"
        return BatchReport(
            run_id=self.run_id,
            status=status,
            total=total,
            success_count=succeeded,
            failure_count=failed,
            pending_count=pending,
            retry_count=retries,
            successful=successful,
            duration_s=time.monotonic() - self.started,
            breaker_trips=breaker_trips,
            dlq_count=self.dlq_count if self.dlq is not None else failed + rolled_back,
            stage=self.stage,
            job_id=self.job_id,
            stopped_reason=stop_reason,
            skipped_batches=skipped_batches,
            breaker_events=self.breaker_events,
            success_threshold=success_threshold,
            max_failures=max_failures,
            fallback_count=fallbacks,
            _failures=self.failures,
            _batch_events=self._stats,
            compensated_count=compensated,
        )
