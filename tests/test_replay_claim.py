"""Replays claim the entries they run (LF1 items 1 and 2, leftovers of issues 9/10).

Two replays of one queue at once -- two processes, or two threads -- both picked up the same open
entries and ran each record twice. Now a replay claims each page of entries in one atomic step
of the queue before its records run (status ``replaying``), so each entry is run by exactly one
replay; a replay killed with SIGKILL leaves its claims, which the next replay takes over once
their lease runs out (or at once with ``reclaim=True``), so nothing is lost; and a skip of an
entry a running replay holds is refused, naming the replay, unless forced (then the skip wins).
Real SQLite file, JSON lines file, Redis and PostgreSQL servers, real processes; no mocks.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchguard import ConfigError, DeadLetterClaimedError, MemoryDLQ, RetryPolicy, replay, run_batches
from batchguard.cli import main
from batchguard.dlq import DeadLetterQueue, open_dlq
from test_dlq_conformance import Opener

ONCE = RetryPolicy(max_attempts=1)
N = 60
DURABLE = ["sqlite", "jsonl", pytest.param("redis", marks=pytest.mark.redis),
           pytest.param("postgres", marks=pytest.mark.postgres)]

WORKER = '''
import os, sys, time
from batchguard import RetryPolicy, replay
url, log, go, pause_after, lease = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
while not os.path.exists(go):
    time.sleep(0.005)
ran = 0
def fn(record):
    global ran
    with open(log, "a") as out:
        out.write(f"{os.getpid()} {record}\\n")
    ran += 1
    if ran == pause_after:  # hold here until killed
        open(log + ".paused", "w").close()
        time.sleep(3600)
    time.sleep(0.01)  # the other replay gets its turn meanwhile
    return record
report = replay(url, fn, retry=RetryPolicy(max_attempts=1), batch_size=5, lease=lease)
print(report.replayed, report.held_elsewhere, flush=True)
'''


def _always_fails(record: int) -> int:
    raise ValueError(f"down {record}")


class Where:
    """A queue location of one backend, as a URL a subprocess can open, cleaned up after."""

    def __init__(self, backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.opener = Opener(backend, request, tmp_path)
        tag = uuid.uuid4().hex[:12]
        server = self.opener.server_url
        join = "&" if server is not None and "?" in server else "?"
        self.url = {
            "sqlite": f"sqlite:///{tmp_path / 'dlq.db'}",
            "jsonl": f"jsonl:///{tmp_path / 'dlq.jsonl'}",
            "redis": f"{server}{join}key_prefix=bgtest:{tag}",
            "postgres": f"{server}{join}table=bg_test_{tag}",
        }[backend]
        if backend == "redis":
            self.opener._cleanups.append(lambda: self.opener._drop_redis(f"bgtest:{tag}"))
        if backend == "postgres":
            self.opener._cleanups.append(lambda: self.opener._drop_table(f"bg_test_{tag}"))

    def open(self) -> DeadLetterQueue:
        queue = open_dlq(self.url)
        self.opener._opened.append(queue)
        return queue


@pytest.fixture(params=DURABLE)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    made = Where(request.param, request, tmp_path)
    queue = made.open()
    run_batches(range(N), _always_fails, dlq=queue, retry=ONCE, batch_size=N)
    assert queue.count() == N
    yield made
    made.opener.close()


def _worker(url: str, log: Path, go: Path, *, pause_after: int = -1, lease: float = 60.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, str(log), str(go), str(pause_after), str(lease)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(log: Path) -> collections.Counter[int]:
    return collections.Counter(int(line.split()[1]) for line in log.read_text().splitlines())


def test_two_replay_processes_run_each_record_once(where: Where, tmp_path: Path) -> None:
    log, go = tmp_path / "calls.log", tmp_path / "go"
    workers = [_worker(where.url, log, go) for _ in range(2)]
    go.touch()  # both start at once
    outputs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    runs = _runs(log)
    assert sorted(runs) == list(range(N)) and set(runs.values()) == {1}, runs
    queue = where.open()
    assert queue.count(status="replayed") == N and queue.count(status="all") == N
    replayed = sum(int(out.split()[0]) for out, _ in outputs)
    assert replayed == N  # each entry marked by the replay that ran it


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_two_replay_threads_run_each_record_once(backend: str, engine: Any, tmp_path: Path) -> None:
    shared = MemoryDLQ() if backend == "memory" else None
    path = tmp_path / "dlq.db"

    def queue() -> DeadLetterQueue:
        return shared if shared is not None else open_dlq(f"sqlite:///{path}")

    run_batches(range(N), _always_fails, dlq=queue(), retry=ONCE, batch_size=N)
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    start = threading.Barrier(2)

    def fn(record: int) -> int:
        with lock:
            runs[record] += 1
        time.sleep(0.005)
        return record

    def one() -> None:
        start.wait()
        replay(queue(), fn, retry=ONCE, batch_size=5, engine=engine)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert sorted(runs) == list(range(N)) and set(runs.values()) == {1}, runs
    assert queue().count(status="replayed") == N


def _kill_mid_replay(where: Where, tmp_path: Path, *, lease: float) -> tuple[DeadLetterQueue, set[int]]:
    """A replay process holding claims, killed with SIGKILL inside fn on its 12th record; returns
    the queue and the records whose batches it finished (marked replayed)."""
    log, go = tmp_path / "killed.log", tmp_path / "go"
    worker = _worker(where.url, log, go, pause_after=12, lease=lease)
    go.touch()
    paused = Path(str(log) + ".paused")
    deadline = time.monotonic() + 240
    while not paused.exists():
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the replay never reached its 12th record"
        time.sleep(0.01)
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate(timeout=60)
    queue = where.open()
    done = {int(e.payload) for e in queue.iter(status="replayed")}
    assert done == set(range(10))  # batches 0 and 1 ended; batch 2 was running
    assert queue.count(status="replaying") >= 5  # at least batch 2's entries, stranded
    return queue, done


def test_a_killed_replays_claims_wait_for_their_lease_then_reclaim_takes_them(where: Where, tmp_path: Path) -> None:
    queue, done = _kill_mid_replay(where, tmp_path, lease=600.0)
    stranded = {int(e.payload) for e in queue.iter(status="replaying")}
    # The claim shows who holds the entry and since when, in the views too.
    claimed = next(iter(queue.iter(status="replaying")))
    assert claimed.status_reason is not None and claimed.status_reason.startswith("claimed by replay run-")
    listed = CliRunner().invoke(main, ["dlq", "list", "--dlq", where.url])
    assert f"{len(stranded):,} replaying" in listed.output, listed.output

    ran: list[int] = []
    report = replay(queue, lambda r: ran.append(r), retry=ONCE)
    # The lease is live: the killed replay's entries are left to it, the rest run.
    assert report.held_elsewhere == len(stranded)
    assert set(ran) == set(range(N)) - done - stranded
    assert queue.count(status="replaying") == len(stranded)

    report = replay(queue, lambda r: ran.append(r), retry=ONCE, reclaim=True)
    assert sorted(ran) == sorted(set(range(N)) - done)  # nothing lost, and nothing run twice here
    assert queue.count(status="replayed") == N and queue.count(status="all") == N
    for entry in queue.iter(status="replayed"):  # the claims leave no trace in the history
        assert [change.status for change in entry.history] == ["replayed"]


def test_a_killed_replays_claims_go_stale_after_their_lease(where: Where, tmp_path: Path) -> None:
    queue, done = _kill_mid_replay(where, tmp_path, lease=1.0)
    time.sleep(1.5)  # the killed replay renews nothing: its one-second lease runs out
    ran: list[int] = []
    report = replay(queue, lambda r: ran.append(r), retry=ONCE)
    assert report.held_elsewhere == 0
    assert sorted(ran) == sorted(set(range(N)) - done)
    assert queue.count(status="replayed") == N


CLI_FNS = '''
import os, time
def logged(record):
    with open(os.environ["BG_LOG"], "a") as out:
        out.write(f"{os.getpid()} {record}\\n")
    if record == int(os.environ.get("BG_HOLD_AT", "-1")):  # hold here until killed
        open(os.environ["BG_LOG"] + ".paused", "w").close()
        time.sleep(3600)
    time.sleep(0.01)
    return record
'''


def _cli(tmp_path: Path, *args: str, hold_at: int = -1) -> subprocess.Popen[str]:
    env = {**os.environ, "BG_LOG": str(tmp_path / "cli.log"), "BG_HOLD_AT": str(hold_at),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "batchguard", "dlq", "retry", "--fn", "claimfns:logged",
                             "--max-attempts", "1", "--concurrency", "2", "-q", *args],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_dlq_retry_commands_run_each_record_once_and_reclaim_takes_a_killed_ones_entries(
        tmp_path: Path) -> None:
    (tmp_path / "claimfns.py").write_text(CLI_FNS)
    url = f"sqlite:///{tmp_path / 'dlq.db'}"
    run_batches(range(N), _always_fails, dlq=open_dlq(url), retry=ONCE, batch_size=N)
    both = [_cli(tmp_path, "--dlq", url) for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    runs = _runs(tmp_path / "cli.log")
    assert sorted(runs) == list(range(N)) and set(runs.values()) == {1}, runs
    replayed = sum(int(line.split()[0]) for out in outputs for line in out.splitlines()
                   if "dead letters succeeded and are marked replayed" in line)
    assert replayed == N

    # A retry killed mid-run: its entries wait for it, named, until --reclaim takes them.
    run_batches(range(N), _always_fails, dlq=open_dlq(url), retry=ONCE, batch_size=N)  # N open entries again
    (tmp_path / "cli.log").unlink()
    killed = _cli(tmp_path, "--dlq", url, hold_at=30)
    paused = tmp_path / "cli.log.paused"
    deadline = time.monotonic() + 240
    while not paused.exists():
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    listed = CliRunner().invoke(main, ["dlq", "list", "--status", "replaying", "--dlq", url])
    assert "replaying (run-" in listed.output, listed.output
    left = _cli(tmp_path, "--dlq", url)
    out = left.communicate(timeout=240)[0]
    assert "held by another running replay and were left to it" in out and "--reclaim" in out, out
    reclaim = _cli(tmp_path, "--dlq", url, "--reclaim")
    out = reclaim.communicate(timeout=240)[0]
    assert reclaim.returncode == 0, out
    queue = open_dlq(url)
    assert queue.count(status="replayed") == 2 * N and queue.count() == 0 and queue.count(status="replaying") == 0
    assert sorted(_runs(tmp_path / "cli.log")) == list(range(N))  # every record ran, none lost


# --------------------------------------------------------------- skip against a running replay


@pytest.fixture(params=["memory", "sqlite", "jsonl", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[DeadLetterQueue, str | None]]:
    if request.param == "memory":
        q: DeadLetterQueue = MemoryDLQ()
        url = None
        opener = None
    else:
        opener = Where(request.param, request, tmp_path)
        q, url = opener.open(), opener.url
    run_batches(range(10), _always_fails, dlq=q, retry=ONCE, batch_size=10)
    yield q, url
    if opener is not None:
        opener.opener.close()


class Blocking:
    """fn for a replay in a thread: holds record 0 until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, record: int) -> int:
        if record == 0:
            self.entered.set()
            assert self.release.wait(120)
        return record


