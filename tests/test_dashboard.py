"""The live dashboard's picture from hand-made snapshots, its plain lines off a terminal, and
the ready adapters of batchguard.progress (issue 9 item 2)."""

from __future__ import annotations

import io
import re
import threading
import time
from typing import Any

import pytest
from rich.console import Console

import batchguard.progress
from batchguard import ActiveBatch, BatchProgress, BatchStats, run_batches
from batchguard.cli.dashboard import Board, render
from batchguard.cli.progress import ProgressView


def active(index: int, *, size: int = 5, succeeded: int = 0, failed: int = 0, retrying: int = 0,
           in_flight: int = 0, retries: int = 0, elapsed: float = 8.2) -> ActiveBatch:
    queued = size - succeeded - failed - retrying - in_flight
    return ActiveBatch(index=index, size=size, succeeded=succeeded, failed=failed, retrying=retrying,
                       in_flight=in_flight, queued=queued, retries=retries, started=1.0, elapsed=elapsed)


def snapshot(*, done: int, total: int = 45, batch_size: int = 5, batches: tuple[ActiveBatch, ...] = (),
             finished: tuple[BatchStats, ...] = (), breaker: str = "closed", elapsed: float = 60.0,
             final: bool = False) -> BatchProgress:
    succeeded = sum(b.succeeded for b in finished) + sum(b.succeeded for b in batches)
    failed = sum(b.failed for b in finished) + sum(b.failed for b in batches)
    return BatchProgress(
        batches_completed=done, batches_total=-(-total // batch_size), current_batch_index=done,
        records_processed=succeeded + failed, succeeded=succeeded, failed=failed,
        retrying=sum(b.retrying for b in batches), in_flight=sum(b.in_flight for b in batches),
        queued=sum(b.queued for b in batches), elapsed_s=elapsed, total=total,
        breaker_state=breaker, batches=batches, finished=finished, batch_size=batch_size, final=final)


def stats(index: int, *, size: int = 5, failed: int = 0, retries: int = 0, duration: float = 18.2,
          pending: int = 0) -> BatchStats:
    return BatchStats(index, size, size - failed - pending, failed, retries, duration, pending)


def screen(board: Board, height: int = 40, width: int = 120) -> str:
    console = Console(record=True, width=width, height=height, force_terminal=True, file=io.StringIO())
    console.print(render(board, height))
    return console.export_text()


def seed_board() -> Board:
    """Seed 003's screen: 7 batches done (one with a retry), batch 8 running, batch 9 queued."""
    board = Board(title="Full Batch Processing in Progress", mode="full", concurrency=5)
    board.add(snapshot(done=7, finished=tuple(stats(i, retries=1 if i == 3 else 0) for i in range(7)),
                       batches=(active(7, succeeded=2, in_flight=2, retrying=1, retries=1),)))
    return board


def test_the_seed_screen_a_row_per_batch_with_status_counts_and_eta() -> None:
    text = screen(seed_board())
    assert "Total: 45 records · Batch size: 5 · Concurrency: 5 · Mode: full · Estimated duration:" in text
    lines = text.splitlines()
    row = {n: next(line for line in lines if line.startswith(f"Batch {n}/9 ")) for n in range(1, 10)}
    assert "(items 1-5)" in row[1] and "100%" in row[1] and "done" in row[1] and "(18.2 s)" in row[1]
    assert "(18.2 s, 1 retry)" in row[4]
    assert "(items 36-40)" in row[8] and " 40% " in row[8] and "retrying 1" in row[8]
    assert "8.2 s elapsed" in row[8]
    assert "(items 41-45)" in row[9] and "  0% queued" in row[9]
    assert "✓ succeeded 37   … in progress 2   ↻ retrying 1   ✗ failed 0   ⏸ queued 5" in text
    assert "ETA " in text and "rec/s" in text
    assert "breaker" not in text


def test_a_running_batch_says_running_and_a_failed_one_says_how_many() -> None:
    board = Board(title="run")
    board.add(snapshot(done=1, finished=(stats(0, failed=2),), batches=(active(1, succeeded=1, in_flight=3),)))
    text = screen(board)
    assert "done, 2 failed" in text
    assert any(line.startswith("Batch 2/9 ") and "running" in line for line in text.splitlines())


@pytest.mark.parametrize("state", ["open", "half_open"])
def test_the_breaker_shows_when_it_is_not_closed(state: str) -> None:
    board = Board(title="run")
    board.add(snapshot(done=0, batches=(active(0, in_flight=1),), breaker=state))
    assert f"circuit breaker {state.upper()}" in screen(board)


def test_finished_batches_fold_into_one_row_when_they_do_not_fit() -> None:
    board = Board(title="run")
    # 200 batches of 100: 150 done (2 of them with failures), 2 open, the rest queued
    for i in range(150):
        board.add(snapshot(done=i + 1, total=20_000, batch_size=100,
                           finished=(stats(i, size=100, failed=3 if i in (10, 149) else 0),)))
    board.add(snapshot(done=150, total=20_000, batch_size=100,
                       batches=(active(150, size=100, succeeded=50, in_flight=8),
                                active(151, size=100, in_flight=8))))
    text = screen(board, height=24)
    lines = text.splitlines()
    assert len(lines) <= 24
    (folded,) = [line for line in lines if "earlier batches done" in line]
    shown_done = [line for line in lines if line.startswith("Batch ") and "(items" in line and "% done" in line]
    assert folded.startswith(f"✓ {150 - len(shown_done)} earlier batches done")
    assert "14,994 succeeded, 6 failed" in folded  # all 150 done batches, counted, not drawn
    assert shown_done and "Batch 150/200" in shown_done[-1]  # the most recent ones are drawn
    assert any(line.startswith("Batch 151/200") and "running" in line for line in lines)
    assert any(line.startswith("Batch 153/200") and "queued" in line for line in lines)
    assert "more batches queued" in text


def test_a_generator_without_total_has_no_percent_and_no_queued_rows() -> None:
    board = Board(title="run")
    progress = BatchProgress(batches_completed=3, batches_total=None, current_batch_index=3,
                             records_processed=30, succeeded=30, failed=0, retrying=0, in_flight=1,
                             queued=9, elapsed_s=3.0, total=None, batches=(active(3, size=10, in_flight=1),),
                             batch_size=10)
    board.add(progress)
    text = screen(board)
    assert "Total: unknown records" in text and "Estimated duration: estimating…" in text
    assert "queued" not in [line.split()[-1] for line in text.splitlines() if line.startswith("Batch ")]
    assert "ETA -" in text


def test_the_view_only_stores_snapshots_and_draws_on_its_own_thread() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30)
    view = ProgressView(title="run", console=console, refresh_per_second=20)
    drawn_on: list[str] = []
    real = view.renderable

    def spy(height: int) -> Any:
        drawn_on.append(threading.current_thread().name)
        return real(height)

    view.renderable = spy  # type: ignore[method-assign]
    with view.running():
        view(snapshot(done=0, batches=(active(0, in_flight=2),)))
        assert not drawn_on, "on_progress stores; it never draws"
        deadline = time.monotonic() + 5
        while not drawn_on and time.monotonic() < deadline:
            time.sleep(0.01)
        view(snapshot(done=1, finished=(stats(0),), final=True))
    assert drawn_on[0] == "batchguard-dashboard"
    assert drawn_on[-1] == threading.current_thread().name  # the last state, after the run
    assert "Batch 1/9 done" in out.getvalue()


