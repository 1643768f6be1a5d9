"""Compensation on both engines (issue 10 item 5): atomic batches rolled back, an aborted run
undone, undos retried and dead-lettered at stage "compensate" when they still fail.

Records are ints; fn returns ``record * 10`` (helpers_contract), so each undo can be checked
against the value its record's call returned.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import batchguard
from batchguard import ErrorClass, MemoryDLQ
from batchguard.errors import BatchRolledBack, ConfigError, ConfigTypeError
from helpers_contract import CLASSIFIER, ENGINES, FailurePlan, RecoverableErr, no_wait, run


class Undo:
    """An undo that remembers each call, and raises the errors planned for a record (one per
    call, in order) before it succeeds."""

    def __init__(self, raises: dict[int, list[BaseException]] | None = None) -> None:
        self.raises = {record: list(errors) for record, errors in (raises or {}).items()}
        self.calls: list[tuple[int, Any]] = []
        self.undone: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, record: int, value: Any) -> None:
        with self._lock:
            self.calls.append((record, value))
            planned = self.raises.get(record)
            if planned:
                raise planned.pop(0)
            self.undone.append(record)


def conserved(report: batchguard.BatchReport) -> bool:
    return report.total == (report.success_count + report.failure_count + report.compensated_count
                            + report.pending_count)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_batch_with_a_dead_record_is_undone_newest_first_and_dead_lettered_with_its_cause(
        engine: str, concurrency: int) -> None:
    undo = Undo()
    dlq = MemoryDLQ()
    fn = FailurePlan({(7, 1): "permanent"})
    report = run(range(12), fn, engine=engine, batch_size=5, concurrency=concurrency, dlq=dlq,
                 retry=no_wait(), compensate=undo, atomic_batches=True)
    assert undo.calls == [(9, 90), (8, 80), (6, 60), (5, 50)]
    assert (report.success_count, report.failure_count, report.compensated_count,
            report.pending_count) == (7, 1, 4, 0)
    assert conserved(report)
    assert report.successful == [0, 10, 20, 30, 40, 100, 110]
    assert [(b.succeeded, b.failed, b.compensated) for b in report.batches] == [(5, 0, 0), (0, 1, 4), (2, 0, 0)]
    entries = {entry.record_index: entry for entry in dlq.list(limit=100)}
    assert sorted(entries) == [5, 6, 7, 8, 9]
    assert report.dlq_count == 5
    assert entries[7].error_type == "PermanentErr"
    for index in (5, 6, 8, 9):
        entry = entries[index]
        assert (entry.error_type, entry.stage, entry.batch_index) == ("BatchRolledBack", "process", 1)
        assert "record 7 failed with PermanentErr" in entry.error_message
        assert entry.record() == index  # replayable: the record itself
    assert report.status == "partial_success"


@pytest.mark.parametrize("engine", ENGINES)
def test_without_a_dead_record_nothing_is_undone(engine: str) -> None:
    undo = Undo()
    report = run(range(10), FailurePlan(), engine=engine, batch_size=4, compensate=undo,
                 atomic_batches=True)
    assert undo.calls == []
    assert (report.success_count, report.compensated_count, report.status) == (10, 0, "complete")
    assert report.successful == [r * 10 for r in range(10)]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_undo_is_retried_with_the_runs_policy(engine: str) -> None:
    undo = Undo({8: [ConnectionError("db gone"), TimeoutError("slow")]})
    report = run(range(10), FailurePlan({(5, 1): "permanent"}), engine=engine, batch_size=10,
                 retry=no_wait(3), compensate=undo, atomic_batches=True)
    assert [record for record, _ in undo.calls].count(8) == 3
    assert sorted(undo.undone) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert (report.failure_count, report.compensated_count) == (1, 9)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_undo_that_still_fails_is_dead_lettered_at_stage_compensate_with_its_value(engine: str) -> None:
    undo = Undo({8: [ValueError("row locked")]})  # PERMANENT: not retried
    dlq = MemoryDLQ()
    report = run(range(10), FailurePlan({(5, 1): "permanent"}), engine=engine, batch_size=10, dlq=dlq,
                 retry=no_wait(3), compensate=undo, atomic_batches=True)
    assert [record for record, _ in undo.calls].count(8) == 1
    assert (report.success_count, report.failure_count, report.compensated_count) == (0, 2, 8)
    assert conserved(report)
    failed = dlq.list(stage="compensate")
    assert len(failed) == 1
    entry = failed[0]
    assert (entry.record_index, entry.error_type, entry.error_class) == (8, "CompensationFailed", "permanent")
    assert "ValueError: row locked" in entry.error_message
    assert entry.record() == {"record": 8, "value": 80}
    assert report.successful == []


@pytest.mark.parametrize("engine", ENGINES)
def test_an_aborted_run_is_undone_newest_batch_first(engine: str) -> None:
    undo = Undo()
    report = run(range(20), FailurePlan({(12, 1): "fatal"}), engine=engine, batch_size=5,
                 compensate=undo, on_abort="compensate")
    assert report.status == "aborted"
    assert [record for record, _ in undo.calls] == [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert all(value == record * 10 for record, value in undo.calls)
    assert (report.success_count, report.failure_count, report.compensated_count,
            report.pending_count) == (0, 1, 12, 7)
    assert conserved(report)
    assert report.successful == []
    assert sum(b.compensated for b in report.batches) == 12


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_that_does_not_abort_is_not_undone(engine: str) -> None:
    undo = Undo()
    report = run(range(10), FailurePlan({(3, 1): "permanent"}), engine=engine, batch_size=5,
                 compensate=undo, on_abort="compensate")
    assert undo.calls == []
    assert (report.success_count, report.failure_count, report.compensated_count) == (9, 1, 0)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bulk_fn_batch_is_rolled_back_record_by_record(engine: str) -> None:
    undo = Undo()

    def bulk(records: list[int]) -> list[int]:
        if 6 in records:
            raise ValueError("poison 6")
        return [record * 10 for record in records]

    report = batchguard.run_batches(range(10), bulk, bulk=True, engine=engine, batch_size=4,
                                    classifier=CLASSIFIER, retry=no_wait(1), compensate=undo,
                                    atomic_batches=True)
    # the bulk call bisects down to record 6; its batch's others succeeded, then were undone
    assert sorted(undo.calls, reverse=True) == undo.calls == [(7, 70), (5, 50), (4, 40)]
    assert (report.success_count, report.failure_count, report.compensated_count) == (6, 1, 3)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_async_fn_batch_is_rolled_back(engine: str) -> None:
    undo = Undo()

    async def fn(record: int) -> int:
        await asyncio.sleep(0)
        if record == 2:
            raise ValueError("poison 2")
        return record * 10

    report = batchguard.run_batches(range(6), fn, engine=engine, batch_size=3, concurrency=3,
                                    classifier=CLASSIFIER, compensate=undo, atomic_batches=True)
    assert undo.calls == [(1, 10), (0, 0)]
    assert (report.success_count, report.failure_count, report.compensated_count) == (3, 1, 2)


def test_the_summary_and_dict_show_the_compensated_records() -> None:
    report = run(range(6), FailurePlan({(1, 1): "permanent"}), engine="native", batch_size=3,
                 compensate=Undo(), atomic_batches=True)
    assert report.to_dict()["compensated_count"] == 2
    assert report.to_dict()["batches"][0]["compensated"] == 2
    assert "compensated" in report.summary().lower()


def test_the_rolled_back_entries_error_is_batch_rolled_back() -> None:
    report = run(range(3), FailurePlan({(2, 1): "permanent"}), engine="python", batch_size=3,
                 compensate=Undo(), atomic_batches=True)
    assert {e.error_type for e in report.errors} == {"BatchRolledBack", "PermanentErr"}
    assert BatchRolledBack.__name__ == "BatchRolledBack"
    assert report.batches[0].compensated == 2
    assert ErrorClass.RECOVERABLE.value in {e.error_class for e in report.errors}


@pytest.mark.parametrize(("options", "error", "says"), [
    ({"atomic_batches": True}, ConfigError, "needs compensate="),
    ({"on_abort": "compensate"}, ConfigError, "needs compensate="),
    ({"compensate": lambda record, value: None}, ConfigError, "would never run"),
    ({"compensate": 5, "atomic_batches": True}, ConfigTypeError, "compensate must be callable"),
    ({"on_abort": "undo"}, ConfigError, "on_abort must be one of"),
    ({"atomic_batches": "yes", "compensate": print}, ConfigTypeError, "atomic_batches"),
    ({"keep_outcomes": True}, ConfigError, "keep_outcomes=True is used with job="),
    # An undo that cannot take (record, value) would fail only when a batch fails, every time.
    ({"compensate": lambda record: None, "atomic_batches": True}, ConfigTypeError, "undo\\(record, value\\)"),
    ({"compensate": lambda record, value, extra: None, "atomic_batches": True}, ConfigTypeError,
     "missing a required argument"),
])
def test_bad_compensation_options_name_the_keyword(options: dict[str, Any], error: type[Exception],
                                                   says: str) -> None:
    with pytest.raises(error, match=says):
        batchguard.run_batches([1], lambda record: record, **options)


def test_an_async_undo_is_refused() -> None:
    async def undo(record: int, value: int) -> None:
        pass

    with pytest.raises(ConfigTypeError, match="plain function"):
        batchguard.run_batches([1], lambda record: record, compensate=undo, atomic_batches=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_hooks_hear_of_every_compensation_dead_letter(engine: str) -> None:
    heard: list[tuple[int, str, str]] = []
    hooks = batchguard.Hooks(on_dead_letter=lambda e: heard.append((e.record_index, e.stage, e.error_type)))
    undo = Undo({1: [ValueError("stuck")], 6: [ValueError("stuck")]})
    run(range(10), FailurePlan({(8, 1): "fatal"}), engine=engine, batch_size=5,
        hooks=hooks, compensate=undo, atomic_batches=True, on_abort="compensate")
    # batch 1 rolled back as it ended (record 6's undo failed); then the abort undid batch 0
    # (record 1's undo failed, so its undone records have entries to replay), after every
    # batch had ended
    assert sorted(heard) == [(0, "process", "BatchRolledBack"), (1, "compensate", "CompensationFailed"),
                             (2, "process", "BatchRolledBack"), (3, "process", "BatchRolledBack"),
                             (4, "process", "BatchRolledBack"), (5, "process", "BatchRolledBack"),
                             (6, "compensate", "CompensationFailed"), (7, "process", "BatchRolledBack"),
                             (8, "process", "FatalErr")]


@pytest.mark.parametrize("engine", ENGINES)
def test_progress_counts_undone_records_as_no_longer_succeeded(engine: str) -> None:
    snapshots: list[batchguard.BatchProgress] = []
    run(range(10), FailurePlan({(7, 1): "permanent"}), engine=engine, batch_size=5,
        on_progress=snapshots.append, compensate=Undo(), atomic_batches=True)
    final = snapshots[-1]
    assert final.final and final.percent_complete == 100.0
    assert (final.succeeded, final.failed, final.records_processed) == (5, 1, 10)
    after_rollback = [s for s in snapshots if s.batches_completed == 2]
    assert after_rollback and all(s.succeeded <= 5 for s in after_rollback)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_interrupt_in_an_undo_finishes_the_rollback_before_it_is_raised(engine: str) -> None:
    undo = Undo({8: [KeyboardInterrupt()]})
    dlq = MemoryDLQ()
    with pytest.raises(KeyboardInterrupt):
        run(range(10), FailurePlan({(7, 1): "permanent"}), engine=engine, batch_size=5, dlq=dlq,
            compensate=undo, atomic_batches=True)
    # record 8's undo was interrupted, then run again; none is undone twice, none skipped
    assert undo.calls == [(9, 90), (8, 80), (8, 80), (6, 60), (5, 50)]
    assert sorted(undo.undone) == [5, 6, 8, 9]
    assert sorted(e.record_index for e in dlq.list(limit=100)) == [5, 6, 7, 8, 9]


def test_a_replay_leaves_failed_undos_in_the_queue_and_says_why() -> None:
    dlq = MemoryDLQ()
    run(range(5), FailurePlan({(4, 1): "permanent"}), engine="native", batch_size=5, dlq=dlq,
        compensate=Undo({2: [ValueError("stuck")]}), atomic_batches=True)
    assert [e.record_index for e in dlq.list(stage="compensate")] == [2]
    fed: list[Any] = []
    with pytest.warns(batchguard.BatchguardWarning, match="1 dead letters are undos that failed"):
        batchguard.replay(dlq, lambda record: fed.append(record))
    assert 2 not in fed and all(isinstance(record, int) for record in fed)
    assert [e.record_index for e in dlq.list(stage="compensate")] == [2]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_results_sink_gets_a_rolled_back_batchs_fallback_values_only(engine: str) -> None:
    written: list[tuple[int, int]] = []
    undo = Undo()
    report = run(range(12), FailurePlan({(6, 1): "recoverable", (6, 2): "recoverable", (7, 1): "permanent"}),
                 engine=engine, batch_size=5,
                 retry={RecoverableErr: batchguard.RetryPolicy(max_attempts=2, base_delay=0.0, fallback=-1)},
                 results=lambda indices, values: written.extend(zip(indices, values, strict=True)),
                 compensate=undo, atomic_batches=True)
    # record 6's fallback ran no call, so nothing of it is undone; its value stays a success
    assert [record for record, _ in undo.calls] == [9, 8, 5]
    assert sorted(written) == [(0, 0), (1, 10), (2, 20), (3, 30), (4, 40), (6, -1), (10, 100), (11, 110)]
    assert (report.success_count, report.failure_count, report.compensated_count) == (8, 1, 3)


@pytest.mark.parametrize("engine", ENGINES)
def test_prometheus_counts_compensated_records_as_the_report_does(engine: str) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from batchguard.metrics import Prometheus

    registry = prometheus_client.CollectorRegistry()
    report = run(range(12), FailurePlan({(7, 1): "permanent"}), engine=engine, batch_size=5,
                 metrics=Prometheus(registry), compensate=Undo(), atomic_batches=True)
    counted = {s.labels["outcome"]: s.value
               for family in text_string_to_metric_families(prometheus_client.generate_latest(registry).decode())
               for s in family.samples if s.name == "batchguard_records_total"}
    assert counted == {"succeeded": report.success_count, "dead_lettered": report.failure_count,
                       "compensated": report.compensated_count, "pending": 0}
    assert counted["compensated"] == 4


@pytest.mark.parametrize("engine", ENGINES)
def test_an_undo_is_retried_under_retrys_policy_for_its_error(engine: str) -> None:
    # The default policy gives 3 tries; retry= gives a ConnectionError 5, an undo's as a call's.
    undo = Undo({8: [ConnectionError("db gone")] * 3, 6: [ValueError("locked")]})
    dlq = MemoryDLQ()
    report = run(range(10), FailurePlan({(5, 1): "permanent"}), engine=engine, batch_size=10, dlq=dlq,
                 retry={ConnectionError: batchguard.RetryPolicy(max_attempts=5, base_delay=0.0),
                        ValueError: batchguard.RetryPolicy(max_attempts=1)},
                 compensate=undo, atomic_batches=True)
    assert [record for record, _ in undo.calls].count(8) == 4 and 8 in undo.undone
    assert [e.record_index for e in dlq.list(stage="compensate")] == [6]
    assert (report.failure_count, report.compensated_count) == (2, 8)


def test_the_summary_counts_a_rolled_back_batchs_dead_letters() -> None:
    # One record failed and four were rolled back: five dead letters to review, and the error
    # types' shares are of those five.
    report = run(range(10), FailurePlan({(7, 1): "permanent"}), engine="native", batch_size=5,
                 retry=no_wait(), dlq=MemoryDLQ(), compensate=Undo(), atomic_batches=True)
    text = report.summary()
    assert "FAILED RECORDS (1; 5 dead letters with the records rolled back), by error type:" in text
    assert "review the 5 dead-lettered records" in text
