"""Hostile tests of SqliteDLQ's shared tracebacks under concurrency and crashes (issue 11 item 5,
H3): processes writing one queue file at once with the same stacks (both insert the same
digest), a status change racing the writes, and a job whose DLQ is its store's file killed with
SIGKILL mid-run then resumed. Afterwards every entry is whole: present once, its traceback
text there (no row names a digest that is missing), every field as a writer sent it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchguard.dlq import DeadLetter, SqliteDLQ
from batchguard.dlq.sqlite_rows import TRACEBACKS

# Each writer sends batches of every shape the write path has: one row (a single statement),
# several statements' worth, texts new to the write or stored by the other writer, entries
# whose traceback is their own, and ids every writer sends (an upsert race).
WRITER = r'''
import json, random, sys
from batchguard.dlq import Attempt, DeadLetter, SqliteDLQ
path, who, out, start = sys.argv[1], sys.argv[2], sys.argv[5], sys.argv[6]
batches, seed = int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)

def stack(j):
    return (f'Traceback (most recent call last):\n  File "pool.py", line {j}, in step_{j}\n'
            f'    raise ValueError(msg)\nValueError: ')

def entry(entry_id, index, message, traceback):
    at = "2026-12-07T10:00:00.000+00:00"
    return DeadLetter(id=entry_id, run_id=f"run-{who}", job_id=None, record_id=index, record_index=index,
                      batch_index=0, stage="process", payload={"who": who, "i": index}, payload_encoding="json",
                      error_class="permanent", error_type="ValueError", error_message=message,
                      traceback=traceback, attempts=(Attempt(1, at, "ValueError", message, None),),
                      first_failed_at=at, last_failed_at=at)

while not __import__("os").path.exists(start):
    pass
dlq = SqliteDLQ(path, timeout=120)
sent = open(out, "w")
index = 0
for k in range(batches):
    size = rng.choice([1, 1, 2, 3, 40, 700, 1500])
    batch = []
    for _ in range(size):
        index += 1
        message = f"{who} bad {index}"
        kind = rng.random()
        if kind < 0.15:  # its own traceback
            traceback = f"own {who} {index}\n{message}\n"
        else:
            traceback = f"{stack(rng.randrange(60))}{message}\n"
        entry_id = f"both-{rng.randrange(30)}" if kind > 0.97 else f"{who}-{index}"
        batch.append(entry(entry_id, index, message, traceback))
    dlq.send(batch)
    for e in batch:
        sent.write(e.to_json() + "\n")
sent.flush()
dlq.close()
'''

# Moves random present entries to resolved and back, forced, while the writers write: each
# change is a swap (BEGIN IMMEDIATE), which reads whole entries and writes them back.
SWAPPER = r'''
import os, random, sys
from batchguard.dlq import SqliteDLQ
path, stop, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
dlq = SqliteDLQ(path, timeout=120)
changes = 0
while not os.path.exists(stop) or changes < 20:
    present = dlq.count(status="all")
    if not present:
        continue
    ids = [e.id for e in dlq.list(limit=rng.choice([1, 30, 600]), offset=rng.randrange(present), status="all")]
    if ids:
        dlq.set_status(ids, rng.choice(["resolved", "open"]), reason="h3", force=True)
        changes += 1
dlq.close()
print(changes)
'''


def _dangling(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        ((n,),) = conn.execute(
            f"SELECT count(*) FROM dead_letters AS d WHERE traceback_digest IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {TRACEBACKS} AS t WHERE t.digest = d.traceback_digest)").fetchall()
    finally:
        conn.close()
    return int(n)


def _sent(*files: Path) -> dict[str, list[dict[str, Any]]]:
    """Every version of each entry the writers sent, by id."""
    versions: dict[str, list[dict[str, Any]]] = {}
    for file in files:
        for line in file.read_text().splitlines():
            entry = DeadLetter.from_json(line)
            versions.setdefault(entry.id, []).append(_unstatused(entry))
    return versions


def _unstatused(entry: DeadLetter) -> dict[str, Any]:
    data = entry.to_dict()
    for name in ("status", "status_reason", "status_by", "status_at", "history"):
        data.pop(name)
    return data


def _run(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return out


def test_processes_writing_one_queue_with_the_same_stacks_leave_every_entry_whole(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    SqliteDLQ(path).close()
    start, stop = tmp_path / "start", tmp_path / "stop"
    writers = [_run(WRITER, str(path), who, "25", str(seed), str(tmp_path / f"{who}.jsonl"), str(start))
               for seed, who in enumerate(["a", "b", "c"])]
    swapper = _run(SWAPPER, str(path), str(stop), "7")
    start.touch()
    for writer in writers:
        _finished(writer)
    stop.touch()
    assert int(_finished(swapper)) >= 20
    versions = _sent(*(tmp_path / f"{who}.jsonl" for who in "abc"))
    dlq = SqliteDLQ(path)
    stored = dlq.list(limit=None, status="all")
    assert sorted(e.id for e in stored) == sorted(versions)  # each present, once
    for entry in stored:
        assert _unstatused(entry) in versions[entry.id], entry.id
    assert _dangling(path) == 0
    conn = sqlite3.connect(path)
    # Both writers stored the pool's stacks: each once.
    ((texts, distinct),) = conn.execute(f"SELECT count(*), count(DISTINCT text) FROM {TRACEBACKS}").fetchall()
    assert texts == distinct and 0 < texts <= 60
    conn.close()
    dlq.close()


# A job whose DLQ is in its store's file (or a file of its own): each batch's entries commit in
# its checkpoint's transaction (or before it). Slow records, so a SIGKILL lands mid-run.
JOB = r'''
import sys, time
from batchguard import run_batches
store, dlq, pause = sys.argv[1], sys.argv[2] or None, float(sys.argv[3])

def fn(record):
    time.sleep(pause)
    if record % 3 == 0:
        raise ValueError(f"bad record {record}")
    if record % 3 == 1:
        try:
            raise OSError(f"io failed for {record}")
        except OSError as exc:
            raise KeyError(f"k{record}") from exc

run_batches(range(1200), fn, batch_size=40, job="nightly", store=store, dlq=dlq, concurrency=4)
'''


def _dead_letters(path: Path) -> int:
    if not path.exists():  # connecting would create it, which the job's store refuses
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.parametrize("own_file", [False, True], ids=["dlq-in-store", "dlq-own-file"])
def test_a_job_killed_mid_run_and_resumed_has_every_entry_once_with_its_traceback(tmp_path: Path,
                                                                                   own_file: bool) -> None:
    store_path = tmp_path / "jobs.db"
    dlq_path = tmp_path / "dlq.db" if own_file else store_path
    store, dlq = f"sqlite:///{store_path}", f"sqlite:///{dlq_path}" if own_file else ""
    for kill_after in (90, 400):  # killed twice, at different places
        job = _run(JOB, store, dlq, "0.004")
        while _dead_letters(dlq_path) < kill_after and job.poll() is None:
            time.sleep(0.01)
        alive = job.poll() is None
        if alive:
            os.kill(job.pid, signal.SIGKILL)
        job.communicate(timeout=60)
        # The first kill lands mid-run (90 of 800 dead letters); the second may find the
        # resumed run already done on a fast machine.
        assert alive or kill_after == 400, job.returncode
    _finished(_run(JOB, store, dlq, "0"))  # resumed to the end
    queue = SqliteDLQ(dlq_path)
    stored = queue.list(limit=None, job_id="nightly")
    assert sorted(e.record_index for e in stored) == [r for r in range(1200) if r % 3 != 2]
    for entry in stored:
        assert entry.traceback is not None and entry.traceback.startswith("Traceback (most recent call last):")
        assert entry.traceback.endswith(f"{entry.error_type}: {entry.error_message}\n")
        if entry.error_type == "KeyError":
            assert f"OSError: io failed for {entry.record_index}" in entry.traceback
    assert _dangling(dlq_path) == 0
    queue.close()



# A run dead-lettering into a queue (its writes on the recorder's writer thread, one statement
# each) while replays of the same queue claim, run and settle its entries (swaps).
RUN = r'''
import sys, time
from batchguard import run_batches
url, start = sys.argv[1], sys.argv[2]
while not __import__("os").path.exists(start):
    pass

def fn(record):
    time.sleep(0.0005)
    if record % 2:
        try:
            raise OSError(f"io failed for {record}")
        except OSError as exc:
            raise KeyError(f"k{record}") from exc
    raise ValueError(f"bad record {record}")

for part in range(4):
    run_batches(range(part * 500, (part + 1) * 500), fn, dlq=url, batch_size=25)
'''

REPLAYS = r'''
import os, sys
from batchguard import replay
url, stop = sys.argv[1], sys.argv[2]

def again(record):
    if record % 4 == 0:
        raise ValueError(f"still bad {record}")

rounds = 0
while not os.path.exists(stop):
    replay(url, again, batch_size=20)
    rounds += 1
replay(url, again, batch_size=20)  # the run has ended: every entry is there
print(rounds + 1)
'''


def test_replays_racing_a_runs_sends_leave_every_entry_whole(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    url = f"sqlite:///{path}"
    SqliteDLQ(path).close()
    start, stop = tmp_path / "start", tmp_path / "stop"
    run = _run(RUN, url, str(start))
    replays = [_run(REPLAYS, url, str(stop)) for _ in range(2)]
    start.touch()
    _finished(run)
    stop.touch()
    for process in replays:
        _finished(process)
    dlq = SqliteDLQ(path)
    stored = dlq.list(limit=None, status="all")
    assert sorted(e.payload for e in stored) == list(range(2000))  # each record once
    for entry in stored:
        record = entry.payload
        assert entry.status == ("open" if record % 4 == 0 else "replayed"), entry
        assert entry.traceback is not None and entry.traceback.startswith("Traceback (most recent call last):")
        assert entry.traceback.endswith(f"{entry.error_type}: {entry.error_message}\n")
        first = entry.attempts[0]
        assert (first.error_type, first.error_message) == (
            ("KeyError", f"'k{record}'") if record % 2 else ("ValueError", f"bad record {record}"))
        if record % 4 == 0:
            assert entry.error_message == f"still bad {record}" and len(entry.attempts) >= 2
        elif record % 2:
            assert f"OSError: io failed for {record}" in entry.traceback
    assert _dangling(path) == 0
    dlq.close()


# Processes of this release opening a queue the previous release made, all at once: the first
# migrates it (status and traceback_digest columns, the shared texts' table), the others wait.
OLD_SCHEMA = (
    "CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL, "
    "job_id TEXT, stage TEXT NOT NULL, error_class TEXT NOT NULL, error_type TEXT NOT NULL, entry TEXT NOT NULL)",
    "CREATE INDEX dead_letters_run_id ON dead_letters (run_id)",
)


def test_processes_opening_a_previous_release_queue_at_once_migrate_it_once_and_write(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    with conn:
        for statement in OLD_SCHEMA:
            conn.execute(statement)
        old = DeadLetter.from_json(
            '{"id":"old-1","run_id":"run-old","job_id":null,"record_id":1,"record_index":1,"batch_index":0,'
            '"stage":"process","payload":1,"payload_encoding":"json","error_class":"permanent",'
            '"error_type":"ValueError","error_message":"m","traceback":"Traceback (most recent call last):\\n'
            'ValueError: m\\n","attempts":[],"first_failed_at":"","last_failed_at":""}')
        conn.execute("INSERT INTO dead_letters (id, run_id, job_id, stage, error_class, error_type, entry) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", ("old-1", "run-old", None, "process", "permanent",
                                                      "ValueError", old.to_json()))
    conn.close()
    start = tmp_path / "start"
    writers = [_run(WRITER, str(path), who, "4", str(seed), str(tmp_path / f"{who}.jsonl"), str(start))
               for seed, who in enumerate(["a", "b", "c", "d"])]
    start.touch()
    for writer in writers:
        _finished(writer)
    versions = _sent(*(tmp_path / f"{who}.jsonl" for who in "abcd"))
    dlq = SqliteDLQ(path)
    stored = {e.id: e for e in dlq.list(limit=None, status="all")}
    assert stored.pop("old-1") == old
    assert sorted(stored) == sorted(versions)
    assert all(_unstatused(e) in versions[e.id] for e in stored.values())
    assert _dangling(path) == 0
    dlq.close()


def test_a_plain_run_killed_while_its_writer_thread_writes_leaves_only_whole_entries(tmp_path: Path) -> None:
    # A run that is no job writes each batch on the recorder's writer thread (one statement,
    # or a transaction when it stores new texts): a SIGKILL at any point leaves whole entries.
    path = tmp_path / "dlq.db"
    SqliteDLQ(path).close()
    start = tmp_path / "start"
    start.touch()
    for kill_after in (100, 700):
        run = _run(RUN, f"sqlite:///{path}", str(start))
        while _dead_letters(path) < kill_after and run.poll() is None:
            time.sleep(0.005)
        alive = run.poll() is None
        if alive:
            os.kill(run.pid, signal.SIGKILL)
        run.communicate(timeout=60)
        assert alive, run.returncode
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    dlq = SqliteDLQ(path)
    stored = dlq.list(limit=None)
    assert len(stored) >= 100 and len({(e.run_id, e.record_index) for e in stored}) == len(stored)
    for entry in stored:
        assert entry.traceback is not None and entry.traceback.startswith("Traceback (most recent call last):")
        assert entry.traceback.endswith(f"{entry.error_type}: {entry.error_message}\n")
    assert _dangling(path) == 0
    dlq.close()
