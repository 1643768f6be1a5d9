"""Reading the CLI's INPUT: JSON lines, CSV, a JSON array, or ``-`` for stdin.

A line that does not parse does not stop the run: it becomes an :class:`UnparsedLine` record,
and :func:`guard_parse_errors` makes the user's callback raise :class:`InputParseError` for it,
so the engine dead-letters it (PERMANENT, the raw line as payload) and goes on.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final, Literal, cast

from .errors import InputError, InputParseError

__all__ = [
    "FORMATS",
    "RecordSource",
    "StreamSource",
    "UnparsedLine",
    "guard_parse_errors",
    "open_input",
]

Format = Literal["jsonl", "csv", "json"]
FORMATS: Final = ("jsonl", "csv", "json")
_EXTENSIONS: Final[dict[str, Format]] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".csv": "csv", ".json": "json",
}
_SNIFF_BYTES: Final = 64 * 1024
# DictReader puts a row's extra fields under restkey and fills missing ones with restval.
_EXTRA: Final = "\0extra"
_MISSING: Final = "\0missing"
_TOO_DEEP: Final = f"nested too deeply (more than about {sys.getrecursionlimit()} levels)"


class UnparsedLine(str):
    """The raw text of an input line that did not parse, standing in for its record.

    A ``str``, so the DLQ stores the raw line as a plain JSON payload; ``line`` (1-based) and
    ``error`` say where and why.

    >>> bad = UnparsedLine('{"id": 1,', line=3, error="Expecting property name")
    >>> bad, bad.line
    ('{"id": 1,', 3)
    """

    line: int
    error: str

    def __new__(cls, raw: str, *, line: int, error: str) -> UnparsedLine:
        self = super().__new__(cls, raw)
        self.line = line
        self.error = error
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unparsed, (str(self), self.line, self.error))


def _unparsed(raw: str, line: int, error: str) -> UnparsedLine:
    return UnparsedLine(raw, line=line, error=error)


def _parse_error(record: UnparsedLine) -> InputParseError:
    return InputParseError(f"line {record.line}: {record.error}")


def guard_parse_errors(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn``, raising InputParseError for an UnparsedLine instead of calling ``fn`` with it.

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


def _printable(raw: bytes) -> str:
    # Invalid UTF-8 stays visible (as \\x.. escapes) and storable as JSON.
    return raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


class RecordSource:
    """The records of one input file, read lazily; iterating again rereads the file.

    ``len()`` counts the records in one fast pass, so runs can show an ETA.

    >>> import tempfile, os, pathlib
    >>> path = os.path.join(tempfile.mkdtemp(), "in.jsonl")
    >>> _ = pathlib.Path(path).write_text('{"id": 1}\\n{oops\\n\\n{"id": 3}\\n')
    >>> src = open_input(path)
    >>> len(src), [r if isinstance(r, dict) else ("bad", r.line) for r in src]
    (3, [{'id': 1}, ('bad', 2), {'id': 3}])
    """

    def __init__(self, path: str, fmt: Format, *, preloaded: list[Any] | None = None) -> None:
        self.path = path
        self.format = fmt
        self._preloaded = preloaded
        self._length: int | None = None

    def __repr__(self) -> str:
        return f"RecordSource({self.path!r}, format={self.format!r})"

    def __len__(self) -> int:
        if self._preloaded is not None:
            return len(self._preloaded)
        if self._length is None:
            with open(self.path, "rb") as stream:
                self._length = sum(1 for _ in _read(stream, self.format)) if self.format == "csv" \
                    else sum(1 for line in stream if line.strip())
        return self._length

    def __iter__(self) -> Iterator[Any]:
        if self._preloaded is not None:
            return iter(self._preloaded)
        return self._read_file()

    def _read_file(self) -> Iterator[Any]:
        with open(self.path, "rb") as stream:
            yield from _read(stream, self.format)


class StreamSource:
    """The records of a stream (stdin): no length, and read once.

    >>> import io
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
        return iter(()) if stream is None else _read(stream, self.format)


def _read(stream: IO[bytes], fmt: Format) -> Iterator[Any]:
    return _read_csv(stream) if fmt == "csv" else _read_jsonl(stream)


