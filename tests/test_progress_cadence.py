"""on_progress is called at most every 0.1 s *and* keeps coming inside a long batch
(issue 7 defect 13; DESIGN §8). At concurrency 1 the native engine used to report once per
256 x 16 records: 300 records of 10 ms gave one call after 3 s, and the CLI's display froze.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import batchguard
from helpers_contract import ENGINES

both = pytest.mark.parametrize("engine", ENGINES)

RECORDS = 120
PAUSE = 0.01  # 1.2 s of work in one batch (batch_size 1000): only the throttle reports


class Progress:
    def __init__(self) -> None:
        self.at: list[float] = []
        self.processed: list[int] = []

    def __call__(self, progress: Any) -> None:
        self.at.append(time.monotonic())
        self.processed.append(progress.records_processed)


def _slow(record: int) -> int:
    time.sleep(PAUSE)
    return record


async def _slow_async(record: int) -> int:
    await asyncio.sleep(PAUSE)
    return record


def _check_cadence(progress: Progress, started: float, ended: float) -> None:
    took = ended - started
    # Reports come from inside the one batch, not only at its end: the run sleeps 1.2 s in
    # all, a dozen throttle intervals, so a few mid-batch reports is a floor that a loaded
    # machine still meets (the stalled engine gave none). No upper bound on a gap: a slow
    # machine stretches them without anything being wrong.
    inside = [n for n in progress.processed if n < RECORDS]
    assert len(inside) >= 3, f"{len(inside)} progress calls inside the batch, {progress.processed}"
    # ... and not more often than the throttle allows: its calls, plus the one batch end.
    assert len(progress.at) <= took / 0.1 + 2
    assert progress.processed == sorted(progress.processed), "progress went backwards"
    assert progress.processed[-1] == RECORDS


@both
@pytest.mark.parametrize("fn", [_slow, _slow_async], ids=["sync-concurrency-1", "async"])
def test_on_progress_keeps_coming_inside_a_long_batch(engine: str, fn: Any) -> None:
    progress = Progress()
    started = time.monotonic()
    report = batchguard.run_batches(range(RECORDS), fn, engine=engine, on_progress=progress)
    ended = time.monotonic()
    assert report.success_count == RECORDS
    _check_cadence(progress, started, ended)
