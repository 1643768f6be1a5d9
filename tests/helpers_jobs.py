"""Shared helpers for the resumable-job tests: a callback whose failures are known in advance,
and another process that holds a job's lock."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator


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
