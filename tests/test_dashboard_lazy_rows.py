"""A snapshot's finished batches are built only when read (issue 9 item 2's "within 2%").

A snapshot after a thousand short batches handed the dashboard a thousand BatchStats, built on
the run's thread, and the board built as many again: at 1M trivial records that was what the
dashboard cost (those allocations set off a collection of the young generation, which at a
run's end holds the run's whole list of values). ``BatchProgress.finished`` is now a
:class:`FinishedBatches` over the recorder's tallies, and the board keeps the snapshots'
sequences as they came. These tests pin the sequence's behaviour and that taking a snapshot
in allocates nothing per batch.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from batchguard import BatchProgress, BatchStats, run_batches
from batchguard.cli.dashboard import KEPT_DONE_ROWS, Board
from batchguard.results import FinishedBatches
from test_dashboard import screen, snapshot, stats


def tallies(first: int, count: int) -> list[tuple[int, int, int, int, int, float, int]]:
    return [(i, 10, 9, 1, i % 3, 0.5, 0) for i in range(first, first + count)]


def test_finished_batches_reads_as_a_sequence_of_batch_stats() -> None:
    rows = FinishedBatches(tallies(4, 3))
    expected = (BatchStats(4, 10, 9, 1, 1, 0.5, 0), BatchStats(5, 10, 9, 1, 2, 0.5, 0),
                BatchStats(6, 10, 9, 1, 0, 0.5, 0))
    assert len(rows) == 3 and bool(rows) and not FinishedBatches()
    assert rows[0] == expected[0] and rows[-1] == expected[-1]
    assert rows[1:] == expected[1:] and isinstance(rows[1:], tuple)
    assert tuple(rows) == expected and rows == expected and list(reversed(rows)) == list(expected[::-1])
    assert rows == FinishedBatches(tallies(4, 3)) and hash(rows) == hash(FinishedBatches(tallies(4, 3)))
    assert rows != FinishedBatches(tallies(5, 3))
    assert rows.totals() == (6, 27, 3, 3)
    assert FinishedBatches().totals() == (-1, 0, 0, 0)
    assert "BatchStats(batch_index=4" in repr(rows)
    with pytest.raises(IndexError):
        rows[3]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_snapshots_list_each_batch_once_lazily(engine: str) -> None:
    snaps: list[BatchProgress] = []
    report = run_batches(range(500), lambda r: r, engine=engine, batch_size=10, on_progress=snaps.append)
    assert all(isinstance(s.finished, FinishedBatches) for s in snaps)
    listed = [b for s in snaps for b in s.finished]
    assert sorted(listed, key=lambda b: b.batch_index) == report.batches


def _peak_bytes(call: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_taking_a_snapshot_in_allocates_nothing_per_finished_batch() -> None:
    many = FinishedBatches(tallies(0, 20_000))
    progress = snapshot(done=20_000, total=200_000, batch_size=10)
    progress = BatchProgress(**{**{f: getattr(progress, f) for f in progress.__dataclass_fields__},
                                "finished": many})
    board = Board(title="t")
    # 20,000 BatchStats (or one iterator per batch) would take megabytes; a few objects do not.
    assert _peak_bytes(lambda: board.add(progress)) < 16_384
    assert _peak_bytes(many.totals) < 4_096
    assert (board.done_count, board.done_succeeded, board.done_failed, board.newest_done) == (
        20_000, 180_000, 20_000, 19_999)


def test_the_board_keeps_the_newest_rows_across_snapshots() -> None:
    board = Board(title="t")
    first = 0
    for count in (3, KEPT_DONE_ROWS, 7, 1, KEPT_DONE_ROWS // 2, 5):
        progress = snapshot(done=first + count, total=100_000, batch_size=10)
        board.add(BatchProgress(**{**{f: getattr(progress, f) for f in progress.__dataclass_fields__},
                                   "finished": FinishedBatches(tallies(first, count))}))
        first += count
        # Never fewer rows than the board can show; the oldest sequence only while it is needed.
        assert min(first, KEPT_DONE_ROWS) <= board.done_rows
        assert board.done_rows - len(board.done[0]) < KEPT_DONE_ROWS
    assert [b.batch_index for b in board.recent_done(10)] == list(range(first - 10, first))
    assert [b.batch_index for b in board.recent_done(KEPT_DONE_ROWS)] == list(
        range(first - KEPT_DONE_ROWS, first))
    assert board.done_count == first and board.newest_done == first - 1


def test_a_board_fed_lazy_rows_draws_what_one_fed_built_rows_draws() -> None:
    built, lazy = Board(title="t"), Board(title="t")
    rows = [stats(i, failed=1 if i == 2 else 0, retries=1 if i == 4 else 0) for i in range(7)]
    for board, finished in ((built, tuple(rows)), (lazy, FinishedBatches(
            [(b.batch_index, b.size, b.succeeded, b.failed, b.retries, b.duration_s, b.pending)
             for b in rows]))):
        progress = snapshot(done=7, finished=tuple(rows))
        board.add(BatchProgress(**{**{f: getattr(progress, f) for f in progress.__dataclass_fields__},
                                   "finished": finished}))
    assert screen(built) == screen(lazy)
    assert screen(built, height=12) == screen(lazy, height=12)  # folded into a summary row