def test_off_a_terminal_the_view_prints_plain_lines(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchguard.cli.progress.PLAIN_PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr("batchguard.cli.progress.PLAIN_BATCH_EVERY_S", 0.0)
    view = ProgressView(title="run", console=Console(file=io.StringIO(), force_terminal=False))
    with view.running():
        view(snapshot(done=1, finished=(stats(0, retries=1, duration=20.1),), breaker="open",
                      batches=(active(1, in_flight=1),)))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "batch 1/9 done | succeeded 5 | failed 0 | retries 1 | 20.1 s"
    assert err[1].startswith("batches 1/9 (11.1%) | succeeded 5 | failed 0 | retrying 0 | ")
    assert err[1].endswith(" | breaker OPEN")


def test_off_a_terminal_fast_batches_print_no_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    view = ProgressView(title="run", console=Console(file=io.StringIO(), force_terminal=False))
    with view.running():
        run_batches(list(range(5000)), lambda r: r, batch_size=10, on_progress=view)
    assert capsys.readouterr().err == ""  # shorter than one interval: the report says it all


# ---------------------------------------------------------------------------- batchguard.progress


@pytest.mark.parametrize("engine", ["native", "python"])
def test_the_tqdm_adapter_follows_the_run_and_closes_on_its_last_snapshot(engine: str) -> None:
    out = io.StringIO()
    bar = batchguard.progress.tqdm(file=out, mininterval=0, desc="import")
    report = run_batches((i for i in range(250)), lambda r: 1 // (r % 50), batch_size=20, total=200,
                         engine=engine, on_progress=bar, retry=batchguard.RetryPolicy(max_attempts=1))
    assert bar.closed and bar.bar.n == 250 and bar.bar.total == 250  # total= said 200: corrected
    assert report.failure_count == 5
    assert "import: 100%" in out.getvalue() and "failed=5" in out.getvalue()


def test_the_tqdm_adapter_closes_when_the_run_raises() -> None:
    out = io.StringIO()

    def explode(p: BatchProgress) -> None:
        bar(p)
        if p.records_processed >= 20:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError), batchguard.progress.tqdm(file=out, mininterval=0) as bar:
        run_batches(range(100), lambda r: r, batch_size=10, on_progress=explode)
    assert bar.closed and bar.bar.n == 20


def test_the_rich_adapter_draws_the_dashboard_and_stops_on_the_last_snapshot() -> None:
    out = io.StringIO()
    show = batchguard.progress.rich(console=Console(file=out, force_terminal=True, width=110, height=30),
                                    concurrency=2)
    run_batches(range(60), lambda r: time.sleep(0.001), batch_size=20, concurrency=2, on_progress=show)
    assert show.closed
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert "Batch 3/3 (items 41-60)" in text and "Concurrency: 2" in text and "succeeded 60" in text
    assert not [t for t in threading.enumerate() if t.name == "batchguard-dashboard"]


def test_the_rich_adapter_stops_its_thread_when_the_run_raises() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=110, height=30)

    def fn(r: int) -> int:
        if r == 30:
            raise KeyboardInterrupt
        return r

    with pytest.raises(KeyboardInterrupt), batchguard.progress.rich(console=console) as show:
        run_batches(range(60), fn, batch_size=10, on_progress=show)
    assert show.closed
    assert not [t for t in threading.enumerate() if t.name == "batchguard-dashboard"]
