"""A DLQ that run_batches opens from a URL is closed when the run ends (issue 7, defect 9).

``dlq="jsonl://..."`` used to leak one file descriptor per call (EMFILE at call 251). Now the
queue is closed however the run ends (returned, raised, interrupted), and the report opens it
again only for what it reads past its in-memory sample, closing it straight after.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchguard import RetryPolicy, arun_batches, run_batches
from batchguard.dlq import open_dlq
from helpers_contract import ENGINES

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")

ONCE = RetryPolicy(max_attempts=1)
SCHEMES = ("jsonl", "sqlite")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def url_of(scheme: str, directory: Path) -> str:
    return f"{scheme}:///{directory / ('dead.' + ('jsonl' if scheme == 'jsonl' else 'db'))}"


def reject_odd(record: int) -> int:
    if record % 2:
        raise ValueError(f"odd record {record}")
    return record


@pytest.mark.parametrize("scheme", SCHEMES)
def test_three_hundred_runs_with_a_dlq_url_leave_no_descriptor_open(scheme: str, tmp_path: Path) -> None:
    url = url_of(scheme, tmp_path)
    run_batches(range(4), reject_odd, dlq=url, retry=ONCE)  # imports, caches: whatever stays for good
    before = open_fds()
    for _ in range(300):
        report = run_batches(range(4), reject_odd, dlq=url, retry=ONCE)
        assert report.failure_count == 2
    assert open_fds() - before <= 2, f"{open_fds() - before} descriptors leaked over 300 runs"
    with open_dlq(url) as dlq:
        assert dlq.count() == 301 * 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_run_that_raises_or_is_interrupted_closes_its_dlq(scheme: str, engine: str,
                                                            tmp_path: Path) -> None:
    url = url_of(scheme, tmp_path)

    def broken_input() -> Iterator[int]:
        yield from range(5)
        raise OSError("the input went away")

    def interrupted(record: int) -> int:
        if record == 3:
            raise KeyboardInterrupt
        return reject_odd(record)

    run_batches(range(4), reject_odd, dlq=url, retry=ONCE, engine=engine)
    before = open_fds()
    for _ in range(20):
        with pytest.raises(OSError, match="the input went away"):
            run_batches(broken_input(), reject_odd, dlq=url, retry=ONCE, batch_size=2, engine=engine)
        with pytest.raises(KeyboardInterrupt):
            run_batches(range(10), interrupted, dlq=url, retry=ONCE, batch_size=2, engine=engine)
    assert open_fds() - before <= 2


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_report_reopens_a_closed_url_queue_for_entries_past_its_sample(scheme: str,
                                                                          tmp_path: Path) -> None:
    url = url_of(scheme, tmp_path)
    report = run_batches(range(3000), reject_odd, dlq=url, retry=ONCE, batch_size=250)
    before = open_fds()
    odd = list(range(1, 3000, 2))
    assert [e.record_index for e in report.errors] == odd
    assert report.failed[1499] == 2999 and report.dead_letters[-1].record_index == 2999
    assert "FAILED RECORDS (1500)" in report.summary()
    assert open_fds() == before, "a reopened queue was left open"


def test_a_job_report_reads_its_default_dlq_after_the_run(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_batches(range(4), reject_odd, retry=ONCE, job="warmup", store=store)
    before = open_fds()
    report = run_batches(range(2400), reject_odd, retry=ONCE, job="nightly", store=store)
    assert open_fds() - before <= 1
    assert [e.record_index for e in report.errors[1195:]] == list(range(2391, 2400, 2))
    assert open_fds() - before <= 1


def test_arun_batches_closes_a_dlq_it_opened_from_a_url(tmp_path: Path) -> None:
    url = url_of("jsonl", tmp_path)

    async def reject_odd_async(record: int) -> Any:
        return reject_odd(record)

    async def many() -> None:
        for _ in range(50):
            await arun_batches(range(4), reject_odd_async, dlq=url, retry=ONCE)
            await arun_batches(range(4), reject_odd, dlq=url, retry=ONCE)

    asyncio.run(arun_batches(range(4), reject_odd, dlq=url, retry=ONCE))
    before = open_fds()
    asyncio.run(many())
    assert open_fds() - before <= 2
