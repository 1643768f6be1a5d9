"""Results sinks: where a run's successful values go instead of ``report.successful``.

``run_batches(records, fn, results=sink)`` hands each finished batch's successes to ``sink`` as
``(indices, values)``: the input positions of the batch's successful records, in order, and what
``fn`` returned for each. The run then keeps no values (``report.successful`` is empty), so its
memory does not grow with the input. A sink is

* any callable ``sink(indices, values)``;
* a writer from this module: :func:`jsonl` or :func:`parquet`, given a local path or an fsspec
  URL (``s3://bucket/out.jsonl.gz``);
* a URL or path string, whose format comes from its extension (``.jsonl``/``.ndjson``, or
  ``.parquet``/``.pq``) and its compression too (``.gz``, ``.bz2``, ``.zst``; JSON lines only),
  as :func:`batchguard.read` picks them;
* any object with ``open(append=...)``, ``write(indices, values)`` and ``close()``
  (:class:`ResultWriter`).

A writer is opened when the run starts (a resumed job's run appends), written once per batch on
the thread that called ``run_batches``, and closed when the run ends, however it ends: Ctrl-C
included. Closing flushes it, and fsyncs a local file. Files are created 0600.

A job (``job=``) also calls a writer's optional ``sync()`` before each checkpoint, and, when it
resumes, its optional ``trim(keep)`` before ``open(append=True)``: a local JSON lines file is
cut back past the last line of a checkpointed batch, so it holds each value once after a kill.
A writer whose ``durable_at_sync`` is False (a Parquet file, an object store URL: nothing is
readable before close) is refused for a job.

Each JSON line and each Parquet row is ``{"index": i, "value": v}``: the record's input position
and ``fn``'s value (the Parquet schema is inferred from the first batch with a success).

>>> import batchguard, json, pathlib, tempfile
>>> out = pathlib.Path(tempfile.mkdtemp(), "out.jsonl")
>>> batchguard.run_batches(range(3), lambda x: {"double": 2 * x}, results=str(out)).successful
[]
>>> json.loads(out.read_text().splitlines()[-1])
{'index': 2, 'value': {'double': 4}}
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import logging
import os
from collections.abc import Callable, Sequence
from typing import IO, Any, Final, Protocol, cast, runtime_checkable

import orjson

from ._files import FILE_MODE
from ._sink_resume import Damaged, resume_point
from ._urls import redact
from .errors import ConfigError, ConfigTypeError
from .sources.files import COMPRESSIONS, compression_of, is_remote

__all__ = ["FORMATS", "JsonLinesWriter", "ParquetWriter", "ResultWriter", "jsonl", "open_sink", "parquet"]

FORMATS: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
"""A sink URL's format, by its extension (after any compression extension)."""

logger = logging.getLogger("batchguard")

_ROW_GROUP: Final = 65_536
"""Rows buffered before a Parquet row group is written: a batch of 1000 per row group would make
a file that reads slowly; more would hold more values in memory."""


