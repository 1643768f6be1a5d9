"""Shared helpers for the resumable-job tests: a callback whose failures are known in advance,
and another process that holds a job's lock."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator


class Work:
    """Fails (ValueError, PERMANENT) for records 3, 13, 23... and those in ``also_fail``; fatal
    (MemoryError) at ``fatal_at``; a KeyboardInterrupt at ``interrupt_at``; sleeps ``slow``
    seconds a call. Returns ``x * 2`` and remembers every record it was given, from any thread."""

    def __init__(self, *, fatal_at: int | None = None, also_fail: frozenset[int] = frozenset(),
                 interrupt_at: int | None = None, slow: float = 0.0) -> None:
        self.fatal_at = fatal_at
        self.slow = slow
        self.also_fail = also_fail
        self.interrupt_at = interrupt_at
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self._lock:
            self.calls.append(x)
        if self.slow:
            time.sleep(self.slow)
        if x == self.fatal_at:
            raise MemoryError(f"fatal at {x}")
        if x == self.interrupt_at:
            raise KeyboardInterrupt
        if x % 10 == 3 or x in self.also_fail:
            raise ValueError(f"bad record {x}")
        return x * 2


HOLDER = textwrap.dedent("""
    import sys
    from batchguard.jobs import open_job_store
    store = open_job_store(sys.argv[1])
    with store.claim(sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()
""")


@contextlib.contextmanager
def held_elsewhere(store_url: str, job: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the job's lock until the block ends."""
    with subprocess.Popen([sys.executable, "-c", HOLDER, store_url, job], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            yield proc
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
