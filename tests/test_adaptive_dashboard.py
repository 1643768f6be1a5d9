"""The dashboard shows the adaptive concurrency limit (issue 10 item 6): with
``concurrency=Adaptive(...)`` each snapshot carries ``concurrency_limit`` and the rate line says
``limit N``; a fixed concurrency shows no limit. Hand-made snapshots, as tests/test_dashboard.py."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from batchguard import BatchProgress
from batchguard.cli.dashboard import Board, render


def _snapshot(limit: int | None) -> BatchProgress:
    return BatchProgress(batches_completed=1, batches_total=4, current_batch_index=1, records_processed=10,
                         succeeded=10, failed=0, retrying=0, in_flight=3, queued=0, elapsed_s=5.0, total=40,
                         batch_size=10, concurrency_limit=limit)


def _screen(progress: BatchProgress) -> str:
    board = Board(title="run", mode="full", concurrency=256)
    board.add(progress)
    console = Console(record=True, width=120, height=30, force_terminal=True, file=io.StringIO())
    console.print(render(board, 30))
    return console.export_text()


def test_the_rate_line_shows_the_adaptive_limit() -> None:
    text = _screen(_snapshot(18))
    rate_line = next(line for line in text.splitlines() if "rec/s" in line)
    assert "limit 18" in rate_line
    # The next snapshot's limit replaces it.
    assert "limit 5" in _screen(dataclasses.replace(_snapshot(18), concurrency_limit=5))


def test_a_fixed_concurrency_shows_no_limit() -> None:
    assert "limit" not in _screen(_snapshot(None))
