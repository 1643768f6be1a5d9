"""Hostile tests of a job on Dask whose batches go out in groups (issue 11 item 3): its driver
interrupted (Ctrl-C) or killed (SIGKILL) while groups are in flight, then the job resumed on the
same cluster. A real LocalCluster of 2 worker processes, the driver in its own process.

Nothing is lost and nothing counted twice: the job completes with each record's outcome once
(counts, one DLQ entry per dead record, one checkpoint per batch), whether the input is a list
or a generator, the store SQLite or PostgreSQL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard.jobs.store import open_job_store
from dask_cluster import dask_client, slow_planned

__all__ = ["dask_client"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(400)

RETRY = RetryPolicy(max_attempts=3, base_delay=0.002, max_delay=0.01, jitter="full", seed=3)
N, BATCH = 900, 6

_DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import cloudpickle, dask_cluster, distributed
    import batchguard
    cloudpickle.register_pickle_by_value(dask_cluster)
    with distributed.Client({address!r}) as client:
        records = [({token!r}, i) for i in range({n})]
        batchguard.run_batches(records if {as_list} else iter(records), dask_cluster.slow_planned,
                               batch_size={batch_size}, job={job!r}, store={store!r}, executor=client,
                               retry=batchguard.RetryPolicy(max_attempts=3, base_delay=0.002,
                                                            max_delay=0.01, jitter="full", seed=3))
""")


def _fails(i: int) -> bool:
    return i % 11 == 4 or i % 13 == 6


def _done(store: str, job: str) -> int:
    try:
        with open_job_store(store) as opened:
            state = opened.get(job)
    except Exception:  # noqa: BLE001 - the driver has not made the store yet
        return 0
    return 0 if state is None else state.batches_done


@pytest.mark.parametrize(("signum", "backend", "as_list"), [  # each signal, store and input shape once
    (signal.SIGKILL, "sqlite", True), (signal.SIGINT, "postgresql", False)])
def test_a_job_interrupted_while_its_groups_run_resumes_with_every_record_once(
        dask_client: Any, tmp_path: Path, request: pytest.FixtureRequest, signum: int, backend: str,
        as_list: bool) -> None:
    token = uuid.uuid4().hex
    job = f"h2-{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'jobs.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    code = _DRIVER.format(tests=str(Path(__file__).parent), address=dask_client.scheduler.address, token=token,
                          n=N, batch_size=BATCH, job=job, store=store, as_list=as_list)
    err = tmp_path / "driver.err"
    with err.open("wb") as stderr:
        driver = subprocess.Popen([sys.executable, "-c", code], stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while _done(store, job) < 12 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, err.read_text()
        driver.send_signal(signum)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    records = [(token, i) for i in range(N)]
    report = batchguard.run_batches(records if as_list else iter(records), slow_planned, batch_size=BATCH,
                                    job=job, store=store, retry=RETRY, executor=dask_client)
    assert report.skipped_batches >= 12 and report.pending_count == 0
    assert report.success_count + report.failure_count == N - report.skipped_batches * BATCH
    with open_job_store(store) as opened:
        state = opened.get(job)
        assert state is not None and state.status == "completed" and state.batches_done == N // BATCH
        assert (state.succeeded, state.failed) == (N - sum(map(_fails, range(N))), sum(map(_fails, range(N))))
        dlq = opened.open_default_dlq()
        try:
            entries = dlq.list(job_id=job, status="all")
            assert sorted(e.record_index for e in entries) == [i for i in range(N) if _fails(i)]
        finally:
            dlq.close()
