"""Keyed ordering (``key_of``): records with the same key run one at a time, in input order
(twin of ``src/engine/keys.rs``)."""

from __future__ import annotations

import collections

from .work import Work


class KeyFailed:
    """``key_of`` raised for a record: it is dead-lettered with that error, never run."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Keys:
    """The keys in progress, the records waiting for them, and the keys that could not be
    computed."""

    __slots__ = ("_active", "_errors", "_unblocked")

    def __init__(self) -> None:
        # Keyed records whose turn came (their key's previous record is final).
        self._unblocked: collections.deque[Work] = collections.deque()
        # key -> records of that key waiting for the one in progress; present while active.
        self._active: dict[int, collections.deque[Work]] = {}
        # Record index -> the error computing its key raised.
        self._errors: dict[int, BaseException] = {}

    def key_failed(self, index: int, error: BaseException) -> None:
        """Computing the key of record ``index`` raised ``error``."""
        self._errors[index] = error

    def take_error(self, index: int) -> BaseException | None:
        """The error computing record ``index``'s key raised, if it did."""
        return self._errors.pop(index, None) if self._errors else None

    def is_active(self, key: int) -> bool:
        """Is a record with this key in progress?"""
        return key in self._active

    def activate(self, key: int) -> None:
        """A record of ``key`` starts."""
        self._active[key] = collections.deque()

    def wait(self, work: Work) -> None:
        """Queue ``work`` behind the record of its (active) key in progress."""
        assert work.key is not None
        self._active[work.key].append(work)

    def release(self, key: int) -> None:
        """A record of ``key`` is final: the next one of that key may run."""
        waiting = self._active[key]
        if waiting:
            self._unblocked.append(waiting.popleft())
        else:
            del self._active[key]

    def has_unblocked(self) -> bool:
        return bool(self._unblocked)

    def pop_unblocked(self) -> Work:
        return self._unblocked.popleft()

    def queued(self) -> int:
        """Records that wait for their key's turn, or whose turn came."""
        blocked = sum(len(q) for q in self._active.values()) if self._active else 0
        return len(self._unblocked) + blocked

    def clear(self) -> None:
        """Drop every queued record (end of run: they are pending)."""
        self._unblocked.clear()
        self._active.clear()
