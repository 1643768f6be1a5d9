"""Ctrl-C stress: a real SIGINT at random points of plain runs loses no record (issue 7).

Plain runs (not jobs) at concurrency 16 and 64, of a sync fn (worker threads) and of an async
fn (an event loop, where asyncio turns SIGINT into a cancel), with failures going to a durable
SQLite DLQ, each interrupted by a real SIGINT sent to the main thread at a random moment.
After every interrupt:

* every record whose fn raised (a PERMANENT failure, so it is final at once) has its DLQ
  entry, and the DLQ holds nothing else;
* no record both succeeded and was dead-lettered, none ran twice;
* the DLQ entries + the successes fn recorded + the pending records == the input.

Nothing is mocked: the SIGINT goes through Python's real handler (it may land in the engine's
wait, in the input, or while the DLQ is being written). The seed is printed; set
``BATCHGUARD_STRESS_SEED`` to replay a failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard.dlq.sqlite import SqliteDLQ
from helpers_contract import CLASSIFIER, ENGINES, PermanentErr

RECORDS = 600
BATCH_SIZE = 25
INTERRUPTS = 50  # interrupted runs per engine and concurrency
MIN_PAUSE = 0.0003  # the shortest a record's work takes


class Recorded:
    """fn: ~1 ms of work (the GIL released, as I/O would); every 4th record fails PERMANENT.
    Remembers every call, what returned and what raised."""

    def __init__(self, seed: int, pause: float | None = None) -> None:
        self.pause = random.Random(seed).uniform(MIN_PAUSE, 0.0015) if pause is None else pause
        self.calls: list[int] = []
        self.returned: set[int] = set()
        self.raised: set[int] = set()

    def __call__(self, record: int) -> int:
        self.calls.append(record)  # list.append and set.add are atomic under the GIL
        time.sleep(self.pause)
        if record % 4 == 0:
            self.raised.add(record)
            raise PermanentErr(f"bad {record}")
        self.returned.add(record)
        return record

    async def coroutine(self, record: int) -> int:
        """The same as an ``async def`` fn (run_batches drives it on its own event loop)."""
        self.calls.append(record)
        await asyncio.sleep(self.pause)
        if record % 4 == 0:
            self.raised.add(record)
            raise PermanentErr(f"bad {record}")
        self.returned.add(record)
        return record


def _run(fn: Recorded, dlq: SqliteDLQ, engine: str, concurrency: int, kind: str) -> Any:
    return batchguard.run_batches(range(RECORDS), fn if kind == "sync" else fn.coroutine, engine=engine,
                                  concurrency=concurrency, batch_size=BATCH_SIZE, dlq=dlq,
                                  classifier=CLASSIFIER, retry=RetryPolicy(max_attempts=1))


def _interrupted_run(fn: Recorded, dlq: SqliteDLQ, engine: str, concurrency: int, kind: str,
                     delay: float) -> bool:
    """Run, with a real SIGINT to the main thread after ``delay`` seconds. True when the
    interrupt stopped the run; False when the run had finished first."""
    main = threading.main_thread().ident
    assert main is not None

    def fire() -> None:
        time.sleep(delay)
        signal.pthread_kill(main, signal.SIGINT)

    sender = threading.Thread(target=fire)
    finished = False
    try:
        sender.start()
        try:
            _run(fn, dlq, engine, concurrency, kind)
            finished = True
        finally:
            sender.join()
            # The signal is sent: make sure its KeyboardInterrupt is raised here, inside this
            # try, whether the run took it or had already returned.
            time.sleep(0.01)
            for _ in range(100):
                pass
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        # CPython's asyncio.Runner on uvloop: a SIGINT that lands while the loop itself is
        # starting or winding down leaves it marked running, and run_until_complete or
        # Runner.close() then fails with "this event loop is already running" / "Cannot close
        # a running event loop", the KeyboardInterrupt somewhere in the context chain. What
        # the DLQ holds is checked all the same (issue 7's closing note lists the race).
        chain: list[BaseException] = []
        link: BaseException | None = exc
        while link is not None and len(chain) < 8:
            chain.append(link)
            link = link.__context__
        loop_state = all("event loop" in str(e) for e in chain if isinstance(e, RuntimeError))
        if not loop_state or not any(isinstance(e, KeyboardInterrupt) for e in chain):
            raise
    return not finished


def _check(fn: Recorded, dlq: SqliteDLQ, trial: str) -> None:
    stored = [entry.record_index for entry in dlq.list()]
    assert len(stored) == len(set(stored)), f"{trial}: a record has two DLQ entries"
    stored_set = set(stored)
    lost = fn.raised - stored_set
    assert not lost, f"{trial}: {len(lost)} dead-lettered records have no DLQ entry: {sorted(lost)[:10]}"
    assert stored_set <= fn.raised, f"{trial}: DLQ entries for records that never failed"
    assert not stored_set & fn.returned, f"{trial}: records both succeeded and dead-lettered"
    assert len(fn.calls) == len(set(fn.calls)), f"{trial}: a record ran twice"
    pending = RECORDS - len(stored_set) - len(fn.returned)
    assert pending >= 0 and len(stored_set) + len(fn.returned) + pending == RECORDS, trial


@pytest.mark.slow
@pytest.mark.timeout(180)
# A SIGINT that lands while the main thread runs a weakref callback (threading's bookkeeping)
# is "ignored" by CPython, as unraisable: that run then simply finishes (and is checked).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [16, 64])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigint_at_random_points_loses_no_dead_letter(engine: str, concurrency: int, kind: str,
                                                      tmp_path: Path) -> None:
    seed = int(os.environ.get("BATCHGUARD_STRESS_SEED", random.randrange(2**32)))
    print(f"BATCHGUARD_STRESS_SEED={seed}")
    rng = random.Random(seed)

    # How long the quickest uninterrupted run takes here (the shortest pause, the fastest of
    # three), so the interrupts land inside runs: every trial's pause is at least as long.
    # Calibrating on one run of a random pause let a slow first run put most SIGINTs after the
    # end (CI, stop 14: 40 of 150 landed).
    took = float("inf")
    for attempt in range(3):
        with SqliteDLQ(tmp_path / f"calibrate-{attempt}.db") as dlq:
            fn = Recorded(0, pause=MIN_PAUSE)
            started = time.monotonic()
            report = _run(fn, dlq, engine, concurrency, kind)
            took = min(took, time.monotonic() - started)
            assert report.failure_count == RECORDS // 4 and dlq.count() == RECORDS // 4
            _check(fn, dlq, "uninterrupted")

    # Until INTERRUPTS runs were cut short by their SIGINT (a run can beat a late one: it is
    # checked all the same).
    interrupted = trials = 0
    while interrupted < INTERRUPTS and trials < 3 * INTERRUPTS:
        fn = Recorded(rng.randrange(2**32))
        delay = rng.uniform(0.0, 0.8 * took)
        with SqliteDLQ(tmp_path / f"trial-{trials}.db") as dlq:
            interrupted += _interrupted_run(fn, dlq, engine, concurrency, kind, delay)
            _check(fn, dlq, f"seed {seed}, trial {trials}, SIGINT after {delay * 1000:.1f} ms")
        (tmp_path / f"trial-{trials}.db").unlink()
        trials += 1
    # Every trial was checked above, landed or not; this only makes sure the test had power. A
    # fast native run at concurrency 16 notices a SIGINT only at its next look, and on a busy
    # machine most runs beat it (21 of 150 landed once in CI), so a fifth is enough.
    assert interrupted >= INTERRUPTS // 5, f"only {interrupted} of {trials} SIGINTs landed inside a run"
    print(f"{interrupted} interrupted runs (of {trials}); every record accounted for in each")
