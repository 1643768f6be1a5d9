"""Cancelling ``arun_batches`` with a sync fn: an error while the run stops wins over the
CancelledError (a DLQ that could not store its dead letters must not be silent).

Regression: a second ``_retrieve`` in ``_async`` (returning None) shadowed the one that hands
back the stopped run's exception, so the DLQ's error was dropped and only the cancel surfaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

import batchguard
from batchguard import DLQError, MemoryDLQ, RetryPolicy
from batchguard.dlq.base import DeadLetter
from helpers_contract import ENGINES


class BrokenDLQ(MemoryDLQ):
    def send(self, entries: Sequence[DeadLetter]) -> None:
        raise DLQError("the DLQ backend is down")


def _fails_slowly(record: int) -> int:
    time.sleep(0.002)
    raise ValueError(f"bad {record}")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("engine", ENGINES)
def test_an_error_while_a_cancelled_sync_arun_stops_is_raised(engine: str) -> None:
    async def main() -> None:
        task = asyncio.create_task(batchguard.arun_batches(
            range(100_000), _fails_slowly, engine=engine, dlq=BrokenDLQ(), batch_size=10_000,
            retry=RetryPolicy(max_attempts=1)))
        await asyncio.sleep(0.3)  # records failed, their batch is not finished: nothing sent yet
        task.cancel()
        with pytest.raises(DLQError, match="backend is down"):
            await task

    asyncio.run(main())
