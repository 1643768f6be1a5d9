"""``batchguard.read``: the records of files named by a path, a URL or a glob, read lazily."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final, Literal

from .._urls import redact
from ..errors import InputError
from .files import SourceFile, expand, open_bytes
from .parquet import MAGIC, parquet_rows, read_parquet
from .records import record_id
from .text import SNIFF_BYTES, load_json_array, read_csv, read_jsonl, sniff

__all__ = ["FORMATS", "Format", "SizedSource", "Source", "read"]

Format = Literal["jsonl", "csv", "json", "parquet"]
FORMATS: Final = ("jsonl", "csv", "json", "parquet")
_EXTENSIONS: Final[dict[str, Format]] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".csv": "csv", ".json": "json",
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
}


class Source:
    """The records of one or more files, read lazily, file after file in sorted order.

    Iterating again reads the files again (the file list is fixed when the source is made: a
    file added to a glob's folder later is not read). A record remembers where it came from:
    ``source.id_of(record)`` is ``file:line`` (JSON lines, CSV) or ``file#row`` (Parquet, a
    JSON array), so ``run_batches(src, fn, id_of=src.id_of)`` names every dead letter by its
    place in the input. Storage options (credentials) are kept for opening the files and never
    shown: ``repr``, ids and error messages use the redacted URL.
    """

    def __init__(self, spec: str, files: list[SourceFile], formats: list[Format], *,
                 given: Format | None, options: Mapping[str, Any],
                 preloaded: dict[int, list[Any]]) -> None:
        self.path = spec if not files or not files[0].remote else redact(spec)
        """The path, URL (redacted) or glob the source was made from."""
        self.files = tuple(files)
        """The files read, in order: each with its shown URL, size and version (ETag or mtime)."""
        common = set(formats)
        self.format: Format | None = given or (formats[0] if len(common) == 1 else None)
        """The format of every file (None when a glob matched files of several formats)."""
        self._formats = formats
        self._options = dict(options)
        self._preloaded = preloaded

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, format={self.format!r}, files={len(self.files)})"

    @staticmethod
    def id_of(record: Any) -> str:
        """The stable id of a record this source yielded: ``file:line`` or ``file#row``.

        Raises LookupError for a record with nowhere to keep its origin (a bare number or
        string in a JSON-lines file); a run then names that record by its index.
        """
        return record_id(record)

    def manifest(self) -> list[dict[str, Any]]:
        """What identifies the input's bytes: each file's shown URL, size and version (ETag or
        mtime). A job's fingerprint includes it, so a changed file refuses a resume."""
        return [{"file": f.shown, "size": f.size, "version": f.version} for f in self.files]

    def __iter__(self) -> Iterator[Any]:
        for number, file in enumerate(self.files):
            preloaded = self._preloaded.get(number)
            if preloaded is not None:
                yield from preloaded
                continue
            yield from self._read(file, self._formats[number])

    def _read(self, file: SourceFile, fmt: Format) -> Iterator[Any]:
        stream = open_bytes(file, self._options, sequential=fmt != "parquet")
        try:
            if fmt == "parquet":
                yield from read_parquet(stream, file.shown)
            elif fmt == "csv":
                yield from read_csv(stream, file.shown)
            elif fmt == "json":
                yield from _load(stream, file)
            else:
                yield from read_jsonl(stream, file.shown)
        except (OSError, EOFError) as exc:
            # A truncated gzip, a dropped connection: say which file, not only what broke.
            raise InputError(f"reading {file.shown} failed: {type(exc).__name__}: {exc}") from None
        finally:
            stream.close()


class SizedSource(Source):
    """A :class:`Source` whose length is cheap and exact: Parquet files (their footers), JSON
    arrays (read whole anyway) and uncompressed local files (one counting pass, as the CLI
    always did for its ETA). ``run_batches`` gets ``len()`` from it; any other source is read
    as a generator is (pass ``total=`` for an ETA)."""

    _length: int | None = None

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(self._count(number, file) for number, file in enumerate(self.files))
        return self._length

    def _count(self, number: int, file: SourceFile) -> int:
        preloaded = self._preloaded.get(number)
        if preloaded is not None:
            return len(preloaded)
        fmt = self._formats[number]
        if fmt == "jsonl":
            with open(file.url, "rb") as lines:
                return sum(1 for line in lines if line.strip())
        stream = open_bytes(file, self._options, sequential=fmt != "parquet")
        try:
            if fmt == "parquet":
                return parquet_rows(stream, file.shown)
            return sum(1 for _ in read_csv(stream, file.shown))
        finally:
            stream.close()


def _load(stream: IO[bytes], file: SourceFile) -> list[Any]:
    return load_json_array(stream.read(), f"input {file.shown!r}", file.shown)


def _head(file: SourceFile, options: Mapping[str, Any]) -> bytes:
    stream = open_bytes(file, options)
    try:
        return stream.read(SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read input {file.shown!r}: {type(exc).__name__}: {exc}") from None
    finally:
        stream.close()


def _format_of(file: SourceFile, given: Format | None, options: Mapping[str, Any]) -> Format:
    if given is not None:
        return given
    by_extension = _EXTENSIONS.get(os.path.splitext(file.stem)[1].lower())
    if by_extension in ("jsonl", "csv", "parquet"):
        return by_extension
    head = _head(file, options)
    if head.startswith(MAGIC):
        return "parquet"
    detected = sniff(head)
    if by_extension == "json" and detected != "json":
        return "jsonl"  # a .json file of JSON lines
    return detected


def read(url_or_glob: str | os.PathLike[str], format: Format | None = None,  # noqa: A002 - the format
         **storage_options: Any) -> Source:
    """The records of a file, URL or glob, read lazily: ``for record in batchguard.read(...)``.

    * Locations: a local path, ``file://``, ``s3://``, ``gs://``, ``http(s)://`` (through fsspec,
      with ``storage_options`` passed to its filesystem: ``key=``, ``secret=``,
      ``endpoint_url=``...), and globs (``data/*.jsonl.gz``, ``s3://b/2024/**/*.parquet``), whose
      matches are read in sorted order.
    * Formats (``format=``, else from the extension, else from the first bytes): JSON lines, CSV
      with a header, a JSON array (read whole), Parquet (one row group at a time).
    * Compression from the extension: ``.gz``, ``.bz2``, ``.zst``.
    * A line that does not parse is yielded as an :class:`UnparsedLine`; the CLI dead-letters it.

    ``run_batches(src, fn, id_of=src.id_of)`` names each dead letter ``file:line`` or
    ``file#row``. ``len(src)`` exists only when it is cheap and exact (see :class:`SizedSource`).
    Raises InputError, before reading any record, when nothing matches or a file cannot be opened.
    """
    spec = os.fspath(url_or_glob)
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown input format {format!r}; use one of {', '.join(FORMATS)}")
    files = expand(spec, storage_options)
    formats = [_format_of(file, format, storage_options) for file in files]
    preloaded: dict[int, list[Any]] = {}
    for number, (file, fmt) in enumerate(zip(files, formats, strict=True)):
        if fmt == "json":
            stream = open_bytes(file, storage_options)
            try:
                preloaded[number] = _load(stream, file)
            finally:
                stream.close()
    sized = all(fmt in ("json", "parquet") or (not file.remote and file.compression is None)
                for file, fmt in zip(files, formats, strict=True))
    kind = SizedSource if sized else Source
    return kind(spec, files, formats, given=format, options=storage_options, preloaded=preloaded)