def _replay_in_thread(q: DeadLetterQueue, fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(replay(q, fn, retry=ONCE, batch_size=5)))
    thread.start()
    assert fn.entered.wait(120)
    return thread, out


def test_a_skip_of_an_entry_a_running_replay_holds_is_refused_naming_the_replay(
        queue: tuple[DeadLetterQueue, str | None]) -> None:
    q, url = queue
    first = q.list()[0]
    fn = Blocking()
    thread, out = _replay_in_thread(q, fn)
    try:
        held = q.get(first.id)
        assert held is not None and held.status == "replaying"
        with pytest.raises(DeadLetterClaimedError, match=r"being replayed right now: .*replay run-") as caught:
            q.resolve([first.id], "duplicate")
        assert caught.value.ids == (first.id,)
        unchanged = q.get(first.id)
        assert unchanged is not None and unchanged.status == "replaying"
        if url is not None:
            result = CliRunner().invoke(main, ["dlq", "skip", first.id, "--reason", "duplicate", "--dlq", url])
            assert result.exit_code == 2 and "being replayed right now" in result.output, result.output
            assert "--force" in result.output
            shown = CliRunner().invoke(main, ["dlq", "show", first.id, "--dlq", url])
            assert "Status:        replaying: held by replay run-" in shown.output, shown.output
    finally:
        fn.release.set()
        thread.join(timeout=120)
    report = out[0]
    assert report.replayed == 10 and report.claims_lost == 0
    after = q.get(first.id)
    assert after is not None and after.status == "replayed"


