"""Hostile tests of the replay claims (session 16, H1): many replays of one queue at once, with
random failures in ``fn``, on real SQLite and JSONL files and real Redis and PostgreSQL servers.

What must hold whatever the interleaving: no entry lost or left ``replaying``; each record
succeeds at most once across every replay, and its entry is ``replayed`` exactly when it did;
every failed call of a record is in its entry's attempt history, once.
"""

from __future__ import annotations

import collections
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from batchguard import ConfigError, MemoryDLQ, RetryPolicy, replay, run_batches
from batchguard.dlq import open_dlq
from test_replay_claim import Where

ONCE = RetryPolicy(max_attempts=1)
N = 80
DURABLE = ["sqlite", "jsonl", pytest.param("redis", marks=pytest.mark.redis),
           pytest.param("postgres", marks=pytest.mark.postgres)]

# A replay process: fails about a third of its calls (seeded per process), logs each call's
# outcome, then replays again (what an operator's retry loop does) until a pass replays nothing.
WORKER = '''
import os, random, sys, time
from batchguard import RetryPolicy, replay
url, log, go, seed, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
while not os.path.exists(go):
    time.sleep(0.005)
def fn(record):
    failed = rng.random() < 0.35
    with open(log, "a") as out:
        out.write(f"{os.getpid()} {record} {'fail' if failed else 'ok'}\\n")
    time.sleep(rng.random() * 0.004)
    if failed:
        raise ValueError(f"flaky {record}")
    return record
for _ in range(3):
    report = replay(url, fn, retry=RetryPolicy(max_attempts=1), batch_size=rng.choice([3, 5, 7]),
                    concurrency=concurrency, engine=rng.choice(["native", "python"]))
    print(report.replayed, report.kept, report.held_elsewhere, report.claims_lost, flush=True)
'''


def _always_fails(record: int) -> int:
    raise ValueError(f"down {record}")


@pytest.mark.parametrize("backend", DURABLE)
def test_four_replay_processes_with_random_failures_lose_nothing_and_succeed_once(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    where = Where(backend, request, tmp_path)
    try:
        queue = where.open()
        run_batches(range(N), _always_fails, dlq=queue, retry=ONCE, batch_size=N)
        before = {e.id: len(e.attempts) for e in queue.iter()}
        assert len(before) == N
        log, go = tmp_path / "calls.log", tmp_path / "go"
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, where.url, str(log), str(go), str(seed),
                                     str(1 + seed % 2)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for seed in range(4)]
        go.touch()
        outputs = [w.communicate(timeout=400) for w in workers]
        assert [w.returncode for w in workers] == [0, 0, 0, 0], outputs

        calls: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for line in log.read_text().splitlines():
            _, record, outcome = line.split()
            calls[int(record)][outcome] += 1
        queue = where.open()
        entries = {e.id: e for e in queue.iter(status="all")}
        assert entries.keys() == before.keys()  # nothing lost, nothing added
        statuses = collections.Counter(e.status for e in entries.values())
        assert set(statuses) <= {"open", "replayed"}, statuses  # none left claimed
        for entry_id, entry in entries.items():
            record = int(entry.payload)
            ok, failed = calls[record]["ok"], calls[record]["fail"]
            assert ok <= 1, (record, calls[record])  # succeeded at most once
            assert (entry.status == "replayed") == (ok == 1), (record, entry.status, calls[record])
            # Each failed call appended exactly once to the entry's history.
            assert len(entry.attempts) == before[entry_id] + failed, (record, calls[record], entry.attempts)
        replayed = sum(int(line.split()[0]) for out, _ in outputs for line in out.splitlines())
        assert replayed == statuses["replayed"]
    finally:
        where.opener.close()


@pytest.mark.parametrize("lease", [0.001, 0.005, 0.5, 0.999])
def test_a_lease_too_short_to_renew_is_refused_before_any_claim(lease: float, tmp_path: Path) -> None:
    """A claim renewed every third of a 5 ms lease goes stale between two renewals on any loaded
    machine (and its time is stored to the millisecond): two replays then took each other's claims
    over and ran records twice, while the renewal thread spun on the queue. Refused now, naming
    the least lease, before anything is claimed."""
    queue = open_dlq(f"sqlite:///{tmp_path / 'dlq.db'}")
    run_batches(range(5), _always_fails, dlq=queue, retry=ONCE)
    ran: list[int] = []
    with pytest.raises(ConfigError, match=r"lease must be at least 1 s") as refused:
        replay(queue, ran.append, retry=ONCE, lease=lease)
    assert f"{lease:g}" in str(refused.value)
    assert ran == [] and queue.count() == 5 and queue.count(status="replaying") == 0
    assert replay(queue, ran.append, retry=ONCE, lease=1).replayed == 5  # the least lease works



