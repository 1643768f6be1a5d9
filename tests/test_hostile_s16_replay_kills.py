"""Hostile tests of the replay claims (session 16, H1): a replay process killed at a random
moment -- SIGKILL (nothing runs after it) or SIGINT (Ctrl-C: the replay gives its claims back)
-- on real SQLite and JSONL files and real Redis and PostgreSQL servers.

What must hold: no entry is lost or torn; after a SIGINT nothing stays ``replaying`` unless
the interrupt landed while the claims were being given back; after a SIGKILL the next replay
with ``reclaim=True`` takes the stranded claims over, and then every entry is ``replayed`` or
``open``, a replayed one's record having succeeded at least once (a killed replay may have run
a record whose outcome it never wrote: at least once, as documented).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchguard import MemoryDLQ, RetryPolicy, replay, run_batches
from batchguard.dlq import DeadLetter, DeadLetterQueue, JsonlDLQ, SqliteDLQ
from test_replay_claim import Where

ONCE = RetryPolicy(max_attempts=1)
N = 60
DURABLE = ["sqlite", "jsonl", pytest.param("redis", marks=pytest.mark.redis),
           pytest.param("postgres", marks=pytest.mark.postgres)]

WORKER = '''
import os, random, sys, time
from batchguard import RetryPolicy, replay
url, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
def fn(record):
    failed = rng.random() < 0.3
    with open(log, "a") as out:
        out.write(f"{record} {'fail' if failed else 'ok'}\\n")
    time.sleep(rng.random() * 0.01)
    if failed:
        raise ValueError(f"flaky {record}")
    return record
open(log + ".started", "w").close()
replay(url, fn, retry=RetryPolicy(max_attempts=1), batch_size=4, concurrency=2, lease=1.0)
'''


def _always_fails(record: int) -> int:
    raise ValueError(f"down {record}")


def _calls(log: Path) -> dict[int, collections.Counter[str]]:
    calls: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    if log.exists():
        for line in log.read_text().splitlines():
            if len(line.split()) == 2:  # a line the kill tore is no call we can count
                record, outcome = line.split()
                calls[int(record)][outcome] += 1
    return calls


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "int"])
@pytest.mark.parametrize("backend", DURABLE)
def test_a_replay_killed_at_random_moments_loses_nothing(
        backend: str, sig: signal.Signals, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    where = Where(backend, request, tmp_path)
    rng = random.Random(f"{backend}{sig}")
    try:
        queue = where.open()
        run_batches(range(N), _always_fails, dlq=queue, retry=ONCE, batch_size=N)
        ids = {e.id for e in queue.iter()}
        log = tmp_path / "calls.log"
        for round_ in range(4):
            worker = subprocess.Popen([sys.executable, "-c", WORKER, where.url, str(log), str(round_)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            started = Path(str(log) + ".started")
            while not started.exists() and worker.poll() is None:
                time.sleep(0.005)
            started.unlink(missing_ok=True)
            time.sleep(rng.random() * 0.6)
            if worker.poll() is None:
                os.kill(worker.pid, sig)
            _, err = worker.communicate(timeout=120)
            if sig == signal.SIGINT:
                assert worker.returncode in (0, 1, -signal.SIGINT), err
                queue = where.open()
                stuck = queue.count(status="replaying")
                # Given back, unless the interrupt landed in the giving back itself.
                assert stuck == 0 or "could not give back" in err, (stuck, err[-3000:])
        queue = where.open()
        assert {e.id for e in queue.iter(status="all")} == ids  # nothing lost, every entry readable
        done: list[int] = []
        replay(queue, done.append, retry=ONCE, reclaim=True)
        calls = _calls(log)
        entries = list(queue.iter(status="all"))
        assert {e.id for e in entries} == ids
        assert collections.Counter(e.status for e in entries) == {"replayed": N}
        for entry in entries:  # the last replay ran exactly the records no earlier one settled
            record = int(entry.payload)
            if record not in done:
                assert calls[record]["ok"] >= 1, (record, calls[record])
            assert entry.history[-1].status == "replayed"
            assert all(change.status != "replaying" for change in entry.history)
    finally:
        where.opener.close()


def _interrupted_once(base: type[DeadLetterQueue], claim_only: bool) -> type[DeadLetterQueue]:
    """``base`` whose first write of claims (or of any change, when not ``claim_only``) is
    followed by a Ctrl-C before the write returns: what the SIGINT test above hit in a Redis
    reply's recv and a JSONL fsync, made deterministic."""

    class Interrupted(base):  # type: ignore[misc,valid-type]
        armed = True

        def _swap(self, ids: list[str], decide: Any) -> dict[str, DeadLetter]:
            found: dict[str, DeadLetter] = super()._swap(ids, decide)
            claims = any(entry.status == "replaying" for entry in found.values())
            if self.armed and (claims or not claim_only):
                self.armed = False
                raise KeyboardInterrupt
            return found

    return Interrupted


@pytest.mark.parametrize("backend", ["memory", "sqlite", "jsonl"])
def test_ctrl_c_while_a_claim_is_written_gives_the_claim_back(backend: str, tmp_path: Path) -> None:
    """A Ctrl-C that landed while the queue wrote a page's claims left them ``replaying``: the
    replay had not yet counted them as held, so its exit gave none back, and for the lease (60 s)
    every other replay skipped them as held by a live replay (that was gone)."""
    base: type[DeadLetterQueue] = {"memory": MemoryDLQ, "sqlite": SqliteDLQ, "jsonl": JsonlDLQ}[backend]
    made = _interrupted_once(base, claim_only=True)
    queue = made() if backend == "memory" else made(tmp_path / f"dlq.{backend}")  # type: ignore[call-arg]
    run_batches(range(10), _always_fails, dlq=queue, retry=ONCE)
    ran: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        replay(queue, ran.append, retry=ONCE, batch_size=4)
    assert ran == []
    assert queue.count(status="replaying") == 0
    assert queue.count() == 10
    for entry in queue.iter():  # as before the claim: open, no trace of it
        assert entry.history == () and entry.status_reason is None
    assert replay(queue, ran.append, retry=ONCE).replayed == 10


@pytest.mark.parametrize("backend", ["memory", "sqlite", "jsonl"])
def test_ctrl_c_while_a_batch_is_settled_gives_back_only_what_was_not_settled(backend: str, tmp_path: Path) -> None:
    base: type[DeadLetterQueue] = {"memory": MemoryDLQ, "sqlite": SqliteDLQ, "jsonl": JsonlDLQ}[backend]
    plain = base() if backend == "memory" else base(tmp_path / f"dlq.{backend}")  # type: ignore[call-arg]
    run_batches(range(10), _always_fails, dlq=plain, retry=ONCE)
    entries = list(plain.iter())
    made = _interrupted_once(base, claim_only=False)
    if backend == "memory":
        queue = made()
        queue.send(entries)
    else:
        plain.close()
        queue = made(tmp_path / f"dlq.{backend}")  # type: ignore[call-arg]
    queue.armed = False  # type: ignore[attr-defined]
    seen: list[int] = []

    def fn(record: int) -> int:
        seen.append(record)
        if len(seen) == 4:  # the first batch's settle is the next write: interrupted
            queue.armed = True  # type: ignore[attr-defined]
        return record

    with pytest.raises(KeyboardInterrupt):
        replay(queue, fn, retry=ONCE, batch_size=4)
    assert queue.count(status="replaying") == 0
    assert queue.count(status="replayed") == 4 and queue.count() == 6
