"""The progress data model (issue 9 item 2): the open batches with their counts and the batches
finished since the previous snapshot, on both engines; ``total=`` for a generator."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard import ActiveBatch, BatchProgress, RetryPolicy, arun_batches, run_batches
from batchguard.errors import ConfigError, ConfigTypeError

ENGINES = ("native", "python")
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=0.0, jitter="none")


def _rows(batches: Any) -> list[tuple[int, int, int, int, int, int]]:
    return sorted((b.batch_index, b.size, b.succeeded, b.failed, b.retries, b.pending) for b in batches)


def _check_snapshots(snaps: list[BatchProgress]) -> None:
    for snap in snaps:
        for b in snap.batches:
            assert isinstance(b, ActiveBatch)
            assert b.succeeded + b.failed + b.retrying + b.in_flight + b.queued == b.size, b
            assert b.elapsed >= 0 and b.started >= 0
        assert [b.index for b in snap.batches] == sorted(b.index for b in snap.batches)
        assert 0.0 <= snap.percent_complete <= 100.0
    assert snaps[-1].final and not snaps[-1].batches
    assert all(not s.final for s in snaps[:-1])


def _flaky(plan: dict[int, int]) -> Any:
    """fn: record r fails its first plan[r] attempts with ConnectionError (-1: always)."""
    tries: dict[int, int] = {}
    lock = threading.Lock()

    def fn(r: int) -> int:
        with lock:
            tries[r] = tries.get(r, 0) + 1
            n = tries[r]
        fails = plan.get(r, 0)
        if fails < 0 or n <= fails:
            raise ConnectionError(f"record {r} try {n}")
        return r

    return fn


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_each_finished_batch_is_in_exactly_one_snapshot_with_the_reports_stats(engine: str,
                                                                              concurrency: int) -> None:
    snaps: list[BatchProgress] = []
    plan = {3: 1, 10: -1, 11: 2, 25: -1}
    report = run_batches(list(range(40)), _flaky(plan), batch_size=6, concurrency=concurrency,
                         engine=engine, retry=NO_WAIT, on_progress=snaps.append)
    _check_snapshots(snaps)
    finished = [b for s in snaps for b in s.finished]
    assert _rows(finished) == _rows(report.batches)
    assert len({b.batch_index for b in finished}) == len(finished) == 7


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 60), batch_size=st.integers(1, 9), concurrency=st.sampled_from([1, 3]),
       plan=st.dictionaries(st.integers(0, 59), st.sampled_from([-1, 1, 2]), max_size=12))
def test_the_engines_agree_on_every_batchs_final_stats(n: int, batch_size: int, concurrency: int,
                                                       plan: dict[int, int]) -> None:
    """Differential: the batches the snapshots list as finished, with their final counts, are
    the same on both engines (durations aside)."""
    seen = {}
    for engine in ENGINES:
        snaps: list[BatchProgress] = []
        run_batches(list(range(n)), _flaky(plan), batch_size=batch_size, concurrency=concurrency,
                    engine=engine, retry=NO_WAIT, on_progress=snaps.append)
        _check_snapshots(snaps)
        seen[engine] = _rows(b for s in snaps for b in s.finished)
    assert seen["native"] == seen["python"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_snapshot_shows_the_open_batch_mid_run_with_its_retrying_record(engine: str) -> None:
    """A record backing off is counted as retrying in its batch's row, the others by state."""
    snaps: list[BatchProgress] = []

    def fn(r: int) -> int:
        if r == 0 and not snaps_with_retrying:
            raise ConnectionError("first try")
        time.sleep(0.03)
        return r

    snaps_with_retrying: list[BatchProgress] = []

    def on_progress(p: BatchProgress) -> None:
        snaps.append(p)
        if any(b.retrying for b in p.batches):
            snaps_with_retrying.append(p)

    run_batches(list(range(8)), fn, batch_size=8, engine=engine, on_progress=on_progress,
                retry=RetryPolicy(max_attempts=2, base_delay=0.3, jitter="none"))
    _check_snapshots(snaps)
    assert snaps_with_retrying, "the backoff (0.3 s) spans several snapshots"
    row = snaps_with_retrying[0].batches[0]
    assert (row.index, row.size, row.retrying, row.failed) == (0, 8, 1, 0)
    assert [(b.batch_index, b.retries) for s in snaps for b in s.finished] == [(0, 1)]


@pytest.mark.parametrize("engine", ENGINES)
def test_async_runs_report_open_batches_too(engine: str) -> None:
    snaps: list[BatchProgress] = []

    async def fn(r: int) -> int:
        await asyncio.sleep(0.02)
        return r

    report = asyncio.run(arun_batches(list(range(30)), fn, batch_size=10, concurrency=5,
                                      engine=engine, on_progress=snaps.append))
    _check_snapshots(snaps)
    assert any(s.batches and s.batches[0].in_flight for s in snaps)
    assert _rows(b for s in snaps for b in s.finished) == _rows(report.batches)


