"""Memory with results="drop" under retry policies that act at a batch's end (issue 11 item 1
with issue 10 item 2): a fallback, or a max_elapsed whose cut records are named at the batch's
end, must not make the run keep each batch's dead records (payloads, errors, tracebacks) to the
end. 4x the records, about the same traced peak.
"""

from __future__ import annotations

import gc
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
    # 1% of the records fail and succeed with the fallback value: nothing is dead-lettered.
    "fallback": (batchguard.RetryPolicy(max_attempts=1, fallback={"n": None}), 100),
    # 10% of the records fail; a durable DLQ takes them (the report keeps its first 1000 only).
    "max_elapsed": (batchguard.RetryPolicy(max_attempts=3, base_delay=0.0, max_elapsed=60.0), 10),
}


def _peak(n: int, engine: str, policy: str, tmp_path: Path) -> int:
    retry, every = POLICIES[policy]
    gc.collect()
    tracemalloc.start()
    try:
        report = batchguard.run_batches(_records(n), failing_one_in(every), batch_size=500, engine=engine,
                                        retry=retry, results="drop", dlq=f"sqlite:///{tmp_path}/dlq-{n}.db")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.success_count + report.failure_count == n
    del report
    return peak


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_end_policy_keeps_no_dead_records_past_their_batch(engine: str, policy: str,
                                                                    tmp_path: Path) -> None:
    small, large = _peak(N, engine, policy, tmp_path), _peak(4 * N, engine, policy, tmp_path)
    assert large < 1.5 * small + 256 * 1024, (small, large)
