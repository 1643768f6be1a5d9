"""A rollback cut short (Ctrl-C in an undo, ``kill -9``) then run again: nothing undone twice,
nothing forgotten (issue 10 item 5).

Each undone record is forgotten by the job store as soon as its undo returns, and a batch is
reopened as soon as all of its kept records are undone, so a second rollback undoes only what
the first did not.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard.errors import JobError
from batchguard.jobs import job_status


def _job(store: str, n: int = 12, batch_size: int = 4) -> None:
    report = batchguard.run_batches(range(n), lambda x: x * 10, batch_size=batch_size, job="load",
                                    store=store, keep_outcomes=True)
    assert report.status == "complete"


class CountingUndo:
    """Counts each record it undoes; raises KeyboardInterrupt before its ``stop_at``-th call
    does anything."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.calls = 0
        self.undone: collections.Counter[int] = collections.Counter()

    def __call__(self, record: int, value: int) -> None:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        assert value == record * 10
        self.undone[record] += 1


def test_a_rollback_interrupted_then_run_again_undoes_each_record_once(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    _job(store)
    undo = CountingUndo(stop_at=6)  # batch 2 (records 11..8) undone, batch 1 cut at its second
    with pytest.raises(KeyboardInterrupt):
        batchguard.rollback("load", undo, store=store)
    assert undo.undone == collections.Counter({11: 1, 10: 1, 9: 1, 8: 1, 7: 1})
    status = job_status("load", store=store)
    assert (status.status, status.batches_done, status.succeeded) == ("aborted", 2, 8)
    again = CountingUndo()
    report = batchguard.rollback("load", again, store=store)
    assert (report.undone, report.batches_reopened) == (7, (1, 0))
    assert undo.undone + again.undone == collections.Counter(range(12))
    assert job_status("load", store=store).batches_done == 0
    # Resumed, the job runs every record again.
    redone = batchguard.run_batches(range(12), lambda x: x * 10, batch_size=4, job="load", store=store)
    assert (redone.success_count, redone.skipped_batches) == (12, 0)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_rollback_killed_then_run_again_undoes_each_record_once(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    _job(store)
    log = tmp_path / "undone.log"
    module = tmp_path / "shop.py"
    # The undo appends its record to a log (flushed), and the process kills itself at the 6th
    # undo, before that undo does anything: the 9th record's.
    module.write_text(textwrap.dedent(f"""
        import os, signal
        LOG = {str(log)!r}
        KILL_AT = int(os.environ.get("KILL_AT", "0"))

        def undo(record, value):
            with open(LOG, "a") as f:
                calls = sum(1 for _ in open(LOG)) if os.path.exists(LOG) else 0
                if KILL_AT and calls + 1 == KILL_AT:
                    os.kill(os.getpid(), signal.SIGKILL)
                f.write(f"{{record}}\\n")
    """))
    command = [sys.executable, "-m", "batchguard", "rollback", "load", "--fn", f"{module}:undo",
               "--store", store]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(command, env={**env, "KILL_AT": "6"}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert log.read_text().split() == ["11", "10", "9", "8", "7"]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "Rolled back 7 records" in again.stdout
    undone: Any = collections.Counter(int(line) for line in log.read_text().split())
    assert undone == collections.Counter(range(12)), json.dumps(undone)


def test_a_job_that_is_running_is_not_rolled_back(tmp_path: Path) -> None:
    # A rollback racing a run would be overwritten by it (the run's end marks the job completed
    # over batches the rollback reopened): it is refused while a run holds the job.
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    _job(store)
    started, release = threading.Event(), threading.Event()
    undo = CountingUndo()

    def slow(record: int) -> int:
        started.set()
        release.wait(30)
        return record * 10

    runner = threading.Thread(target=batchguard.run_batches, args=(range(12, 16), slow),
                              kwargs={"batch_size": 4, "job": "load", "store": store, "force": True,
                                      "keep_outcomes": True})
    runner.start()
    try:
        assert started.wait(30)
        with pytest.raises(JobError, match="running"):
            batchguard.rollback("load", undo, store=store)
    finally:
        release.set()
        runner.join(30)
    assert not undo.undone
    assert batchguard.rollback("load", undo, store=store).undone > 0  # once it has ended
