"""The hooks' view of a run's end (issue 10 item 1, leftovers): ``on_run_end`` gets the report
the caller gets, ``report.validation`` included, on both engines, sync and async, plain runs
and jobs; and a run with nothing to do (a finished job run again) starts and ends like any
other run, so a hook target that starts something in ``run_started`` stops it in ``run_closed``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import Hooks, RetryPolicy, ValidationIssue
from batchguard.results import BatchReport
from batchguard.validation.issues import ValidationSummary

ENGINES = ("python", "native")


def check(record: int) -> ValidationIssue | None:
    """Every fifth record is blocked, every third (not blocked) runs with a warning."""
    if record % 5 == 0:
        return ValidationIssue("value", "a multiple of five", "drop it")
    if record % 3 == 0:
        return ValidationIssue("value", "a multiple of three", None, severity="warning")
    return None


def double(record: int) -> int:
    return record * 2


async def adouble(record: int) -> int:
    await asyncio.sleep(0)
    return record * 2


class Lifecycle:
    """A hook target that notes every lifecycle call, and the report ``on_run_end`` got."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ended: list[BatchReport[Any]] = []

    def run_started(self, run_id: str, stage: str, job_id: str | None) -> None:
        self.calls.append("run_started")

    def on_run_end(self, report: BatchReport[Any]) -> None:
        self.calls.append("on_run_end")
        self.ended.append(report)

    def run_closed(self, error: BaseException | None) -> None:
        self.calls.append("run_closed" if error is None else f"run_closed({type(error).__name__})")


def _run(kind: str, engine: str, hooks: object, **options: Any) -> BatchReport[Any]:
    options = {"engine": engine, "hooks": hooks, "validate": check, "batch_size": 7,
               "retry": RetryPolicy(max_attempts=1), **options}
    if kind == "async":
        return asyncio.run(batchguard.arun_batches(list(range(40)), adouble, **options))
    return batchguard.run_batches(list(range(40)), double, **options)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("as_job", [False, True], ids=["plain", "job"])
def test_on_run_end_sees_the_validation_counts(engine: str, kind: str, as_job: bool, tmp_path: Path) -> None:
    target = Lifecycle()
    job = {"job": "edges", "store": f"sqlite:///{tmp_path / 'jobs.db'}"} if as_job else {}
    report = _run(kind, engine, target, **job)
    expected = ValidationSummary(blocked=8, warnings=11)  # 0, 5, ..., 35; 3, 6, 9, 12, ... 39 but not 15, 30
    assert report.validation == expected
    assert target.calls == ["run_started", "on_run_end", "run_closed"]
    assert target.ended[0].validation == expected, "on_run_end ran before the validation counts were attached"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_job_with_nothing_left_to_do_starts_and_ends_its_hooks(engine: str, kind: str, tmp_path: Path) -> None:
    job = {"job": "finished", "store": f"sqlite:///{tmp_path / 'jobs.db'}"}
    first = Lifecycle()
    _run(kind, engine, first, **job)
    assert first.calls == ["run_started", "on_run_end", "run_closed"]
    again = Lifecycle()
    report = _run(kind, engine, again, **job)  # every batch done: nothing runs
    assert report.total == 0 and report.skipped_batches == 6 and report.status == "complete"
    assert again.calls == ["run_started", "on_run_end", "run_closed"]
    assert again.ended == [report]


@pytest.mark.parametrize("engine", ENGINES)
def test_hooks_of_a_job_with_nothing_left_to_do_see_its_job(engine: str, tmp_path: Path) -> None:
    """``Hooks(on_run_end=...)`` alone (no observer methods) is called too, with the job's id."""
    ended: list[BatchReport[Any]] = []
    job = {"job": "twice", "store": f"sqlite:///{tmp_path / 'jobs.db'}"}
    batchguard.run_batches(range(10), double, engine=engine, **job)
    report = batchguard.run_batches(range(10), double, engine=engine, hooks=Hooks(on_run_end=ended.append), **job)
    assert ended == [report] and report.job_id == "twice"
