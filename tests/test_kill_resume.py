"""A job killed with SIGKILL at random points, then resumed, loses nothing and records nothing twice.

Each case runs ``kill_resume_child.py`` in a real subprocess, kills it (SIGKILL) after a random
number of records, repeats, then lets a last run finish. In the end every record has either
succeeded (exactly one row in the sink's ``done`` table) or been dead-lettered (exactly one DLQ
entry), never both, never neither. The sink's ``calls`` table counts every call of ``fn``:
records called more than once must belong to batches that were not checkpointed when a kill
came (at-least-once only for the batches in flight), and a checkpointed batch never runs again.

The kill points come from a seed: BATCHGUARD_KILL_SEED when set, else a fresh random one. Each
case prints its seed and the command that replays it, and every assertion message names them
(pytest shows a failing test's output). A replay kills after the same numbers of calls; where
the records in flight stand then is still up to the scheduler.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchguard import job_status
from batchguard.dlq import JsonlDLQ, PostgresDLQ, SqliteDLQ

CHILD = Path(__file__).with_name("kill_resume_child.py")
RECORDS = 2000
BATCH_SIZE = 50
CONCURRENCY = 4
KILLS = 3
FAIL_EVERY = 11
SEED_VARIABLE = "BATCHGUARD_KILL_SEED"

NATIVE_CONCURRENT = [1, CONCURRENCY]


@dataclass
class Case:
    store: str
    dlq: str  # "-": the job's default DLQ, in the store's database
    engine: str = "native"
    concurrency: int = CONCURRENCY


def sink_counts(sink: Path) -> tuple[Counter[int], set[int]]:
    if not sink.exists():
        return Counter(), set()
    with sqlite3.connect(sink, timeout=30) as conn:
        try:
            calls = Counter(r for (r,) in conn.execute("SELECT record_id FROM calls"))
            done = {r for (r,) in conn.execute("SELECT record_id FROM done")}
        except sqlite3.OperationalError:  # the child has not created the tables yet
            return Counter(), set()
    return calls, done


def calls_so_far(sink: Path) -> int:
    if not sink.exists():
        return 0
    try:
        with sqlite3.connect(sink, timeout=30) as conn:
            (n,) = conn.execute("SELECT count(*) FROM calls").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(n)


def done_batches(store_url: str, job: str) -> set[int]:
    """The job's checkpointed batches, read from the store's table (its on-disk schema)."""
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///"), timeout=30) as conn:
            try:
                rows = conn.execute("SELECT batch_index FROM job_batches WHERE job = ?", (job,)).fetchall()
            except sqlite3.OperationalError:  # killed before the store created its tables
                return set()
    else:
        import psycopg  # only the postgres case gets here, and only with psycopg installed

        with psycopg.connect(store_url) as conn:
            rows = conn.execute("SELECT batch_index FROM batchguard_job_batches WHERE job = %s", (job,)).fetchall()
    return {int(r[0]) for r in rows}


def start(case: Case, sink: Path, job: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), case.store, case.dlq, str(sink), job, str(RECORDS), str(BATCH_SIZE),
         str(case.concurrency), case.engine],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def open_dlq(case: Case) -> Any:
    if case.dlq.startswith("jsonl:///"):
        return JsonlDLQ(case.dlq.removeprefix("jsonl:///"))
    if case.store.startswith("sqlite:///"):
        return SqliteDLQ(case.store.removeprefix("sqlite:///"))
    return PostgresDLQ(case.store)


def replay_hint(seed: int, request: pytest.FixtureRequest) -> str:
    return f"seed {seed}; replay: {SEED_VARIABLE}={seed} python -m pytest '{request.node.nodeid}'"


def kill_and_resume(case: Case, tmp_path: Path, seed: int, request: pytest.FixtureRequest) -> dict[str, Any]:
    seeded = replay_hint(seed, request)
    print(seeded)
    message = f"{seeded}\ncase {case}"
    rng = random.Random(seed)
    job = f"kill-{uuid.uuid4().hex[:8]}"
    sink = tmp_path / f"sink-{job}.db"
    kills: list[dict[str, Any]] = []
    for _ in range(KILLS):
        already = calls_so_far(sink)
        target = already + rng.randint(1, int((RECORDS - already) * 0.8) or 1)
        with start(case, sink, job) as proc:
            deadline = time.monotonic() + 60
            while calls_so_far(sink) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        if proc.returncode == 0:
            # The child finished before the kill landed (a loaded machine can starve this
            # poller): the job is complete, and the checks below still hold for it.
            print(f"seed {seed}: the child finished before kill {len(kills) + 1}")
            break
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(f"{message}\nthe child ended before the kill ({proc.returncode}):\n{out}\n{err}")
        calls, _ = sink_counts(sink)
        kills.append({"at_calls": sum(calls.values()), "done": done_batches(case.store, job),
                      "calls": calls})
        assert job_status(job, store=case.store).status == "running", message  # killed: never marked otherwise
    with start(case, sink, job) as proc:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{message}\nthe resumed run failed:\n{out}\n{err}"
    final = json.loads(out.strip().splitlines()[-1])

    calls, done = sink_counts(sink)
    failing = {i for i in range(RECORDS) if i % FAIL_EVERY == 0}
    dlq = open_dlq(case)
    try:
        entries = dlq.list(job_id=job)
    finally:
        dlq.close()
    per_record = Counter(e.record_id for e in entries)
    # Nothing lost, nothing twice: each record succeeded once or has exactly one DLQ entry.
    assert done == set(range(RECORDS)) - failing, message
    assert set(per_record) == failing and set(per_record.values()) == {1}, message
    assert done.isdisjoint(per_record), message
    state = job_status(job, store=case.store)
    assert (state.status, state.succeeded, state.failed) == ("completed", len(done), len(failing)), message
    # At-least-once, bounded: a batch checkpointed before a kill never ran again...
    for kill in kills:
        for batch in kill["done"]:
            for rid in range(batch * BATCH_SIZE, (batch + 1) * BATCH_SIZE):
                assert calls[rid] == kill["calls"][rid], f"{message}: record {rid} of done batch {batch} reran"
    # ...and only the batches in flight at a kill did.
    extra = sum(n - 1 for n in calls.values())
    rerun_batches = {rid // BATCH_SIZE for rid, n in calls.items() if n > 1}
    assert all(calls[i] >= 1 for i in range(RECORDS)), message
    assert extra <= KILLS * case.concurrency * BATCH_SIZE, message
    return {"kills_at_calls": [k["at_calls"] for k in kills], "extra_calls": extra,
            "rerun_batches": len(rerun_batches), "final": final}


def seeds() -> list[int]:
    """The seed to replay (BATCHGUARD_KILL_SEED), else a fresh one: it is in each test's id too."""
    chosen = os.environ.get(SEED_VARIABLE)
    if chosen is None:
        return [random.randrange(1 << 30)]
    try:
        return [int(chosen)]
    except ValueError:
        raise pytest.UsageError(f"{SEED_VARIABLE} must be an integer, not {chosen!r}") from None


