"""A Parquet results sink given values that do not fit its schema (issue 11 item 1): the run
fails at the batch that holds them, naming the sink and the records, rather than storing a
different value (pyarrow turns a Decimal or a UUID into an int64 through ``__int__``, and drops
a dict key the schema lacks) or failing only when a row group is flushed, up to 65,536 values
later, with the values before it lost.
"""

from __future__ import annotations

import decimal
import uuid
from pathlib import Path
from typing import Any

import pytest

import batchguard
from helpers_contract import ENGINES

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N, BATCH = 30, 3


def run_with(tmp_path: Path, later: Any, engine: str = "native") -> tuple[list[int], BaseException | None]:
    """Records 0..N-1 return themselves, but record 5 (batch 1) returns ``later(5)``; the
    calls made, and the TypeError the run raised."""
    calls: list[int] = []

    def fn(x: int) -> Any:
        calls.append(x)
        return later(x) if x == 5 else x

    try:
        batchguard.run_batches(range(N), fn, batch_size=BATCH, engine=engine, results=str(tmp_path / "out.parquet"))
    except TypeError as exc:
        return calls, exc
    return calls, None


@pytest.mark.parametrize("value", [decimal.Decimal("1.10"), 2.5, "5"], ids=["decimal", "float", "str"])
def test_a_value_that_would_change_to_fit_the_schema_fails_the_run(tmp_path: Path, value: Any) -> None:
    _, error = run_with(tmp_path, lambda _: value)
    assert error is not None, pq.read_table(tmp_path / "out.parquet").to_pylist()[5]
    assert "records 3 to 5" in str(error) and "int64" in str(error) and "out.parquet" in str(error)


@pytest.mark.parametrize("value", [uuid.UUID(int=1), "5"], ids=["uuid", "str"])
def test_a_batch_of_another_type_fails_the_run(tmp_path: Path, value: Any) -> None:
    # Batch 1 (records 3 to 5) all of another type, which the file's int64 column would take.
    with pytest.raises(TypeError, match=r"records 3 to 5 .* do not fit the schema of the first batch \(int64\)"):
        batchguard.run_batches(range(N), lambda x: value if 3 <= x <= 5 else x, batch_size=BATCH,
                               results=str(tmp_path / "out.parquet"))


def test_numbers_of_another_width_are_cast_when_nothing_changes(tmp_path: Path) -> None:
    batchguard.run_batches(range(N), lambda x: x / 2 if x < 3 else x, batch_size=BATCH,
                           results=str(tmp_path / "out.parquet"))
    assert pq.read_table(tmp_path / "out.parquet").column("value").to_pylist() == [0.0, 0.5, 1.0, *range(3, N)]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_run_fails_at_the_batch_that_does_not_fit_not_at_the_files_close(tmp_path: Path, engine: str) -> None:
    calls, error = run_with(tmp_path, lambda _: "five", engine)
    assert error is not None
    assert len(calls) < N, "every record ran before the bad value was noticed"


def test_a_dict_key_the_schema_lacks_fails_the_run_naming_it(tmp_path: Path) -> None:
    def fn(x: int) -> dict[str, Any]:
        return {"a": x, "extra": "kept nowhere"} if x == 5 else {"a": x}

    with pytest.raises(TypeError, match=r"value\.extra"):
        batchguard.run_batches(range(N), fn, batch_size=BATCH, results=str(tmp_path / "out.parquet"))


def test_a_dict_key_missing_from_a_later_value_is_null(tmp_path: Path) -> None:
    values = [{"a": x, "b": str(x)} if x % 2 else {"b": "only b"} for x in range(N)]
    batchguard.run_batches(range(N), values.__getitem__, batch_size=BATCH, results=str(tmp_path / "out.parquet"))
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [row["value"] for row in rows] == [{"a": v.get("a"), "b": v["b"]} for v in values]


def test_an_int_past_64_bits_fails_naming_the_sink(tmp_path: Path) -> None:
    _, error = run_with(tmp_path, lambda _: 2**70)
    assert error is not None and "out.parquet" in str(error) and "records 3 to 5" in str(error)


def test_a_first_batch_of_nones_takes_the_type_of_the_first_batch_with_one(tmp_path: Path) -> None:
    # A null column cannot hold what comes later: the type waits for a value, while no row
    # group is written yet.
    batchguard.run_batches(range(N), lambda x: None if x < 6 else {"n": x}, batch_size=BATCH,
                           results=str(tmp_path / "out.parquet"))
    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema.field("value").type) == "struct<n: int64>"
    assert table.column("value").to_pylist() == [None] * 6 + [{"n": x} for x in range(6, N)]
