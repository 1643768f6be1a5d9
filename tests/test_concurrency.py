"""Concurrency up to 1024 (issue 11 item 6): the same outcomes on both engines, a prompt Ctrl-C
that loses nothing, no thread left behind, and threads only while they help.

The native driver starts 64 workers and adds more only while more raise throughput; the
excess records wait in the scheduler (``src/bindings/threaded.rs``, ``Growth``). These tests
pin what that must never change: every record runs, as many calls run at once as the callback
needs (a barrier of 300), and a run of quick calls does not start 1024 threads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import batchguard
from batchguard import MemoryDLQ
from helpers_contract import ENGINES, FailurePlan, no_wait, outcome_view, run

TOP = 1024


def os_threads() -> int:
    """Threads of this process, Python's or not (the native pool's workers included)."""
    return len(os.listdir("/proc/self/task"))


def mixed_plan(n: int) -> FailurePlan:
    """Every 7th record fails once (transient, retried), every 50th is permanent, every 131st
    fails twice then succeeds; each call sleeps 1 ms so the calls overlap."""
    outcomes: dict[tuple[int, int], str] = {}
    for record in range(n):
        if record % 50 == 0:
            outcomes[(record, 1)] = "permanent"
        elif record % 131 == 0:
            outcomes[(record, 1)] = outcomes[(record, 2)] = "transient"
        elif record % 7 == 0:
            outcomes[(record, 1)] = "transient"
    return FailurePlan(outcomes, pause=0.001)


@pytest.mark.parametrize("keyed", [False, True])
def test_both_engines_agree_at_concurrency_1024(keyed: bool) -> None:
    n = 3_000
    views = {}
    attempts = {}
    for engine in ENGINES:
        plan = mixed_plan(n)
        dlq = MemoryDLQ()
        options = {"key_of": lambda r: r % 10} if keyed else {}
        report = run(range(n), plan, engine=engine, concurrency=TOP, batch_size=250, dlq=dlq,
                     retry=no_wait(3), **options)
        views[engine] = outcome_view(report)
        attempts[engine] = dict(plan.attempts)
        assert report.success_count + report.failure_count == n
        assert sorted(e.record_index for e in dlq.list()) == list(range(0, n, 50))
    assert views["native"] == views["python"]
    assert attempts["native"] == attempts["python"]
    assert views["native"]["successful"] == [r * 10 for r in range(n) if r % 50]


def test_every_call_runs_at_once_when_the_callback_needs_it() -> None:
    """300 calls that each wait for all 300: the pool must grow to 300 threads, whatever it
    measured, or the barrier breaks (its timeout turns a hang into a failure)."""
    parties = 300
    barrier = threading.Barrier(parties, timeout=60)

    def meet(record: int) -> int:
        barrier.wait()
        return record

    report = batchguard.run_batches(range(parties), meet, concurrency=TOP, batch_size=100)
    assert report.status == "complete", report.errors[:1]
    assert list(report.successful) == list(range(parties))


QUICK_CHILD = textwrap.dedent("""
    import os
    import batchguard

    before = len(os.listdir("/proc/self/task"))
    peak = [before]

    def quick(record):
        if record % 100 == 0:
            peak[0] = max(peak[0], len(os.listdir("/proc/self/task")))
        return record + 1

    report = batchguard.run_batches(range(20_000), quick, concurrency=1024, batch_size=500)
    assert report.success_count == 20_000
    print(peak[0] - before)
""")


def test_quick_calls_at_concurrency_1024_do_not_start_1024_threads() -> None:
    """A pool of 1024 threads for calls that never block would only queue them on the GIL.
    In a fresh process, so no idle pool thread of an earlier run hides the count."""
    child = subprocess.run([sys.executable, "-c", QUICK_CHILD], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    # 64 to start, and at most one doubling, the one that shows more threads do not help.
    assert int(child.stdout.strip()) <= 128


def test_no_thread_is_left_behind_after_runs_at_1024() -> None:
    """Python sees no extra thread after a run, and a second run reuses the pool's threads
    instead of adding to them."""
    python_threads = threading.active_count()

    def blocking(record: int) -> int:
        time.sleep(0.002)
        return record

    batchguard.run_batches(range(4_000), blocking, concurrency=TOP)
    assert threading.active_count() == python_threads
    after_first = os_threads()
    for _ in range(2):
        batchguard.run_batches(range(4_000), blocking, concurrency=TOP)
    assert threading.active_count() == python_threads
    assert os_threads() <= after_first + 1  # +1: the runtime may have retired and restarted one


CHILD = textwrap.dedent("""
    import json, sys, threading, time
    import batchguard
    from batchguard import MemoryDLQ

    engine = sys.argv[1]
    lock = threading.Lock()
    started, raised = [0], set()

    def fn(record):
        with lock:
            started[0] += 1
            if started[0] == 2000:
                print("running", flush=True)
        time.sleep(0.005)
        if record % 97 == 0:
            with lock:
                raised.add(record)
            raise ValueError(f"bad {record}")
        return record

    dlq = MemoryDLQ()
    python_threads = threading.active_count()
    try:
        batchguard.run_batches(range(1_000_000), fn, concurrency=1024, batch_size=1000, dlq=dlq,
                               engine=engine)
    except KeyboardInterrupt:
        at_return = started[0]
        time.sleep(0.3)
        print(json.dumps({
            "dead_lettered": sorted(e.record_index for e in dlq.list()),
            "raised": sorted(raised),
            "started_after_return": started[0] - at_return,
            "extra_python_threads": threading.active_count() - python_threads,
        }), flush=True)
        sys.exit(130)
""")


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_at_concurrency_1024_returns_promptly_and_loses_nothing(engine: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), engine], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    result = json.loads(out.strip().splitlines()[-1])
    # Every record whose failure was final reached the DLQ, none started once the run had
    # returned, and the workers are gone.
    assert result["dead_lettered"] == result["raised"]
    assert result["raised"], "the run was interrupted before any record failed"
    assert result["started_after_return"] == 0
    assert result["extra_python_threads"] == 0
