"""Where a resumed job appends to its JSON lines results file (``batchguard.sinks``): past
the last line, or compressed member, of a batch the job checkpointed. What lies beyond is a
batch the killed run wrote but never checkpointed (the resumed run writes it again) or a line or
member the kill cut short; cutting it off keeps each value once and the file readable.
"""

from __future__ import annotations

import bz2
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Final

__all__ = ["Damaged", "resume_point"]

class Damaged(Exception):
    """A file a resumed run cannot append to without losing values (see :func:`resume_point`)."""


_INDEX: Final = re.compile(rb'{"index":(\d+),')
"""The record index at the start of a line the JSON lines sink wrote."""

_CHUNK: Final = 1 << 16


def _index_of(line: bytes) -> int | None:
    found = _INDEX.match(line)
    return None if found is None else int(found.group(1))


def resume_point(path: str, compression: str | None, keep: Callable[[int], bool]) -> tuple[int, int]:
    """``(cut, size)``: where a resumed run's appends should start in ``path`` (see
    :meth:`batchguard.sinks.JsonLinesWriter.trim`), and the file's size. Lines (members) of
    records not kept are dropped only from the end; a line the sink did not write is kept."""
    size = os.path.getsize(path)
    cut = 0
    if compression is None:
        with open(path, "rb") as file:
            offset = 0
            for line in file:
                offset += len(line)
                index = _index_of(line)
                if line.endswith(b"\n") and (index is None or keep(index)):
                    cut = offset
        return cut, size
    for end, head, whole in _members(path, compression):
        index = _index_of(head)
        if whole and (index is None or keep(index)):
            cut = end
        elif index is not None and keep(index):
            # A torn member with a checkpointed batch's values: written whole as one member
            # (before the per-sync members), so cutting it would lose them.
            raise Damaged(f"its compressed stream is cut short (a killed run) within values of "
                           f"batches already finished (record {index})")
    return cut, size


def _members(path: str, compression: str) -> Iterator[tuple[int, bytes, bool]]:
    """Each compressed member of ``path`` in turn: ``(its end offset, the start of its text,
    whole)``; the last one may be torn (``whole`` False), or garbled (read as torn)."""
    errors: tuple[type[BaseException], ...] = (zlib.error, OSError, EOFError, ValueError)
    if compression == "zstd":
        import zstandard  # optional: only for a .zst sink

        errors = (*errors, zstandard.ZstdError)
    with open(path, "rb") as file:
        start, carry = 0, b""
        while True:
            decompressor: Any
            if compression == "gzip":
                decompressor = zlib.decompressobj(wbits=31)
            elif compression == "bz2":
                decompressor = bz2.BZ2Decompressor()
            else:
                decompressor = zstandard.ZstdDecompressor().decompressobj()
            used, head, whole = 0, b"", False
            while not whole:
                data, carry = carry or file.read(_CHUNK), b""
                if not data:
                    break
                try:
                    text = decompressor.decompress(data)
                except errors:
                    break
                if len(head) < 256:
                    head += text[:256]
                if decompressor.eof:
                    carry = decompressor.unused_data
                    whole = True
                used += len(data) - len(carry)
            if not used:
                return
            start += used
            yield start, head, whole
            if not whole:
                return
