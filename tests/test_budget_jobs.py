"""A job run with the steering settings (issue 10 item 6): the job's stored config says how it
was steered (concurrency=Adaptive(...) and retry_budget=, not the Adaptive's max alone as if the
concurrency were fixed), and a job stopped part-way resumes with them to an exact finish."""

from __future__ import annotations

from pathlib import Path

import pytest

import batchguard
from batchguard import Adaptive, CircuitBreaker, RetryBudget, RetryPolicy
from helpers_contract import ENGINES

STEERING = {"concurrency": Adaptive(min=2, max=8, decrease=0.5),
            "retry_budget": RetryBudget(ratio=0.1, min_per_s=5, over_budget="dead_letter"),
            "breaker": CircuitBreaker(slow_call_s=5.0, slow_call_rate_threshold=0.9)}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_records_how_it_was_steered(engine: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/jobs.db"
    batchguard.run_batches(range(20), lambda x: x, engine=engine, job="steered", store=store,
                           dlq=f"sqlite:///{tmp_path}/dlq.db", **STEERING)
    config = batchguard.job_status("steered", store=store).config
    assert config["adaptive"] == {"min": 2, "max": 8, "initial": None, "increase": 1.0, "decrease": 0.5}
    assert config["retry_budget"] == {"ratio": 0.1, "min_per_s": 5.0, "window_s": 10.0,
                                      "over_budget": "dead_letter"}
    assert config["breaker"]["slow_call_s"] == 5.0


def test_a_job_without_steering_records_none(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/jobs.db"
    batchguard.run_batches(range(5), lambda x: x, job="plain", store=store, dlq=f"sqlite:///{tmp_path}/dlq.db")
    config = batchguard.job_status("plain", store=store).config
    assert config["adaptive"] is None and config["retry_budget"] is None


@pytest.mark.parametrize("engine", ENGINES)
def test_a_steered_job_stopped_part_way_resumes_to_an_exact_finish(engine: str, tmp_path: Path) -> None:
    store, dlq = f"sqlite:///{tmp_path}/jobs.db", f"sqlite:///{tmp_path}/dlq.db"
    calls: list[int] = []

    def first(record: int) -> int:
        if record == 250:
            raise KeyboardInterrupt
        calls.append(record)
        if record % 10 == 0:
            raise ConnectionError(f"down for {record}")
        return record

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(500), first, engine=engine, job="resumed", store=store, dlq=dlq,
                               batch_size=50, retry=RetryPolicy(max_attempts=2, base_delay=0.0), **STEERING)
    done_before = set(calls)
    again: list[int] = []

    def second(record: int) -> int:
        again.append(record)
        if record % 10 == 0:
            raise ConnectionError(f"down for {record}")
        return record

    report = batchguard.run_batches(range(500), second, engine=engine, job="resumed", store=store, dlq=dlq,
                                    batch_size=50, retry=RetryPolicy(max_attempts=2, base_delay=0.0), **STEERING)
    status = batchguard.job_status("resumed", store=store)
    assert status.status == "completed"
    assert status.succeeded + status.failed == 500 and status.failed == 50
    assert report.concurrency_limit is not None and report.retries_over_budget is not None
    # Records of batches finished before the interrupt did not run again.
    finished = {r for r in done_before if r < 200}
    assert not finished & set(again)
