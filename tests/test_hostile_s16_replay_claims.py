"""Hostile tests of a replay's claims (session 16, H1), at the level of the claims themselves:
what happens when their renewal, settling and giving back interleave, on a real SQLite file.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchguard import ConfigError, RetryPolicy, replay, run_batches
from batchguard._replay_claims import Claims, swapper
from batchguard.dlq import DeadLetter, SqliteDLQ, StatusChange
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


def _claimed_by_hand(queue: SqliteDLQ, status_at: str) -> DeadLetter:
    """An entry claimed as another tool (or a hand edit, an import) may have written it."""
    entry = next(iter(queue.iter()))
    change = StatusChange("replaying", status_at, "elsewhere", "claimed by replay run-X (lease 60 s)")
    queue.send([dataclasses.replace(entry, status="replaying", status_reason=change.reason, status_by="elsewhere",
                                    status_at=status_at, history=(change,))])
    return entry


@pytest.mark.parametrize("status_at", ["2026-01-01T00:00:00", "2026-01-01T00:00:00.000"])
def test_a_claim_stamped_without_a_timezone_is_read_as_utc(status_at: str, tmp_path: Path) -> None:
    """Every replay and skip of the queue raised TypeError (can't subtract offset-naive and
    offset-aware datetimes) on one claim whose time had no UTC offset."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(3), _always_fails, dlq=queue, retry=ONCE)
    entry = _claimed_by_hand(queue, status_at)
    report = replay(queue, lambda record: record, retry=ONCE)
    assert report.replayed == 3  # its lease ran out long ago (read as UTC): taken over
    assert queue.count(status="replayed") == 3 and queue.get(entry.id) is not None


def test_a_claim_stamped_far_in_the_future_does_not_hold_its_entry_for_ever(tmp_path: Path) -> None:
    """A claim stamped more than its lease ahead of this clock (a clock that far off, a corrupt
    stamp) was never stale: no replay ran the entry, not even with reclaim=True, and a skip was
    refused, until the year of the stamp. It is stale now, as one that far behind is."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(3), _always_fails, dlq=queue, retry=ONCE)
    entry = _claimed_by_hand(queue, "2999-01-01T00:00:00.000+00:00")
    assert queue.resolve([entry.id], "known bad") == 1  # not refused: nobody holds it
    queue.set_status([entry.id], "open")
    entry = _claimed_by_hand(queue, "2999-01-01T00:00:00.000+00:00")
    report = replay(queue, lambda record: record, retry=ONCE)
    assert report.replayed == 3 and report.held_elsewhere == 0


@pytest.mark.parametrize("lease", ["1.2.3", "-", "1e999", "1e12", "-5"])
def test_a_claim_whose_lease_does_not_read_as_one_is_stale(lease: str, tmp_path: Path) -> None:
    """A claim's lease is read back from its reason; "1.2.3" or "-" (which its pattern admits)
    made every replay of the queue raise ValueError, and a lease of 1e999 or 1e12 s held the
    entry for ever. A lease no replay could have taken (not a number in (0, one year]) is
    unreadable, and an unreadable claim is stale, as before."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(3), _always_fails, dlq=queue, retry=ONCE)
    entry = next(iter(queue.iter()))
    change = StatusChange("replaying", "2026-01-01T00:00:00.000+00:00", "elsewhere",
                          f"claimed by replay run-X (lease {lease} s)")
    queue.send([dataclasses.replace(entry, status="replaying", status_reason=change.reason, status_by="elsewhere",
                                    status_at=datetime.now(UTC).isoformat(), history=(change,))])
    report = replay(queue, lambda record: record, retry=ONCE)
    assert report.replayed == 3 and report.held_elsewhere == 0


def test_set_status_does_not_make_claims(tmp_path: Path) -> None:
    """``set_status(ids, "replaying", reason="claimed by replay X (lease 60 s)")`` made a claim no
    replay holds, which every replay then left alone and every skip refused for its lease; only
    a replay claims entries (``batchguard.replay``)."""
    queue = SqliteDLQ(tmp_path / "dlq.db")
    run_batches(range(3), _always_fails, dlq=queue, retry=ONCE)
    entry = next(iter(queue.iter()))
    with pytest.raises(ConfigError, match="only when a replay claims it"):
        queue.set_status([entry.id], "replaying", reason="claimed by replay run-X (lease 60 s)")
    assert queue.count(status="replaying") == 0