def test_a_forced_skip_wins_and_the_replay_leaves_the_entry_as_skipped(
        queue: tuple[DeadLetterQueue, str | None]) -> None:
    q, url = queue
    first = q.list()[0]
    fn = Blocking()
    thread, out = _replay_in_thread(q, fn)
    try:
        if url is None:
            assert q.resolve([first.id], "duplicate", force=True) == 1
        else:
            result = CliRunner().invoke(main, ["dlq", "skip", first.id, "--reason", "duplicate", "--force",
                                               "--dlq", url])
            assert result.exit_code == 0, result.output
    finally:
        fn.release.set()
        thread.join(timeout=120)
    report = out[0]
    assert report.claims_lost == 1 and report.replayed == 9
    after = q.get(first.id)
    assert after is not None and (after.status, after.status_reason) == ("resolved", "duplicate")
    assert [change.status for change in after.history] == ["resolved"]


def test_a_replay_refuses_ids_another_running_replay_holds(queue: tuple[DeadLetterQueue, str | None]) -> None:
    q, _ = queue
    first = q.list()[0]
    fn = Blocking()
    thread, _out = _replay_in_thread(q, fn)
    try:
        with pytest.raises(DeadLetterClaimedError, match="being replayed right now"):
            replay(q, lambda r: r, ids=[first.id], retry=ONCE)
    finally:
        fn.release.set()
        thread.join(timeout=120)


def test_a_replay_of_the_replaying_status_is_refused_and_says_why() -> None:
    with pytest.raises(ConfigError, match=r"held by a running replay.*--reclaim"):
        replay(MemoryDLQ(), lambda r: r, status="replaying")