def _read_jsonl(stream: IO[bytes]) -> Iterator[Any]:
    decode = json.JSONDecoder().decode
    for number, raw in enumerate(stream, 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            yield decode(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as exc:
            yield UnparsedLine(_printable(raw), line=number, error=f"not UTF-8: {exc.reason}")
        except ValueError as exc:
            yield UnparsedLine(_printable(raw), line=number, error=f"invalid JSON: {exc}")
        except RecursionError:
            # The decoder recurses once per level: a line nested past the interpreter's limit
            # is a bad line like any other, not a reason to stop the run.
            yield UnparsedLine(_printable(raw), line=number, error=f"invalid JSON: {_TOO_DEEP}")


class _LineTap:
    """Feeds csv lines while keeping the raw text of the current row (which may span lines)."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self.raw: list[str] = []
        self.line = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._text)
        self.raw.append(line)
        self.line += 1
        return line


def _read_csv(stream: IO[bytes]) -> Iterator[Any]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(text)
    finally:
        # The caller owns the byte stream: let go of it rather than close it with the wrapper.
        with contextlib.suppress(ValueError):
            text.detach()


def _csv_rows(text: IO[str]) -> Iterator[Any]:
    tap = _LineTap(text)
    reader = csv.DictReader(tap, restkey=_EXTRA, restval=_MISSING)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise InputError(f"the CSV header does not parse: {exc}") from None
    if not header:
        return
    tap.raw.clear()
    while True:
        start = tap.line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield UnparsedLine(_printable("".join(tap.raw).encode("utf-8", "surrogateescape")),
                               line=start, error=f"invalid CSV: {exc}")
            tap.raw.clear()
            continue
        raw = "".join(tap.raw)
        tap.raw.clear()
        error = None
        if _EXTRA in row:
            error = f"{len(header) + len(row[_EXTRA])} fields, the header has {len(header)}"
        elif any(value == _MISSING for value in row.values()):
            missing = sum(1 for value in row.values() if value == _MISSING)
            error = f"{len(header) - missing} fields, the header has {len(header)}"
        elif any(_has_surrogates(value) for value in row.values()):
            error = "not UTF-8"
        if error is not None:
            yield UnparsedLine(_printable(raw.encode("utf-8", "surrogateescape")),
                               line=start, error=f"invalid CSV row: {error}")
        else:
            yield row


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _sniff(head: bytes) -> Format:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"["):
        return "json"
    first = text.split(b"\n", 1)[0].strip()
    if first.startswith((b"{", b'"')):
        return "jsonl"
    try:
        json.loads(first)
    except ValueError:
        return "csv"
    return "jsonl"


def _load_json_array(data: bytes, where: str) -> list[Any]:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno} (a JSON array is read whole; use JSON lines to keep going "
                         "past bad records)") from None
    except RecursionError:
        raise InputError(f"{where} cannot be read: it is {_TOO_DEEP} (a JSON array is read whole; "
                         "use JSON lines to keep going past bad records)") from None
    if not isinstance(value, list):
        raise InputError(f"{where} holds a JSON {type(value).__name__}, not an array of records")
    return value


def open_input(path: str, fmt: Format | None = None, *,
               stdin: IO[bytes] | None = None) -> RecordSource | StreamSource:
    """The records of ``path`` (``-``: stdin), in ``fmt`` or detected from the extension/content.

    Raises InputError (before any record runs) when the file cannot be read.
    """
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(
            cast("io.RawIOBase", stream), _SNIFF_BYTES)
        detected = fmt or _sniff(buffered.peek(_SNIFF_BYTES)[:_SNIFF_BYTES])
        if detected == "json":
            return RecordSource("-", "json", preloaded=_load_json_array(buffered.read(), "stdin"))
        return StreamSource(buffered, detected)
    where = f"input {path!r}"
    try:
        if Path(path).is_dir():
            raise InputError(f"cannot read {where}: it is a directory")
        with open(path, "rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read {where}: {exc.strerror or exc}") from None
    detected = fmt or _EXTENSIONS.get(os.path.splitext(path)[1].lower()) or _sniff(head)
    if detected == "json" and fmt is None and not head.lstrip(b"\xef\xbb\xbf").lstrip().startswith(b"["):
        detected = "jsonl"  # a .json file of JSON lines
    if detected == "json":
        with open(path, "rb") as stream:
            return RecordSource(path, "json", preloaded=_load_json_array(stream.read(), where))
    return RecordSource(path, detected)
