"""The driver of a run on an executor: plans batches, keeps the run's state, builds its outcome.

It reads the input a batch at a time, as the local engine does, and sends the batches out as
tasks (one batch each at first, then as many consecutive batches as make about half a second
of work: :mod:`~batchguard.executors.grouping`), keeping up to two tasks per executor slot in
flight (one running, one waiting, so no slot waits for the driver). As batches come back, in
any order, the recorder persists each one (its entries, its job checkpoint) and counts it; the
values are joined in input order at the end. The driver owns what spans the whole run: the
circuit breaker at batch granularity (:class:`BatchBreaker`), the error budget (each batch
stops only once the run's is spent, and the total is checked as batches return), stopping (a
batch that stopped early, fatal or breaker abort, or the budget spent: nothing more is
submitted, the workers start no more of the run's batches, and the batches running finish),
the rate limit (each slot runs at its share), and the resubmission of a task whose worker was
lost.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any, Final
from urllib.parse import urlsplit

from .._native import ActiveBatch, Counters, RunSummary
from .._run.plan import Plan
from .._run.sink import DLQSend
from ..policies import CircuitBreaker
from ..reference.gates import MIN_RATE_SAMPLE, over_budget
from .grouping import TaskSizer
from .protocol import Executor, Stoppable, WorkerLost
from .recorder import ExecutorRecorder
from .splits import ParquetSplit, parquet_batches, splittable
from .task import BatchOutcome, BatchTask

__all__ = ["MAX_RESUBMITS", "BatchBreaker", "run_on_executor"]

logger = logging.getLogger("batchguard")

MAX_RESUBMITS: Final = 3
"""How often the driver submits a batch again after its executor lost it with a worker, on top
of the executor's own reruns (Dask's ``allowed-failures``): a batch that kills every worker it
runs on fails the run instead of taking the cluster down one worker at a time."""

NETWORKED_SCHEMES: Final = frozenset({"postgresql", "postgres", "redis", "rediss"})
"""DLQ URLs every worker can reach and write to at once: their workers send their own entries."""


def _batches(records: Any, size: int, skip: frozenset[int]) -> Iterator[tuple[int, int, int, list[Any] | None]]:
    """(batch index, index of its first record, its size, its records: None for a skipped one).

    A list or tuple is sliced (a skipped batch is not touched); anything else is read through
    its iterator, a batch at a time, as the local engine reads it."""
    if isinstance(records, (list, tuple)):
        for index, start in enumerate(range(0, len(records), size)):
            length = min(size, len(records) - start)
            yield index, start, length, None if index in skip else list(records[start:start + size])
        return
    iterator = iter(records)
    for index in itertools.count():
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield index, index * size, len(batch), None if index in skip else batch
        if len(batch) < size:
            return


def worker_dlq_url(plan: Plan, recorder: ExecutorRecorder) -> str | None:
    """The DLQ URL workers write to themselves: a networked DLQ given as a URL, in a plain run
    (a job's checkpoint commits a batch's entries with the batch, on the driver)."""
    url = plan.dlq_url
    if url is None or not isinstance(recorder.sink, DLQSend):
        return None
    return url if urlsplit(url).scheme in NETWORKED_SCHEMES else None


class BatchBreaker:
    """The run's circuit breaker as the driver keeps it, a batch at a time.

    Each worker's engine runs the breaker over its own calls within a batch; this one decides
    what the driver submits. A batch that comes back with its breaker tripped opens it: nothing
    more is submitted for ``open_duration`` (what is in flight finishes). Then one batch goes
    out alone, the probe (half-open): back without a trip, the breaker closes and the window
    refills; tripped, it opens again. Batches submitted before the probe do not decide.
    """

    def __init__(self, policy: CircuitBreaker | None, run_id: str) -> None:
        self.open_duration = None if policy is None else policy.open_duration
        self.run_id = run_id
        self.state = "closed"
        self.reopen_at = 0.0
        self.probe: int | None = None

    def _move(self, state: str) -> None:
        logger.warning("run %s: the driver's circuit breaker %s -> %s", self.run_id, self.state, state,
                       extra={"run_id": self.run_id, "breaker_from": self.state, "breaker_to": state})
        self.state = state

    def limit(self, window: int, now: float) -> tuple[int, float | None]:
        """How many batches may be in flight now, and in how many seconds that changes (None:
        only when a batch comes back)."""
        if self.state == "open":
            if now < self.reopen_at:
                return 0, self.reopen_at - now
            self._move("half_open")
            self.probe = None
        return (1, None) if self.state == "half_open" else (window, None)

    def submitted(self, batch_index: int) -> None:
        if self.state == "half_open" and self.probe is None:
            self.probe = batch_index

    def batch_back(self, batch_index: int, tripped: bool, now: float) -> None:
        if self.open_duration is None:
            return
        deciding = self.state == "closed" or batch_index == self.probe
        if deciding and tripped:
            self._move("open")
            self.reopen_at = now + self.open_duration
        elif deciding and self.state == "half_open":
            self._move("closed")


class _Driver:
    """One run's state on the driver (see the module's docstring)."""

    def __init__(self, plan: Plan, executor: Executor, recorder: ExecutorRecorder) -> None:
        self.plan = plan
        self.executor = executor
        self.recorder = recorder
        config = plan.config
        self.size = config.batch_size
        slots = executor.slots
        self.window = 2 * slots
        rate = None if config.rate_per_second is None else config.rate_per_second / slots
        # A batch is one engine run of its own: no skipped batches, its rate the slot's share.
        self.config = replace(config, skip_batches=frozenset(), rate_per_second=rate,
                              rate_burst=max(1.0, config.rate_burst / slots),
                              delay_between_batches=0.0)
        self.dlq_url = worker_dlq_url(plan, recorder)
        # A Parquet source goes out as row ranges (its footers say where each batch's rows
        # are) and the workers read them; any other input is read here and shipped.
        self.batches: Iterator[tuple[int, int, int, list[Any] | ParquetSplit | None]] = (
            parquet_batches(plan.records, self.size, config.skip_batches) if splittable(plan.records)
            else _batches(plan.records, self.size, config.skip_batches))
        self.in_flight: dict[Hashable, tuple[tuple[BatchTask, ...], float]] = {}
        # One batch a task while the driver's breaker decides batch by batch, or while batches
        # are spaced out on purpose.
        self.sizer = TaskSizer(batch_size=self.size, slots=slots, total=plan.total,
                               grouped=config.breaker is None and not config.delay_between_batches)
        self.values: dict[int, list[Any]] = {}
        self.succeeded = self.failed = self.retries = self.trips = 0
        self.read = self.skipped = 0
        self.completed = 0
        self.current = 0
        self.exhausted = False
        self.stop_reason: str | None = None
        self.breaker = BatchBreaker(config.breaker, recorder.run_id)
        self.last_snapshot = -1.0
        self.submitted_any = False
        self.dead: set[int] = set()  # the input positions dead-lettered, as the batches came back

    def _budget_for(self, length: int, running: int) -> int | None:
        """The error budget a batch of ``length`` records runs under, as a count: its engine
        stops once the run's budget is spent, judged on the run's counts (those of the batches
        back so far), never on the batch alone.

        A count: what is left of it. A rate: the most failures the batch may have before the
        run's rate is over ``max_failures`` even with the whole batch finished and every record
        in flight in other batches (``running`` records) succeeded, and with at least
        ``MIN_RATE_SAMPLE`` records finished. A rate judged on the batch alone stopped a run whose rate stayed far below
        the budget for one batch that began with 10 failures."""
        budget = self.plan.config.max_failures
        if budget is None:
            return None
        if isinstance(budget, int):
            return max(0, budget - self.failed)
        finished = self.succeeded + self.failed
        # f > floor(budget * (finished + running + length)) - failed  =>  the run's rate is over
        # budget however the records still running end (exact: the float's own value, unrounded).
        most = math.floor(Fraction(budget) * (finished + running + length)) - self.failed
        return max(0, most, MIN_RATE_SAMPLE - 1 - finished)

    def _next_batch(self) -> tuple[int, int, int, list[Any] | ParquetSplit] | None:
        """The next batch to run (its index, first record, size, records or split); None at
        the input's end. A resumed job's finished batches are read past, counted as skipped."""
        for index, first, length, payload in self.batches:
            self.read = first + length
            if payload is None:
                self.skipped += length
                continue
            return index, first, length, payload
        self.exhausted = True
        return None

    def _submit_next(self) -> bool:
        # What the error budget (a count or a rate) allows on the counts back so far.
        wanted = self.sizer.batches(self.read, self._budget_for(0, 0))
        tasks: list[BatchTask] = []
        running = self._running()
        plan = self.plan
        while len(tasks) < wanted:
            batch = self._next_batch()
            if batch is None:
                break
            index, first, length, payload = batch
            records, split = (payload, None) if isinstance(payload, list) else ([], payload)
            # Each batch's budget counts the batches before it in the task as running (the
            # worker takes their failures off it).
            tasks.append(BatchTask(run_id=self.recorder.run_id, job_id=self.recorder.job_id, batch_index=index,
                                   first_index=first, records=records, split=split, fn=plan.fn,
                                   config=replace(self.config, batch_size=length,
                                                  max_failures=self._budget_for(length, running)),
                                   classifier=plan.classifier, stage=plan.stage, id_of=plan.id_of,
                                   pickle_payloads=plan.pickle_payloads, bulk=plan.bulk, dlq_url=self.dlq_url))
            running += length
        if not tasks:
            return False
        if self.submitted_any and plan.config.delay_between_batches:
            time.sleep(plan.config.delay_between_batches)
        self.submitted_any = True
        self._send(tuple(tasks))
        self.breaker.submitted(tasks[0].batch_index)
        self.current = max(self.current, tasks[-1].batch_index)
        return True

    def _send(self, tasks: tuple[BatchTask, ...]) -> None:
        self.in_flight[self.executor.submit(tasks)] = (tasks, time.monotonic() - self.recorder.started)

    def _running(self) -> int:
        """Records in the batches in flight."""
        return sum(task.size for tasks, _ in self.in_flight.values() for task in tasks)

    def _counters(self) -> Counters:
        in_flight = self._running()
        now = time.monotonic() - self.recorder.started
        batches = None
        if now - self.last_snapshot >= self.plan.config.progress_interval:
            self.last_snapshot = now
            batches = tuple(sorted((ActiveBatch(index=task.batch_index, size=task.size, succeeded=0,
                                                failed=0, retrying=0, in_flight=task.size,
                                                queued=0, retries=0, started=started,
                                                elapsed=now - started)
                                    for tasks, started in self.in_flight.values() for task in tasks),
                                   key=lambda b: b.index))
        return Counters(succeeded=self.succeeded, failed=self.failed, retrying=0, in_flight=in_flight,
                        queued=0, batches_completed=self.completed, current_batch=self.current,
                        breaker_state=self.breaker.state, records_read=self.read, batches=batches)

    def _take_all(self, tasks: tuple[BatchTask, ...], started: float, outcomes: Sequence[BatchOutcome]) -> None:
        """A task's outcomes, in its batches' order. Those missing were never run: after a
        batch that stopped the run their records stay pending; with the run going on (the task
        ran its ``MAX_TASK_SECONDS``) they go out again as a task of their own."""
        for task, outcome in zip(tasks, outcomes, strict=False):
            self._take(task, started, outcome)
        rest = tasks[len(outcomes):]
        if not rest or self.stop_reason is not None:
            return
        logger.debug("run %s: a task ran %d of its %d batches in its time; batches %d-%d go out again",
                     self.recorder.run_id, len(outcomes), len(tasks), rest[0].batch_index,
                     rest[-1].batch_index, extra={"run_id": self.recorder.run_id})
        running = self._running()
        again = []
        for task in rest:  # each batch's budget judged again, on the counts back by now
            again.append(replace(task, config=replace(task.config,
                                                      max_failures=self._budget_for(task.size, running))))
            running += task.size
        self._send(tuple(again))

    def _take(self, task: BatchTask, started: float, outcome: BatchOutcome) -> None:
        stats = outcome.stats
        self.values[stats.batch_index] = outcome.values
        if self.dlq_url is not None:
            self.dead.update(entry.record_index for entry in outcome.entries)
        # Counted as the engine counts them (a fallback as a failure), as the budget judges them
        # and as the recorder's report expects (it moves the fallbacks back to the successes).
        self.succeeded += stats.succeeded - outcome.fallbacks
        self.failed += stats.failed + outcome.fallbacks
        self.retries += stats.retries
        self.trips += outcome.breaker_trips
        self.breaker.batch_back(stats.batch_index, outcome.breaker_trips > 0, time.monotonic())
        if not stats.pending:
            self.completed += 1
            self.sizer.measured(stats.duration_s)
        self.recorder.outcome(outcome, self._counters(), started)
        if self.stop_reason is None:
            if outcome.stop_reason is not None:
                self.stop_reason = outcome.stop_reason
            # A rate is over budget once it is whatever the batches still running return
            # (they may all succeed): batches come back in any order, and one back before
            # those ahead of it in the input must not stop the run on its own rate.
            elif over_budget(self.plan.config.max_failures, self.succeeded + self._running(), self.failed):
                self.stop_reason = "max_failures"
            if self.stop_reason is not None:
                logger.warning("run %s stops (%s, batch %d on %s): no more batches are submitted or "
                               "started; those running in %d task(s) in flight finish",
                               self.recorder.run_id, self.stop_reason, task.batch_index, outcome.worker,
                               len(self.in_flight), extra={"run_id": self.recorder.run_id})
                if self.in_flight and isinstance(self.executor, Stoppable):
                    self.executor.stop(self.recorder.run_id)

    def _lost(self, tasks: tuple[BatchTask, ...], error: BaseException) -> None:
        first, attempt = tasks[0].batch_index, tasks[0].attempt
        shown = f"batch {first}" if len(tasks) == 1 else f"batches {first}-{tasks[-1].batch_index}"
        if self.stop_reason is not None:
            return  # the run stopped: the lost batches stay pending, as those never started
        if attempt >= MAX_RESUBMITS:
            raise RuntimeError(f"{shown} was lost with its worker {attempt + 1} times; the run stops "
                               f"(last: {error})") from error
        logger.warning("%s was lost with its worker (%s); submitting again", shown, error,
                       extra={"run_id": self.recorder.run_id})
        self._send(tuple(replace(task, attempt=attempt + 1) for task in tasks))

    def _drop_stale_entries(self) -> None:
        """Remove the run's entries that no batch's final run sent, once every batch is back.

        Workers send their entries to a networked DLQ themselves, and a batch may run twice:
        Dask reruns the task of a worker that died, the driver resubmits one Dask gave up on.
        A record that failed in the first run and succeeded (or was left pending) in the
        second would keep the first run's entry: a record the report counts as succeeded,
        that a replay would run again. Entry ids are per record, so what the batches' final
        runs sent is exactly what stays; a run that ends by an exception skips this."""
        if self.dlq_url is None or not isinstance(self.recorder.sink, DLQSend):
            return
        dlq = self.recorder.sink.dlq
        stale = [entry.id for entry in dlq.iter(status="all", run_id=self.recorder.run_id)
                 if entry.record_index not in self.dead]
        if stale:
            logger.warning("run %s: %d dead letter(s) sent by batches that ran again and succeeded "
                           "removed from the DLQ", self.recorder.run_id, len(stale),
                           extra={"run_id": self.recorder.run_id})
            dlq.remove(stale)

    def run(self) -> RunSummary:
        try:
            while True:
                limit, wait = self.breaker.limit(self.window, time.monotonic())
                while (self.stop_reason is None and not self.exhausted
                       and len(self.in_flight) < limit and self._submit_next()):
                    pass
                if not self.in_flight:
                    if wait is None or self.stop_reason is not None or self.exhausted:
                        break
                    time.sleep(wait)  # the breaker is open and nothing is in flight
                    continue
                for ticket, result in self.executor.completed(wait):
                    tasks, started = self.in_flight.pop(ticket)
                    if isinstance(result, WorkerLost):
                        self._lost(tasks, result)
                    elif isinstance(result, BaseException):
                        raise result
                    else:
                        self._take_all(tasks, started, result)
        except BaseException:
            # An interrupt, or a batch that raised on its worker: what is in flight stays
            # pending (a job resumes it); what came back is persisted already.
            self.executor.cancel(list(self.in_flight))
            raise
        finally:
            self.executor.close()
        self._drop_stale_entries()
        successful = [value for index in sorted(self.values) for value in self.values[index]]
        return RunSummary(succeeded=self.succeeded, failed=self.failed, records_read=self.read,
                          exhausted=self.exhausted, retries=self.retries,
                          successful=successful, stop_reason=self.stop_reason,
                          breaker_trips=self.trips, skipped_records=self.skipped)


def run_on_executor(plan: Plan, executor: Executor, recorder: ExecutorRecorder) -> RunSummary:
    """Run ``plan``'s batches on ``executor``, reporting each to ``recorder``; what the local
    engine's ``run`` returns."""
    return _Driver(plan, executor, recorder).run()