@runtime_checkable
class ResultWriter(Protocol):
    """A results sink the run opens, writes once per batch and closes (see the module doc)."""

    def open(self, *, append: bool) -> None:
        """Start a run's output; ``append``: a resumed job's run, which adds to what the
        earlier runs wrote."""
        ...

    def write(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        """One batch's successes: ``values[i]`` is what ``fn`` returned for record ``indices[i]``."""
        ...

    def close(self) -> None:
        """End the run's output: flushed, and durable once this returns."""
        ...


class _Output:
    """Bytes to a local path or an fsspec URL, compressed by the name's extension.

    Each write is one whole compressed member (gzip member, bzip2 stream, zstd frame; readers
    take concatenated members as one stream), compressed in memory and then written, to a
    local file straight to its descriptor, all of it or none: a write cut short by a full disk
    or a Ctrl-C is cut back off the file, so it never ends in a torn line or member, a write
    the recorder hands over again after an interrupt is there once, and what a kill leaves is
    whole members but the last, which :meth:`trim` cuts off before a resumed run appends. (A
    compressor streaming into the file is left garbled by an interrupt between its steps.)
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None) -> None:
        self.url = url
        self.shown = redact(url)
        self.storage_options = dict(storage_options or {})
        self.compression = compression_of(url)
        self._compress: Callable[[bytes], bytes] | None = None
        self.stream: IO[bytes] | None = None
        """The file as a byte stream (a Parquet writer writes to it; JSON lines go by write)."""
        self._fd: int | None = None
        self._size = 0  # a local file's length, all of it whole lines or members
        self._last: str | None = None  # the values last written (their records)

    def open(self, *, append: bool) -> IO[bytes]:
        self._compress = self._compressor()
        if is_remote(self.url):
            if append:
                # An object store cannot append: the earlier runs' object would be replaced.
                raise ConfigError(f"results sink {self.shown}: a resumed job cannot append to a "
                                  f"remote object; give the resumed run a new URL")
            self.stream = self._open_remote()
        else:
            path = self.url.removeprefix("file://")
            # O_APPEND even for a new file: a write cut back (ftruncate) leaves the offset
            # where it was, and the next write would leave a hole of zeros before it.
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
            try:
                self._fd = os.open(path, flags, FILE_MODE)
            except OSError as exc:
                raise ConfigError(f"results sink {path!r} cannot be opened for writing: "
                                  f"{exc.strerror or exc}") from None
            self.stream = os.fdopen(self._fd, "wb", closefd=True)
            self._size = os.fstat(self._fd).st_size
        self._last = None
        return self.stream

    def _compressor(self) -> Callable[[bytes], bytes] | None:
        if self.compression is None:
            return None
        if self.compression == "gzip":
            return lambda data: gzip.compress(data, mtime=0)
        if self.compression == "bz2":
            return bz2.compress
        try:
            import zstandard  # optional: only for a .zst sink
        except ModuleNotFoundError:
            raise ConfigError(f"writing {self.shown} (zstd) needs zstandard: pip install 'batchguard[zstd]'") from None
        return cast(Callable[[bytes], bytes], zstandard.ZstdCompressor().compress)

    def write(self, data: bytes, what: str) -> None:
        """Write ``data``, the values of ``what`` (named in an error), as one member; an
        OSError names the sink. The same ``what`` again right after a write that went
        through (the recorder hands over again a batch whose write an interrupt cut short
        after it was written) writes nothing."""
        if self._last == what:
            return
        member = data if self._compress is None else self._compress(data)
        try:
            if self._fd is not None:
                self._write_whole(self._fd, member, what)
            else:
                assert self.stream is not None
                self.stream.write(member)
                self._last = what
        except OSError as exc:
            raise _named(exc, self.shown, f"the values of {what} were not written") from exc

    def _write_whole(self, fd: int, data: bytes, what: str) -> None:
        # Straight to the descriptor (the buffered file over it stays empty): a buffer that
        # failed to flush would be written again, torn, when the file is closed.
        view, done, size = memoryview(data), 0, self._size
        try:
            while done < len(view):
                done += os.write(fd, view[done:])
            self._size, self._last = size + len(view), what  # one step: written and known so
        except BaseException:  # a full disk, or Ctrl-C: none of it, rather than a torn part
            if self._size == size:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            raise

    def _open_remote(self) -> IO[bytes]:
        try:
            import fsspec  # type: ignore[import-untyped,unused-ignore]  # optional: only for a URL
        except ModuleNotFoundError:
            raise ConfigError(f"writing {self.shown} needs fsspec: pip install 'batchguard[s3]'") from None
        try:
            stream: IO[bytes] = fsspec.open(self.url, "wb", **self.storage_options).open()
        except Exception as exc:  # noqa: BLE001 - any backend's error (credentials, network) says why
            raise ConfigError(f"results sink {self.shown} cannot be opened for writing: "
                              f"{type(exc).__name__}: {redact(str(exc))}") from None
        return stream

    def sync(self) -> None:
        """Make what was written so far durable: fsynced, for a local file; an object store's
        upload is only complete once closed, so for a URL this flushes."""
        if self._fd is not None:
            os.fsync(self._fd)
        elif self.stream is not None:
            self.stream.flush()

    def trim(self, keep: Callable[[int], bool]) -> None:
        """Before a resumed run appends to a local file: cut off its end past the last line
        (or compressed member) of a record ``keep`` says is done, so a batch the killed run
        wrote but never checkpointed, which the resumed run writes again, is not there twice,
        and a line or member a kill cut short is not followed by new ones (which would make
        the rest of the file unreadable). A URL, or a file not there, is left alone."""
        path = self.url.removeprefix("file://")
        if is_remote(self.url) or not os.path.isfile(path):
            return
        try:
            cut, size = resume_point(path, self.compression, keep)
        except OSError as exc:
            raise ConfigError(f"results sink {path!r} cannot be read to resume into: "
                              f"{exc.strerror or exc}") from None
        except Damaged as exc:
            raise ConfigError(f"results sink {path!r}: {exc}; resume into a new path") from None
        if cut < size:
            os.truncate(path, cut)
            logger.warning("results sink %s: cut its last %d bytes, values of batches the killed run "
                           "wrote but never checkpointed (the resumed run writes them again) or a "
                           "write the kill cut short", path, size - cut,
                           extra={"results_sink": path, "bytes_cut": size - cut})

    def close(self) -> None:
        """Flush and close the file; fsync a local one. A compressed file nothing was written
        to gets an empty member: an empty file is no valid gzip (or bzip2, zstd) stream."""
        stream = self.stream
        if stream is None:
            return
        try:
            if self._compress is not None and self._last is None and not self._size:
                self.write(b"", "no record")
            stream.flush()
            if self._fd is not None:
                os.fsync(self._fd)
        finally:
            self.stream = None
            self._fd = None
            stream.close()


class JsonLinesWriter:
    """Writes each success as a JSON line ``{"index": i, "value": v}`` (see :func:`jsonl`)."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None) -> None:
        self._out = _Output(url, storage_options)
        self.durable_at_sync = not is_remote(url)
        """Are the values written durable once :meth:`sync` returns (a job's checkpoint needs
        them to be)? A local file's are; an object store's upload completes only at close."""

    def __repr__(self) -> str:
        return f"batchguard.sinks.jsonl({self._out.shown!r})"

    def open(self, *, append: bool) -> None:
        self._out.open(append=append)

    def write(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        if self._out.stream is None:
            raise RuntimeError(f"{self!r} is not open: a run opens it")
        if not indices:
            return
        dumps = orjson.dumps
        try:
            # The line written around each value's own encoding: no {"index", "value"} dict per
            # record (a tenth of the cost of encoding one).
            chunk = b"".join([b'{"index":%d,"value":%b}\n' % (index, dumps(value))
                              for index, value in zip(indices, values, strict=True)])
        except TypeError:
            for index, value in zip(indices, values, strict=True):
                try:
                    dumps(value)
                except TypeError as exc:
                    raise TypeError(f"results sink {self._out.shown}: the value of record {index} cannot "
                                    f"be written as JSON ({exc}); return JSON-ready values from fn, or "
                                    f"pass a callable sink") from None
            raise
        self._out.write(chunk, f"records {indices[0]} to {indices[-1]}")

    def sync(self) -> None:
        """Make the lines written so far durable (a job calls it before each checkpoint)."""
        try:
            self._out.sync()
        except OSError as exc:
            raise _named(exc, self._out.shown, "the values written were not made durable") from exc

    def trim(self, keep: Callable[[int], bool]) -> None:
        """Before ``open(append=True)`` (a resumed job): cut off the file's end past the last
        line of a record ``keep`` says is done (its batch checkpointed); see the module doc."""
        self._out.trim(keep)

    def close(self) -> None:
        try:
            self._out.close()
        except OSError as exc:
            raise _named(exc, self._out.shown, "the last values may not be written") from exc


class ParquetWriter:
    """Writes the successes as Parquet rows ``index`` (int64) and ``value`` (see :func:`parquet`)."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None) -> None:
        if compression_of(url) is not None:
            raise ConfigError(f"results sink {redact(url)}: Parquet compresses its own pages; "
                              f"drop the {os.path.splitext(url)[1]} extension")
        self._out = _Output(url, storage_options)
        self._writer: Any = None
        self._schema: Any = None
        self._indices: list[int] = []
        self._columns: list[Any] = []  # each batch's values, an Arrow array of the file's type

    durable_at_sync = False
    """A Parquet file is readable only once its footer is written, at close."""

    def __repr__(self) -> str:
        return f"batchguard.sinks.parquet({self._out.shown!r})"

    def open(self, *, append: bool) -> None:
        if append:
            raise ConfigError(f"results sink {self._out.shown}: a Parquet file cannot be appended "
                              f"to; give the resumed run a new path, or use JSON lines")
        try:
            import pyarrow  # type: ignore[import-untyped,unused-ignore]  # noqa: F401  # optional: only for a Parquet sink
        except ModuleNotFoundError:
            raise ConfigError("a Parquet results sink needs pyarrow: pip install 'batchguard[parquet]'") from None
        self._out.open(append=False)
        self._writer = self._schema = None
        self._indices, self._columns = [], []

    def write(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        if not values:
            return
        # Made an Arrow column now, not when the row group is flushed: a value that does not
        # fit fails the run at its own batch, before the values buffered with it are lost.
        column = self._column(indices, values)  # before the append: it may replace _columns
        self._columns.append(column)
        self._indices.extend(indices)
        if len(self._indices) >= _ROW_GROUP:
            self._flush()

    def _column(self, indices: Sequence[int], values: Sequence[Any]) -> Any:
        """``values`` as an Arrow array of the file's value type (the first batch's, inferred).
        Each batch's type is inferred and then cast (see :func:`_misfit`), never converted to
        the file's type directly: pyarrow would turn 2.5 or a Decimal or a UUID into an int64
        (``__int__``) and drop a dict key the type lacks, silently."""
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]  # checked in open()

        which = f"records {indices[0]} to {indices[-1]}"
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise TypeError(f"results sink {self._out.shown}: the values of {which} have no Parquet "
                            f"type in common: {exc}") from None
        if self._schema is None:
            self._schema = pa.schema([("index", pa.int64()), ("value", column.type)])
            return column
        want = self._schema.field("value").type
        if column.type == want:
            return column
        if pa.types.is_null(want) and self._writer is None:
            # Only None so far, and no row group written: the type is the first real one's.
            self._columns = [held.cast(column.type) for held in self._columns]
            self._schema = pa.schema([("index", pa.int64()), ("value", column.type)])
            return column
        why = _misfit(column.type, want, "value")
        try:
            if why is not None:
                raise pa.ArrowInvalid(why)
            return column.cast(want, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise TypeError(f"results sink {self._out.shown}: the values of {which} ({column.type}) do "
                            f"not fit the schema of the first batch ({want}): {exc}") from None

    def _flush(self) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]  # checked in open()
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

        if not self._indices and self._writer is not None:
            return
        if self._schema is None:  # a run with no success: an empty file with a null value column
            self._schema = pa.schema([("index", pa.int64()), ("value", pa.null())])
        value_type = self._schema.field("value").type
        values = pa.concat_arrays(self._columns) if self._columns else pa.array([], value_type)
        table = pa.Table.from_arrays([pa.array(self._indices, pa.int64()), values], schema=self._schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._out.stream, self._schema)
        self._writer.write_table(table)
        self._indices, self._columns = [], []

    def close(self) -> None:
        try:
            if self._out.stream is not None:
                self._flush()
                if self._writer is not None:
                    self._writer.close()  # the footer; the stream under it stays open
        except OSError as exc:
            raise _named(exc, self._out.shown, "the values may not be written") from exc
        finally:
            self._writer = None
            self._out.close()


def _misfit(got: Any, want: Any, path: str) -> str | None:
    """Why values of Arrow type ``got`` cannot be cast to ``want`` without changing them, or
    None. Numbers cast to numbers (the safe cast then refuses 2.5 as an int64) and a struct may
    lack fields (null); nothing else changes type: pyarrow would parse "5" as an int64, and
    drop a struct field ``want`` lacks, without a word."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]  # a Parquet sink's

    types = pa.types
    if got == want or types.is_null(got):
        return None
    if all(types.is_integer(t) or types.is_floating(t) for t in (got, want)):
        return None
    if types.is_struct(got) and types.is_struct(want):
        names = {want.field(i).name for i in range(want.num_fields)}
        for i in range(got.num_fields):
            field = got.field(i)
            if field.name not in names:
                return f"{path}.{field.name} is not in it"
            why = _misfit(field.type, want.field(field.name).type, f"{path}.{field.name}")
            if why is not None:
                return why
        return None
    if all(types.is_list(t) or types.is_large_list(t) for t in (got, want)):
        return _misfit(got.value_type, want.value_type, f"{path}[]")
    return f"{path} is {got}"

class _CallableSink:
    """A plain callable ``sink(indices, values)``: nothing to open or close."""

    def __init__(self, func: Callable[[Sequence[int], Sequence[Any]], Any]) -> None:
        self.func = func

    def __repr__(self) -> str:
        return repr(self.func)

    def open(self, *, append: bool) -> None:
        pass

    def write(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        self.func(indices, values)

    def close(self) -> None:
        pass


def _named(exc: OSError, shown: str, what: str) -> OSError:
    """``exc`` (a full disk, a lost connection) saying which sink and what it means."""
    if (exc.strerror or "").startswith("results sink "):
        return exc
    return OSError(exc.errno, f"results sink {shown}: {what}: {exc.strerror or exc}")


def jsonl(path_or_url: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None) -> JsonLinesWriter:
    """A sink writing JSON lines to a local path or an fsspec URL, compressed by its extension
    (``.gz``, ``.bz2``, ``.zst``). ``storage_options`` go to fsspec (credentials, endpoint)."""
    return JsonLinesWriter(os.fspath(path_or_url), storage_options=storage_options)


def parquet(path_or_url: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None) -> ParquetWriter:
    """A sink writing a Parquet file (pyarrow) to a local path or an fsspec URL; its schema is
    inferred from the first batch with a success, and every later batch must fit it."""
    return ParquetWriter(os.fspath(path_or_url), storage_options=storage_options)


def open_sink(url: str, *, storage_options: dict[str, Any] | None = None) -> ResultWriter:
    """The writer for ``url``, its format from the extension (see :data:`FORMATS`)."""
    name = url.split("?", 1)[0].rstrip("/")
    root, ext = os.path.splitext(name)
    if ext.lower() in COMPRESSIONS:
        root, ext = os.path.splitext(root)
    kind = FORMATS.get(ext.lower())
    if kind is None and name.isalpha():  # a word, not a path: a mode mistyped
        raise ConfigError(f'results="{name}" is neither "keep" nor "drop" (lower case), nor a path or URL '
                          f"with a known extension ({', '.join(sorted(FORMATS))})")
    if kind is None:
        known = ", ".join(sorted(FORMATS))
        raise ConfigError(f"results sink {redact(url)!r}: cannot tell its format from the extension "
                          f"{ext or '(none)'!r}; use one of {known} (with .gz, .bz2 or .zst for JSON lines)")
    if kind == "parquet":
        return parquet(url, storage_options=storage_options)
    return jsonl(url, storage_options=storage_options)


def as_writer(sink: Any) -> ResultWriter:
    """``results=``'s sink as a writer: a URL opened by :func:`open_sink`, a callable wrapped; a
    writer as it is. ConfigTypeError for anything else."""
    if isinstance(sink, (str, os.PathLike)):
        return open_sink(os.fspath(sink))
    if isinstance(sink, ResultWriter):
        return sink
    if callable(sink):
        return _CallableSink(sink)
    raise ConfigTypeError(f'results must be "keep", "drop", a callable sink(indices, values), a '
                          f"writer (batchguard.sinks) or a URL, got {type(sink).__name__}")

