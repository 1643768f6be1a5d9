"""How many batches the driver sends to a worker as one task: :class:`TaskSizer`.

Each task costs an executor something whatever it holds: Dask's client and scheduler spend a
few milliseconds of CPU on it (on a LocalCluster, in the driver's own process, taken from the
workers on a small machine), and the worker some more. A run's ``batch_size`` is chosen for
its checkpoints, its DLQ entries and its report, not for that cost, so the driver sends
consecutive batches together once the first ones have said how long a batch takes: about
:data:`TASK_SECONDS` of work a task. The batches stay what they are (the same plan as a local
run: each is run, checkpointed and reported on its own), only the unit of shipping grows.

Near the end of an input whose length is known, tasks shrink again (guided self-scheduling:
at most the batches left over twice the slots), so that the workers finish together rather
than one waiting on another's last long task.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_TASK_BATCHES", "MAX_TASK_RECORDS", "MAX_TASK_SECONDS", "TASK_SECONDS", "TaskSizer"]

TASK_SECONDS: Final = 0.5
"""The work a task should hold once a batch's time is known: Dask's per-task CPU (about 5 ms
in the driver's process and 3 ms on the worker, measured by benches/bench_dask.py) is then
under 2% of it, and a driver killed mid-run loses at most about a second of each slot's work
(two tasks in flight per slot)."""

MAX_TASK_SECONDS: Final = 4 * TASK_SECONDS
"""A worker starts no more of a task's batches once the task has run this long, and returns
what it ran (the driver sends the rest again as a task of their own): a task is sized from the
batches back so far, and when ``fn`` turns slow (the first batches took no time, the next take
seconds) a task of 64 batches held its worker for minutes while the driver heard nothing of it
(no progress, no checkpoint, all of it lost with a killed driver)."""

MAX_TASK_BATCHES: Final = 64
"""The most batches in one task, however fast they are."""

MAX_TASK_RECORDS: Final = 10_000
"""The most records in one task (unless one batch holds more): the driver holds two tasks per
slot in flight, so this bounds its memory as ``batch_size`` did before."""


class TaskSizer:
    """Decides how many batches the next task holds, from the times of the batches back so far."""

    def __init__(self, *, batch_size: int, slots: int, total: int | None, grouped: bool) -> None:
        """``total``: the input's length when known (it shrinks the last tasks); ``grouped``:
        False keeps one batch per task (the driver's breaker decides batch by batch)."""
        self.batch_size = batch_size
        self.slots = slots
        self.total = total
        self.grouped = grouped
        self._seconds = 0.0
        self._batches = 0

    def measured(self, seconds: float) -> None:
        """A batch that ran to its end took ``seconds`` on its worker."""
        self._seconds += seconds
        self._batches += 1

    def batches(self, read: int, failures_left: int | None = None) -> int:
        """How many batches the next task holds, ``read`` records having been read so far and
        ``failures_left`` the failures the error budget still allows on the counts back so far
        (None: no budget; a rate's before more records finish)."""
        if not self.grouped or not self._batches:
            return 1  # the first tasks are single batches: they measure, and fill every slot soon
        per_batch = self._seconds / self._batches
        size = MAX_TASK_BATCHES if per_batch <= 0 else round(TASK_SECONDS / per_batch)
        size = min(size, MAX_TASK_BATCHES, MAX_TASK_RECORDS // self.batch_size)
        if self.total is not None:
            left = -(-(self.total - read) // self.batch_size)
            size = min(size, left // (2 * self.slots))
        if failures_left is not None:
            # Each task runs under the whole budget left when it went out, and the driver hears
            # of its failures only once it is all back: the tasks in flight (two a slot) hold
            # together no more records than that, so the run exceeds the budget by about one
            # batch a task, as one batch a task did (64 batches a task exceeded a count of 30
            # by 82, a rate of 0.1 by 0.09).
            size = min(size, failures_left // (2 * self.slots * self.batch_size))
        return max(1, size)
