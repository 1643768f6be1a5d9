"""Hostile test of a replay's checks (session 16, H1): a record its check blocked during a
replay must not reach ``fn`` in a later replay without a check, as a record blocked in its
first run does not.
"""

from __future__ import annotations

import pytest

from batchguard import BatchguardWarning, MemoryDLQ, RetryPolicy, replay, run_batches

ONCE = RetryPolicy(max_attempts=1)


def _always_fails(record: int) -> int:
    raise ValueError(f"down {record}")


def _odd_blocked(record: int) -> None:
    if record % 2:
        raise ValueError("odd")


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_record_blocked_by_a_replays_check_is_not_fed_to_fn_by_the_next_replay(engine: str) -> None:
    """Its entry kept the stage it first failed in ("process"), so a replay without a check took
    it for a failure of fn and ran fn on the record its check had just blocked."""
    queue = MemoryDLQ()
    run_batches(range(6), _always_fails, dlq=queue, retry=ONCE)
    first = replay(queue, lambda record: record, retry=ONCE, validate=_odd_blocked, engine=engine)  # type: ignore[arg-type]
    assert first.replayed == 3 and queue.count() == 3
    ran: list[int] = []
    with pytest.warns(BatchguardWarning, match="blocked"):
        second = replay(queue, ran.append, retry=ONCE, engine=engine)  # type: ignore[arg-type]
    assert ran == [] and second.blocked_skipped == 3 and queue.count() == 3
    # Checked again, and valid now: it runs.
    third = replay(queue, ran.append, retry=ONCE, validate=lambda record: None, engine=engine)  # type: ignore[arg-type]
    assert sorted(ran) == [1, 3, 5] and third.replayed == 3 and queue.count() == 0
