"""Memory with results="drop" under retry policies that act at a batch's end (issue 11 item 1
with issue 10 item 2): a fallback, or a max_elapsed whose cut records are named at the batch's
end, must not make the run keep each batch's dead records (payloads, errors, tracebacks) to the
end. 4x the records, about the same memory held at every batch's end.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchguard
from helpers_contract import ENGINES

N = 10_000


def _records(n: int) -> Iterator[int]:
    yield from range(n)


def failing_one_in(every: int) -> Any:
    def fn(x: int) -> dict[str, Any]:
        if x % every == 0:
            raise ValueError(f"record {x} is refused by a service that says so at length " * 4)
        return {"n": x}

    return fn


POLICIES = {
    # 1% of the records fail and succeed with the fallback value: nothing is dead-lettered,
    # so nothing but RetryEnd could hold their dead records (a max_elapsed policy takes the
    # same path, but its dead records also go to the report, which keeps its first 1000).
    "fallback": (batchguard.RetryPolicy(max_attempts=1, fallback={"n": None}), 100),
}


def _held(n: int, engine: str, policy: str, tmp_path: Path) -> int:
    """The most memory the run holds at a batch's end (traced, after a full collection: a
    failed call's exception and its traceback's frames form a cycle, garbage that only a full
    collection frees, and when that comes depends on the whole process's heap)."""
    retry, every = POLICIES[policy]
    held = 0
    ends = 0

    def at_batch_end(progress: batchguard.BatchProgress) -> None:
        # A full collection in a process that has run the whole suite takes ~0.4 s, so every
        # fifth batch end is sampled: what a leak keeps only grows, so sampling still sees it.
        nonlocal held, ends
        ends += 1
        if ends % 5 == 0:
            gc.collect()
            held = max(held, tracemalloc.get_traced_memory()[0])

    gc.collect()
    tracemalloc.start()
    try:
        report = batchguard.run_batches(_records(n), failing_one_in(every), batch_size=500, engine=engine,
                                        retry=retry, results="drop", dlq=f"sqlite:///{tmp_path}/dlq-{n}.db",
                                        on_progress=at_batch_end)
    finally:
        tracemalloc.stop()
    assert report.success_count + report.failure_count == n
    return held


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_end_policy_keeps_no_dead_records_past_their_batch(engine: str, policy: str, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    # pytest keeps every log record a test emits: at INFO (which an earlier test may have left
    # the "batchguard" logger at) the per-batch and per-record lines would grow with the input.
    caplog.set_level(logging.WARNING, logger="batchguard")
    small, large = _held(N, engine, policy, tmp_path), _held(4 * N, engine, policy, tmp_path)
    assert large < 1.5 * small + 256 * 1024, (small, large)
