"""A KeyboardInterrupt raised while an async run classifies a failure stops the run at once,
on both engines alike (issue 10, found by review).

The reference engine's async driver used to let the interrupt out of ``fail`` without
stopping the run or handing the record back: at concurrency 32 the other workers went on
starting calls until the event loop cancelled them (66 calls against the native engine's 35,
31 of them after the interrupt), and the interrupted record was counted nowhere.
"""

from __future__ import annotations

import asyncio

import pytest

import batchguard
from batchguard import Classifier, Hooks, MemoryDLQ, RetryPolicy
from batchguard.results import BatchStats


class _InterruptingRetryAfter(TimeoutError):
    """A retryable error whose ``retry_after`` is interrupted (read only for a retry)."""

    @property
    def retry_after(self) -> float:
        raise KeyboardInterrupt


class _Interrupted:
    """What one interrupted run did: the calls it started (and how many after the interrupt),
    its batches' stats and its dead letters."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.after_stop = 0
        self.stopped = False
        self.batches: list[BatchStats] = []
        self.dlq = MemoryDLQ()

    def classify(self, exc: BaseException) -> str:
        """The classifier callable: the interrupt comes while classifying record 3's failure."""
        if str(exc) == "3":
            self.stopped = True
            raise KeyboardInterrupt
        return "permanent"


def _run(engine: str, source: str, fails: str) -> _Interrupted:
    seen = _Interrupted()
    error = _InterruptingRetryAfter if source == "retry_after" else ValueError

    async def fn(record: int) -> int:
        seen.calls.append(record)
        if seen.stopped:
            seen.after_stop += 1
        await asyncio.sleep(0)  # every worker starts a call before the first one ends
        if record == 3:
            raise error("3")
        if fails == "all":
            raise ValueError(str(record))
        return record

    classifier = Classifier.default()
    if source == "classifier-callable":
        classifier = classifier.with_callable(seen.classify)
    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(1000), fn, engine=engine, concurrency=32, batch_size=10,
                               dlq=seen.dlq, classifier=classifier,
                               retry=RetryPolicy(max_attempts=2, base_delay=0.0),
                               hooks=Hooks(on_batch_complete=seen.batches.append))
    return seen


def _stats(seen: _Interrupted) -> list[tuple[int, int, int, int, int]]:
    return sorted((s.batch_index, s.size, s.succeeded, s.failed, s.pending) for s in seen.batches)


@pytest.mark.parametrize("fails", ["all", "one"])
@pytest.mark.parametrize("source", ["classifier-callable", "retry_after"])
def test_an_interrupt_while_classifying_stops_the_async_run_as_the_native_engine_does(
        source: str, fails: str) -> None:
    native, python = _run("native", source, fails), _run("python", source, fails)
    for seen in (native, python):
        assert seen.after_stop == 0, "calls kept starting after the interrupt"
        # Every record read is accounted for: succeeded, dead-lettered or pending.
        assert all(s.size == s.succeeded + s.failed + s.pending for s in seen.batches)
        assert sum(s.failed for s in seen.batches) == len(seen.dlq)
        assert 3 not in {e.record_index for e in seen.dlq.list()}, "the interrupted record is pending"
        assert sum(s.pending for s in seen.batches) >= 1
    assert len(python.calls) == len(native.calls)
    assert _stats(python) == _stats(native)
    assert sorted(e.record_index for e in python.dlq.list()) == sorted(e.record_index for e in native.dlq.list())
