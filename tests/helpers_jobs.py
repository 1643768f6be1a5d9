"""Shared helpers for the resumable-job tests: one callback whose failures are known in advance."""

from __future__ import annotations

import threading


class Work:
    """Fails (ValueError, PERMANENT) for records 3, 13, 23...; fatal (MemoryError) at
    ``fatal_at``; remembers every record it was given, from any thread."""

    def __init__(self, *, fatal_at: int | None = None) -> None:
        self.fatal_at = fatal_at
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self._lock:
            self.calls.append(x)
        if x == self.fatal_at:
            raise MemoryError(f"fatal at {x}")
        if x % 10 == 3:
            raise ValueError(f"bad record {x}")
        return x
