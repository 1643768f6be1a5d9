"""The executor's leftovers on a real Dask LocalCluster (issue 11 item 3).

* A worker's connections to a networked DLQ (here a real Redis) are closed when the run ends:
  they were kept for the life of the worker process, one more per run.
* A run's bad arguments are named before the cluster is asked anything: making the executor
  asked the scheduler for its worker threads first, so a run on an unreachable cluster
  failed on that instead of on the argument.
* A stopped run starts no more batches on the workers (``DaskExecutor.stop``).
* A jittered backoff waits the same on the workers as locally: a worker's engine indexes its
  batch's records from 0, and drew each record's jitter from its place in the batch.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import cloudpickle
import psutil
import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard._run.config import EngineConfig
from batchguard.dlq import SqliteDLQ
from batchguard.dlq.urls import open_dlq
from batchguard.errors import ConfigError
from batchguard.executors import BatchTask, DaskExecutor, run_group
from batchguard.policies import Classifier
from dask_cluster import WORKERS, dask_client, planned, worker_pids

__all__ = ["dask_client"]  # a fixture, used by name

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(240)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RETRY = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002, jitter="none", seed=5)


def _connections_to(port: int, pids: Iterator[int]) -> int:
    """The established TCP connections of these processes to ``port`` on 127.0.0.1."""
    return sum(1 for pid in pids for connection in psutil.Process(pid).net_connections(kind="tcp")
               if connection.raddr and connection.raddr.port == port
               and connection.status == psutil.CONN_ESTABLISHED)


def test_the_workers_close_their_dlq_connections_when_the_run_ends(dask_client: Any, redis_url: str) -> None:
    token = uuid.uuid4().hex
    port = urlsplit(redis_url).port or 6379
    dlq_url = f"{redis_url}{'&' if '?' in redis_url else '?'}key_prefix=bg-leftover-{token[:8]}"
    pids = worker_pids(dask_client)
    before = _connections_to(port, iter(pids.values()))
    try:
        for _ in range(3):  # each run opened its own connection on each worker that wrote entries
            report = batchguard.run_batches([(token, i) for i in range(60)], planned, batch_size=6, retry=RETRY,
                                            dlq=dlq_url, executor=dask_client)
            assert report.dlq_count > 0
        deadline = time.monotonic() + 10  # the close is sent when the run ends; the socket follows
        while _connections_to(port, iter(pids.values())) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _connections_to(port, iter(pids.values())) == before
    finally:
        dlq = open_dlq(dlq_url)
        dlq.remove([entry.id for entry in dlq.list(status="all")])
        dlq.close()


@pytest.fixture
def closed_client(dask_client: Any) -> Any:
    """A second Client of the cluster, closed: anything that asks the cluster through it raises."""
    client = distributed.Client(dask_client.scheduler.address)
    client.close()
    with pytest.raises(AttributeError):  # what a closed client raises on a round trip
        client.nthreads()
    return client


@pytest.mark.parametrize(("options", "named"), [
    ({"results": "drop"}, "results="),
    ({"retry_budget": batchguard.RetryBudget(ratio=0.1)}, "retry_budget="),
    ({"dlq": "ftp://nowhere"}, "ftp"),
])
def test_bad_arguments_are_named_before_the_cluster_is_asked_anything(
        closed_client: Any, options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        batchguard.run_batches([1, 2], abs, executor=closed_client, **options)


def test_a_stopped_run_starts_no_more_batches_on_the_workers(dask_client: Any) -> None:
    """``DaskExecutor.stop`` reaches every worker: a task of the run that starts afterwards runs
    none of its batches (one that started before finishes, which tests/test_executor_budget.py
    shows in one process)."""
    task = BatchTask(run_id=f"stopped-{uuid.uuid4().hex[:8]}", job_id=None, batch_index=0, first_index=0,
                     records=[("t", 0), ("t", 1)], fn=planned,
                     config=EngineConfig(batch_size=2, concurrency=1, retry=RETRY, breaker=None,
                                         max_failures=None, seed=1),
                     classifier=Classifier(), stage="process", id_of=None, pickle_payloads=False, bulk=False)
    executor = DaskExecutor(dask_client)
    before = dask_client.submit(run_group, [task], pure=False).result()
    assert [outcome.stats.succeeded for outcome in before] == [2]
    executor.stop(task.run_id)
    futures = [dask_client.submit(run_group, [task], pure=False, workers=[address])
               for address in worker_pids(dask_client)]
    assert [future.result() for future in futures] == [[]] * WORKERS
    executor.close()


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated"])
def test_a_jittered_backoff_waits_the_same_on_the_cluster_as_locally(
        dask_client: Any, tmp_path: Any, jitter: str) -> None:
    token = uuid.uuid4().hex
    records = [(token, i) for i in range(60)]
    retry = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.004, jitter=jitter, seed=23)
    delays = {}
    for where, executor in (("local", None), ("cluster", dask_client)):
        dlq = SqliteDLQ(tmp_path / f"{where}.db")
        report = batchguard.run_batches(records, planned, batch_size=7, retry=retry, dlq=dlq, executor=executor)
        delays[where] = sorted((entry.record_index, [attempt.delay_s for attempt in entry.attempts])
                               for entry in dlq.list(run_id=report.run_id))
        dlq.close()
    assert any(delay for _, waits in delays["local"] for delay in waits)  # jittered delays, not zeros
    assert delays["cluster"] == delays["local"]
