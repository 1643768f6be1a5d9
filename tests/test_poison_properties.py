"""Property: whatever the failing records hold, the run completes and every one is stored once.

Hypothesis draws records with text holding lone surrogates and NUL, nesting up to 1500 deep,
objects whose ``__repr__`` raises, and ids of every type (UUID, Decimal, datetime, bytes, huge
ints, NaN, arbitrary objects). Each example fails some of them into a fresh queue of each
backend, on both engines, at concurrency 1 or 4: the run must complete, conserve every record
(total == succeeded + failed + pending, nothing pending) and leave exactly one DLQ entry per
failed record, which every backend reads back.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard import MemoryDLQ, RetryPolicy, run_batches
from helpers_contract import ENGINES, dlq_view
from test_dlq_conformance import BACKENDS, Opener
from test_poison_records import BadRepr

UNSTORABLE = ["\ud800", "\udfff", "\udcff", "\x00"]


class Odd:
    """Neither JSON nor anything the id rule names: stored by its str()."""

    def __str__(self) -> str:
        return "odd"


def deep(depth: int, as_dict: bool) -> Any:
    value: Any = None
    for _ in range(depth):
        value = {"d": value} if as_dict else [value]
    return value


texts = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(st.text(max_size=4), st.sampled_from(UNSTORABLE)), max_size=5).map("".join),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), texts)
plain = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)), max_leaves=10)
payloads = st.one_of(
    plain,
    st.builds(deep, st.integers(min_value=100, max_value=1500), st.booleans()),
    st.builds(BadRepr, st.integers()),
    st.lists(st.builds(BadRepr, st.integers()), min_size=1, max_size=2),
    st.uuids(), st.decimals(), st.datetimes(), st.binary(max_size=8),
)
ids = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), texts, st.uuids(), st.decimals(), st.datetimes(),
    st.dates(), st.binary(max_size=8), st.builds(Odd), st.builds(BadRepr, st.integers()),
)
cases = st.lists(st.tuples(payloads, ids, st.booleans()), min_size=1, max_size=25)

_examples = itertools.count()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(cases=cases, concurrency=st.sampled_from([1, 4]), batch_size=st.sampled_from([1, 3, 10]))
def test_any_failing_records_complete_the_run_with_one_entry_each(
        backend: str, engine: str, cases: list[tuple[Any, Any, bool]], concurrency: int,
        batch_size: int, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # Each record a distinct object (a dict, a list or the unprintable object itself), so that
    # fn and id_of can tell them apart by identity: they may be equal, unhashable or unprintable.
    records: list[Any] = [payload if isinstance(payload, BadRepr) else
                          {"payload": payload, "i": i} if i % 2 else [payload, i]
                          for i, (payload, _, _) in enumerate(cases)]
    failing = {id(records[i]) for i, (_, _, fails) in enumerate(cases) if fails}
    id_for = {id(records[i]): record_id for i, (_, record_id, _) in enumerate(cases)}

    def fn(record: Any) -> Any:
        if id(record) in failing:
            raise ValueError("bad \ud800 record \x00")
        return None

    where = tmp_path / f"example-{next(_examples)}"
    where.mkdir()
    opener = Opener(backend, request, where)
    try:
        queue = opener.new()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = run_batches(records, fn, dlq=queue, id_of=lambda r: id_for[id(r)], engine=engine,  # type: ignore[arg-type]
                                 concurrency=concurrency, batch_size=batch_size,
                                 retry=RetryPolicy(max_attempts=1))
        expected_failed = sorted(i for i, (_, _, fails) in enumerate(cases) if fails)
        assert report.total == report.success_count + report.failure_count + report.pending_count
        assert (report.total, report.pending_count, report.failure_count) == (
            len(cases), 0, len(expected_failed))
        entries = queue.list(run_id=report.run_id)
        assert sorted(e.record_index for e in entries) == expected_failed  # one each, no more
        assert queue.count(run_id=report.run_id) == len(expected_failed)
        for entry in entries:
            assert entry.error_message == "bad \ufffd record \ufffd"
            assert isinstance(entry.payload, str) or entry.payload_encoding == "json"
            rid = entry.record_id
            assert rid is None or isinstance(rid, (bool, str)) or (
                isinstance(rid, int) and -(2**63) <= rid < 2**63) or (
                isinstance(rid, float) and math.isfinite(rid))
    finally:
        opener.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(cases=cases, batch_size=st.sampled_from([1, 4, 10]))
def test_both_engines_store_the_same_entries_for_odd_records(cases: list[tuple[Any, Any, bool]],
                                                             batch_size: int) -> None:
    records: list[Any] = [payload if isinstance(payload, BadRepr) else {"payload": payload, "i": i}
                          for i, (payload, _, _) in enumerate(cases)]
    failing = {id(records[i]) for i, (_, _, fails) in enumerate(cases) if fails}
    id_for = {id(records[i]): record_id for i, (_, record_id, _) in enumerate(cases)}

    def fn(record: Any) -> Any:
        if id(record) in failing:
            raise ValueError("bad \udcff")
        return None

    stored = {}
    for engine in ENGINES:
        queue = MemoryDLQ()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_batches(records, fn, dlq=queue, id_of=lambda r: id_for[id(r)], engine=engine,  # type: ignore[arg-type]
                        batch_size=batch_size, retry=RetryPolicy(max_attempts=1))
        stored[engine] = sorted((dlq_view(e) for e in queue.list()), key=lambda d: d["record_index"])
    assert stored["python"] == stored["native"]