# ---------------------------------------------------------------------------- total=


@pytest.mark.parametrize("engine", ENGINES)
def test_total_makes_a_generators_progress_meaningful(engine: str) -> None:
    snaps: list[BatchProgress] = []
    report = run_batches((i for i in range(100)), lambda r: r, batch_size=10, total=100,
                         engine=engine, on_progress=snaps.append)
    assert report.total == 100
    middle = [s for s in snaps if not s.final and 0 < s.records_processed < 100]
    assert middle
    assert all(s.total == 100 and s.batches_total == 10 for s in middle)
    assert all(s.percent_complete == s.records_processed for s in middle)
    assert all(s.eta_s is not None for s in middle)
    assert snaps[-1].percent_complete == 100.0 and snaps[-1].eta_s == 0.0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("said", [40, 250])
def test_a_wrong_total_is_clamped_and_the_report_counts_what_was_read(engine: str, said: int) -> None:
    snaps: list[BatchProgress] = []
    report = run_batches((i for i in range(100)), lambda r: r, batch_size=10, total=said,
                         engine=engine, on_progress=snaps.append)
    assert (report.total, report.success_count, report.pending_count) == (100, 100, 0)
    assert all(0.0 <= s.percent_complete <= 100.0 for s in snaps)
    assert all(s.eta_s is None or s.eta_s >= 0 for s in snaps)
    assert all(s.total is not None and s.total >= s.records_processed for s in snaps)
    last = snaps[-1]
    assert (last.final, last.total, last.batches_total, last.percent_complete) == (True, 100, 10, 100.0)


def test_a_lists_length_wins_over_total() -> None:
    snaps: list[BatchProgress] = []
    report = run_batches(list(range(30)), lambda r: r, batch_size=10, total=5, on_progress=snaps.append)
    assert report.total == 30 and all(s.total == 30 for s in snaps)


def test_total_lets_batch_size_auto_size_a_generator() -> None:
    report = run_batches((i for i in range(50)), lambda r: r, batch_size="auto", total=50)
    assert report.total == 50
    with pytest.raises(ConfigError, match="total=N"):
        run_batches((i for i in range(5)), lambda r: r, batch_size="auto")


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_total_is_checked(bad: Any) -> None:
    with pytest.raises((ConfigError, ConfigTypeError), match="total"):
        run_batches(iter([1]), lambda r: r, total=bad)


def test_an_aborted_run_with_total_ends_on_a_final_snapshot_that_says_so() -> None:
    snaps: list[BatchProgress] = []

    def fn(r: int) -> int:
        if r == 15:
            raise MemoryError("fatal")
        return r

    report = run_batches((i for i in range(100)), fn, batch_size=10, total=100, on_progress=snaps.append)
    assert report.status == "aborted" and report.total < 100
    last = snaps[-1]
    assert last.final and last.total == 100 and last.percent_complete < 100
    assert [b.pending for s in snaps for b in s.finished] == [0, 4]


class _AtItsOwnPace(list[BatchProgress]):
    """A display that draws at its own pace: one snapshot per 0.1 s is enough for it."""

    progress_every_batch = False

    def __call__(self, progress: BatchProgress) -> None:
        self.append(progress)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_display_at_its_own_pace_gets_no_snapshot_per_batch_but_every_finished_batch(
        engine: str, concurrency: int) -> None:
    """progress_every_batch = False: 2,000 batches of trivial records are not 2,000 snapshots,
    and each finished batch still comes once, with its stats (the last ones in the final)."""
    snaps = _AtItsOwnPace()
    report = run_batches(list(range(20_000)), lambda r: r, batch_size=10, concurrency=concurrency,
                         engine=engine, on_progress=snaps)
    assert len(snaps) < 200, len(snaps)
    assert all(s.batches is not None for s in snaps)
    _check_snapshots(snaps)
    assert _rows(b for s in snaps for b in s.finished) == _rows(report.batches)
    assert snaps[-1].records_processed == 20_000


@pytest.mark.parametrize("engine", ENGINES)
def test_a_display_at_its_own_pace_still_sees_a_slow_run_move(engine: str) -> None:
    snaps = _AtItsOwnPace()

    async def fn(r: int) -> int:
        await asyncio.sleep(0.01)
        return r

    asyncio.run(arun_batches(list(range(60)), fn, batch_size=5, concurrency=2, engine=engine,
                             on_progress=snaps))
    _check_snapshots(snaps)
    assert len(snaps) >= 3 and any(s.batches for s in snaps)  # 0.3 s of work: about one per 0.1 s
    assert len({b.batch_index for s in snaps for b in s.finished}) == 12
