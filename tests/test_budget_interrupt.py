"""Ctrl-C during a run steered by Adaptive(max=256) while the retry budget holds retries
(issue 10 item 6): every record is accounted for and none runs twice.

The budget lets one retry through per 1000 s once the window's share is spent, so almost every
retry is held when the SIGINT arrives: the run must stop at once (a run that waited for its
held retries would hit the test's timeout), leave the held records pending (no DLQ entry), and
after it: DLQ entries + successes + pending == the input, no record both succeeded and
dead-lettered, no record returned twice, no record called more than max_attempts times.
A real SIGINT (sent by fn's Nth call) through Python's own handler, a real SQLite DLQ; sync (threads) and async fns.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import Adaptive, RetryBudget, RetryPolicy
from batchguard.dlq.sqlite import SqliteDLQ
from helpers_contract import CLASSIFIER, ENGINES, PermanentErr, RecoverableErr

RECORDS = 2000
MAX_ATTEMPTS = 3


class TooMany(RecoverableErr):
    """An HTTP 429: an overload signal for Adaptive, retried (RECOVERABLE in CLASSIFIER)."""

    status_code = 429


class Service:
    """fn: every 3rd record is answered 429 on its first two attempts, every 7th (not a 3rd)
    fails PERMANENT; the rest succeed. Remembers every call and every outcome."""

    def __init__(self, interrupt_after: int) -> None:
        self.interrupt_after = interrupt_after
        self.total = 0
        self.lock = threading.Lock()
        self.calls: collections.Counter[int] = collections.Counter()
        self.returned: collections.Counter[int] = collections.Counter()
        self.raised: set[int] = set()

    def _answer(self, record: int) -> int:
        with self.lock:
            self.calls[record] += 1
            attempt = self.calls[record]
            self.total += 1
            interrupt = self.total == self.interrupt_after
        if interrupt:
            main = threading.main_thread().ident
            assert main is not None
            signal.pthread_kill(main, signal.SIGINT)
        if record % 3 == 0 and attempt <= 2:
            raise TooMany(f"429 for {record}")
        if record % 7 == 0:
            with self.lock:
                self.raised.add(record)
            raise PermanentErr(f"bad {record}")
        with self.lock:
            self.returned[record] += 1
        return record

    def __call__(self, record: int) -> int:
        time.sleep(0.001)
        return self._answer(record)

    async def coroutine(self, record: int) -> int:
        """The same as an ``async def`` fn."""
        await asyncio.sleep(0.001)
        return self._answer(record)


def _run(fn: Service, dlq: SqliteDLQ, engine: str, kind: str) -> Any:
    return batchguard.run_batches(
        range(RECORDS), fn if kind == "sync" else fn.coroutine, engine=engine, batch_size=50, dlq=dlq,
        classifier=CLASSIFIER, retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, base_delay=0.0),
        concurrency=Adaptive(min=1, max=256),
        retry_budget=RetryBudget(ratio=0.0, min_per_s=0.001, window_s=1000.0))


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("interrupt_after", [100, 700])
def test_ctrl_c_with_held_retries_accounts_for_every_record(engine: str, kind: str, interrupt_after: int,
                                                            tmp_path: Path) -> None:
    fn = Service(interrupt_after)
    with SqliteDLQ(tmp_path / "dlq.db") as dlq:
        with pytest.raises(KeyboardInterrupt):
            # Held retries wait ~1000 s each for the budget: only the SIGINT ends this run.
            _run(fn, dlq, engine, kind)
        stored = [entry.record_index for entry in dlq.list()]
    assert len(stored) == len(set(stored)), "a record has two DLQ entries"
    assert set(stored) <= fn.raised, "a DLQ entry for a record that never failed for good"
    assert not set(stored) & set(fn.returned), "a record both succeeded and was dead-lettered"
    assert all(count == 1 for count in fn.returned.values()), "a record returned twice"
    assert max(fn.calls.values()) <= MAX_ATTEMPTS, "a record ran more than max_attempts times"
    pending = RECORDS - len(stored) - len(fn.returned)
    assert pending > 0, "the run was not stopped by the SIGINT"
    # A record answered 429 waits for a retry the budget holds: pending, never dead-lettered.
    held = [r for r in fn.calls if r % 3 == 0 and r not in fn.returned]
    assert held and not set(held) & set(stored)
