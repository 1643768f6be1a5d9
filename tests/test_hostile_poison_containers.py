"""A record that is a dict or list subclass whose items()/__iter__ raises is dead-lettered with
its repr, on every backend and engine, instead of killing the run with that RuntimeError from
deep in the DLQ encoder (hostile tester, issue 7 defect 1: "an entry must always be storable").
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import batchguard


class ItemsRaise(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items() is broken")

    def __iter__(self) -> Any:
        raise RuntimeError("__iter__ is broken")

    def keys(self) -> Any:
        raise RuntimeError("keys() is broken")


class IterRaise(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("__iter__ is broken")


def _fail(record: Any) -> Any:
    raise ValueError("bad")


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("backend", ["memory", "sqlite", "jsonl"])
def test_broken_containers_are_dead_lettered(tmp_path: Path, engine: str, backend: str) -> None:
    dlq = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/d.db",
           "jsonl": f"jsonl:///{tmp_path}/d.jsonl"}[backend]
    records = [{"id": 1}, ItemsRaise(a=1), IterRaise([1, 2]), {"nested": [ItemsRaise(b=2)]}, {"id": 5}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = batchguard.run_batches(records, _fail, dlq=dlq, engine=engine)
        entries = {e.record_index: e for e in report.dead_letters}
    assert report.failure_count == 5 and report.pending_count == 0
    assert [entries[i].payload_encoding for i in range(5)] == ["json", "repr", "repr", "repr", "json"]
