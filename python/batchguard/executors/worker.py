"""What a worker runs: :func:`run_group`, the native engine over a task's batches, one at a time.

The worker's engine applies the run's policies to each batch (retries and their backoff, the
classifier, the timeout, its share of the rate limit, the breaker over its own calls) exactly
as a local run does; the decisions that need the whole run (the error budget across tasks,
stopping, checkpoints, the report) stay with the driver. Within a task the worker carries the
error budget from batch to batch and stops after a batch that stopped, as a local run would.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from .. import _native
from .._native import BatchEvent, BreakerEvent, Counters, DeadRecord, RetryEvent
from .._run.entries import EntryBuilder
from .._run.retry_end import RetryEnd
from ..dlq.base import DeadLetter, DeadLetterQueue
from ..dlq.urls import open_dlq
from ..policies import jitter_seed_at
from ..results import BatchStats
from .grouping import MAX_TASK_SECONDS
from .splits import read_split
from .task import BatchOutcome, BatchTask

__all__ = ["release_run", "run_batch", "run_group", "stop_run"]

logger = logging.getLogger("batchguard")

# One connection per worker process, run and DLQ URL, opened by the first batch that needs it
# (opening a PostgreSQL or Redis connection per batch would cost more than the batch's sends)
# and closed by release_run when the run ends.
_queues: dict[tuple[str, str], DeadLetterQueue] = {}
_queues_lock = threading.Lock()
# The runs that stopped (stop_run) or ended (release_run), the latest STOPS_KEPT: a batch of
# theirs not yet started is not run. An ended run stays here because a task of its may still be
# running a group when the driver gives up on it (a Ctrl-C, a batch that raised): the rest of
# the group must not run for a run that is over. True once its connections are closed.
_stopped: collections.OrderedDict[str, bool] = collections.OrderedDict()

STOPS_KEPT: Final = 10_000
"""How many stopped or ended runs a worker process remembers (a run id is unique per run)."""


class _Capture:
    """The worker engine's sink: keeps the batch's events for the outcome. Progress is the
    driver's (counted from outcomes), so the engine is told nobody reads it."""

    on_progress = None
    progress_every_batch = False

    def __init__(self) -> None:
        self.batches: list[BatchEvent] = []
        self.breaker: list[tuple[float, str, str]] = []
        self._classifier_raised: set[tuple[str, str]] = set()

    def events(self, events: list[BatchEvent | BreakerEvent | RetryEvent], counters: Counters) -> None:
        for event in events:
            if isinstance(event, BatchEvent):
                self.batches.append(event)
            elif isinstance(event, BreakerEvent):
                self.breaker.append((event.at, event.from_state, event.to_state))
        del events[:]

    def progress(self, counters: Counters) -> None:
        """Not called (``on_progress`` is None); here for the engine's sink protocol."""

    def classifier_error(self, exc: BaseException, error: BaseException) -> None:
        kind = (type(error).__name__, type(exc).__name__)
        if kind not in self._classifier_raised:  # once per kind and batch, in the worker's log
            self._classifier_raised.add(kind)
            logger.error("classifier raised %s while classifying %s; the record is PERMANENT", *kind)


def _send(run_id: str, url: str, entries: Sequence[DeadLetter]) -> None:
    """Send a batch's entries on the run's connection of this process, opened by its first
    batch; once the run ended (a batch the driver gave up on still running at its end), on a
    connection of this send's own, closed after it, so none is left open for a run that is over."""
    with _queues_lock:
        queue = _queues.get((run_id, url))
        if queue is None and not _stopped.get(run_id, False):
            queue = _queues[run_id, url] = open_dlq(url)
    if queue is not None:
        queue.send(entries)
        return
    with contextlib.closing(open_dlq(url)) as once:
        once.send(entries)


def _mark(run_id: str, released: bool) -> None:
    """Remember that the run stopped (and, ``released``, that it ended); caller holds the lock."""
    _stopped[run_id] = released or _stopped.get(run_id, False)
    _stopped.move_to_end(run_id)
    while len(_stopped) > STOPS_KEPT:
        _stopped.popitem(last=False)


def release_run(run_id: str) -> int:
    """Run ``run_id`` ended (an executor calls it on every worker when the run ends, however):
    close this process's DLQ connections of it, and start none of its batches from now on (a
    task the driver gave up on may still be running a group); how many connections it closed."""
    with _queues_lock:
        queues = [_queues.pop(key) for key in [key for key in _queues if key[0] == run_id]]
        _mark(run_id, released=True)
    for queue in queues:
        queue.close()
    return len(queues)


