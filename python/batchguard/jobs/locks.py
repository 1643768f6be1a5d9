"""Who may run a job: in-process claims, and per-job POSIX record locks on a side file.

A job runs in one place at a time. Two runs in one process meet in :func:`in_process_claim`;
runs in other processes meet on the lock file (SQLite stores) or a session advisory lock
(PostgreSQL stores). The kernel and the server drop those when a process dies, SIGKILL
included, so a crashed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Final

from .._files import FILE_MODE
from ..errors import JobError

__all__ = ["LockFile", "claim_attempts", "held_here", "in_process_claim", "initialising"]

# struct flock on Linux (x86-64 and aarch64 alike): l_type, l_whence (short), l_start, l_len
# (off_t), l_pid (pid_t), padded to 32 bytes. Elsewhere the holder is not looked up.
_FLOCK: Final = "hhqqi4x"

_held_lock = threading.Lock()
_held: set[tuple[str, str]] = set()


@contextlib.contextmanager
def in_process_claim(scope: str, job: str, where: str) -> Iterator[None]:
    """Two runs of one job in one process: the OS locks below cannot see those."""
    key = (scope, job)
    with _held_lock:
        if key in _held:
            raise JobError(f"job {job!r} is already running in this process ({where})")
        _held.add(key)
    try:
        yield
    finally:
        with _held_lock:
            _held.discard(key)


def held_here(scope: str, job: str) -> bool:
    """Whether a run of this process holds ``job`` in ``scope`` (a store's identity)."""
    with _held_lock:
        return (scope, job) in _held


def _lock_offset(job: str) -> int:
    # One byte per job in a shared lock file; 2**48 slots make a collision negligible.
    return int.from_bytes(hashlib.sha256(job.encode("utf-8", "surrogatepass")).digest()[:6], "big")


class LockFile:
    """Per-job advisory locks as POSIX record locks on one byte each of a side file.

    The kernel drops them when the process dies, SIGKILL included, so a crashed run never
    leaves a stale lock. POSIX locks belong to the process and vanish when *any* descriptor of
    the file closes, so one descriptor per file is shared by every store of the process. (For
    the same reason the locks are not taken on the database file itself: SQLite's connections
    open and close it, which would drop them, and the locks SQLite holds there too.) The file is
    named after the store's resolved path, so every path to the store meets the same locks.
    """

    _lock = threading.Lock()
    _files: ClassVar[dict[str, tuple[int, int]]] = {}  # path -> (fd, users)

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        with LockFile._lock:
            fd, users = LockFile._files.get(self.path, (-1, 0))
            if fd < 0:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)  # private, like the store it guards
            LockFile._files[self.path] = (fd, users + 1)
        self._fd = fd
        self._closed = False
        try:
            import fcntl  # noqa: F401 - POSIX only; elsewhere only in-process claims apply
        except ImportError:
            self.posix = False
        else:
            self.posix = True

    def try_lock(self, job: str) -> bool:
        import fcntl

        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _lock_offset(job))
        except OSError:
            return False
        return True

    def holder(self, job: str) -> int | None:
        """The id of the process holding ``job``'s lock (F_GETLK), or None when none does or it
        cannot be told (not Linux: ``struct flock``'s layout differs)."""
        if not self.posix or not sys.platform.startswith("linux"):
            return None
        import fcntl

        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _lock_offset(job), 1, 0)
        try:
            kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(self._fd, fcntl.F_GETLK, query))
        except OSError:
            return None
        return None if kind == fcntl.F_UNLCK or pid <= 0 else int(pid)

    def unlock(self, job: str) -> None:
        self.unlock_byte(_lock_offset(job))

    def lock_byte(self, offset: int) -> None:
        """Wait for, then hold, the lock on the byte at ``offset``."""
        if not self.posix:
            return
        import fcntl

        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, offset)

    def unlock_byte(self, offset: int) -> None:
        if not self.posix:
            return
        import fcntl

        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        with LockFile._lock:
            if self._closed:
                return
            self._closed = True
            fd, users = LockFile._files[self.path]
            if users <= 1:
                del LockFile._files[self.path]
                os.close(fd)
            else:
                LockFile._files[self.path] = (fd, users - 1)


# Past every job's byte (those are below 2**48): held while a new store file gets its header.
_INIT_BYTE: Final = 1 << 56
_initialising_here = threading.Lock()


@contextlib.contextmanager
def initialising(locks: LockFile) -> Iterator[None]:
    """Hold the store's creation lock: between the creation of the (empty) file and its SQLite
    header, every other batchguard process and thread that finds the file empty waits here,
    so an empty file seen under this lock is one batchguard did not create."""
    with _initialising_here:
        locks.lock_byte(_INIT_BYTE)
        try:
            yield
        finally:
            locks.unlock_byte(_INIT_BYTE)


def claim_attempts(try_claim: Callable[[], bool], seconds: float = 0.3) -> bool:
    """Try ``try_claim`` for up to ``seconds``; True once it succeeds."""
    # A status check briefly takes the lock too: retry a few times before calling it held.
    deadline = time.monotonic() + seconds
    while True:
        if try_claim():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
