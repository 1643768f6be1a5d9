"""A wrong ``store=`` is refused before any record is read, on both entry points, with the
ConfigError family every other argument uses (hostile tester, issue 8).

Before the fix ``run_batches(gen, fn, job="j", store=123)`` read the generator's first batch
(the job's fingerprint) before the store was looked at, then raised a bare TypeError: the
caller's generator was consumed for nothing, and ``except ConfigError`` (which catches every
other bad argument) missed it. ``store="ftp://x"`` and an unreachable store read it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard.errors import ConfigError, ConfigTypeError


def _records(read: list[int]) -> Iterator[int]:
    for i in range(50):
        read.append(i)
        yield i


def _call(entry: str, records: Any, **kwargs: Any) -> Any:
    if entry == "run":
        return batchguard.run_batches(records, lambda x: x, **kwargs)
    return asyncio.run(batchguard.arun_batches(records, lambda x: x, **kwargs))


@pytest.mark.parametrize("entry", ["run", "arun"])
@pytest.mark.parametrize("store", [123, b"sqlite:///x.db", ["sqlite:///x.db"]])
def test_a_store_of_the_wrong_type_is_a_config_type_error(entry: str, store: Any) -> None:
    read: list[int] = []
    with pytest.raises(ConfigTypeError, match="store must be a JobStore or a URL"):
        _call(entry, _records(read), job="j", store=store)
    assert read == [], "the input was read before the store was checked"


@pytest.mark.parametrize("entry", ["run", "arun"])
def test_a_path_store_says_how_to_write_it(entry: str, tmp_path: Path) -> None:
    read: list[int] = []
    with pytest.raises(ConfigTypeError, match=r"sqlite:///jobs\.db"):
        _call(entry, _records(read), job="j", store=tmp_path / "jobs.db")
    assert read == []


@pytest.mark.parametrize("entry", ["run", "arun"])
@pytest.mark.parametrize("store", ["ftp://x", "sqlite:///:memory:", "jobs.db"])
def test_a_bad_store_url_is_refused_before_the_input_is_read(entry: str, store: str) -> None:
    read: list[int] = []
    with pytest.raises(ConfigError, match="job store URL"):
        _call(entry, _records(read), job="j", store=store)
    assert read == []


@pytest.mark.parametrize("entry", ["run", "arun"])
def test_a_good_store_still_runs_the_job(entry: str, tmp_path: Path) -> None:
    read: list[int] = []
    report = _call(entry, _records(read), job="j", store=f"sqlite:///{tmp_path}/jobs.db")
    assert report.success_count == 50 and read == list(range(50))