def stop_run(run_id: str) -> None:
    """Run ``run_id`` stopped (its error budget is spent, a FATAL error, a breaker abort): this
    process runs none of its batches that have not started. The driver calls it on every
    worker (:meth:`~batchguard.executors.protocol.Executor.stop`) from the worker's own event
    loop, while a batch may be running in its task thread: that one finishes."""
    with _queues_lock:
        _mark(run_id, released=False)


def run_group(tasks: Sequence[BatchTask], max_seconds: float | None = MAX_TASK_SECONDS) -> list[BatchOutcome]:
    """Run a task's batches in order (:func:`run_batch` each), as one unit of an executor's work.

    The driver gave each batch the error budget left when the task was sent; the failures of
    the batches before it in the task are taken off it here. After a batch that stopped early
    (a FATAL error, a breaker abort, the budget spent), or once the driver said the run stopped
    (:func:`stop_run`), the rest are not run: their outcomes are missing from the list, and the
    driver leaves their records pending. Once the task has run ``max_seconds`` (None: no limit),
    the rest are not started either, the run going on: the driver sends them again."""
    outcomes: list[BatchOutcome] = []
    failed = 0
    started = time.monotonic()
    for task in tasks:
        if task.run_id in _stopped:
            break
        if outcomes and max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
        budget = task.config.max_failures
        if failed and isinstance(budget, int):
            task = replace(task, config=replace(task.config, max_failures=max(0, budget - failed)))
        outcome = run_batch(task)
        outcomes.append(outcome)
        if outcome.stop_reason is not None:
            break
        failed += outcome.stats.failed + outcome.fallbacks  # as the budget counts them
    return outcomes


def run_batch(task: BatchTask) -> BatchOutcome:
    """Run ``task.fn`` over the batch's records on the native engine; its dead records become
    DLQ entries here (sent to the DLQ here too when ``task.dlq_url`` is set).

    A ``KeyboardInterrupt`` or ``SystemExit`` raised by ``fn`` propagates (the executor then
    reports the task as failed and the driver stops the run), as it stops a local run.
    """
    started = time.monotonic()
    records = task.records if task.split is None else read_split(task.split)
    capture = _Capture()
    sink: Any = capture  # the engine reads its sink by attribute; _native.pyi names the recorder
    # The engine indexes the batch's records from 0; its jitter is keyed by the index, so the
    # seed is shifted to draw what the records draw at their places in the whole input.
    config = replace(task.config, seed=jitter_seed_at(task.config.seed, task.first_index))
    summary = _native.run(records, task.fn, config, task.classifier, sink, len(records), bulk=task.bulk)
    events = capture.batches
    values = summary.successful
    # The retry policies' batch end (fallbacks, max_elapsed's naming), as the local recorder
    # applies it: here, where the dead records and their exceptions are.
    retry_end = RetryEnd.for_config(task.config, task.run_id)
    if retry_end is not None:
        events = [retry_end.batch(event) if event.dead else event for event in events]
        values = retry_end.successful(values, [(e.index, e.size, e.succeeded, e.failed, e.retries, e.duration,
                                                e.pending) for e in events], task.config.batch_size)
    fallbacks = 0 if retry_end is None else retry_end.count
    builder = EntryBuilder(run_id=task.run_id, job_id=task.job_id, stage=task.stage,
                           id_of=task.id_of, pickle_payloads=task.pickle_payloads)
    first = task.first_index
    dead: list[Any] = [record for event in events for record in (event.dead or ())]
    dead.sort(key=lambda record: record.record_index)
    entries = [builder.dead_letter(DeadRecord(
        record_index=first + record.record_index, batch_index=task.batch_index, record=record.record,
        error_class=record.error_class, attempts=record.attempts)) for record in dead]
    stored = False
    if task.dlq_url is not None and entries:
        _send(task.run_id, task.dlq_url, entries)  # durable (upserted by id) when it returns
        stored = True
    duration = max((event.duration for event in events), default=time.monotonic() - started)
    stats = BatchStats(batch_index=task.batch_index, size=len(records), succeeded=summary.succeeded + fallbacks,
                       failed=summary.failed - fallbacks, retries=summary.retries, duration_s=duration,
                       pending=len(records) - summary.succeeded - summary.failed)
    return BatchOutcome(
        stats=stats, values=values, entries=entries,
        dead_records=[record.record for record in dead], stored=stored, stop_reason=summary.stop_reason,
        fallbacks=fallbacks, breaker_trips=summary.breaker_trips, breaker_events=capture.breaker,
        worker=f"pid {os.getpid()}")
