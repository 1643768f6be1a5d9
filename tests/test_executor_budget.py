"""A run on an executor stops at once when its error budget is spent (issue 11 item 3 leftover).

The driver gives each batch the budget left when the batch goes out, so the batches in flight
together could each spend all of it. Before, when one came back over budget the driver only
stopped submitting: the tasks waiting behind the running ones still ran, each failing up to
the budget left when it was sent. Now the driver tells the workers the run stopped
(``Executor.stop``): a batch not yet started is not run (its records are pending, as the
records a local run had not started), and only the batches already running finish.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import batchguard
from batchguard import RetryPolicy
from batchguard.executors import BatchTask, Completion, Executor, Stoppable, release_run, run_group, stop_run

RETRY = RetryPolicy(max_attempts=1)


class OneSlot:
    """One slot: each wait for completions runs the oldest task submitted, as a worker would."""

    slots = 1

    def __init__(self) -> None:
        self.queue: list[tuple[Hashable, Sequence[BatchTask]]] = []
        self.tasks: list[tuple[int, ...]] = []
        self.stopped: list[str] = []
        self.run_ids: set[str] = set()

    def submit(self, tasks: Sequence[BatchTask]) -> Hashable:
        key = len(self.tasks)
        self.tasks.append(tuple(task.batch_index for task in tasks))
        self.queue.append((key, tasks))
        self.run_ids.add(tasks[0].run_id)
        return key

    def completed(self, timeout: float | None) -> Sequence[Completion]:
        key, tasks = self.queue.pop(0)
        return [(key, run_group(tasks))]

    def cancel(self, tickets: Sequence[Hashable]) -> None:
        self.queue = [(key, tasks) for key, tasks in self.queue if key not in tickets]

    def stop(self, run_id: str) -> None:
        self.stopped.append(run_id)
        stop_run(run_id)  # this process is the worker

    def close(self) -> None:
        for run_id in self.run_ids:
            release_run(run_id)


def always_fails(record: int) -> int:
    raise ValueError(f"bad {record}")


def test_one_slot_is_an_executor() -> None:
    assert isinstance(OneSlot(), Executor) and isinstance(OneSlot(), Stoppable)


def test_a_spent_budget_starts_no_more_batches() -> None:
    executor = OneSlot()
    report = batchguard.run_batches(list(range(400)), always_fails, batch_size=10, max_failures=15,
                                    retry=RETRY, executor=executor)
    assert report.status == "aborted" and report.stopped_reason == "max_failures"
    # Batches 0 and 1 went out together, each with the whole budget (15): 0 came back with 10
    # failures, the next task went out with the 5 left, then 1 came back with 10 more: spent.
    # The task behind it had not started, and is not run (before: its first batch failed 6
    # more, 26 in all).
    assert executor.stopped == [report.run_id]
    assert [b.batch_index for b in report.batches] == [0, 1]
    assert report.failure_count == 20
    assert report.pending_count == 380 and len(executor.tasks) == 3  # nothing submitted after


def test_a_run_that_never_stops_is_never_told_to() -> None:
    executor = OneSlot()
    report = batchguard.run_batches(list(range(100)), always_fails, batch_size=10, max_failures=1000,
                                    retry=RETRY, executor=executor)
    assert report.failure_count == 100 and executor.stopped == []
