"""Where a source's bytes come from: a path, a URL or a glob expanded to files, each opened and
decompressed by its extension.

Local paths (and ``file://``) are read with the standard library; any other URL through fsspec,
which is imported only then (``pip install 'batchguard[s3]'`` for ``s3://``, ``[gcs]`` for
``gs://``, ``[http]`` for ``http(s)://``): a CLI run over a local file never pays its import.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Final

from .._urls import redact
from ..errors import InputError

__all__ = ["COMPRESSIONS", "SourceFile", "compression_of", "expand", "is_remote", "open_bytes", "scrub"]

COMPRESSIONS: Final = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
_GLOB: Final = re.compile(r"[*?\[]")
_SCHEME: Final = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_REMOTE_EXTRA: Final = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
# Which key of fsspec's info() names a version of the object, by backend: S3's ETag, GCS's
# generation and etag, a local or HTTP file's mtime / Last-Modified.
_VERSION_KEYS: Final = ("ETag", "etag", "generation", "mtime", "LastModified", "last_modified", "updated")
_READ_BLOCK: Final = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: ``url`` to open it (may hold secrets: never shown), ``shown`` (the
    name records' ids and messages use: a URL redacted, a local path made absolute), ``size``
    in bytes and ``version`` (ETag or mtime), ``compression`` (None, gzip, bz2, zstd) from its
    extension."""

    url: str = field(repr=False)
    shown: str
    size: int
    version: str
    compression: str | None
    remote: bool

    @property
    def stem(self) -> str:
        """The name without its compression extension (``a.jsonl`` for ``a.jsonl.gz``)."""
        name = self.url.split("?", 1)[0].rstrip("/")
        root, ext = os.path.splitext(name)
        return root if ext.lower() in COMPRESSIONS else name


def is_remote(spec: str) -> bool:
    """Is ``spec`` a URL other than ``file://`` (read through fsspec)?"""
    return _SCHEME.match(spec) is not None and not spec.startswith("file://")


def scrub(text: str, secrets: Mapping[str, Any]) -> str:
    """``text`` with every string storage option (a key, a secret, a token) replaced by ``***``."""
    for value in secrets.values():
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def compression_of(name: str) -> str | None:
    """The compression a file or URL's extension names (a :data:`COMPRESSIONS` value), or None:
    what sources read and results sinks (``batchguard.sinks``) write alike."""
    return COMPRESSIONS.get(os.path.splitext(name.split("?", 1)[0])[1].lower())


def expand(spec: str, options: Mapping[str, Any]) -> list[SourceFile]:
    """The files ``spec`` names, in sorted order (a glob's matches sorted by path), or InputError."""
    if is_remote(spec):
        return _expand_remote(spec, options)
    path = spec.removeprefix("file://")
    if _GLOB.search(path):
        matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not matches:
            raise InputError(f"no file matches {spec!r}")
    else:
        if os.path.isdir(path):
            raise InputError(f"cannot read input {spec!r}: it is a directory")
        matches = [path]
    files = []
    for match in matches:
        try:
            stat = os.stat(match)
            with open(match, "rb"):
                pass
        except OSError as exc:
            raise InputError(f"cannot read input {match!r}: {exc.strerror or exc}") from None
        # Shown (in ids, in the DLQ) by its absolute path: the same whichever directory a job is
        # resumed from, as `batchguard jobs resume` does from the path the job saved.
        files.append(SourceFile(match, os.path.abspath(match), stat.st_size, str(stat.st_mtime_ns),
                                compression_of(match), False))
    return files


def _filesystem(spec: str, options: Mapping[str, Any]) -> tuple[Any, str]:
    scheme = spec.split("://", 1)[0].lower()
    try:
        import fsspec  # type: ignore[import-untyped,unused-ignore]  # optional and slow to import: only for a URL
    except ModuleNotFoundError:
        extra = _REMOTE_EXTRA.get(scheme, "s3")
        raise InputError(f"reading {scheme}:// needs fsspec: pip install 'batchguard[{extra}]'") from None
    try:
        fs, path = fsspec.core.url_to_fs(spec, **options)
    except (ImportError, ValueError) as exc:
        needed = _REMOTE_EXTRA.get(scheme)
        hint = f" (pip install 'batchguard[{needed}]')" if needed else ""
        raise InputError(f"cannot read {scheme}:// URLs: {scrub(str(exc), options)}{hint}") from None
    return fs, path


