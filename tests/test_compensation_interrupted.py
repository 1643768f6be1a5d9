"""Ctrl-C while an aborted run undoes what it did (``on_abort="compensate"``, issue 10 item 5).

The batch whose undo was interrupted is undone to its end (the interrupted undo again), no
further batch is undone, the interrupt is raised, and a job's store reopens exactly the batches
that were undone: a resume redoes them and skips the ones still done, so no record is lost.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard.jobs import job_status
from helpers_contract import ENGINES


class Shop:
    """fn and undo over a set of done records; record 25 fails; the undo raises KeyboardInterrupt
    at its ``interrupt_at``-th call, before it undoes anything."""

    def __init__(self, interrupt_at: int | None) -> None:
        self.done: set[int] = set()
        self.undone: list[int] = []
        self.interrupt_at = interrupt_at
        self.undo_calls = 0

    def insert(self, record: int) -> int:
        if record == 25:
            raise ValueError("poison")
        self.done.add(record)
        return record * 10

    def delete(self, record: int, value: int) -> None:
        self.undo_calls += 1
        if self.undo_calls == self.interrupt_at:
            raise KeyboardInterrupt
        assert value == record * 10
        self.done.discard(record)
        self.undone.append(record)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_interrupt_while_undoing_an_abort_finishes_the_batch_and_loses_no_record(
        tmp_path: Path, engine: str) -> None:
    store, dlq = f"sqlite:///{tmp_path / 'jobs.db'}", f"sqlite:///{tmp_path / 'dlq.db'}"
    shop = Shop(interrupt_at=3)  # batch 4 (records 24..20): its third undo, record 22's
    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(40), shop.insert, batch_size=5, engine=engine, job="load", store=store,
                               dlq=dlq, compensate=shop.delete, on_abort="compensate", max_failures=0,
                               retry=RetryPolicy(max_attempts=1))
    assert shop.undone == [24, 23, 22, 21, 20]  # batch 4 wholly undone, no other batch
    assert shop.done == set(range(20))
    status = job_status("load", store=store)
    assert (status.batches_done, status.succeeded) == (4, 20)
    resumed = batchguard.run_batches(range(40), shop.insert, batch_size=5, engine=engine, job="load",
                                     store=store, dlq=dlq, retry=RetryPolicy(max_attempts=1))
    assert resumed.skipped_batches == 4
    assert shop.done == set(range(40)) - {25}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_kill_while_undoing_an_abort_loses_at_most_the_batch_being_undone(tmp_path: Path) -> None:
    # Each batch an abort undid whole is reopened in the job's store as soon as it is undone,
    # not once they all are: a kill -9 in the middle of the undos then leaves at most the
    # batch it cut short at risk (the store cannot know which of its records were undone).
    log = tmp_path / "effects.log"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        import batchguard
        from batchguard import RetryPolicy
        LOG = {str(log)!r}
        undos = 0

        def insert(record):
            if record == 25:
                raise ValueError("poison")
            with open(LOG, "a") as f:
                f.write(f"+{{record}}\\n")
            return record

        def delete(record, value):
            global undos
            undos += 1
            if undos == int(sys.argv[1]):
                os.kill(os.getpid(), signal.SIGKILL)
            with open(LOG, "a") as f:
                f.write(f"-{{record}}\\n")

        batchguard.run_batches(range(40), insert, batch_size=5, job="load", store=sys.argv[2],
                               compensate=delete, on_abort="compensate", max_failures=0,
                               retry=RetryPolicy(max_attempts=1), engine=sys.argv[3])
    """))
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    killed = subprocess.run([sys.executable, str(script), "8", store, "native"], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Batch 4 (24..20) undone whole, batch 3 cut after two undos (19, 18): records 0..17 stand.
    status = job_status("load", store=store)
    assert status.batches_done == 4  # batch 4 reopened; batches 0..3 still done
    effects: collections.Counter[int] = collections.Counter()
    for line in log.read_text().split():
        effects[int(line[1:])] += 1 if line[0] == "+" else -1
    assert +effects == collections.Counter({i: 1 for i in range(18)})
