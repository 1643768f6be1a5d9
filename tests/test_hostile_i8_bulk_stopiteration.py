"""A sync fn that raises StopIteration (``next()`` on an exhausted iterator, a classic bug in a
bulk fn) is recorded as StopIteration with its message, however it runs: per record or bulk,
``run_batches`` or ``arun_batches``, either engine (hostile tester, issue 8).

Before the fix a sync *bulk* fn run by ``arun_batches`` (either engine) or by ``run_batches``
with ``engine="python"`` went through the asyncio driver's thread pool (``SyncCalls``), whose
coroutine re-raised the StopIteration, which PEP 479 turns into ``RuntimeError("coroutine raised
StopIteration")``: the DLQ entries said RuntimeError, lost the message, and a classifier rule
for StopIteration did not match, while ``run_batches(engine="native")`` said StopIteration.
(An ``async def`` fn that raises StopIteration really does raise RuntimeError: Python's rule,
the same on every path, not tested here.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import batchguard
from batchguard import Classifier, ErrorClass, RetryPolicy


def _per_record(record: int) -> int:
    if record % 3 == 0:
        raise StopIteration(f"no next for {record}")
    return record


def _bulk(records: list[int]) -> list[int]:
    return [_per_record(record) for record in records]


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("entry", ["run", "arun"])
@pytest.mark.parametrize("bulk", [False, True])
def test_stop_iteration_from_a_sync_fn_is_recorded_as_itself(engine: str, entry: str,
                                                             bulk: bool) -> None:
    kwargs: dict[str, Any] = {
        "bulk": bulk, "engine": engine, "batch_size": 4, "retry": RetryPolicy(max_attempts=3, base_delay=0),
        # Transient: a rule that only matches StopIteration itself decides the retries.
        "classifier": Classifier.default().with_rule(StopIteration, ErrorClass.TRANSIENT),
    }
    fn = _bulk if bulk else _per_record
    if entry == "run":
        report = batchguard.run_batches(range(10), fn, **kwargs)
    else:
        report = asyncio.run(batchguard.arun_batches(range(10), fn, **kwargs))
    assert report.errors_by_type == {"StopIteration": 4}
    assert [e.error_message for e in report.errors] == [f"no next for {i}" for i in (0, 3, 6, 9)]
    assert {e.error_class for e in report.errors} == {"transient"}
    assert all(e.attempts == 3 for e in report.errors)
    assert report.successful == [1, 2, 4, 5, 7, 8]