def _expand_remote(spec: str, options: Mapping[str, Any]) -> list[SourceFile]:
    shown_spec = redact(spec)
    fs, path = _filesystem(spec, options)
    try:
        # A source's files are fixed when it is made: from a fresh listing, not one fsspec cached
        # for an earlier source (an object rewritten since would keep its old size and ETag).
        fs.invalidate_cache()
        if _GLOB.search(path) and not spec.startswith(("http://", "https://")):
            infos = fs.glob(path, detail=True)
            found = sorted((info for info in infos.values() if info.get("type", "file") == "file"),
                           key=lambda info: str(info["name"]))
            if not found:
                raise InputError(f"no file matches {shown_spec!r}")
        else:
            info = fs.info(path)
            if info.get("type") == "directory":
                raise InputError(f"cannot read input {shown_spec!r}: it is a directory (use a glob: "
                                 f"{shown_spec.rstrip('/')}/*)")
            found = [info]
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"cannot read input {shown_spec!r}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any backend's error (credentials, network) says why
        message = scrub(f"{type(exc).__name__}: {exc}", options).replace(spec, shown_spec)
        raise InputError(f"cannot read input {shown_spec!r}: {message}") from None
    files = []
    for info in found:
        url = spec if len(found) == 1 and not _GLOB.search(path) else fs.unstrip_protocol(str(info["name"]))
        version = next((str(info[key]) for key in _VERSION_KEYS if info.get(key) is not None), "")
        size = info.get("size")
        files.append(SourceFile(url, redact(url), -1 if size is None else int(size), version,
                                compression_of(url), True))
    return files


class _Owning(io.BufferedReader):
    """A decompressing stream that closes the file under it too (GzipFile and BZ2File given a
    file object leave it open), read through a C buffer (fast line iteration)."""

    def __init__(self, stream: Any, under: IO[bytes]) -> None:
        super().__init__(stream, _READ_BLOCK)
        self._under = under

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._under.close()


def open_bytes(file: SourceFile, options: Mapping[str, Any], *, sequential: bool = True) -> IO[bytes]:
    """``file``'s bytes, decompressed by its extension. ``sequential=False``: the raw bytes with
    random access (Parquet reads its footer first, then the column chunks it needs)."""
    raw: IO[bytes]
    try:
        if file.remote:
            fs, path = _filesystem(file.url, options)
            # No read-ahead cache (s3fs keeps 50 MB blocks by default): the buffer below reads
            # 1 MB ranges in order, and Parquet asks for the column chunks it needs.
            if sequential and file.url.startswith(("http://", "https://")):
                raw = fs.open(path, "rb", block_size=0)  # streamed: no Range requests needed
            else:
                raw = fs.open(path, "rb", cache_type="none")
        else:
            raw = open(file.url, "rb")  # closed by the reader that owns it
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any backend's error says why
        message = scrub(f"{type(exc).__name__}: {exc}", options).replace(file.url, file.shown)
        raise InputError(f"cannot open {file.shown!r}: {message}") from None
    if not sequential:
        return raw
    if file.remote and not isinstance(raw, io.BufferedReader):
        raw = io.BufferedReader(raw, _READ_BLOCK)  # type: ignore[type-var]
    if file.compression is None:
        return raw
    if file.compression == "gzip":
        return _Owning(gzip.GzipFile(fileobj=raw, mode="rb"), raw)
    if file.compression == "bz2":
        return _Owning(bz2.BZ2File(raw), raw)
    try:
        import zstandard  # optional: only for a .zst file
    except ModuleNotFoundError:
        raw.close()
        raise InputError(f"reading {file.shown} (zstd) needs zstandard: pip install 'batchguard[zstd]'") from None
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
    return io.BufferedReader(reader, _READ_BLOCK)
