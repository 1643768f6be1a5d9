"""Hostile tests of a run on Dask whose batches go out in groups (issue 11 item 3), when the
driver is interrupted: a real LocalCluster of 2 worker processes, a driver in its own process.

* A driver Ctrl-C'd (SIGINT) while its groups run: the workers finish the batch each is in and
  start none of the rest of its group. A group holds up to 64 batches: run to its end, it kept
  a worker busy (and calling ``fn`` for a run that was over) for many seconds after the driver
  had gone. A released run's batch still running stores its entries on a connection of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard._run.config import EngineConfig
from batchguard.dlq.urls import open_dlq
from batchguard.executors import BatchTask, run_group, worker
from batchguard.policies import Classifier
from dask_cluster import WORKERS, dask_client

__all__ = ["dask_client"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(300)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SLOW = 0.02
"""Seconds a slow record takes."""


def fast_then_slow(record: tuple[int, str, int]) -> int:
    """``(i, log, fast_until)``: records before ``fast_until`` return at once (the first batches
    say a batch takes no time, so the driver groups the most it may), the rest take
    :data:`SLOW` seconds; each call that returns appends ``i`` to ``log``."""
    i, log, fast_until = record
    if i >= fast_until:
        time.sleep(SLOW)
    with open(log, "a", encoding="utf-8") as calls:  # one short append: atomic with O_APPEND
        calls.write(f"{i}\n")
    return i


def _lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _settled(path: Path, *, quiet: float = 2.0, deadline: float = 120.0) -> int:
    """The number of calls in the log once it stopped growing for ``quiet`` seconds."""
    end = time.monotonic() + deadline
    seen, since = _lines(path), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = _lines(path)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return seen
    raise AssertionError(f"{path} still grows after {deadline} s")


_DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import cloudpickle, distributed
    import batchguard
    import test_hostile_s16_dask_interrupt as here
    cloudpickle.register_pickle_by_value(here)
    with distributed.Client({address!r}) as client:
        records = [(i, {log!r}, {fast_until}) for i in range({n})]
        batchguard.run_batches(records, here.fast_then_slow, batch_size={batch_size}, executor=client)
""")


def test_a_ctrl_c_of_the_driver_starts_no_more_of_its_groups_batches(dask_client: Any, tmp_path: Path) -> None:
    n, batch_size, fast_until = 3000, 5, 100
    log = tmp_path / "calls.log"
    code = _DRIVER.format(tests=str(Path(__file__).parent), address=dask_client.scheduler.address,
                          log=str(log), n=n, batch_size=batch_size, fast_until=fast_until)
    with (tmp_path / "driver.err").open("wb") as err:
        driver = subprocess.Popen([sys.executable, "-c", code], stderr=err)
    try:
        deadline = time.monotonic() + 120
        # Well into the slow records: the tasks out now are groups of up to 64 slow batches.
        while _lines(log) < fast_until + 40 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, (tmp_path / "driver.err").read_text()
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode != 0
    assert "KeyboardInterrupt" in (tmp_path / "driver.err").read_text()
    at_exit = _lines(log)
    after = _settled(log) - at_exit
    # Each worker finishes the batch it is in (its records may all be still to come), no more.
    assert after <= WORKERS * batch_size, f"{after} calls after the driver exited"
    assert _settled(log) < n
    # The cluster is free for the next run.
    assert dask_client.submit(abs, -3, pure=False).result(timeout=60) == 3


def _task(run_id: str, index: int, dlq_url: str | None = None) -> BatchTask:
    return BatchTask(run_id=run_id, job_id=None, batch_index=index, first_index=2 * index,
                     records=[2 * index, 2 * index + 1], fn=negative_fails,
                     config=EngineConfig(batch_size=2, concurrency=1, retry=RetryPolicy(max_attempts=1),
                                         breaker=None, max_failures=None, seed=1),
                     classifier=Classifier(), stage="process", id_of=None, pickle_payloads=False, bulk=False,
                     dlq_url=dlq_url)


def negative_fails(record: int) -> int:
    """``record``, or ValueError for an odd one."""
    if record % 2:
        raise ValueError(f"odd {record}")
    return record


def test_a_released_run_starts_none_of_its_batches_but_one_running_still_stores_its_entries(
        redis_url: str) -> None:
    """In this process as the worker: a group still running when its run was released (the
    driver gave up on it) runs none of its next batches; a batch that was already running
    sends its entries on a connection of its own, closed after it, instead of one kept open
    for the life of the worker process."""
    run_id = f"released-{uuid.uuid4().hex[:8]}"
    dlq_url = f"{redis_url}{'&' if '?' in redis_url else '?'}key_prefix=bg-h2-{run_id}"
    assert [o.stats.batch_index for o in run_group([_task(run_id, 0, dlq_url), _task(run_id, 1, dlq_url)])] == [0, 1]
    assert worker.release_run(run_id) == 1
    assert run_group([_task(run_id, 2), _task(run_id, 3)]) == []
    dlq = open_dlq(dlq_url)
    try:
        outcome = worker.run_batch(_task(run_id, 4, dlq_url))  # the batch that was running
        assert outcome.stored and [e.record_index for e in outcome.entries] == [9]
        assert not [key for key in worker._queues if key[0] == run_id]
        assert sorted(e.record_index for e in dlq.list(run_id=run_id)) == [1, 3, 9]
    finally:
        dlq.remove([entry.id for entry in dlq.list(status="all")])
        dlq.close()


def test_a_cancelled_arun_starts_no_more_of_its_groups_batches(dask_client: Any, tmp_path: Path) -> None:
    n, batch_size, fast_until = 3000, 5, 100
    log = tmp_path / "calls.log"

    async def main() -> None:
        task = asyncio.ensure_future(batchguard.arun_batches(
            [(i, str(log), fast_until) for i in range(n)], fast_then_slow, batch_size=batch_size,
            executor=dask_client))
        while _lines(log) < fast_until + 40 and not task.done():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    at_end = _lines(log)
    assert fast_until + 40 <= at_end < n
    # Each worker finishes the batch it is in, no more.
    assert _settled(log) - at_end <= WORKERS * batch_size
