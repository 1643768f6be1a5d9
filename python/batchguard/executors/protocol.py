"""The :class:`Executor` protocol: where a run's batches go when they leave the driver.

A run with ``executor=`` plans its batches on the calling process (the driver) and hands them,
as :class:`~batchguard.executors.task.BatchTask` objects, to an executor a task at a time: one
or more consecutive batches that one worker runs in order (a Dask worker, a Ray actor) with
:func:`~batchguard.executors.worker.run_group`, handing back their
:class:`~batchguard.executors.task.BatchOutcome` objects. The protocol is what the driver needs
and no more, so a second engine (Ray) is one class.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol, runtime_checkable

from .task import BatchOutcome, BatchTask

__all__ = ["Completion", "Executor", "Stoppable", "WorkerLost"]


class WorkerLost(Exception):
    """An executor lost a batch with its worker (the process died, more often than the
    executor reruns a task): the driver submits the batch again."""

Completion = tuple[Hashable, Sequence[BatchOutcome] | BaseException]
"""A finished submission: its ticket, and what :func:`~batchguard.executors.worker.run_group`
returned for its batches (their outcomes in order, fewer than the batches after one stopped
the run), or what the executor raised for it (the worker's process died too often, the task
could not be shipped, ...)."""


@runtime_checkable
class Executor(Protocol):
    """Runs batch tasks away from the driver; only the driver's thread calls it."""

    @property
    def slots(self) -> int:
        """How many tasks can run at once (the rate limit is divided among them; the driver
        keeps about twice as many in flight so no slot waits for the driver)."""
        ...

    def submit(self, tasks: Sequence[BatchTask]) -> Hashable:
        """Send off one task: these batches (consecutive in the input), for one worker to run
        in order with ``run_group(tasks)``. Returns the ticket its completion will carry.
        ``BatchTask.attempt`` makes a resubmission of the same batches a distinct task.

        The driver sends several batches as one task once the first batches have said how
        long one takes, so that an executor's per-task cost (Dask's scheduler and client) is
        paid once for about ``TASK_SECONDS`` of work, whatever ``batch_size`` is."""
        ...

    def completed(self, timeout: float | None) -> Sequence[Completion]:
        """Wait up to ``timeout`` seconds (None: without limit) until at least one submission
        finished, and return every one that has (empty after a timeout). Each ticket comes
        back exactly once."""
        ...

    def cancel(self, tickets: Sequence[Hashable]) -> None:
        """Give up on these submissions: their batches stay pending (the driver will not read
        their outcomes); one already running may still finish on its worker."""
        ...

    def close(self) -> None:
        """Release what the executor holds for this run (not the cluster, which the caller
        owns), including what the workers keep for it: their DLQ connections
        (:func:`~batchguard.executors.worker.release_run`)."""
        ...


@runtime_checkable
class Stoppable(Protocol):
    """What an :class:`Executor` may add: being told that a run stopped.

    The driver calls :meth:`stop` once, when the run stops (its error budget spent, a FATAL
    error, a breaker abort), if the executor has it. An executor without it runs the tasks
    in flight to their end, so a count budget can be overshot by what they hold."""

    def stop(self, run_id: str) -> None:
        """From now on the workers start none of the run's batches
        (:func:`~batchguard.executors.worker.stop_run`); the tasks in flight come back with the
        outcomes of the batches already run (one running finishes)."""
        ...
