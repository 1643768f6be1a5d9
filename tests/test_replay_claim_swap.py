"""The claim primitive under the replay claims (LF1 item 1): ``queue.swap(ids, decide)`` is one
atomic read-decide-write on every backend, across processes (the SQLite file's write lock, the
JSONL file's fcntl lock, Redis WATCH/MULTI, PostgreSQL SELECT ... FOR UPDATE), and a replay that
runs longer than its lease keeps its claims by renewing them. Real servers and files; no mocks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchguard import RetryPolicy, replay, run_batches
from batchguard.dlq import DeadLetter
from test_replay_claim import DURABLE, Where

ONCE = RetryPolicy(max_attempts=1)
PROCESSES = 4
EACH = 25

COUNTER = '''
import dataclasses, sys
from batchguard.dlq import open_dlq
queue = open_dlq(sys.argv[1])
entry_id = sys.argv[2]
for _ in range(int(sys.argv[3])):
    queue.swap([entry_id], lambda found: {
        i: dataclasses.replace(e, error_message=str(int(e.error_message) + 1)) for i, e in found.items()})
queue.close()
'''


def _fails(record: int) -> int:
    raise ValueError("0")


@pytest.fixture(params=DURABLE)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    made = Where(request.param, request, tmp_path)
    run_batches(range(3), _fails, dlq=made.open(), retry=ONCE)
    yield made
    made.opener.close()


def test_swap_is_one_atomic_read_decide_write_across_processes(where: Where) -> None:
    queue = where.open()
    entry = queue.list()[1]
    assert entry.error_message == "0"
    workers = [subprocess.Popen([sys.executable, "-c", COUNTER, where.url, entry.id, str(EACH)])
               for _ in range(PROCESSES)]
    assert [w.wait(timeout=240) for w in workers] == [0] * PROCESSES
    after = queue.get(entry.id)
    # Every increment read the value the one before it wrote: none was lost to a race.
    assert after is not None and after.error_message == str(PROCESSES * EACH)
    assert [e.id for e in queue.list()] == [e.id for e in queue.list(status="all")]  # its place kept


def test_swap_writes_only_what_decide_returns_and_nothing_when_it_raises(where: Where) -> None:
    queue = where.open()
    first, second, third = queue.list()

    def change_first(found: dict[str, DeadLetter]) -> dict[str, DeadLetter]:
        assert set(found) == {first.id, second.id}  # an unknown id is left out
        return {first.id: dataclasses.replace(found[first.id], error_type="KeyError")}

    after = queue.swap([first.id, second.id, "no-such-id"], change_first)
    assert set(after) == {first.id, second.id} and after[first.id].error_type == "KeyError"
    assert queue.count(error_type="KeyError") == 1  # the filter columns follow the change

    def refuse(found: dict[str, DeadLetter]) -> dict[str, DeadLetter]:
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        queue.swap([third.id], refuse)
    assert queue.get(third.id) == third


def test_a_replay_longer_than_its_lease_keeps_its_claims_by_renewing_them(where: Where) -> None:
    queue = where.open()
    first = queue.list()[0]
    entered, release = threading.Event(), threading.Event()

    def holds_record_0(record: int) -> int:
        if record == 0:
            entered.set()
            assert release.wait(120)
        return record

    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(
        replay(where.open(), holds_record_0, retry=ONCE, lease=1.0)))
    thread.start()
    try:
        assert entered.wait(120)
        time.sleep(2.5)  # more than twice the lease: unrenewed, the claim would be stale by now
        ran: list[int] = []
        other = replay(queue, lambda r: ran.append(r), retry=ONCE)
        # The first replay claimed all three entries in one page and renews them: none is taken.
        assert ran == [] and other.held_elsewhere == 3
    finally:
        release.set()
        thread.join(timeout=120)
    assert queue.get(first.id).status == "replayed"  # type: ignore[union-attr]
