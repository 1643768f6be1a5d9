"""A :class:`dask.distributed.Client` as an :class:`~batchguard.executors.protocol.Executor`.

``run_batches(..., executor=client)`` wraps the client in :class:`DaskExecutor`; the cluster
(and the client) stay the caller's. Each task the driver submits (one or more consecutive
batches) is one Dask task running :func:`~batchguard.executors.worker.run_group`; when a worker
dies, the scheduler reruns its tasks elsewhere (up to its ``allowed-failures``), so a batch is
at least once, as after a crash.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Hashable, Sequence
from typing import Any

from .protocol import Completion, WorkerLost
from .task import BatchTask
from .worker import release_run, run_group, stop_run

__all__ = ["DaskExecutor", "is_dask_client"]

logger = logging.getLogger("batchguard")


def is_dask_client(value: object) -> bool:
    """True for a ``distributed.Client`` (told by its type, so that checking a run's arguments
    never imports Dask, which takes most of a second)."""
    return any(cls.__module__.split(".")[0] == "distributed" and cls.__name__ == "Client"
               for cls in type(value).__mro__)


class DaskExecutor:
    """Submits each task as a Dask task. Dask's ``as_completed`` fetches each result on the
    client's event loop as its task finishes, so the driver never waits on a round trip per
    task: :meth:`completed` takes what has arrived.

    Making one asks the cluster nothing: a run's arguments are all checked before its first
    round trip (:attr:`slots`, when the driver starts)."""

    def __init__(self, client: Any) -> None:
        self._distributed = importlib.import_module("distributed")  # only once a run uses Dask
        self._client = client
        self._arrived = self._distributed.as_completed([], with_results=True, raise_errors=False)
        self._futures: dict[Hashable, Any] = {}
        self._slots: int | None = None
        self._to_release: set[str] = set()  # runs the workers keep something of: DLQ connections, a stop
        self._run_of: dict[Hashable, str] = {}  # each future's run

    @property
    def slots(self) -> int:
        """The cluster's worker threads when the run started (asked once, at the first use)."""
        if self._slots is None:
            threads: int = sum(self._client.nthreads().values())
            if threads < 1:
                raise RuntimeError(f"the Dask cluster of {self._client!r} has no worker: start one first")
            self._slots = threads
        return self._slots

    def submit(self, tasks: Sequence[BatchTask]) -> Hashable:
        first, last = tasks[0], tasks[-1]
        # A key per run, batches and submission: readable on Dask's dashboard, and never the
        # key of an earlier task whose result the scheduler still holds.
        batches = f"{first.batch_index}" if len(tasks) == 1 else f"{first.batch_index}-{last.batch_index}"
        key = f"batchguard-{first.run_id}-batch-{batches}-{first.attempt}"
        if first.dlq_url is not None:
            self._to_release.add(first.run_id)
        future = self._client.submit(run_group, list(tasks), key=key, pure=False)
        self._futures[key] = future
        self._run_of[key] = first.run_id
        self._arrived.add(future)
        return key

    def completed(self, timeout: float | None) -> Sequence[Completion]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._arrived.has_ready():
            if not self._futures:
                return []
            if deadline is None:
                break  # next_batch blocks until one arrives
            if time.monotonic() >= deadline:
                return []
            time.sleep(0.01)
        out: list[Completion] = []
        for future, result in self._arrived.next_batch(block=True):
            key = future.key
            if self._futures.pop(key, None) is None:
                continue  # cancelled by the driver
            self._run_of.pop(key, None)
            if future.status == "finished":
                out.append((key, result))
                continue
            # An error comes as (type, exception, traceback); a cancellation as its exception.
            error = result[1] if isinstance(result, tuple) else result
            if isinstance(error, self._distributed.KilledWorker):
                # The scheduler gave up on the task after its workers died under it.
                error = WorkerLost(str(error))
            out.append((key, error if isinstance(error, BaseException) else
                        RuntimeError(f"Dask task {key} ended {future.status!r}")))
        return out

    def cancel(self, tickets: Sequence[Hashable]) -> None:
        futures = [self._futures.pop(key) for key in tickets if key in self._futures]
        # Dask cancels a task waiting for a thread, not one running: a group keeps running its
        # batches unless the workers are told the run ended (close releases the run: it stops).
        self._to_release.update(self._run_of.pop(key) for key in tickets if key in self._run_of)
        if futures:
            self._client.cancel(futures)

    def stop(self, run_id: str) -> None:
        # One call to every worker, run on its event loop while its thread runs a batch.
        self._to_release.add(run_id)
        try:
            self._client.run(stop_run, run_id, on_error="ignore")
        except Exception as error:  # noqa: BLE001 - the tasks in flight then run to their end
            logger.warning("run %s: could not tell the workers the run stopped: %s", run_id, error,
                           extra={"run_id": run_id})

    def close(self) -> None:
        self.cancel(list(self._futures))
        self._arrived.clear()
        runs, self._to_release = self._to_release, set()
        for run_id in runs:  # what the workers keep of the run: one call to each worker
            try:
                self._client.run(release_run, run_id, on_error="ignore")
            except Exception as error:  # noqa: BLE001 - a cluster gone by now keeps nothing open
                logger.warning("run %s: could not release what the workers keep of it (DLQ "
                               "connections): %s", run_id, error,
                               extra={"run_id": run_id})
