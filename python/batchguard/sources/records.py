"""What a source yields: records that remember where they were read, and unparsed lines.

A record read from a file carries its *origin*: the file (its URL, redacted) and the line it
starts on (JSON lines, CSV: 1-based, as an editor counts) or its row (Parquet, a JSON array:
0-based, as pyarrow and Python count). ``record_id`` turns that into the stable id a DLQ entry
and a job's resume name it by: ``data/part-1.jsonl.gz:17`` (line 17), ``s3://b/t.parquet#0``
(the first row).

The origin rides on the record itself, so it survives batching, retries, threads and pickling
without a side table that grows with the input: objects become :class:`Row` (a ``dict``),
arrays :class:`Items` (a ``list``), a line that does not parse an :class:`UnparsedLine` (a
``str``). A bare number, string, boolean or null (a JSON-lines file of scalars) has nowhere to
carry it: ``record_id`` raises ``LookupError`` for those, and a run falls back to the index.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import InputParseError

__all__ = ["Items", "Row", "UnparsedLine", "guard_parse_errors", "origin_of", "record_id"]

# An origin is (prefix, number): the prefix is the file's shown URL and its separator ("path:" for
# a line, "path#" for a row), one string shared by every record of the file.
Origin = tuple[str, int]


class Row(dict[str, Any]):
    """A record that was a JSON object, a CSV row or a Parquet row: a plain ``dict`` that also
    knows its origin (see :func:`record_id`)."""

    __slots__ = ("origin",)
    origin: Origin

    def __reduce__(self) -> tuple[Any, ...]:
        return (_row, (dict(self), self.origin))


class Items(list[Any]):
    """A record that was a JSON array: a plain ``list`` that also knows its origin."""

    __slots__ = ("origin",)
    origin: Origin

    def __reduce__(self) -> tuple[Any, ...]:
        return (_items, (list(self), self.origin))


def _row(data: dict[str, Any], origin: Origin) -> Row:
    row = Row(data)
    row.origin = origin
    return row


def _items(data: list[Any], origin: Origin) -> Items:
    items = Items(data)
    items.origin = origin
    return items


class UnparsedLine(str):
    """The raw text of an input line that did not parse, standing in for its record.

    A ``str``, so the DLQ stores the raw line as a plain JSON payload; ``line`` (1-based) and
    ``error`` say where and why, ``source`` which file (None when the reader was not told).

    >>> bad = UnparsedLine('{"id": 1,', line=3, error="Expecting property name")
    >>> bad, bad.line
    ('{"id": 1,', 3)
    """

    line: int
    error: str
    source: str | None

    def __new__(cls, raw: str, *, line: int, error: str, source: str | None = None) -> UnparsedLine:
        self = super().__new__(cls, raw)
        self.line = line
        self.error = error
        self.source = source
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unparsed, (str(self), self.line, self.error, self.source))


def _unparsed(raw: str, line: int, error: str, source: str | None = None) -> UnparsedLine:
    return UnparsedLine(raw, line=line, error=error, source=source)


def origin_of(record: Any) -> tuple[str, int] | None:
    """``(file, number)`` for a record a source read (a line, or a row for Parquet and JSON
    arrays), None for a record that carries no origin."""
    if type(record) is UnparsedLine:
        return None if record.source is None else (record.source, record.line)
    origin = getattr(record, "origin", None) if isinstance(record, (Row, Items)) else None
    if origin is None:
        return None
    return origin[0][:-1], origin[1]


def record_id(record: Any) -> str:
    """The stable id of a record a source read: ``file:line`` or ``file#row``.

    >>> row = _row({"id": 7}, ("data/in.jsonl:", 12))
    >>> record_id(row), record_id(UnparsedLine("{", line=3, error="x", source="data/in.jsonl"))
    ('data/in.jsonl:12', 'data/in.jsonl:3')
    """
    if type(record) is UnparsedLine:
        if record.source is not None:
            return f"{record.source}:{record.line}"
    elif isinstance(record, (Row, Items)):
        origin = getattr(record, "origin", None)
        if origin is not None:
            return f"{origin[0]}{origin[1]}"
    raise LookupError(f"a {type(record).__name__} record carries no origin (only objects, arrays and "
                      "unparsed lines read by batchguard.read do)")


def _parse_error(record: UnparsedLine) -> InputParseError:
    return InputParseError(f"line {record.line}: {record.error}")


def guard_parse_errors(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn``, raising InputParseError for an UnparsedLine instead of calling ``fn`` with it:
    ``run_batches(src, guard_parse_errors(fn), id_of=src.id_of)`` dead-letters a line that does
    not parse (PERMANENT, the raw line as payload) as the CLI does, and never calls ``fn`` with it.

    >>> guarded = guard_parse_errors(lambda r: r["id"])
    >>> guarded({"id": 7})
    7
    >>> guarded(UnparsedLine("{oops", line=2, error="bad JSON"))
    Traceback (most recent call last):
    ...
    batchguard.errors.InputParseError: line 2: bad JSON
    """
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def guarded_async(record: Any) -> Any:
            if type(record) is UnparsedLine:
                raise _parse_error(record)
            return await fn(record)

        return guarded_async

    @functools.wraps(fn)
    def guarded(record: Any) -> Any:
        if type(record) is UnparsedLine:
            raise _parse_error(record)
        return fn(record)

    return guarded
