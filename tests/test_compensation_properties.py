"""Laws of compensation, property-tested on both engines (issue 10 items 5 and 7).

* Conservation: every record ends succeeded, dead-lettered, compensated or pending
  (``total == success + failure + compensated + pending``), per run and per batch.
* Atomicity: a batch with a dead-lettered record keeps no succeeded record; each of its records
  that succeeded was undone (or its undo dead-lettered at stage "compensate").
* Order: undos run newest record first within a batch, newest batch first on abort.
* Parity: for the same input and failure plan, both engines undo the same records and
  dead-letter the same entries.
"""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard import MemoryDLQ
from helpers_contract import FailurePlan, no_wait, run

OUTCOMES = st.sampled_from(["permanent", "recoverable", "transient", "fatal"])


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 30))
    failing = draw(st.dictionaries(st.integers(0, max(0, n - 1)), st.lists(OUTCOMES, min_size=1, max_size=3),
                                   max_size=max(0, min(n, 6))))
    plan = {(record, attempt): outcome for record, outcomes in failing.items()
            for attempt, outcome in enumerate(outcomes, 1)}
    return {
        "n": n,
        "plan": plan,
        "batch_size": draw(st.integers(1, 7)),
        "undo_fails": draw(st.sets(st.integers(0, max(0, n - 1)), max_size=3)),
        "atomic": draw(st.booleans()),
        "on_abort": draw(st.sampled_from(["stop", "compensate"])),
    }


class Undo:
    def __init__(self, fails: set[int]) -> None:
        self.fails = fails
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, record: int, value: int) -> None:
        assert value == record * 10
        with self._lock:
            self.calls.append(record)
        if record in self.fails:
            raise ValueError(f"cannot undo {record}")


def _run(engine: str, s: dict[str, Any], concurrency: int = 1) -> tuple[Any, Undo, MemoryDLQ]:
    undo, dlq = Undo(s["undo_fails"]), MemoryDLQ()
    atomic, on_abort = s["atomic"], s["on_abort"]
    if not atomic and on_abort == "stop":
        atomic = True  # compensate= must be able to run
    report = run(range(s["n"]), FailurePlan(s["plan"]), engine=engine, batch_size=s["batch_size"],
                 concurrency=concurrency, retry=no_wait(3), dlq=dlq, compensate=undo,
                 atomic_batches=atomic, on_abort=on_abort)
    return report, undo, dlq


def _entries(dlq: MemoryDLQ) -> list[tuple[int, str, str]]:
    return sorted((e.record_index, e.stage, e.error_type) for e in dlq.list(limit=10_000))


def _check_laws(report: Any, undo: Undo, dlq: MemoryDLQ, s: dict[str, Any]) -> None:
    assert report.total == (report.success_count + report.failure_count + report.compensated_count
                            + report.pending_count)
    for batch in report.batches:
        assert batch.size == batch.succeeded + batch.failed + batch.compensated + batch.pending
        assert batch.compensated >= 0
    assert sum(b.compensated for b in report.batches) == report.compensated_count
    failed_undos = [e for e in dlq.list(limit=10_000) if e.stage == "compensate"]
    assert report.compensated_count + len(failed_undos) == len(undo.calls)
    assert len(report.successful) == report.success_count
    if s["atomic"] or s["on_abort"] == "stop":
        for batch in report.batches:
            if batch.failed and not batch.pending:
                assert batch.succeeded == 0
    # Within a batch, newest record first: the calls of each batch are in falling order.
    size = s["batch_size"]
    for batch in {record // size for record in undo.calls}:
        ours = [record for record in undo.calls if record // size == batch]
        assert ours == sorted(ours, reverse=True)
    if report.stopped_reason is not None and s["on_abort"] == "compensate":
        assert report.success_count == 0  # everything this run did was undone, or its undo failed
        if not s["atomic"]:  # every undo is the abort's: newest batch first
            assert undo.calls == sorted(undo.calls, reverse=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_both_engines_compensate_alike_and_conserve_every_record(s: dict[str, Any]) -> None:
    python, python_undo, python_dlq = _run("python", s)
    native, native_undo, native_dlq = _run("native", s)
    for report, undo, dlq in ((python, python_undo, python_dlq), (native, native_undo, native_dlq)):
        _check_laws(report, undo, dlq, s)
    assert python_undo.calls == native_undo.calls
    assert _entries(python_dlq) == _entries(native_dlq)
    assert ((python.success_count, python.failure_count, python.compensated_count, python.pending_count,
             python.status) ==
            (native.success_count, native.failure_count, native.compensated_count, native.pending_count,
             native.status))
    assert python.successful == native.successful


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_concurrent_runs_conserve_every_record(s: dict[str, Any]) -> None:
    for engine in ("python", "native"):
        report, undo, dlq = _run(engine, s, concurrency=4)
        _check_laws(report, undo, dlq, s)
