"""``run_batches(..., executor=client)`` on a real Dask LocalCluster (2 worker processes).

* The same input and failure plan, run locally and on the cluster, give the same run: status,
  counts, values in input order, DLQ entries (record, error, attempts with their delays) and
  retries.
* A worker SIGKILLed three times during a run: no record lost, no DLQ entry twice (the workers
  write their own entries to Redis; a batch rerun elsewhere writes the same ids again).
* A driver SIGKILLed during a job: the job resumes from its checkpoints, every record counted
  once.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
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
from batchguard.dlq import DeadLetter, MemoryDLQ, SqliteDLQ
from batchguard.dlq.urls import open_dlq
from batchguard.jobs import SqliteJobStore
from batchguard.sources import guard_parse_errors
from dask_cluster import (
    WORKERS,
    dask_client,
    doubled_amount,
    logged_slow_planned,
    parquet_fn,
    planned,
    slow_planned,
    worker_pids,
)

__all__ = ["dask_client"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(240)

RETRY = RetryPolicy(max_attempts=3, base_delay=0.002, max_delay=0.01, jitter="none", seed=11)
N = 150


def _fails(i: int) -> bool:
    return i % 11 == 4 or i % 13 == 6


def _entry_facts(entry: DeadLetter) -> tuple[Any, ...]:
    """What an entry says about its record, wherever it was built: not its run or time, nor the
    file its traceback names (cloudpickle ships the tests' module to the workers by value)."""
    assert entry.traceback is not None
    return (entry.record_index, entry.record_id, entry.batch_index, entry.stage, entry.payload,
            entry.payload_encoding, entry.error_class, entry.error_type, entry.error_message,
            entry.http_status, entry.traceback.splitlines()[-1],
            [(a.attempt, a.error_type, a.error_message, a.delay_s) for a in entry.attempts])


@pytest.mark.parametrize(("shape", "batch_size", "concurrency"), [
    ("list", 7, 1), ("generator", 16, 2)])
def test_the_same_failure_plan_gives_the_same_run_locally_and_on_the_cluster(
        dask_client: Any, tmp_path: Path, shape: str, batch_size: int, concurrency: int) -> None:
    token = uuid.uuid4().hex  # the workers count this run's tries apart from every other run's
    records = [(token, i) for i in range(N)]

    def given() -> Any:
        return list(records) if shape == "list" else (r for r in records)

    runs = {}
    for where, executor in (("local", None), ("cluster", dask_client)):
        dlq = SqliteDLQ(tmp_path / f"{where}.db")
        report = batchguard.run_batches(given(), planned, batch_size=batch_size, concurrency=concurrency,
                                        retry=RETRY, dlq=dlq, executor=executor)
        runs[where] = (report, sorted(_entry_facts(e) for e in dlq.list(run_id=report.run_id)))
        dlq.close()
    (local, local_entries), (remote, remote_entries) = runs["local"], runs["cluster"]
    assert (remote.status, remote.total, remote.success_count, remote.failure_count,
            remote.pending_count, remote.retry_count, remote.dlq_count) == (
        local.status, local.total, local.success_count, local.failure_count, local.pending_count,
        local.retry_count, local.dlq_count)
    assert remote.successful == local.successful == [i * 3 for i in range(N) if not _fails(i)]
    assert remote_entries == local_entries
    assert len(remote_entries) == sum(map(_fails, range(N)))
    assert remote.errors_by_type == local.errors_by_type
    assert [(b.batch_index, b.size, b.succeeded, b.failed, b.retries) for b in remote.batches] == [
        (b.batch_index, b.size, b.succeeded, b.failed, b.retries) for b in local.batches]


def test_the_report_without_a_dlq_lists_the_failed_records_as_locally(dask_client: Any) -> None:
    token = uuid.uuid4().hex
    records = [(token, i) for i in range(40)]
    remote = batchguard.run_batches(records, planned, batch_size=8, retry=RETRY, executor=dask_client)
    local = batchguard.run_batches(records, planned, batch_size=8, retry=RETRY)
    assert list(remote.failed) == list(local.failed) == [r for r in records if _fails(r[1])]
    assert list(remote.errors) == list(local.errors)


def _wait_for_workers(client: Any) -> None:
    # The nanny restarts a killed worker; on a loaded 2-core machine that took over 60 s once.
    client.wait_for_workers(WORKERS, timeout=180)


def test_a_worker_killed_three_times_loses_no_record_and_writes_no_entry_twice(
        dask_client: Any, redis_url: str, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    n, batch_size = 400, 8
    log = tmp_path / "calls.log"
    records = [(token, i, str(log)) for i in range(n)]
    dlq_url = f"{redis_url}{'&' if '?' in redis_url else '?'}key_prefix=bg-dask-{token[:8]}"
    killed: list[int] = []

    def kill_a_worker(progress: batchguard.BatchProgress) -> None:
        # Three kills, spread over the run: after 3, 15 and 27 of its 50 batches came back.
        if len(killed) < 3 and progress.batches_completed >= 3 + 12 * len(killed):
            pids = sorted(worker_pids(dask_client).values())
            if not pids:
                return  # both workers are coming back: the next batch back tries again
            victim = pids[len(killed) % len(pids)]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    try:
        report = batchguard.run_batches(records, logged_slow_planned, batch_size=batch_size, retry=RETRY,
                                        dlq=dlq_url, executor=dask_client, on_progress=kill_a_worker)
    finally:
        _wait_for_workers(dask_client)
    assert len(killed) == 3
    assert report.status == "partial_success" and report.pending_count == 0
    assert report.success_count + report.failure_count == n  # 0 lost
    assert report.successful == [i * 3 for i in range(n) if not _fails(i)]
    # The kills landed inside batches, which Dask ran again on the other worker: some records
    # returned twice (at least once, as after a crash) ...
    calls = collections.Counter(int(line) for line in log.read_text().split())
    assert set(calls) == {i for i in range(n) if not _fails(i)} and max(calls.values()) >= 2
    dlq = open_dlq(dlq_url)
    try:
        # ... and yet each dead record has one entry: a rerun batch wrote the same ids again.
        entries = dlq.list(run_id=report.run_id)
        assert sorted(e.record_index for e in entries) == [i for i in range(n) if _fails(i)]
        assert dlq.count(status="all") == len(entries) == report.failure_count == report.dlq_count
    finally:
        for entry in dlq.list(status="all"):
            dlq.remove(entry.id)
        dlq.close()


_DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import cloudpickle, dask_cluster, distributed
    import batchguard
    cloudpickle.register_pickle_by_value(dask_cluster)
    with distributed.Client({address!r}) as client:
        records = [({token!r}, i) for i in range({n})]
        batchguard.run_batches(records, dask_cluster.slow_planned, batch_size={batch_size},
                               job="dask-job", store={store!r}, executor=client,
                               retry=batchguard.RetryPolicy(max_attempts=3, base_delay=0.002,
                                                            max_delay=0.01, jitter="none", seed=11))
""")


def test_a_job_resumes_on_the_cluster_after_its_driver_was_killed(dask_client: Any, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    n, batch_size = 600, 10
    db = tmp_path / "jobs.db"
    store = f"sqlite:///{db}"
    code = _DRIVER.format(tests=str(Path(__file__).parent), address=dask_client.scheduler.address,
                          token=token, n=n, batch_size=batch_size, store=store)
    log = tmp_path / "driver.log"
    with log.open("wb") as err:
        driver = subprocess.Popen([sys.executable, "-c", code], stderr=err)
    done = 0
    deadline = time.monotonic() + 120
    try:
        while done < 5 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
            if db.exists():
                with SqliteJobStore(db) as opened:
                    state = opened.get("dask-job")
                    done = 0 if state is None else state.batches_done
        assert driver.poll() is None, log.read_text()
        assert done >= 5
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    records = [(token, i) for i in range(n)]
    report = batchguard.run_batches(records, slow_planned, batch_size=batch_size, job="dask-job",
                                    store=store, retry=RETRY, executor=dask_client)
    assert 5 <= report.skipped_batches < n // batch_size
    assert report.success_count + report.failure_count == n - report.skipped_batches * batch_size
    with SqliteJobStore(db) as opened:
        state = opened.get("dask-job")
        assert state is not None and state.status == "completed"
        assert (state.succeeded, state.failed) == (n - sum(map(_fails, range(n))), sum(map(_fails, range(n))))
        dlq = opened.open_default_dlq()
        try:
            entries = dlq.list(job_id="dask-job", status="all")
            assert sorted(e.record_index for e in entries) == [i for i in range(n) if _fails(i)]
        finally:
            dlq.close()


def test_arun_batches_runs_on_the_cluster_and_a_cancel_stops_it(dask_client: Any) -> None:
    token = uuid.uuid4().hex
    records = [(token, i) for i in range(60)]
    seen: list[batchguard.BatchProgress] = []

    async def main() -> batchguard.BatchReport[Any]:
        report = await batchguard.arun_batches(records, planned, batch_size=8, retry=RETRY,
                                               executor=dask_client)
        n = 400
        task = asyncio.ensure_future(batchguard.arun_batches(
            [(token + "-slow", i) for i in range(n)], slow_planned, batch_size=8, retry=RETRY,
            executor=dask_client, on_progress=seen.append))
        while not seen:  # cancelled once the cluster has returned a batch
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return report

    report = asyncio.run(main())
    assert report.successful == [i * 3 for i in range(60) if not _fails(i)]
    # The driver stopped at the next batch that came back: most of the 50 batches never ran.
    assert seen[-1].succeeded + seen[-1].failed < 400


def test_a_sources_records_keep_their_ids_on_the_cluster(dask_client: Any, tmp_path: Path) -> None:
    # The driver reads the file and ships its records: each still knows its file and line on the
    # worker, so entries are named by them, and a line that does not parse is dead-lettered.
    lines = [json.dumps({"amount": i}) for i in range(30)]
    lines[7] = "{not json"
    lines[12] = json.dumps({"price": 3})
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(lines) + "\n")
    source = batchguard.read(str(path))
    dlq = MemoryDLQ()
    report = batchguard.run_batches(source, guard_parse_errors(doubled_amount), batch_size=4,
                                    id_of=source.id_of, dlq=dlq, executor=dask_client)
    assert report.successful == [i * 2.0 for i in range(30) if i not in (7, 12)]
    entries = sorted(dlq.list(), key=lambda e: e.record_index)
    assert [(e.record_id, e.error_type) for e in entries] == [
        (f"{path}:8", "InputParseError"), (f"{path}:13", "KeyError")]


def test_workers_read_their_own_row_ranges_of_a_parquet_source_on_s3(dask_client: Any, s3_endpoint: str) -> None:
    # The driver reads only the footers and ships row ranges; each worker opens the objects with
    # the source's storage options (given explicitly: the workers' environment has no endpoint).
    boto3 = pytest.importorskip("boto3")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    bucket = f"dask-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    for name, values, group in (("a", range(45), 10), ("b", range(100, 130), 30)):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"v": list(values)}), sink, row_group_size=group)
        s3.put_object(Bucket=bucket, Key=f"in/{name}.parquet", Body=sink.getvalue().to_pybytes())
    source = batchguard.read(f"s3://{bucket}/in/*.parquet", endpoint_url=s3_endpoint,
                             key="testing-key-id", secret="testing-secret-key")
    runs = {}
    for where, executor in (("local", None), ("cluster", dask_client)):
        dlq = MemoryDLQ()
        report = batchguard.run_batches(source, parquet_fn, batch_size=16, id_of=source.id_of, dlq=dlq,
                                        executor=executor)
        runs[where] = (report.status, report.total, report.successful,
                       sorted((e.record_index, e.record_id, e.error_message) for e in dlq.list()))
    assert runs["cluster"] == runs["local"]
    assert runs["cluster"][1] == 75 and len(runs["cluster"][3]) == 12
    assert (46, f"s3://{bucket}/in/b.parquet#1", "bad 101") in runs["cluster"][3]
