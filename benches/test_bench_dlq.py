"""pytest-benchmark: one ``send`` of a 1000-entry batch, per backend, in one run.

    PYTHONPATH=python python -m pytest benches/test_bench_dlq.py --benchmark-only

(benches/ is outside ``testpaths``, so the normal test run never collects this file.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchguard.dlq import DeadLetterQueue, JsonlDLQ, MemoryDLQ, SqliteDLQ
from bench_dlq import make_entries

BATCH = 1000
ROUNDS = 60

FACTORIES: dict[str, Callable[[Path], DeadLetterQueue]] = {
    "memory": lambda _: MemoryDLQ(),
    "sqlite-full": lambda tmp: SqliteDLQ(tmp / "full.db"),
    "sqlite-normal": lambda tmp: SqliteDLQ(tmp / "normal.db", synchronous="NORMAL"),
    "jsonl": lambda tmp: JsonlDLQ(tmp / "dlq.jsonl"),
}


@pytest.fixture(params=list(FACTORIES))
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterQueue]:
    made = FACTORIES[request.param](tmp_path)
    yield made
    made.close()


def test_send_a_batch_of_1000(benchmark: Any, queue: DeadLetterQueue) -> None:
    entries = make_entries(BATCH * (ROUNDS + 1))
    batches = iter([entries[i:i + BATCH] for i in range(0, len(entries), BATCH)])
    # Fresh ids every round: this measures inserts, the common case, not upserts.
    benchmark.extra_info["entries_per_round"] = BATCH
    benchmark.pedantic(queue.send, setup=lambda: ((next(batches),), {}), rounds=ROUNDS, iterations=1)
    assert queue.count() == BATCH * ROUNDS
