"""Reading the CLI's INPUT: any path, URL or glob :func:`batchguard.read` takes, or ``-`` for stdin.

A line that does not parse does not stop the run: it becomes an :class:`UnparsedLine` record,
and :func:`guard_parse_errors` makes the user's callback raise :class:`InputParseError` for it,
so the engine dead-letters it (PERMANENT, the raw line as payload) and goes on.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final, TypeAlias, cast

from .errors import InputError
from .sources import FORMATS, Format, Source, UnparsedLine, guard_parse_errors, read, record_id

# DLQ entries pickled before the readers moved to batchguard.sources name this module's function.
from .sources.records import _unparsed as _unparsed
from .sources.text import SNIFF_BYTES, load_json_array, read_csv, read_jsonl, sniff

__all__ = [
    "FORMATS",
    "STDIN",
    "RecordSource",
    "StreamSource",
    "UnparsedLine",
    "guard_parse_errors",
    "input_id",
    "open_input",
]

STDIN: Final = "<stdin>"
"""The file name stdin's records are named by (``<stdin>:12``)."""



def input_id(record: Any) -> Any:
    """The CLI's record id: the record's own ``entity_id`` or ``id`` when it has one (as a run's
    default), else where it was read, ``file:line`` or ``file#row``, so a dead-lettered line
    without an id (a line that does not parse above all) points back at the input.

    >>> from batchguard.sources.text import read_jsonl
    >>> a, b = read_jsonl(io.BytesIO(b'{"id": 7}\\n{oops\\n'), "in.jsonl")
    >>> input_id(a), input_id(b)
    (7, 'in.jsonl:2')
    """
    if isinstance(record, Mapping):
        for key in ("entity_id", "id"):
            value = record.get(key)
            if value is not None:
                return value
    return record_id(record)


class StreamSource:
    """The records of a stream (stdin): no length, and read once.

    >>> src = open_input("-", stdin=io.BytesIO(b'{"id": 1}\\n'))
    >>> list(src), list(src)
    ([{'id': 1}], [])
    """

    path = "-"

    def __init__(self, stream: IO[bytes], fmt: Format) -> None:
        self.format = fmt
        self._stream: IO[bytes] | None = stream

    def __repr__(self) -> str:
        return f"StreamSource(format={self.format!r})"

    def __iter__(self) -> Iterator[Any]:
        stream, self._stream = self._stream, None
        if stream is None:
            return iter(())
        return read_csv(stream, STDIN) if self.format == "csv" else read_jsonl(stream, STDIN)


class _Preloaded(list[Any]):
    """A JSON array read from stdin: a list that keeps the CLI's ``path`` and ``format``."""

    path = "-"
    format = "json"


RecordSource: TypeAlias = Source | _Preloaded
"""INPUT read from files (or a JSON array from stdin): re-iterable, with a ``path`` and a ``format``."""


def open_input(path: str, fmt: Format | None = None, *,
               stdin: IO[bytes] | None = None) -> RecordSource | StreamSource:
    """The records of ``path`` (``-``: stdin; a path, URL or glob: :func:`batchguard.read`), in
    ``fmt`` or detected from the extension and content.

    Raises InputError (before any record runs) when the input cannot be read.
    """
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    if path != "-":
        return read(path, fmt)
    if fmt == "parquet":
        raise InputError("Parquet cannot be read from stdin: name the file")
    stream = stdin if stdin is not None else sys.stdin.buffer
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(
        cast("io.RawIOBase", stream), SNIFF_BYTES)
    detected = fmt or sniff(buffered.peek(SNIFF_BYTES)[:SNIFF_BYTES])
    if detected == "json":
        return _Preloaded(load_json_array(buffered.read(), "stdin", STDIN))
    return StreamSource(buffered, detected)
