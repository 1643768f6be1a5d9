"""Parquet, read one row group at a time: a file never sits whole in memory, only the row group
being turned into records (and at most ``CHUNK_ROWS`` of them as Python objects at once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, Final

from ..errors import InputError
from .text import with_origin

__all__ = ["CHUNK_ROWS", "parquet_rows", "read_parquet"]

CHUNK_ROWS: Final = 1024
MAGIC: Final = b"PAR1"


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]  # optional: only for Parquet input
    except ModuleNotFoundError:
        raise InputError("reading Parquet needs pyarrow: pip install 'batchguard[parquet]'") from None
    return pq


def parquet_rows(stream: IO[bytes], source: str) -> int:
    """The number of rows in a Parquet file, from its footer alone."""
    return int(_parquet().ParquetFile(stream).metadata.num_rows)


def read_parquet(stream: IO[bytes], source: str) -> Iterator[Any]:
    """The rows of a Parquet file as Rows (origin: ``source#row``, 0-based), row group by row group."""
    pq = _parquet()
    try:
        parquet = pq.ParquetFile(stream)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors (ArrowInvalid, OSError) say why
        raise InputError(f"{source} is not a Parquet file: {exc}") from None
    prefix = f"{source}#"
    row = 0
    for group in range(parquet.num_row_groups):
        try:
            table = parquet.read_row_group(group)
        except Exception as exc:  # noqa: BLE001 - a damaged row group: name it
            raise InputError(f"{source}: row group {group} (from row {row}) cannot be read: {exc}") from None
        for batch in table.to_batches(max_chunksize=CHUNK_ROWS):
            for record in batch.to_pylist():
                yield with_origin(record, prefix, row)
                row += 1
        del table
