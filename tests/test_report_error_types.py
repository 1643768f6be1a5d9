"""``report.errors_by_type`` is bounded (review finding): a run that raises thousands of
dynamically created exception classes keeps the most frequent types up to a cap and counts the
rest as "other", as the failure patterns do, on both engines and both failure stores."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from batchguard import MemoryDLQ
from batchguard._report.model import build
from batchguard._report.patterns import OTHER_TYPE
from batchguard._report.types import MAX_ERROR_TYPES, TypeCounter
from helpers_contract import ENGINES, no_wait, run

_CLASSES = 3000
# One class per record, but for every tenth record, which raises the same common error: the
# one type that must keep its own entry whatever order the rest come in.
_DYNAMIC = [type(f"Dyn{n}Error", (Exception,), {}) for n in range(_CLASSES)]


class CommonError(Exception):
    """The frequent type."""


def _fail(record: int) -> None:
    if record % 10 == 0:
        raise CommonError("common")
    raise _DYNAMIC[record]("dynamic")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_errors_by_type_keeps_the_most_frequent_types_and_counts_the_rest_as_other(
        engine: str, store: str, tmp_path: Path) -> None:
    dlq = MemoryDLQ() if store == "memory" else f"sqlite:///{tmp_path / 'dlq.db'}"
    report = run(range(_CLASSES), _fail, engine=engine, batch_size=500, dlq=dlq, retry=no_wait(1))
    assert report.failure_count == _CLASSES
    by_type = report.errors_by_type
    assert len(by_type) <= MAX_ERROR_TYPES + 1
    assert by_type["CommonError"] == _CLASSES // 10
    # Most frequent first ("other" ranked by its count, as the patterns' "other" is).
    assert next(name for name in by_type if name != OTHER_TYPE) == "CommonError"
    assert sum(by_type.values()) == _CLASSES  # the rest counted, as "other"
    assert by_type[OTHER_TYPE] >= _CLASSES - _CLASSES // 10 - MAX_ERROR_TYPES
    assert len(build(report).error_types) <= MAX_ERROR_TYPES + 1
    # What the store holds for them is bounded too (a pickled report carries it).
    assert len(report._failures.type_counts()) <= MAX_ERROR_TYPES + 1  # type: ignore[union-attr]
    assert pickle.loads(pickle.dumps(report)).errors_by_type == by_type  # noqa: S301 - our own bytes


def test_the_counter_holds_at_most_twice_its_cap_while_counting() -> None:
    counter = TypeCounter(cap=10)
    for n in range(1000):
        counter.add("Frequent" if n % 3 == 0 else f"Rare{n}")
        assert len(counter) <= 20
    counted = dict(counter.most_common())
    assert counted["Frequent"] == 334
    assert sum(counted.values()) == 1000
    assert len(counted) == 11  # ten types and "other"
