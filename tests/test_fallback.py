"""``RetryPolicy(fallback=...)`` (issue 10 item 2): a record its policy gives up on succeeds with
the fallback value (or what the fallback callable returns) instead of being dead-lettered. It is
counted in ``success_count`` and ``fallback_count``, its value sits in ``successful`` at its
record's place, it has no DLQ entry, and the error it stands in for is logged. Both engines.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from rich.console import Console

import batchguard
from batchguard import MemoryDLQ, RetryPolicies, RetryPolicy, ValidationIssue
from batchguard._report.model import build
from batchguard._report.panel import render_panel
from helpers_contract import CLASSIFIER, ENGINES, FatalErr, PermanentErr, RecoverableErr, assert_conservation


def failing(bad: set[int], error: type[Exception] = RecoverableErr) -> Any:
    def fn(record: int) -> int:
        if record in bad:
            raise error(f"record {record}")
        return record * 10
    return fn


def negated(record: int, error: BaseException) -> Any:
    return (-record, type(error).__name__)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("concurrency", "batch_size"), [(1, 3), (4, 3), (4, 100)])
def test_a_fallback_value_takes_the_records_place(engine: str, concurrency: int, batch_size: int,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    dlq = MemoryDLQ()
    bad = {0, 4, 5, 9}
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        report = batchguard.run_batches(range(10), failing(bad), engine=engine, concurrency=concurrency,
                                        batch_size=batch_size, classifier=CLASSIFIER, dlq=dlq,
                                        retry=RetryPolicy(max_attempts=2, base_delay=0.0, fallback=negated))
    assert report.successful == [(-r, "RecoverableErr") if r in bad else r * 10 for r in range(10)]
    assert (report.success_count, report.failure_count, report.fallback_count) == (10, 0, 4)
    assert report.status == "complete"
    assert report.retry_count == 4
    assert dlq.count() == 0
    assert sum(b.succeeded for b in report.batches) == 10
    assert_conservation(report)
    logged = [r for r in caplog.records if r.getMessage().startswith("fallback_used")]
    assert sum(r.__dict__["fallback_count"] for r in logged) == 4
    assert all(r.__dict__["fallback_errors"] == {"RecoverableErr": r.__dict__["fallback_count"]} for r in logged)


@pytest.mark.parametrize("engine", ENGINES)
def test_only_the_errors_whose_policy_has_a_fallback_fall_back(engine: str) -> None:
    dlq = MemoryDLQ()

    def fn(record: int) -> int:
        if record == 1:
            raise RecoverableErr("down")
        if record == 2:
            raise PermanentErr("bad row")
        return record

    retry = RetryPolicies(default=RetryPolicy(max_attempts=2, base_delay=0.0),
                          by_error={RecoverableErr: RetryPolicy(max_attempts=2, base_delay=0.0, fallback=None)})
    report = batchguard.run_batches(range(4), fn, engine=engine, classifier=CLASSIFIER, dlq=dlq, retry=retry)
    assert report.successful == [0, None, 3]
    assert (report.success_count, report.failure_count, report.fallback_count) == (3, 1, 1)
    assert [e.record_index for e in dlq.list()] == [2]
    assert report.dlq_count == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_fallback_that_raises_leaves_the_record_dead_lettered(engine: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(record: int, error: BaseException) -> Any:
        raise LookupError("no cached value")

    dlq = MemoryDLQ()
    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = batchguard.run_batches(range(3), failing({1}), engine=engine, classifier=CLASSIFIER, dlq=dlq,
                                        retry=RetryPolicy(max_attempts=1, fallback=broken))
    assert (report.success_count, report.failure_count, report.fallback_count) == (2, 1, 0)
    assert [(e.record_index, e.error_type) for e in dlq.list()] == [(1, "RecoverableErr")]
    assert any("fallback of record 1 raised LookupError" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_blocked_record_never_falls_back(engine: str) -> None:
    """A record validation blocked was never passed to fn: it is dead-lettered, as DESIGN says."""
    def validate(record: int) -> list[ValidationIssue]:
        return [ValidationIssue("id", "negative", "error")] if record < 0 else []

    report = batchguard.run_batches([1, -1, 2], lambda r: r, engine=engine, validate=validate,
                                    retry=RetryPolicy(fallback=0))
    assert report.successful == [1, 2]
    assert report.fallback_count == 0
    assert [e.stage for e in report.errors] == ["validate"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_record_cut_by_max_elapsed_falls_back_with_that_reason(engine: str) -> None:
    seen: list[BaseException] = []

    def remember(record: int, error: BaseException) -> int:
        seen.append(error)
        return -1

    policy = RetryPolicy(max_attempts=5, base_delay=0.01, jitter="none", max_elapsed=0.005, fallback=remember)
    report = batchguard.run_batches([0, 1], failing({1}), engine=engine, classifier=CLASSIFIER, retry=policy)
    assert report.successful == [0, -1]
    assert [type(e).__name__ for e in seen] == ["RetryTimeExceeded"]
    assert isinstance(seen[0].__cause__, RecoverableErr)
    assert "max_elapsed=0.005 s" in str(seen[0])


@pytest.mark.parametrize("engine", ENGINES)
def test_the_error_budget_counts_records_that_fell_back(engine: str) -> None:
    """max_failures measures the dependency's failures: a record served its fallback failed all
    the same (the report counts it a success; the run stops at the budget)."""
    report = batchguard.run_batches(range(20), failing(set(range(20))), engine=engine, classifier=CLASSIFIER,
                                    max_failures=2, retry=RetryPolicy(max_attempts=1, fallback=0))
    assert report.stopped_reason == "max_failures"
    assert report.failure_count == 0
    assert report.fallback_count == report.success_count >= 3
    assert report.successful == [0] * report.success_count
    assert_conservation(report)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_results_sink_gets_the_fallback_values_in_record_order(engine: str) -> None:
    """With results= a sink, the values go out batch by batch: the fallbacks among them."""
    written: list[tuple[int, Any]] = []

    def sink(indices: Any, values: Any) -> None:
        written.extend(zip(indices, values, strict=True))

    report = batchguard.run_batches(range(8), failing({0, 3, 6}), engine=engine, batch_size=3, results=sink,
                                    classifier=CLASSIFIER, retry=RetryPolicy(max_attempts=1, fallback=-1))
    assert sorted(written) == [(r, -1 if r in (0, 3, 6) else r * 10) for r in range(8)]
    assert (report.success_count, report.failure_count, report.fallback_count) == (8, 0, 3)
    assert report.successful == []


@pytest.mark.parametrize("engine", ENGINES)
def test_the_report_says_how_many_records_fell_back(engine: str) -> None:
    """A run stopped by max_failures with every failure served a fallback printed 'Stopped early:
    max failures' over 'Failed (DLQ): 0' and never said why: the fallbacks were in
    report.fallback_count only, not in the text, the rich panel or to_json()."""
    report = batchguard.run_batches(range(20), failing(set(range(1, 20, 2))), engine=engine, classifier=CLASSIFIER,
                                    batch_size=4, concurrency=1, max_failures=3,
                                    retry=RetryPolicy(max_attempts=1, fallback=-1))
    assert report.fallback_count == 4
    text = report.summary()
    assert "Fell back:     4 (succeeded with the fallback value; counted by max_failures)" in text
    assert report.to_json()["fallbacks"] == 4
    console = Console(record=True, width=160)
    console.print(render_panel(build(report)))
    assert "Fell back" in console.export_text()


@pytest.mark.parametrize("engine", ENGINES)
def test_in_a_rolled_back_atomic_batch_a_record_that_fell_back_keeps_its_value(engine: str) -> None:
    """Decided (issue 10 item 2 with item 5): compensate= undoes what fn did, and fn did nothing
    for a record that fell back; so when its batch rolls back (another record was
    dead-lettered), it keeps its fallback value, is not undone and gets no DLQ entry. A batch
    whose only failures fell back has no dead letter, so it does not roll back."""
    undone: list[tuple[int, Any]] = []
    dlq = MemoryDLQ()

    def fn(record: int) -> int:
        if record in (1, 5):
            raise RecoverableErr(f"record {record}")
        if record == 2:
            raise PermanentErr("bad row")
        return record * 10

    report = batchguard.run_batches(range(8), fn, engine=engine, batch_size=4, concurrency=1, dlq=dlq,
                                    classifier=CLASSIFIER, compensate=lambda r, v: undone.append((r, v)),
                                    atomic_batches=True,
                                    retry={RecoverableErr: RetryPolicy(max_attempts=1, fallback=-1)})
    assert undone == [(3, 30), (0, 0)]
    assert report.successful == [-1, 40, -1, 60, 70]
    assert (report.success_count, report.fallback_count, report.compensated_count) == (5, 2, 2)
    assert sorted(e.record_index for e in dlq.list()) == [0, 2, 3]
    assert report.total == report.success_count + report.failure_count + report.compensated_count == 8


@pytest.mark.parametrize("engine", ENGINES)
def test_the_fatal_error_that_stops_a_run_is_never_served_the_fallback(engine: str) -> None:
    """A fallback on the default policy does not hide why a run stopped: the record whose
    FATAL error stopped it is dead-lettered with that error (it got the fallback, and the
    report showed no error at all)."""
    dlq = MemoryDLQ()

    def fn(record: int) -> int:
        if record == 3:
            raise FatalErr("bad credentials")
        return record

    report = batchguard.run_batches(range(10), fn, engine=engine, batch_size=2, concurrency=1, dlq=dlq,
                                    classifier=CLASSIFIER, retry=RetryPolicy(fallback=-1))
    assert report.status == "aborted" and report.stopped_reason == "fatal"
    assert report.fallback_count == 0 and -1 not in report.successful
    assert [(e.record_index, e.error_type) for e in dlq.list()] == [(3, "FatalErr")]
    assert_conservation(report)
