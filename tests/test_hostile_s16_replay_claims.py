"""Hostile tests of a replay's claims (session 16, H1), at the level of the claims themselves:
what happens when their renewal, settling and giving back interleave, on a real SQLite file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from batchguard import RetryPolicy, run_batches
from batchguard._replay_claims import Claims, swapper
from batchguard.dlq import DeadLetter, SqliteDLQ
from batchguard.dlq.base import Decide, select

ONCE = RetryPolicy(max_attempts=1)


def _always_fails(record: int) -> int:
    raise ValueError(f"down {record}")


class _BeforeNextSwap:
    """A real queue whose next swap first lets ``meanwhile`` run (another thread's write landing
    between a reader's snapshot of what it holds and its own swap), or ``after`` once it wrote."""

    def __init__(self, queue: SqliteDLQ) -> None:
        self.queue = queue
        self.meanwhile: Callable[[], None] | None = None
        self.after: Callable[[], None] | None = None

    def swap(self, ids: Iterable[str], decide: Decide) -> dict[str, DeadLetter]:
        first, self.meanwhile = self.meanwhile, None
        if first is not None:
            first()
        found = self.queue.swap(ids, decide)
        then, self.after = self.after, None
        if then is not None:
            then()
        return found


def test_a_renewal_racing_a_batchs_settle_does_not_say_claims_were_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The renewal thread snapshots the held ids, then swaps; a batch settled in between is no
    longer the replay's, and the renewal warned that the replay "no longer holds" those entries
    and "their outcomes will not be written" -- about outcomes it had just written."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(6), _always_fails, dlq=queue, retry=ONCE)
    racing = _BeforeNextSwap(queue)
    claims = Claims(swapper(racing), "run-h1", by="h1", lease_s=60.0, reclaim=False, view=select({}, "open"))
    taken, _ = claims.take(list(queue.iter()))
    assert len(taken) == 6
    settled = [entry.id for entry in taken[:3]]
    racing.meanwhile = lambda: claims.settle(dict.fromkeys(settled, lambda e: e))
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        claims.renew()
    assert "no longer holds" not in caplog.text
    assert claims.lost == 0 and sorted(claims.held) == sorted(e.id for e in taken[3:])


def test_a_renewal_still_warns_of_claims_really_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The warning stays for what it is for: a held entry skipped with force meanwhile."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(6), _always_fails, dlq=queue, retry=ONCE)
    claims = Claims(swapper(queue), "run-h1", by="h1", lease_s=60.0, reclaim=False, view=select({}, "open"))
    taken, _ = claims.take(list(queue.iter()))
    queue.resolve([taken[0].id], "not ours to replay", force=True)
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        claims.renew()
    assert "no longer holds 1 of its entries" in caplog.text



def test_a_renewal_between_a_settles_write_and_its_bookkeeping_does_not_say_claims_were_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same race one step later: the settle's write has landed, its entries have not yet
    left ``held`` when the renewal looks."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(6), _always_fails, dlq=queue, retry=ONCE)
    racing = _BeforeNextSwap(queue)
    claims = Claims(swapper(racing), "run-h1", by="h1", lease_s=60.0, reclaim=False, view=select({}, "open"))
    taken, _ = claims.take(list(queue.iter()))
    racing.after = claims.renew  # runs once the settle's swap has written, before it returns
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        done = claims.settle(dict.fromkeys([entry.id for entry in taken[:3]], lambda e: e))
    assert len(done) == 3
    assert "no longer holds" not in caplog.text


def test_reclaim_takes_a_killed_replays_claims_but_not_those_made_after_it_started(tmp_path: Path) -> None:
    """``reclaim=True`` is for a killed replay's claims; it took over every claim, also those a
    replay running alongside made after it started: with two `dlq retry --reclaim` at once (or
    one beside a cron replay) each took the other's new pages, and both ran those records (4 to
    8 of 40 ran twice in two threads). A claim made or renewed since the reclaiming replay
    started is a running replay's: left to it."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(8), _always_fails, dlq=queue, retry=ONCE)
    entries = list(queue.iter())
    view = select({}, "open")
    killed = Claims(swapper(queue), "run-killed", by="cron", lease_s=600.0, reclaim=False, view=view)
    assert len(killed.take(entries[:4])[0]) == 4  # then the process died: never renewed
    time.sleep(0.01)  # claims are stamped to the ms: one stamped with a replay's start counts as after it
    reclaiming = Claims(swapper(queue), "run-reclaim", by="ops", lease_s=600.0, reclaim=True, view=view)
    running = Claims(swapper(queue), "run-cron", by="cron", lease_s=600.0, reclaim=False, view=view)
    assert len(running.take(entries[4:])[0]) == 4  # claimed after the reclaiming replay started

    taken, _ = reclaiming.take(entries, in_view=False)
    assert sorted(e.id for e in taken) == sorted(e.id for e in entries[:4])
    assert reclaiming.elsewhere == 4
    assert sorted(running.held) == sorted(e.id for e in entries[4:])

    # A claim renewed after a reclaiming replay started is a running replay's too.
    again = Claims(swapper(queue), "run-reclaim-2", by="ops", lease_s=600.0, reclaim=True, view=view)
    running.renew()
    assert again.take(entries[4:], in_view=False)[0] == []
    assert again.elsewhere == 4
