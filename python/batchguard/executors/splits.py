"""Batches of a Parquet source as descriptors: the driver ships where a batch's rows are, and
the worker reads them itself.

A run over ``batchguard.read("s3://bucket/*.parquet")`` on an executor would otherwise read
every row on the driver and send it out. Parquet files say in their footers how many rows each
holds, so the driver maps each batch (records ``b * batch_size`` onwards, as everywhere) to row
ranges of the files without reading a row, and each worker reads its ranges, row group by row
group, giving each record the origin (``file#row``) the source itself gives it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..sources import Items, Row, Source
from ..sources.files import SourceFile, open_bytes

__all__ = ["ParquetSplit", "parquet_batches", "read_split", "splittable"]


@dataclass(frozen=True)
class ParquetSplit:
    """Where one batch's records are: ``pieces`` of ``(file number, first row, rows)``."""

    files: tuple[SourceFile, ...]
    options: Mapping[str, Any]
    """The source's storage options (credentials, an endpoint): the worker opens the files
    with them. Never shown, as the source never shows them."""
    pieces: tuple[tuple[int, int, int], ...]

    def __repr__(self) -> str:
        # A file's URL and the storage options may hold credentials: the files' shown names only.
        names = ", ".join(file.shown for file in self.files)
        return f"ParquetSplit(files=[{names}], pieces={self.pieces!r})"


def _pq() -> Any:
    # pyarrow is the parquet extra's; a run over Parquet has it (the source read the footers).
    return importlib.import_module("pyarrow.parquet")


def _rows_in(file: SourceFile, options: Mapping[str, Any]) -> int:
    stream = open_bytes(file, options, sequential=False)
    try:
        return int(_pq().ParquetFile(stream).metadata.num_rows)
    finally:
        stream.close()


def splittable(records: object) -> TypeGuard[Source]:
    """A source of Parquet files only (the one kind whose rows can be counted without reading)."""
    return isinstance(records, Source) and records.format == "parquet"


def parquet_batches(source: Source, size: int, skip: frozenset[int]
                    ) -> Iterator[tuple[int, int, int, ParquetSplit | None]]:
    """(batch index, its first record's index, its size, its split: None for a skipped batch),
    from the files' footers alone."""
    files = source.files
    options: Mapping[str, Any] = source._options  # private to the source: shipped to workers, never shown
    counts = [_rows_in(file, options) for file in files]
    total = sum(counts)
    starts = [sum(counts[:number]) for number in range(len(files))]
    for index, first in enumerate(range(0, total, size)):
        length = min(size, total - first)
        if index in skip:
            yield index, first, length, None
            continue
        pieces = []
        for number, (start, count) in enumerate(zip(starts, counts, strict=True)):
            low, high = max(first, start), min(first + length, start + count)
            if low < high:
                pieces.append((number, low - start, high - low))
        yield index, first, length, ParquetSplit(files, options, tuple(pieces))


def _with_origin(value: Any, prefix: str, row: int) -> Any:
    if type(value) is dict:
        record: Row | Items = Row(value)
    elif type(value) is list:
        record = Items(value)
    else:
        return value
    record.origin = (prefix, row)
    return record


def read_split(split: ParquetSplit) -> list[Any]:
    """The records of a split, as the source yields them (each a Row with its ``file#row``)."""
    out: list[Any] = []
    for number, first, rows in split.pieces:
        file = split.files[number]
        stream = open_bytes(file, split.options, sequential=False)
        try:
            parquet = _pq().ParquetFile(stream)
            prefix = f"{file.shown}#"
            group_start = 0
            for group in range(parquet.num_row_groups):
                group_rows = parquet.metadata.row_group(group).num_rows
                low, high = max(first, group_start), min(first + rows, group_start + group_rows)
                if low < high:  # only the row groups the split overlaps are read
                    table = parquet.read_row_group(group).slice(low - group_start, high - low)
                    out.extend(_with_origin(value, prefix, low + offset)
                               for offset, value in enumerate(table.to_pylist()))
                group_start += group_rows
        finally:
            stream.close()
    return out