@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("backend", ["memory", *DURABLE])
def test_four_replay_threads_sharing_one_queue_object_lose_nothing_and_succeed_once(
        backend: str, engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The same, with four threads of one process replaying through ONE queue object (its
    connection, pool, file descriptor and in-memory index shared), at concurrency 1 to 4."""
    where = None if backend == "memory" else Where(backend, request, tmp_path)
    try:
        queue = MemoryDLQ() if where is None else where.open()
        run_batches(range(N), _always_fails, dlq=queue, retry=ONCE, batch_size=N)
        before = {e.id: len(e.attempts) for e in queue.iter()}
        calls: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        lock = threading.Lock()
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def one(seed: int) -> None:
            rng = random.Random(seed)

            def fn(record: int) -> int:
                with lock:
                    failed = rng.random() < 0.35
                    calls[record]["fail" if failed else "ok"] += 1
                time.sleep(rng.random() * 0.003)
                if failed:
                    raise ValueError(f"flaky {record}")
                return record

            start.wait()
            try:
                for _ in range(3):
                    replay(queue, fn, retry=ONCE, batch_size=rng.choice([3, 5, 7]), concurrency=1 + seed,
                           engine=engine)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=400)
        assert errors == []
        entries = {e.id: e for e in queue.iter(status="all")}
        assert entries.keys() == before.keys()
        assert {e.status for e in entries.values()} <= {"open", "replayed"}
        for entry_id, entry in entries.items():
            record = int(entry.payload)
            ok, failed = calls[record]["ok"], calls[record]["fail"]
            assert ok <= 1, (record, calls[record])
            assert (entry.status == "replayed") == (ok == 1), (record, entry.status, calls[record])
            assert len(entry.attempts) == before[entry_id] + failed, (record, calls[record])
    finally:
        if where is not None:
            where.opener.close()


WRITER = '''
import os, sys
from batchguard import RetryPolicy, run_batches
def fails(record):
    raise ValueError(record)
open(sys.argv[2] + ".started", "w").close()
while not os.path.exists(sys.argv[2]):
    run_batches(range(20), fails, dlq=sys.argv[1], retry=RetryPolicy(max_attempts=1), batch_size=1, stage="other")
'''


@pytest.mark.redis
def test_a_redis_replay_gets_through_while_runs_dead_letter_into_the_same_queue(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every Redis swap WATCHed the whole entries hash, so any write to the queue made it start
    over; a replay's claim of a page (read, decode and decide a thousand entries) never got
    through while runs dead-lettered into the same queue: DLQError "change kept conflicting
    with other writers (50 tries)". Only a change of the entries read makes a swap start over."""
    where = Where("redis", request, tmp_path)
    stop = tmp_path / "stop"
    writers: list[subprocess.Popen[str]] = []
    try:
        run_batches(range(3000), _always_fails, dlq=where.open(), retry=ONCE, batch_size=1000)
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, where.url, str(stop)], text=True)
                   for _ in range(3)]
        while not Path(str(stop) + ".started").exists():
            assert all(w.poll() is None for w in writers)
            time.sleep(0.01)
        report = replay(where.open(), lambda record: record, retry=ONCE, stage="process")
        assert report.replayed == 3000
        stop.touch()
        for writer in writers:
            assert writer.wait(timeout=120) == 0
        queue = where.open()
        assert queue.count(status="replayed", stage="process") == 3000
        assert queue.count(status="replaying") == 0 and queue.count(stage="other") > 0
    finally:
        stop.touch()
        for writer in writers:
            writer.wait(timeout=120)
        where.opener.close()


@pytest.mark.redis
def test_a_run_stores_its_dead_letters_in_redis_while_other_runs_write_to_the_same_queue(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The same for a run's own writes: a batch of a thousand dead letters sent while two other
    runs dead-lettered into the queue kept conflicting, and the run raised DLQError."""
    where = Where("redis", request, tmp_path)
    stop = tmp_path / "stop"
    writers: list[subprocess.Popen[str]] = []
    try:
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, where.url, str(stop)], text=True)
                   for _ in range(2)]
        queue = where.open()
        while queue.count(stage="other") < 100:  # both writing
            assert all(w.poll() is None for w in writers)
            time.sleep(0.01)
        report = run_batches(range(3000), _always_fails, dlq=where.url, retry=ONCE, batch_size=1000)
        assert report.failure_count == 3000
        stop.touch()
        for writer in writers:
            assert writer.wait(timeout=120) == 0
        queue = where.open()
        assert queue.count(stage="process") == 3000
        assert [int(e.payload) for e in queue.iter(stage="process")] == list(range(3000))  # in order
    finally:
        stop.touch()
        for writer in writers:
            writer.wait(timeout=120)
        where.opener.close()


CHANGER = '''
import random, sys
from batchguard.dlq import open_dlq
queue = open_dlq(sys.argv[1])
ids = [entry.id for entry in queue.iter(status="all")]
rng = random.Random(int(sys.argv[2]))
for _ in range(20):
    chosen = rng.sample(ids, rng.choice([5, 50, 400, len(ids)]))
    queue.set_status(chosen, rng.choice(["open", "resolved"]), reason="churn", force=True)
'''


@pytest.mark.postgres
def test_concurrent_status_changes_of_overlapping_postgres_entries_do_not_deadlock(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A swap locked its rows FOR UPDATE in whatever order the plan read them (the physical
    order, which updates change); three processes changing overlapping sets of entries (as
    replays' claims, renewals and settles and operators' skips do) deadlocked, and PostgreSQL
    failed one with "deadlock detected". Rows are locked in id order now."""
    where = Where("postgres", request, tmp_path)
    try:
        run_batches(range(1000), _always_fails, dlq=where.open(), retry=ONCE)
        changers = [subprocess.Popen([sys.executable, "-c", CHANGER, where.url, str(seed)], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in range(4)]
        outputs = [changer.communicate(timeout=400) for changer in changers]
        assert [changer.returncode for changer in changers] == [0, 0, 0, 0], [err[-2000:] for _, err in outputs]
        assert where.open().count(status="all") == 1000
    finally:
        where.opener.close()
