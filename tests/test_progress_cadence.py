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
    # Every 0.1 s over the run (minus the first interval and some scheduling slack) ...
    assert len(progress.at) >= took / 0.1 * 0.6, f"{len(progress.at)} progress calls in {took:.2f} s"
    gaps = [b - a for a, b in zip([started, *progress.at], progress.at)]
    assert max(gaps) < 0.35, f"progress stalled for {max(gaps):.2f} s"
    # ... and not much more often: the throttle's calls, plus the one batch end.
    assert len(progress.at) <= took / 0.1 + 2
    assert progress.processed == sorted(progress.processed), "progress went backwards"
    assert progress.processed[-1] == RECORDS


@both
def test_on_progress_keeps_coming_inside_a_long_batch_at_concurrency_1(engine: str) -> None:
    progress = Progress()
    started = time.monotonic()
    report = batchguard.run_batches(range(RECORDS), _slow, engine=engine, on_progress=progress)
    ended = time.monotonic()
    assert report.success_count == RECORDS
    _check_cadence(progress, started, ended)


@both
def test_on_progress_keeps_coming_inside_a_long_batch_of_an_async_fn(engine: str) -> None:
    progress = Progress()
    started = time.monotonic()
    report = batchguard.run_batches(range(RECORDS), _slow_async, engine=engine, on_progress=progress)
    ended = time.monotonic()
    assert report.success_count == RECORDS
    _check_cadence(progress, started, ended)
