"""The driver of ``run_batches(..., executor=)`` against the Executor protocol, in one process.

:class:`ReversedExecutor` is a real executor (it runs :func:`batchguard.executors.run_batch` on
each task it is handed) that hands completions back in the reverse of their submission order,
a bounded number at a time: the driver must aggregate the report in input order and checkpoint
batches whatever order they finish in. The Dask executor is tested on a real cluster in
tests/test_dask.py.
"""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

import batchguard
from batchguard import CircuitBreaker, MemoryDLQ, RateLimit, RetryPolicy
from batchguard._run.plan import make_plan
from batchguard.dlq.urls import open_dlq
from batchguard.errors import ConfigError, ConfigTypeError
from batchguard.executors import (
    BatchOutcome,
    BatchTask,
    Completion,
    Executor,
    WorkerLost,
    release_run,
    run_batch,
    run_group,
    stop_run,
)
from batchguard.jobs import SqliteJobStore

RETRY = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002, jitter="none", seed=3)


class ReversedExecutor:
    """Runs up to ``slots * 2`` submitted tasks when the driver waits, newest first."""

    def __init__(self, slots: int = 2, lose: Sequence[int] = (), *, run_lost: bool = False) -> None:
        self.slots = slots
        self.pending: list[tuple[Hashable, tuple[BatchTask, ...]]] = []
        self.submitted: list[BatchTask] = []
        self.tasks: list[tuple[BatchTask, ...]] = []
        self.most_in_flight = 0
        self.lose = set(lose)  # batch indexes whose first submission is "lost with its worker"
        self.run_lost = run_lost  # ... after it ran (and wrote its entries), before it returned
        self.closed = False
        self.cancelled: list[Hashable] = []
        self.stopped: list[str] = []
        self.submissions: list[tuple[int, float, int]] = []  # (first batch, when, in flight with it)

    def submit(self, tasks: Sequence[BatchTask]) -> Hashable:
        key = (tasks[0].batch_index, tasks[0].attempt)
        self.pending.append((key, tuple(tasks)))
        self.submitted.extend(tasks)
        self.tasks.append(tuple(tasks))
        self.submissions.append((tasks[0].batch_index, time.monotonic(), len(self.pending) - 1))
        self.most_in_flight = max(self.most_in_flight, len(self.pending))
        return key

    def completed(self, timeout: float | None) -> Sequence[Completion]:
        out: list[Completion] = []
        while self.pending:
            key, tasks = self.pending.pop()  # the newest first
            if self.lose.intersection(task.batch_index for task in tasks) and tasks[0].attempt == 0:
                if self.run_lost:
                    run_group(tasks)
                out.append((key, WorkerLost("worker died")))
            else:
                out.append((key, run_group(tasks)))
        return out

    def cancel(self, tickets: Sequence[Hashable]) -> None:
        self.cancelled.extend(tickets)
        self.pending = [(key, tasks) for key, tasks in self.pending if key not in tickets]

    def stop(self, run_id: str) -> None:
        self.stopped.append(run_id)
        stop_run(run_id)  # the workers are this process

    def close(self) -> None:
        self.closed = True
        for run_id in {task.run_id for task in self.submitted}:
            release_run(run_id)


def fn(x: int) -> int:
    if x % 9 == 4:
        raise ValueError(f"bad {x}")
    return x * 10


def test_a_reversed_executor_is_an_executor() -> None:
    assert isinstance(ReversedExecutor(), Executor)


@pytest.mark.parametrize("records", [list(range(103)), "generator"])
def test_batches_back_in_reverse_order_give_the_local_report(records: Any) -> None:
    data = list(range(103))
    executor = ReversedExecutor()
    given = iter(data) if records == "generator" else data
    remote = batchguard.run_batches(given, fn, batch_size=10, retry=RETRY, executor=executor)
    local = batchguard.run_batches(data, fn, batch_size=10, retry=RETRY)
    assert (remote.status, remote.success_count, remote.failure_count, remote.pending_count) == (
        local.status, local.success_count, local.failure_count, local.pending_count)
    assert remote.successful == local.successful  # input order, though batch 10 came back first
    assert [b.batch_index for b in remote.batches] == list(range(11))
    assert [e.record_index for e in remote.dead_letters] == [e.record_index for e in local.dead_letters]
    assert [e.error_message for e in remote.dead_letters] == [e.error_message for e in local.dead_letters]
    assert list(remote.failed) == list(local.failed)
    assert list(remote.errors) == list(local.errors)
    assert remote.errors_by_type == local.errors_by_type
    assert executor.most_in_flight <= 2 * executor.slots  # bounded in-flight work
    assert executor.closed


