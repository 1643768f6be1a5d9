"""The seed-compatible batching helpers: ``calculate_batch_size`` and ``create_batches``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from .errors import ConfigError

__all__ = ["Batch", "calculate_batch_size", "create_batches"]

T = TypeVar("T")


def calculate_batch_size(total_items: int, max_batch_size: int = 32) -> int:
    """The batch size the seed's heuristic picks for ``total_items``.

    0 -> 1; up to 100 -> all of them (capped at ``max_batch_size``); up to 1000 -> about ten
    batches (``total // 10``, capped); more -> ``max_batch_size``.

    >>> calculate_batch_size(50), calculate_batch_size(500, 100), calculate_batch_size(10**6)
    (32, 50, 32)
    """
    if isinstance(total_items, bool) or not isinstance(total_items, int):
        raise TypeError(f"total_items must be an int, got {type(total_items).__name__}")
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
        raise TypeError(f"max_batch_size must be an int, got {type(max_batch_size).__name__}")
    if total_items < 0:
        raise ConfigError(f"total_items must be >= 0, got {total_items}")
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if total_items == 0:
        return 1
    if total_items <= 100:
        return min(total_items, max_batch_size)
    if total_items <= 1000:
        return min(total_items // 10, max_batch_size)
    return max_batch_size


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """A slice of the input with its position, as ``create_batches`` makes it.

    ``metadata`` holds ``created_at`` (ISO 8601, UTC), ``count``, ``start_index`` and
    ``end_index`` (exclusive), so a batch can be found again in the input.
    """

    items: list[T]
    batch_index: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def start_index(self) -> int:
        return int(self.metadata["start_index"])

    @property
    def end_index(self) -> int:
        return int(self.metadata["end_index"])


def create_batches(items: Sequence[T], batch_size: int | None = None) -> list[Batch[T]]:
    """Partition ``items`` into ordered batches (``calculate_batch_size`` when no size is given).

    >>> [len(b) for b in create_batches(list(range(10)), batch_size=3)]
    [3, 3, 3, 1]
    """
    items = list(items)
    if not items:
        raise ConfigError("create_batches: items is empty; there is nothing to partition")
    if batch_size is None:
        batch_size = calculate_batch_size(len(items))
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int or None, got {type(batch_size).__name__}")
    elif batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    created_at = datetime.now(UTC).isoformat()
    batches = []
    for batch_index, start in enumerate(range(0, len(items), batch_size)):
        chunk = items[start:start + batch_size]
        batches.append(Batch(chunk, batch_index, {
            "created_at": created_at,
            "count": len(chunk),
            "start_index": start,
            "end_index": start + len(chunk),
        }))
    return batches
