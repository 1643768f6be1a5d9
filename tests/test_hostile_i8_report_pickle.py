"""A report with failures can be pickled and deep-copied: returned from a worker process
(``ProcessPoolExecutor.submit(run_batches, ...)``), cached, or copied (hostile tester, issue 8).

Before the fix any report with a dead-lettered record raised ``TypeError: cannot pickle
'batchguard._native.DeadRecords' object`` (the native engine's compact failure log), the
reference engine's ``cannot pickle 'batchguard._native.DeadRecord'``, and a report of a run
with a durable DLQ ``cannot pickle '_thread.RLock' object`` (its open queue); ``copy.deepcopy``
raised the same. The copy carries the failures read out into lists: the same errors, dead
letters, failed records and counts as the original.
"""

from __future__ import annotations

import concurrent.futures
import copy
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy


def _fail_thirds(record: int) -> int:
    if record % 3 == 0:
        raise ValueError(f"bad {record}")
    return record * 2


def _run(n: int, engine: str = "native", dlq: str | None = None) -> batchguard.BatchReport[int]:
    # A lambda id_of: the copy must not need to pickle the run's callables.
    return batchguard.run_batches(range(n), _fail_thirds, engine=engine, dlq=dlq, batch_size=7,
                                  id_of=lambda r: f"rec-{r}", retry=RetryPolicy(max_attempts=2, base_delay=0))


def _pickled(report: batchguard.BatchReport[int]) -> batchguard.BatchReport[int]:
    copied: batchguard.BatchReport[int] = pickle.loads(pickle.dumps(report))  # noqa: S301 - our own bytes
    return copied


def _same(copied: batchguard.BatchReport[int], report: batchguard.BatchReport[int]) -> None:
    assert copied == report
    assert copied.errors_by_type == report.errors_by_type
    assert list(copied.errors) == list(report.errors)
    assert list(copied.failed) == list(report.failed)
    assert [e.to_dict() for e in copied.dead_letters] == [e.to_dict() for e in report.dead_letters]
    assert copied.batches == report.batches
    assert copied.summary() == report.summary()
    assert copied.to_json() == report.to_json()


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("backend", ["none", "memory", "sqlite"])
@pytest.mark.parametrize("read_first", [False, True])
def test_a_report_with_failures_pickles_and_deep_copies(tmp_path: Path, engine: str, backend: str,
                                                        read_first: bool) -> None:
    dlq = {"none": None, "memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/d.db"}[backend]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = _run(30, engine, dlq)
        assert report.failure_count == 10
        if read_first:  # the cached views (a lazy DLQ-backed sequence, say) are not carried
            assert len(report.errors) == len(report.dead_letters) == len(report.failed) == 10
        for copied in (_pickled(report), copy.deepcopy(report)):
            _same(copied, report)
            _pickled(copied)  # and again


def test_a_report_comes_back_from_a_worker_process() -> None:
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        report: Any = pool.submit(_run_in_worker, 12).result(timeout=120)
    assert report.failure_count == 4 and report.errors_by_type == {"ValueError": 4}
    assert [e.record_id for e in report.errors] == ["rec-0", "rec-3", "rec-6", "rec-9"]
    assert [e.error_message for e in report.dead_letters] == ["bad 0", "bad 3", "bad 6", "bad 9"]


def _run_in_worker(n: int) -> batchguard.BatchReport[int]:
    return _run(n)