@pytest.mark.parametrize("concurrency", NATIVE_CONCURRENT)
@pytest.mark.parametrize("seed", seeds())
def test_sqlite_store_with_its_dlq_in_the_same_file(tmp_path: Path, seed: int, concurrency: int,
                                                    request: pytest.FixtureRequest) -> None:
    case = Case(f"sqlite:///{tmp_path / 'jobs.db'}", "-", concurrency=concurrency)
    outcome = kill_and_resume(case, tmp_path, seed, request)
    print(f"sqlite, same transaction, concurrency {concurrency}:", outcome)


@pytest.mark.parametrize("concurrency", NATIVE_CONCURRENT)
@pytest.mark.parametrize("seed", seeds())
def test_sqlite_store_with_a_separate_jsonl_dlq(tmp_path: Path, seed: int, concurrency: int,
                                                request: pytest.FixtureRequest) -> None:
    case = Case(f"sqlite:///{tmp_path / 'jobs.db'}", f"jsonl:///{tmp_path / 'dead.jsonl'}",
                concurrency=concurrency)
    outcome = kill_and_resume(case, tmp_path, seed, request)
    print(f"sqlite + jsonl, ordered commits, concurrency {concurrency}:", outcome)


@pytest.mark.parametrize("seed", seeds())
def test_sqlite_store_on_the_reference_engine(tmp_path: Path, seed: int, request: pytest.FixtureRequest) -> None:
    case = Case(f"sqlite:///{tmp_path / 'jobs.db'}", "-", engine="python")
    print("sqlite, python engine:", kill_and_resume(case, tmp_path, seed, request))


@pytest.mark.postgres
@pytest.mark.parametrize("concurrency", NATIVE_CONCURRENT)
@pytest.mark.parametrize("seed", seeds())
def test_postgres_store_with_its_dlq_in_the_same_database(postgres_url: str, tmp_path: Path, seed: int,
                                                          concurrency: int, request: pytest.FixtureRequest) -> None:
    case = Case(postgres_url, "-", concurrency=concurrency)
    outcome = kill_and_resume(case, tmp_path, seed, request)
    print(f"postgres, same transaction, concurrency {concurrency}:", outcome)
