"""A job's input fingerprint: a hash of its first batch, the same in every process, and for a
:class:`batchguard.Source` the path, size and version (ETag or mtime) of each of its files."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from ..sources import Source

__all__ = ["FINGERPRINT_VERSION", "changed_file", "fingerprint_records", "first_batch", "input_files",
           "same_records"]

FINGERPRINT_VERSION: Final = "v1"
_FILES: Final = "+files:"

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 32


def _canonical(value: Any, depth: int = 0) -> Any:
    """A JSON-ready form of ``value`` that is the same in every process for equal records."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > _MAX_DEPTH:
        return _stable_repr(value)
    if isinstance(value, Mapping):
        pairs = [(_canonical(k, depth + 1), _canonical(v, depth + 1)) for k, v in value.items()]
        # Sorted by the keys' JSON so that dicts equal but built in another order agree.
        pairs.sort(key=lambda kv: json.dumps(kv[0], sort_keys=True, default=str))
        return {"__map__": pairs}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        # A set's iteration order changes with PYTHONHASHSEED: sort the members' JSON.
        return {"__set__": sorted(json.dumps(_canonical(v, depth + 1), sort_keys=True) for v in value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": bytes(value).hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__qualname__,
                "fields": {f.name: _canonical(getattr(value, f.name), depth + 1)
                           for f in dataclasses.fields(value)}}
    return {"__type__": f"{type(value).__module__}.{type(value).__qualname__}",
            "repr": _stable_repr(value)}


def _stable_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not stop the job
        text = "<unrepresentable>"
    return _ADDRESS.sub("", text)


def fingerprint_records(first_batch: Iterable[Any], files: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The input fingerprint of a job: sha256 over the canonical JSON of its first batch, and,
    with ``files`` (:func:`input_files`: a source's files), over each file's path, size and
    version, so a file changed after the first batch is caught too.

    It is cheap (one batch, however long the input) and the same for a list, a generator or
    the CLI reading the same data. What it can detect: a different source (other first
    records), records edited or reordered within the first batch. What it cannot: changes
    after the first batch. The job also compares the input's length when both runs know it
    (``len()`` works), and its ``batch_size`` and ``stage``, with their own messages.

    >>> fingerprint_records([{"id": 1}, {"id": 2}]) == fingerprint_records([{"id": 1}, {"id": 2}])
    True
    >>> fingerprint_records([{"id": 1}]) == fingerprint_records([{"id": 2}])
    False
    """
    digest = hashlib.sha256(f"batchguard-input-{FINGERPRINT_VERSION}\0".encode())
    count = 0
    for record in first_batch:
        digest.update(json.dumps(_canonical(record), sort_keys=True, ensure_ascii=False,
                                 separators=(",", ":")).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
        count += 1
    text = f"{FINGERPRINT_VERSION}:{count}:{digest.hexdigest()}"
    if files is not None:
        listing = json.dumps(list(files), sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
        text += f"{_FILES}{hashlib.sha256(listing).hexdigest()[:32]}"
    return text


def input_files(records: object) -> list[dict[str, Any]] | None:
    """What a job's fingerprint keeps of its input's files: a :class:`batchguard.Source`'s
    manifest (each file's absolute path or redacted URL, size, ETag or mtime); None for any other
    input (a list, a generator), which is fingerprinted by its first batch alone."""
    return records.manifest() if isinstance(records, Source) else None


def same_records(saved: str, now: str) -> tuple[bool, bool]:
    """Do two fingerprints agree on the first batch, and (when both have them) on the files?

    A fingerprint saved before files were fingerprinted agrees with any files: that job resumes.
    """
    saved_records, _, saved_files = saved.partition(_FILES)
    records, _, files = now.partition(_FILES)
    return saved_records == records, not saved_files or not files or saved_files == files


def changed_file(saved: Sequence[Mapping[str, Any]] | None, now: Sequence[Mapping[str, Any]]) -> str:
    """How the input's files changed since ``saved`` (a job's ``input_files``): the first file
    added, removed, or of another size or version.

    >>> changed_file([{"file": "a", "size": 1, "version": "x"}], [{"file": "a", "size": 2, "version": "y"}])
    'a changed (size 1 -> 2, version x -> y)'
    """
    if not saved:
        return "its files changed"
    before = {str(f["file"]): f for f in saved}
    after = {str(f["file"]): f for f in now}
    for name, file in after.items():
        old = before.get(name)
        if old is None:
            return f"{name} was added"
        if old.get("size") != file.get("size") or old.get("version") != file.get("version"):
            how = [f"{key} {old.get(key)} -> {file.get(key)}" for key in ("size", "version")
                   if old.get(key) != file.get(key)]
            return f"{name} changed ({', '.join(how)})"
    gone = [name for name in before if name not in after]
    return f"{gone[0]} is gone" if gone else "its files changed"


def first_batch(records: Iterable[Any], batch_size: int) -> tuple[Iterable[Any], list[Any]]:
    """The first batch, and ``records`` still whole (a generator's first batch is chained back)."""
    if isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
        return records, list(records[:batch_size])
    iterator = iter(records)
    first = list(itertools.islice(iterator, batch_size))
    return itertools.chain(first, iterator), first
