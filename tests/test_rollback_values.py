"""What ``keep_outcomes`` can keep for a rollback (issue 10 item 5): large values round-trip;
a value neither JSON nor picklable is kept as its repr, and the rollback says what to do."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import batchguard


@pytest.mark.parametrize("pickle_payloads", [False, True])
def test_a_huge_value_round_trips_and_an_unpicklable_one_is_named(tmp_path: Path, pickle_payloads: bool) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    huge = "x" * 5_000_000

    def fn(record: int) -> Any:
        return threading.Lock() if record == 1 else huge if record == 2 else {"id": record}

    batchguard.run_batches(range(3), fn, batch_size=3, job="load", store=store, keep_outcomes=True,
                           pickle_payloads=pickle_payloads)
    undone: list[tuple[int, Any]] = []
    report = batchguard.rollback("load", lambda record, value: undone.append((record, value)), store=store,
                                 allow_pickle=True)
    assert undone == [(2, huge), (0, {"id": 0})]
    [failure] = report.failed
    assert failure.record_index == 1
    assert "plain data" in failure.error_message
    if pickle_payloads:  # it was tried: telling the user to turn it on would mislead
        assert "run with pickle_payloads=True" not in failure.error_message
