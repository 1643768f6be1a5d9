"""A replay's claims on the entries it runs: so that two replays of one queue (two processes,
two threads) never run a record twice, and a skip does not land under a running replay.

Before a replay feeds a page of entries to ``fn`` it claims them in one atomic step of the queue
(:meth:`~batchguard.dlq.base.QueueBase.swap`): each becomes ``replaying``, naming the replay's
run id and lease; an entry another live replay holds is left to it. While the replay holds
entries it renews their lease (a thread, every third of it). When a batch ends, each of its
entries is settled -- marked replayed, or reopened with its attempt history extended -- only if
the replay still holds it: one a user skipped with ``force=True`` meanwhile stays as they set
it. Whatever the replay still holds when it ends, however it ends, goes back to its status
before the claim. A replay killed outright (SIGKILL, a lost machine) cannot do that: its claims
go stale once their lease runs out unrenewed, and the next replay takes them over, so nothing
is lost (``reclaim=True`` takes over at once those not renewed since the replay started).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from .dlq.base import DeadLetter, DeadLetterQueue, Decide, matches
from .dlq.status import Claim, claim_change, claim_of, claimed, renewed, unclaimed

__all__ = ["Claims", "Swaps", "swapper"]

logger = logging.getLogger("batchguard")


class Swaps(Protocol):
    """A queue with the atomic :meth:`~batchguard.dlq.base.QueueBase.swap` (every built-in
    backend): what claims need. A queue of your own without it is replayed unclaimed."""

    def swap(self, ids: Iterable[str], decide: Decide) -> dict[str, DeadLetter]: ...


class _ReadThenSend:
    """``swap`` for a queue of your own that has none: ``get`` each entry, then ``send`` what
    ``decide`` chose. Not atomic (another writer may get in between), so two replays of such a
    queue may still both run an entry; every built-in backend has the atomic one."""

    def __init__(self, queue: DeadLetterQueue) -> None:
        self._queue = queue

    def swap(self, ids: Iterable[str], decide: Decide) -> dict[str, DeadLetter]:
        found = {entry_id: entry for entry_id in dict.fromkeys(ids)
                 if (entry := self._queue.get(entry_id)) is not None}
        changed = {entry_id: entry for entry_id, entry in decide(dict(found)).items() if entry_id in found}
        if changed:
            self._queue.send(list(changed.values()))
        return {**found, **changed}


def swapper(queue: DeadLetterQueue) -> Swaps:
    """``queue`` itself when it has the atomic ``swap``, else a stand-in that reads then sends."""
    return cast("Swaps", queue) if callable(getattr(queue, "swap", None)) else _ReadThenSend(queue)


class Claims:
    """The claims of one replay (run ``run_id``) on a queue; thread-safe.

    ``view``: the exact matches the replay selects its entries by (filters and status), which
    an entry must still meet when it is claimed. ``held`` maps each held entry's id to whether
    claiming it took it out of that view (for the replay's paging).
    """

    def __init__(self, queue: Swaps, run_id: str, *, by: str | None, lease_s: float,
                 reclaim: bool, view: dict[str, Any]) -> None:
        self.queue = queue
        self.run_id = run_id
        self.lease_s = lease_s
        self.reclaim = reclaim
        now = datetime.now(UTC)
        # To the millisecond, as claims store their time: a claim stamped with this instant may
        # have been made after it, and is left to its replay.
        self.started = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self.view = view
        self.change = claim_change(run_id, lease_s, by)
        self.held: dict[str, bool] = {}
        self.elsewhere = 0
        """Entries another live replay held when this one came to them: left to it."""
        self.lost = 0
        """Entries this replay ran whose claim was gone when it settled them (skipped with
        ``force=True`` meanwhile, or taken over after its lease ran out): left as they were."""
        self._lock = threading.Lock()
        self._settling: set[str] = set()
        """Held entries a settle is writing now: a renewal that finds them no longer claimed
        found them settled, not lost."""
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def takes_over(self, claim: Claim, now: datetime) -> bool:
        """Whether this replay takes ``claim`` (another replay's) over: when it is stale, or
        with ``reclaim`` when it was made or last renewed before this replay started -- a
        killed replay's. A claim made or renewed since is a running replay's: left to it, or
        two replays started together with ``reclaim`` would take each other's claims."""
        return claim.stale(now) or (self.reclaim and claim.at < self.started)

    def _ours(self, entry: DeadLetter) -> bool:
        claim = claim_of(entry)
        return claim is not None and claim.run_id == self.run_id

    def take(self, entries: Sequence[DeadLetter], *, in_view: bool = True) -> tuple[list[DeadLetter], int]:
        """Claim ``entries`` (listed from the view, or stale claims with ``in_view=False``) where
        no live replay holds them and they still match the view. Returns the claimed ones, as
        now stored, in the order given, and how many of ``entries`` are no longer in the view
        (claimed by this replay or another, changed, removed)."""
        if not entries:
            return [], 0
        skipped = 0
        taken_over: dict[str, str] = {}  # the replays whose claims this one takes over: run id -> as told

        def decide(found: dict[str, DeadLetter]) -> dict[str, DeadLetter]:
            nonlocal skipped
            now = datetime.now(UTC)
            chosen: dict[str, DeadLetter] = {}
            skipped = 0
            taken_over.clear()
            for entry_id, entry in found.items():
                claim = claim_of(entry)
                if claim is not None:
                    if claim.run_id == self.run_id:
                        continue
                    if not self.takes_over(claim, now):
                        skipped += 1
                        continue
                if matches(unclaimed(entry), self.view):
                    chosen[entry_id] = claimed(entry, self.change)
                    if claim is not None:
                        taken_over[claim.run_id] = claim.describe(now)
            return chosen

        try:
            after = self.queue.swap([e.id for e in entries], decide)
            taken = [after[e.id] for e in entries if e.id in after and self._ours(after[e.id])]
            with self._lock:
                for entry in taken:
                    self.held[entry.id] = in_view and not matches(entry, self.view)
        except BaseException:
            # Interrupted (Ctrl-C) or failed while the queue wrote the claims: some may have
            # landed. Count every one as held, so the replay's end gives back those that are
            # its own (and only those: a release changes only this replay's claims).
            with self._lock:
                for entry in entries:
                    self.held.setdefault(entry.id, False)
            raise
        for told in taken_over.values():  # a replay that was killed, or reclaim=True
            logger.warning("replay %s takes over the entries %s held", self.run_id, told,
                           extra={"run_id": self.run_id})
        left = sum(1 for e in entries if e.id not in after or not matches(after[e.id], self.view)) if in_view else 0
        with self._lock:
            self.elsewhere += skipped
        return taken, left

    def settle(self, finals: dict[str, Callable[[DeadLetter], DeadLetter]], *,
               ran: bool = True) -> dict[str, tuple[bool, DeadLetter]]:
        """Apply to each held entry its final form (``finals[id](entry before the claim)``), if
        the replay still holds it; returns, for each, whether claiming had taken it out of the
        view and the entry as stored. Entries no longer held are left as they are (counted in
        ``lost`` when ``ran``: their records ran, and the outcome is not written)."""
        if not finals:
            return {}

        applied: dict[str, DeadLetter] = {}

        def decide(found: dict[str, DeadLetter]) -> dict[str, DeadLetter]:
            applied.clear()  # a backend may decide again (Redis, when another writer got in)
            applied.update((entry_id, finals[entry_id](unclaimed(entry))) for entry_id, entry in found.items()
                           if entry_id in finals and self._ours(entry))
            return dict(applied)

        with self._lock:
            self._settling.update(finals)
        try:
            self.queue.swap(list(finals), decide)
        except BaseException:
            with self._lock:
                self._settling.difference_update(finals)
            raise
        done: dict[str, tuple[bool, DeadLetter]] = {}
        with self._lock:
            self._settling.difference_update(finals)
            for entry_id in finals:
                out = self.held.pop(entry_id, False)
                if entry_id in applied:
                    done[entry_id] = (out, applied[entry_id])
                elif ran:
                    self.lost += 1
        return done

    def hold(self, entries: dict[str, bool]) -> None:
        """Count ``entries`` (id: out of the view) as held again: a settle of them whose
        transaction rolled back after all (a job store's update failed), so they are still
        claimed, and given back at the end."""
        with self._lock:
            self.held.update(entries)

    def release(self) -> None:
        """Give back every entry still held (never run, or its batch never ended): each goes
        back to its status before the claim."""
        with self._lock:
            ids = list(self.held)
        if ids:
            self.settle({entry_id: _as_it_was for entry_id in ids}, ran=False)

    def renew(self) -> None:
        """Start the lease of every held entry again."""
        with self._lock:
            ids = list(self.held)
        if not ids:
            return
        now = datetime.now(UTC)

        def decide(found: dict[str, DeadLetter]) -> dict[str, DeadLetter]:
            return {entry_id: renewed(entry, now) for entry_id, entry in found.items() if self._ours(entry)}

        after = self.queue.swap(ids, decide)
        with self._lock:  # an entry settled since the snapshot above is not lost: it left ``held``
            gone = [entry_id for entry_id in ids
                    if entry_id in self.held and entry_id not in self._settling
                    and (entry_id not in after or not self._ours(after[entry_id]))]
        if gone:
            logger.warning("replay %s no longer holds %d of its entries (skipped with force, or taken over "
                           "by another replay after its lease ran out): their outcomes will not be written",
                           self.run_id, len(gone), extra={"run_id": self.run_id})

    def start(self) -> None:
        """Renew the claims every third of the lease, on a daemon thread, until :meth:`stop`."""
        if self._heartbeat is not None:
            return

        def beat() -> None:
            while not self._stop.wait(self.lease_s / 3):
                try:
                    self.renew()
                except Exception:  # the queue was unreachable: try again at the next beat
                    logger.warning("replay %s could not renew its claims", self.run_id, exc_info=True,
                                   extra={"run_id": self.run_id})

        self._heartbeat = threading.Thread(target=beat, name="batchguard-replay-claims", daemon=True)
        self._heartbeat.start()

    def stop(self) -> None:
        """Stop renewing (the claims left are released next, or go stale)."""
        self._stop.set()
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.join()


def _as_it_was(entry: DeadLetter) -> DeadLetter:
    return entry