def test_a_lost_batch_is_submitted_again_and_counted_once() -> None:
    executor = ReversedExecutor(lose=[1, 3])
    dlq = MemoryDLQ()
    report = batchguard.run_batches(list(range(50)), fn, batch_size=10, retry=RETRY, dlq=dlq,
                                    executor=executor)
    assert sorted((t.batch_index, t.attempt) for t in executor.submitted if t.attempt) == [(1, 1), (3, 1)]
    assert report.success_count + report.failure_count == 50
    assert dlq.count() == report.failure_count == len({e.id for e in dlq.list()})


def test_a_batch_that_wrote_its_entries_then_was_lost_writes_the_same_entries_again(redis_url: str) -> None:
    # With a networked DLQ each worker sends its own entries: a batch whose worker died after
    # the send runs again elsewhere and sends them again. Their ids are the same (run, stage,
    # record), so the queue holds each dead record once.
    url = f"{redis_url}{'&' if '?' in redis_url else '?'}key_prefix=bg-executor-{uuid.uuid4().hex[:8]}"
    executor = ReversedExecutor(lose=[0, 2], run_lost=True)
    report = batchguard.run_batches(list(range(40)), fn, batch_size=10, retry=RETRY, dlq=url,
                                    executor=executor)
    assert sum(task.attempt for task in executor.submitted) == 2  # batches 0 and 2 ran twice
    dlq = open_dlq(url)
    try:
        indexes = sorted(entry.record_index for entry in dlq.list(status="all"))
        assert indexes == [i for i in range(40) if i % 9 == 4] and report.dlq_count == len(indexes)
    finally:
        for entry in dlq.list(status="all"):
            dlq.remove(entry.id)
        dlq.close()


_failed_once: set[int] = set()


def fails_once_at_3(x: int) -> int:
    if x == 3 and x not in _failed_once:
        _failed_once.add(x)
        raise ValueError("bad 3, this time")
    return x


def test_a_record_that_succeeds_when_its_lost_batch_runs_again_keeps_no_entry(redis_url: str) -> None:
    # Batch 0's first run dead-letters record 3 and sends its entry, then its worker dies; run
    # again (by the driver here, by Dask's own rerun on a cluster) record 3 succeeds. Its entry
    # from the lost run stayed in the queue: a record the report counts as succeeded, that a
    # replay would run a second time.
    _failed_once.clear()
    url = f"{redis_url}{'&' if '?' in redis_url else '?'}key_prefix=bg-executor-{uuid.uuid4().hex[:8]}"
    report = batchguard.run_batches(list(range(20)), fails_once_at_3, batch_size=10, retry=RETRY, dlq=url,
                                    executor=ReversedExecutor(lose=[0], run_lost=True))
    dlq = open_dlq(url)
    try:
        assert report.failure_count == 0 and report.success_count == 20
        assert [entry.record_index for entry in dlq.list(status="all")] == []
    finally:
        for entry in dlq.list(status="all"):
            dlq.remove(entry.id)
        dlq.close()


def test_a_batch_lost_every_time_fails_the_run() -> None:
    class AlwaysLost(ReversedExecutor):
        def completed(self, timeout: float | None) -> Sequence[Completion]:
            out: list[Completion] = [(key, WorkerLost("dies")) for key, _ in self.pending]
            self.pending.clear()
            return out

    with pytest.raises(RuntimeError, match="lost with its worker 4 times"):
        batchguard.run_batches(list(range(5)), fn, batch_size=5, executor=AlwaysLost())


def test_the_error_budget_stops_submitting_and_drains_what_is_in_flight() -> None:
    executor = ReversedExecutor(slots=1)
    report = batchguard.run_batches(list(range(400)), lambda x: 1 // 0, batch_size=10,
                                    max_failures=15, retry=RETRY, executor=executor)
    assert report.status == "aborted" and report.stopped_reason == "max_failures"
    # Two batches in flight when the budget is spent: nothing more was read, so nothing is lost.
    assert len(executor.submitted) < 40
    assert report.success_count + report.failure_count + report.pending_count == report.total
    assert report.failure_count >= 16


def test_each_batch_runs_at_its_slots_share_of_the_rate_limit_and_the_runs_budget() -> None:
    executor = ReversedExecutor(slots=4)
    batchguard.run_batches(list(range(40)), fn, batch_size=10, rate_limit=RateLimit(400, burst=8),
                           max_failures=1000, executor=executor)
    configs = [task.config for task in executor.submitted]
    assert {c.rate_per_second for c in configs} == {100.0} and {c.rate_burst for c in configs} == {2.0}
    assert all(c.batch_size == 10 and not c.skip_batches for c in configs)
    assert configs[0].max_failures == 1000


