"""Batches grouped into tasks on an executor (issue 11 item 3, W9).

The driver sends single batches first; once it knows how long a batch takes, consecutive
batches go out together as one task of about ``TASK_SECONDS``, and the last tasks of an input
of known length shrink back to single batches. The batches themselves never change: the same
plan as a local run, each batch run, checkpointed and reported on its own.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence

import pytest

import batchguard
from batchguard import CircuitBreaker, RetryPolicy
from batchguard.executors import BatchTask, Completion, run_group
from batchguard.executors.grouping import MAX_TASK_BATCHES, MAX_TASK_RECORDS, TASK_SECONDS, TaskSizer

RETRY = RetryPolicy(max_attempts=2, base_delay=0.0, jitter="none", seed=1)


class InOrder:
    """Runs each task when the driver waits, oldest first; remembers the tasks' batches."""

    def __init__(self, slots: int = 2) -> None:
        self.slots = slots
        self.queue: list[tuple[Hashable, Sequence[BatchTask]]] = []
        self.tasks: list[list[int]] = []

    def submit(self, tasks: Sequence[BatchTask]) -> Hashable:
        self.tasks.append([task.batch_index for task in tasks])
        self.queue.append((len(self.tasks), tasks))
        return len(self.tasks)

    def completed(self, timeout: float | None) -> Sequence[Completion]:
        key, tasks = self.queue.pop(0)
        return [(key, run_group(tasks))]

    def cancel(self, tickets: Sequence[Hashable]) -> None:
        self.queue = [(key, tasks) for key, tasks in self.queue if key not in tickets]

    def close(self) -> None:
        pass


def slow(record: int) -> int:
    """About 0.5 ms a record, failing every 7th."""
    time.sleep(0.0005)
    if record % 7 == 3:
        raise ValueError(f"bad {record}")
    return record * 2


def test_batches_go_out_alone_then_grouped_then_alone_at_the_end() -> None:
    executor = InOrder(slots=2)
    records = list(range(2000))
    remote = batchguard.run_batches(records, slow, batch_size=10, retry=RETRY, executor=executor)
    local = batchguard.run_batches(records, slow, batch_size=10, retry=RETRY)
    sizes = [len(task) for task in executor.tasks]
    assert sizes[:4] == [1, 1, 1, 1]  # two tasks per slot before any batch's time is known
    assert max(sizes) > 1 and len(sizes) < 200
    assert sizes[-1] == 1  # the end of a list: the workers finish within a batch of each other
    # Consecutive batches, each exactly once, in input order across tasks.
    assert [index for task in executor.tasks for index in task] == list(range(200))
    # The same plan and run as locally: batch by batch, value by value.
    assert [(b.batch_index, b.size, b.succeeded, b.failed) for b in remote.batches] == [
        (b.batch_index, b.size, b.succeeded, b.failed) for b in local.batches]
    assert remote.successful == local.successful and remote.failure_count == local.failure_count


def test_a_breaker_keeps_one_batch_a_task() -> None:
    executor = InOrder(slots=2)
    breaker = CircuitBreaker(failure_rate_threshold=0.9, window=50, minimum_calls=50, open_duration=0.01)
    batchguard.run_batches(list(range(600)), slow, batch_size=10, retry=RETRY, breaker=breaker,
                           executor=executor)
    assert {len(task) for task in executor.tasks} == {1}


@pytest.mark.parametrize(("per_batch", "batch_size", "expected"), [
    (0.1, 50, int(TASK_SECONDS / 0.1)),
    (0.0, 10, min(MAX_TASK_BATCHES, MAX_TASK_RECORDS // 10)),  # instant batches: the caps
    (0.001, 1000, MAX_TASK_RECORDS // 1000),  # the records' cap
    (2.0, 1000, 1),  # a batch longer than a task's aim goes alone
])
def test_a_task_holds_about_task_seconds_of_work(per_batch: float, batch_size: int, expected: int) -> None:
    sizer = TaskSizer(batch_size=batch_size, slots=4, total=None, grouped=True)
    assert sizer.batches(0) == 1
    for _ in range(3):
        sizer.measured(per_batch)
    assert sizer.batches(10 * batch_size) == expected


def test_the_last_tasks_shrink_with_what_is_left() -> None:
    sizer = TaskSizer(batch_size=10, slots=2, total=1000, grouped=True)
    sizer.measured(0.001)  # fast batches: only what is left limits a task
    assert [sizer.batches(read) for read in (0, 500, 800, 920, 960, 990)] == [25, 12, 5, 2, 1, 1]


def test_ungrouped_is_one_batch_a_task() -> None:
    sizer = TaskSizer(batch_size=10, slots=2, total=None, grouped=False)
    sizer.measured(0.001)
    assert sizer.batches(0) == 1
