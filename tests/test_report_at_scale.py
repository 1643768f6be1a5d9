"""A failure-heavy run's report stays small (issue 7, defect 10).

With a durable DLQ the report keeps counts and the first 1000 dead letters in record order:
``summary()`` and ``to_dict()`` never read the DLQ back, and ``errors`` / ``failed`` /
``dead_letters`` are lazy sequences that read it one batch at a time, in record order.
The DLQs here are real SQLite files; "reads nothing" is proved by closing the queue first.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from batchguard import RetryPolicy, replay, run_batches
from batchguard.dlq import SqliteDLQ
from batchguard.errors import DLQError
from helpers_contract import CONCURRENCIES, ENGINES

ONCE = RetryPolicy(max_attempts=1)


def reject(record: int) -> int:
    raise ValueError(f"record {record} is invalid")


def reject_odd(record: int) -> int:
    if record % 2:
        raise ValueError(f"odd record {record}")
    return record * 10


def _peak_bytes_of(action: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_summary_and_to_dict_read_nothing_back_from_the_dlq(engine: str, tmp_path: Path) -> None:
    n = 2500
    with SqliteDLQ(tmp_path / "f.db") as dlq:
        report = run_batches(range(n), reject, dlq=dlq, batch_size=100, retry=ONCE, engine=engine)
        assert dlq.count() == n
    # The queue is closed: anything that still read it would raise DLQError here.
    text = report.summary()
    assert "FAILED RECORDS (2500)" in text and "ValueError: 2500 (100.0%)" in text
    assert "1. record 0 (#0, batch 0)" in text and "... and 2490 more" in text
    data = report.to_dict()
    assert [e["record_index"] for e in data["errors"]] == list(range(1000))
    assert data["errors_omitted"] == 1500 and data["errors_by_type"] == {"ValueError": n}
    assert report.errors_by_type == {"ValueError": n} and report.most_common_error == "ValueError"
    assert len(report.errors) == len(report.failed) == len(report.dead_letters) == n
    assert report.errors[999].record_index == 999 and report.failed[:3] == [0, 1, 2]
    with pytest.raises(DLQError, match="reads the others back from the DLQ"):
        report.errors[1000]


def test_to_dict_max_errors_none_lists_every_error(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "f.db") as dlq:
        report = run_batches(range(1200), reject, dlq=dlq, batch_size=100, retry=ONCE)
        data = report.to_dict(max_errors=None)
        assert [e["record_index"] for e in data["errors"]] == list(range(1200))
        assert data["errors_omitted"] == 0
        assert len(report.to_dict(max_errors=5)["errors"]) == 5
        with pytest.raises(ValueError, match="max_errors"):
            report.to_dict(max_errors=-1)


def test_summary_memory_does_not_grow_with_the_failures(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "f.db", synchronous="NORMAL") as dlq:
        report = run_batches(range(20_000), reject, dlq=dlq, retry=ONCE)
        peak = _peak_bytes_of(lambda: (report.summary(), report.to_dict()))
    # Reading 20,000 entries back took ~45 MB; the sample of 1000 and its dict are ~2 MB.
    assert peak < 4_000_000, f"summary() + to_dict() peaked at {peak / 1e6:.1f} MB"


def test_iterating_the_errors_holds_one_batch_at_a_time(tmp_path: Path) -> None:
    n = 10_000
    with SqliteDLQ(tmp_path / "f.db", synchronous="NORMAL") as dlq:
        report = run_batches(range(n), reject, dlq=dlq, batch_size=500, retry=ONCE)
        seen = 0

        def walk() -> None:
            nonlocal seen
            for position, entry in enumerate(report.dead_letters):
                assert entry.record_index == position
                seen += 1

        peak = _peak_bytes_of(walk)
    assert seen == n
    # All of them took ~23 MB; one batch of 500 (and the in-memory sample) ~3 MB.
    assert peak < 8_000_000, f"iterating {n} dead letters peaked at {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("concurrency", CONCURRENCIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_lazy_sequences_follow_record_order_when_batches_finish_out_of_order(
        engine: str, concurrency: int, tmp_path: Path) -> None:
    n = 3000
    first_batch_done = threading.Event()

    def slow_first_batch(record: int) -> int:
        if record == 1 and concurrency > 1:
            # Batch 0 finishes (and is sent to the DLQ) after later batches.
            first_batch_done.wait(0.5)
            time.sleep(0.05)
        if record == 2999:
            first_batch_done.set()
        return reject_odd(record)

    with SqliteDLQ(tmp_path / "f.db") as dlq:
        report = run_batches(range(n), slow_first_batch, dlq=dlq, batch_size=100, retry=ONCE,
                             engine=engine, concurrency=concurrency)
        odd = list(range(1, n, 2))
        assert report.failure_count == len(odd) == 1500
        assert [e.record_index for e in report.errors] == odd
        assert list(report.failed) == odd and report.failed == odd
        assert report.errors[-1].record_index == n - 1 and report.errors[1200].record_index == 2401
        assert [e.record_index for e in report.errors[995:1005]] == odd[995:1005]
        assert [e.record_index for e in report.dead_letters[::500]] == odd[::500]
        stored = sorted(dlq.list(), key=lambda entry: entry.record_index)
        assert list(report.dead_letters) == stored
        with pytest.raises(IndexError, match="out of range"):
            report.errors[1500]


def test_an_entry_moved_in_the_dlq_is_still_found_in_its_place(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "f.db") as dlq:
        report = run_batches(range(2000), reject, dlq=dlq, batch_size=100, retry=ONCE)
        moved = dlq.list(run_id=report.run_id, offset=1500, limit=1)
        dlq.remove([moved[0].id])
        dlq.send(moved)  # back in, now last in the DLQ's order: batch 15's offsets no longer fit
        assert [e.record_index for e in report.errors[1400:1600]] == list(range(1400, 1600))
        assert [e.record_index for e in report.errors] == list(range(2000))


def test_entries_gone_from_the_dlq_raise_a_clear_error(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "f.db") as dlq:
        report = run_batches(range(1500), reject, dlq=dlq, batch_size=100, retry=ONCE)
        dlq.remove([e.id for e in dlq.list(run_id=report.run_id, offset=1200, limit=2)])
        assert report.errors[1100].record_index == 1100  # another batch: still there
        with pytest.raises(DLQError, match="no longer holds 2 of the 100 entries of batch 12") as caught:
            report.errors[1250]
        assert str(caught.value).count("dead-lettered") == 1, caught.value  # said once, not nested
        assert "FAILED RECORDS (1500)" in report.summary()


def test_a_replay_report_says_where_its_failures_went(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "f.db") as dlq:
        run_batches(range(1500), reject, dlq=dlq, batch_size=100, retry=ONCE)
        report = replay(dlq, reject, retry=ONCE)
        assert report.kept == report.failure_count == len(report.errors) == 1500
        assert [e.error_type for e in report.errors[:1000]] == ["ValueError"] * 1000
        assert "FAILED RECORDS (1500)" in report.summary()
        with pytest.raises(DLQError, match="a replay writes each failure back into the entry"):
            report.errors[1200]
        assert dlq.count() == 1500
