"""The text formats: JSON lines, CSV and a JSON array, read from a byte stream.

A line that does not parse does not stop the read: it becomes an :class:`UnparsedLine`, which the
CLI's guard dead-letters. Records come out as :class:`Row` / :class:`Items` carrying their
origin, ``(prefix, line)``, where ``prefix`` is the file's shown name and ``":"``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Iterator
from typing import IO, Any, Final, Literal

from ..errors import InputError
from .records import Items, Row, UnparsedLine

__all__ = ["SNIFF_BYTES", "TextFormat", "load_json_array", "read_csv", "read_jsonl", "sniff"]

TextFormat = Literal["jsonl", "csv", "json"]
SNIFF_BYTES: Final = 64 * 1024
# DictReader puts a row's extra fields under restkey and fills missing ones with restval.
_EXTRA: Final = "\0extra"
_MISSING: Final = "\0missing"
TOO_DEEP: Final = f"nested too deeply (more than about {sys.getrecursionlimit()} levels)"


def _printable(raw: bytes) -> str:
    # Invalid UTF-8 stays visible (as \\x.. escapes) and storable as JSON.
    return raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


def with_origin(value: Any, prefix: str, number: int) -> Any:
    """``value`` as a Row or Items remembering ``(prefix, number)``; other values as they are."""
    if type(value) is dict:
        row = Row(value)
        row.origin = (prefix, number)
        return row
    if type(value) is list:
        items = Items(value)
        items.origin = (prefix, number)
        return items
    return value


def read_jsonl(stream: IO[bytes], source: str) -> Iterator[Any]:
    """The records of a JSON-lines stream; blank lines are skipped, bad ones are UnparsedLine."""
    decode = json.JSONDecoder().decode
    prefix = f"{source}:"
    for number, raw in enumerate(stream, 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            value = decode(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as exc:
            yield UnparsedLine(_printable(raw), line=number, error=f"not UTF-8: {exc.reason}", source=source)
        except ValueError as exc:
            yield UnparsedLine(_printable(raw), line=number, error=f"invalid JSON: {exc}", source=source)
        except RecursionError:
            # The decoder recurses once per level: a line nested past the interpreter's limit
            # is a bad line like any other, not a reason to stop the run.
            yield UnparsedLine(_printable(raw), line=number, error=f"invalid JSON: {TOO_DEEP}", source=source)
        else:
            yield with_origin(value, prefix, number)


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


def read_csv(stream: IO[bytes], source: str) -> Iterator[Any]:
    """The rows of a CSV stream with a header line, as Rows; a malformed row is an UnparsedLine."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(text, source)
    finally:
        # The caller owns the byte stream: let go of it rather than close it with the wrapper.
        with contextlib.suppress(ValueError):
            text.detach()


def _csv_rows(text: IO[str], source: str) -> Iterator[Any]:
    tap = _LineTap(text)
    reader = csv.DictReader(tap, restkey=_EXTRA, restval=_MISSING)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise InputError(f"the CSV header of {source} does not parse: {exc}") from None
    if not header:
        return
    prefix = f"{source}:"
    tap.raw.clear()
    while True:
        start = tap.line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield UnparsedLine(_printable("".join(tap.raw).encode("utf-8", "surrogateescape")),
                               line=start, error=f"invalid CSV: {exc}", source=source)
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
                               line=start, error=f"invalid CSV row: {error}", source=source)
        else:
            yield with_origin(row, prefix, start)


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def sniff(head: bytes) -> TextFormat:
    """The text format the first bytes of a stream look like."""
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


def load_json_array(data: bytes, where: str, source: str) -> list[Any]:
    """The elements of a JSON array document (each remembering its 0-based row); InputError if
    the document does not parse or is not an array."""
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno} (a JSON array is read whole; use JSON lines to keep going "
                         "past bad records)") from None
    except RecursionError:
        raise InputError(f"{where} cannot be read: it is {TOO_DEEP} (a JSON array is read whole; "
                         "use JSON lines to keep going past bad records)") from None
    if not isinstance(value, list):
        raise InputError(f"{where} holds a JSON {type(value).__name__}, not an array of records")
    prefix = f"{source}#"
    return [with_origin(item, prefix, row) for row, item in enumerate(value)]