def test_a_batch_that_tripped_its_breaker_holds_the_next_ones_back_then_one_probes() -> None:
    def outage(x: int) -> int:
        if 20 <= x < 30:  # batch 2: the service is down
            raise ConnectionError(f"refused {x}")
        return x

    pause = 0.05
    breaker = CircuitBreaker(failure_rate_threshold=0.5, window=4, minimum_calls=4, open_duration=pause,
                             half_open_calls=1)
    executor = ReversedExecutor(slots=2)
    report = batchguard.run_batches(list(range(80)), outage, batch_size=10, breaker=breaker,
                                    retry=RetryPolicy(max_attempts=1), executor=executor)
    assert report.status == "partial_success" and report.failure_count == 10 and report.breaker_trips >= 1
    when = {batch: (at, alongside) for batch, at, alongside in executor.submissions}
    # Batches 0-3 went out together; batch 2 came back tripped: batch 4 went out alone (the
    # probe), no sooner than open_duration after batch 3 (taken before batch 2 came back).
    assert [when[b][1] for b in range(4)] == [0, 1, 2, 3]
    assert when[4][1] == 0 and when[4][0] - when[3][0] >= pause
    # The probe came back fine: the breaker closed and the window refilled.
    assert [when[b][1] for b in (5, 6, 7)] == [0, 1, 2]


def test_a_fatal_error_on_a_worker_stops_the_run() -> None:
    def fatal_at_25(x: int) -> int:
        if x == 25:
            raise MemoryError("out of memory")
        return x

    executor = ReversedExecutor(slots=1)
    report = batchguard.run_batches(list(range(100)), fatal_at_25, batch_size=10, executor=executor)
    assert report.stopped_reason == "fatal" and report.status == "aborted"
    assert len(executor.tasks) <= 4  # batch 2 stopped the run; at most one more task was in flight
    assert report.pending_count > 0
    # The batches after batch 2 in its task were not run (their records are pending), as a
    # local run starts no record after a FATAL error.
    task = next(task for task in executor.tasks if 2 in {t.batch_index for t in task})
    after = {t.batch_index for t in task if t.batch_index > 2}
    assert after and after.isdisjoint(b.batch_index for b in report.batches)


def test_a_job_checkpoints_batches_in_any_order_and_resumes(tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    calls: list[int] = []

    class StopsAfterThree(ReversedExecutor):
        def completed(self, timeout: float | None) -> Sequence[Completion]:
            if len(calls) >= 1:
                raise KeyboardInterrupt
            calls.append(1)
            return super().completed(timeout)

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(list(range(60)), fn, batch_size=10, job="j", store=store,
                               executor=StopsAfterThree(slots=2))
    with SqliteJobStore(tmp_path / "jobs.db") as opened:
        state = opened.get("j")
        assert state is not None and state.batches_done == 4 and state.status == "aborted"
    report = batchguard.run_batches(list(range(60)), fn, batch_size=10, job="j", store=store,
                                    executor=ReversedExecutor())
    assert report.skipped_batches == 4
    assert report.success_count + report.failure_count == 20
    with SqliteJobStore(tmp_path / "jobs.db") as opened:
        state = opened.get("j")
        assert state is not None and state.status == "completed"
        assert state.succeeded + state.failed == 60


@pytest.mark.parametrize(("options", "message"), [
    ({"key_of": lambda x: x}, "key_of"),
    ({"hooks": batchguard.Hooks(on_retry=lambda *a: None)}, "hooks"),
    ({"engine": "python"}, "engine"),
])
def test_what_an_executor_cannot_honour_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"executor= cannot be combined with .*{message}"):
        batchguard.run_batches([1], fn, executor=ReversedExecutor(), **options)


def test_an_async_fn_or_a_dry_run_is_refused() -> None:
    async def afn(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="async def"):
        batchguard.run_batches([1], afn, executor=ReversedExecutor())
    with pytest.raises(ConfigError, match="dry-run"):
        batchguard.run_batches([1], fn, executor=ReversedExecutor(), mode="dry-run",
                               validate=lambda r: None)


def test_an_executor_must_be_one() -> None:
    with pytest.raises(ConfigTypeError, match=r"executor must be a dask\.distributed\.Client"):
        batchguard.run_batches([1], fn, executor=object())


def test_outcome_fields_cross_as_plain_data() -> None:
    task = BatchTask(run_id="r", job_id=None, batch_index=2, first_index=20, records=[20, 21, 22, 12],
                     fn=fn, config=make_plan([1], fn, retry=RETRY).config,
                     classifier=batchguard.Classifier.default(), stage="process", id_of=None,
                     pickle_payloads=False, bulk=False)
    outcome = pickle.loads(pickle.dumps(run_batch(task)))  # noqa: S301 - our own bytes
    assert isinstance(outcome, BatchOutcome)
    assert outcome.values == [200, 210, 120] and outcome.stats.failed == 1
    entry = outcome.entries[0]
    assert (entry.record_index, entry.batch_index, entry.record_id) == (22, 2, 22)
    assert entry.traceback is not None and "ValueError: bad 22" in entry.traceback


