"""Running a run's batches away from the calling process: ``run_batches(..., executor=)``.

The calling process (the driver) plans the batches and keeps the run's state; an
:class:`Executor` runs each task (one or more consecutive batches, each a :class:`BatchTask`)
with :func:`run_group` on a worker and hands back their :class:`BatchOutcome` objects
(:func:`run_batch` runs one batch; :func:`release_run` closes what a worker kept for a run).
:class:`DaskExecutor` is the one for a ``dask.distributed.Client`` (pass the client itself:
``executor=client``); another engine is a class with the protocol's five members, and best
also ``stop`` (:class:`Stoppable`).

This package imports no Dask: a run imports it once it is given a client.
"""

from __future__ import annotations

from .choose import as_executor
from .dask import DaskExecutor
from .protocol import Completion, Executor, Stoppable, WorkerLost
from .task import BatchOutcome, BatchTask
from .worker import release_run, run_batch, run_group, stop_run

__all__ = ["BatchOutcome", "BatchTask", "Completion", "DaskExecutor", "Executor", "Stoppable", "WorkerLost",
           "as_executor", "release_run", "run_batch", "run_group", "stop_run"]
