"""Dead-lettered records counted by error type name, in bounded memory.

A run can raise any number of distinct exception types (classes made at run time, one per
tenant, say): ``report.errors_by_type`` keeps the most frequent :data:`MAX_ERROR_TYPES` of
them and counts the rest under :data:`~.patterns.OTHER_TYPE`, as the failure patterns do.

>>> counter = TypeCounter(cap=2)
>>> for name in ["KeyError", "ValueError", "KeyError", "OSError", "KeyError", "ValueError"]:
...     counter.add(name)
>>> counter.most_common()
[('KeyError', 3), ('ValueError', 2), ('(other)', 1)]
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Final

from .patterns import OTHER_TYPE

__all__ = ["MAX_ERROR_TYPES", "TypeCounter", "bounded_type_counts"]

MAX_ERROR_TYPES: Final = 100
"""Error types a report names (the rest are counted as "other"), as patterns.MAX_PATTERNS."""


class TypeCounter:
    """Counts names, holding at most twice ``cap`` of them: when that many are held, the
    ``cap`` most frequent stay and the others' counts go to "other" (the earlier-seen name
    first among equal counts). So a type that is frequent overall stays, whatever order the
    failures come in, at an amortised O(log cap) per name.

    The total is exact. A kept name's count is exact unless the name was folded into "other"
    once and came back (then its count is what came after): with fewer than ``cap`` distinct
    names nothing is ever folded."""

    __slots__ = ("_cap", "_counts", "other")

    def __init__(self, *, cap: int = MAX_ERROR_TYPES) -> None:
        self._cap = cap
        self._counts: dict[str, int] = {}
        self.other = 0
        """Records whose type was folded away."""

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, name: str, count: int = 1) -> None:
        """Count ``count`` records of type ``name``."""
        if name not in self._counts and len(self._counts) >= 2 * self._cap:
            self._fold()  # a new dict
        counts = self._counts
        counts[name] = counts.get(name, 0) + count

    def update(self, names: Iterable[str]) -> None:
        """Count one record for each name."""
        for name in names:
            self.add(name)

    def _fold(self) -> None:
        ranked = sorted(self._counts.items(), key=lambda item: -item[1])
        self.other += sum(count for _, count in ranked[self._cap:])
        self._counts = dict(ranked[:self._cap])

    def most_common(self) -> list[tuple[str, int]]:
        """The ``cap`` most frequent names with their counts, most first, then "other" (the
        rest, when there is any)."""
        ranked = sorted(self._counts.items(), key=lambda item: -item[1])
        kept = ranked[:self._cap]
        other = self.other + sum(count for _, count in ranked[self._cap:])
        if not other:
            return kept
        # A type really named "(other)" joins the rest rather than standing beside it.
        other += sum(count for name, count in kept if name == OTHER_TYPE)
        return [(name, count) for name, count in kept if name != OTHER_TYPE] + [(OTHER_TYPE, other)]

    def counter(self) -> collections.Counter[str]:
        """:meth:`most_common` as a Counter (what a failure store's ``type_counts`` gives)."""
        return collections.Counter(dict(self.most_common()))


def bounded_type_counts(names: Iterable[str], *, cap: int = MAX_ERROR_TYPES) -> collections.Counter[str]:
    """``names`` counted by a :class:`TypeCounter`: the ``cap`` most frequent, and "other"."""
    counter = TypeCounter(cap=cap)
    counter.update(names)
    return counter.counter()
