"""A job's input fingerprint: a hash of its first batch, the same in every process."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = ["FINGERPRINT_VERSION", "fingerprint_records", "first_batch"]

FINGERPRINT_VERSION: Final = "v1"

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


def fingerprint_records(first_batch: Iterable[Any]) -> str:
    """The input fingerprint of a job: sha256 over the canonical JSON of its first batch.

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
    return f"{FINGERPRINT_VERSION}:{count}:{digest.hexdigest()}"


def first_batch(records: Iterable[Any], batch_size: int) -> tuple[Iterable[Any], list[Any]]:
    """The first batch, and ``records`` still whole (a generator's first batch is chained back)."""
    if isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
        return records, list(records[:batch_size])
    iterator = iter(records)
    first = list(itertools.islice(iterator, batch_size))
    return itertools.chain(first, iterator), first