def _parquet_source(tmp_path: Any) -> Any:
    """Two Parquet files, 21 rows in row groups of 7 and 10 rows in one group."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"v": list(range(21))}), tmp_path / "a.parquet", row_group_size=7)
    pq.write_table(pa.table({"v": list(range(100, 110))}), tmp_path / "b.parquet")
    return batchguard.read(str(tmp_path / "*.parquet"))


def parquet_fn(row: dict[str, int]) -> int:
    if row["v"] % 6 == 5:
        raise ValueError(f"bad {row['v']}")
    return row["v"] * 2


def test_a_parquet_source_goes_out_as_row_ranges_the_workers_read(tmp_path: Any) -> None:
    source = _parquet_source(tmp_path)
    executor = ReversedExecutor()
    local_dlq, remote_dlq = MemoryDLQ(), MemoryDLQ()
    remote = batchguard.run_batches(source, parquet_fn, batch_size=8, id_of=source.id_of, dlq=remote_dlq,
                                    executor=executor)
    local = batchguard.run_batches(source, parquet_fn, batch_size=8, id_of=source.id_of, dlq=local_dlq)
    # No record left the driver: each task names files and rows (batch 2 spans both files).
    assert all(task.records == [] and task.split is not None for task in executor.submitted)
    assert [t.split.pieces for t in sorted(executor.submitted, key=lambda t: t.batch_index)] == [
        ((0, 0, 8),), ((0, 8, 8),), ((0, 16, 5), (1, 0, 3)), ((1, 3, 7),)]
    assert remote.successful == local.successful and remote.total == local.total == 31
    assert sorted((e.record_index, e.record_id, e.error_message) for e in remote_dlq.list()) == sorted(
        (e.record_index, e.record_id, e.error_message) for e in local_dlq.list())
    assert f"{tmp_path / 'a.parquet'}#5" in {e.record_id for e in remote_dlq.list()}


def test_a_fallback_serves_on_a_worker_as_it_does_locally() -> None:
    # The retry policies' batch end (a fallback instead of a dead letter, max_elapsed naming the
    # records it cut) runs on the worker, where the dead records are.
    policy = RetryPolicy(max_attempts=1, fallback=lambda record, error: -record)
    runs = []
    for executor in (None, ReversedExecutor()):
        dlq = MemoryDLQ()
        report = batchguard.run_batches(list(range(40)), fn, batch_size=10, retry=policy, dlq=dlq,
                                        executor=executor)
        runs.append((report.status, report.success_count, report.failure_count, report.fallback_count,
                     report.successful, dlq.count()))
    assert runs[1] == runs[0]
    assert runs[0][3] == 4 and runs[0][5] == 0 and -13 in runs[0][4]


def clustered(x: int) -> int:
    if 300 <= x < 312:  # 12 of 400 (3%), all in batch 3
        raise ValueError(f"bad {x}")
    return x


@pytest.mark.parametrize("slots", [1, 4])
def test_a_rate_budget_is_the_runs_not_each_batchs(slots: int) -> None:
    # Under max_failures=0.05 the run's rate never passes 5% (12 of 312 finished at worst),
    # but batch 3's own rate is 100% after its first 10 records: judged per batch, the
    # worker's engine stopped the batch and the driver aborted the whole run.
    local = batchguard.run_batches(list(range(400)), clustered, batch_size=100, retry=RETRY, max_failures=0.05)
    remote = batchguard.run_batches(list(range(400)), clustered, batch_size=100, retry=RETRY, max_failures=0.05,
                                    executor=ReversedExecutor(slots=slots))
    assert local.stopped_reason is None and local.failure_count == 12
    assert (remote.status, remote.stopped_reason, remote.success_count, remote.failure_count,
            remote.pending_count) == (local.status, None, 388, 12, 0)


def test_a_rate_budget_spent_still_stops_the_run_inside_a_batch() -> None:
    executor = ReversedExecutor(slots=1)
    report = batchguard.run_batches(list(range(4000)), lambda x: 1 // 0, batch_size=1000, retry=RETRY,
                                    max_failures=0.05, executor=executor)
    assert report.status == "aborted" and report.stopped_reason == "max_failures"
    # Each batch stopped itself once the run's rate was certainly over budget: not all of it ran.
    assert report.failure_count < 2000 and report.pending_count > 2000
    assert report.success_count + report.failure_count + report.pending_count == report.total
