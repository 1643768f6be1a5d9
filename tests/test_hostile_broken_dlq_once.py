"""Once the DLQ fails a send, an async run stops without trying it again from every worker
(hostile tester, issue 7: "no hang").

Found: an async run at concurrency 64 whose DLQ failed made 40 send attempts before it raised
(each worker that finished or was cancelled delivered its batch again). With a Redis DLQ on a
hung server each attempt takes 40 s (10 s timeout, 3 retries): about 25 minutes to fail, and a
run at concurrency 16 took 3.8 s here with a DLQ failing in 0.2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

import batchguard
from batchguard.dlq import DeadLetter, MemoryDLQ
from batchguard.errors import DLQError


class BreaksAfterTwo(MemoryDLQ):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def send(self, entries: Sequence[DeadLetter]) -> None:
        self.calls += 1
        if self.calls > 2:
            time.sleep(0.05)  # a server that takes its time to fail
            raise DLQError("the queue is down")
        super().send(entries)


async def _afn(record: int) -> int:
    await asyncio.sleep(0)
    if record % 2:
        raise ValueError("bad")
    return record


def _fn(record: int) -> int:
    if record % 2:
        raise ValueError("bad")
    return record


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("fn", [_afn, _fn], ids=["async", "sync"])
@pytest.mark.parametrize("concurrency", [4, 64])
def test_a_broken_dlq_is_tried_at_most_once_more(engine: str, fn: object, concurrency: int) -> None:
    queue = BreaksAfterTwo()
    with pytest.raises(DLQError, match="down"):
        batchguard.run_batches(range(4000), fn, dlq=queue, engine=engine,  # type: ignore[arg-type]
                               concurrency=concurrency, batch_size=50)
    assert queue.calls <= 3, f"{queue.calls} sends: the broken DLQ was tried again and again"
    assert queue.count() == 50  # what the two good sends stored stays stored
