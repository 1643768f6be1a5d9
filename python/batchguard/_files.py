"""Files that hold records: created private (0600, directories 0700), written atomically.

Dead letters and job checkpoints hold the users' records, which often carry personal data, so
no file batchguard creates is readable by other users. The modes are passed to the kernel at
creation, which applies the umask: a stricter umask (0o077, 0o277) still wins.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

__all__ = ["DIR_MODE", "FILE_MODE", "atomic_writer", "create_private", "fsync_dir", "private_dir", "same_file"]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


def create_private(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` as an empty 0600 file unless it exists; True if this call created it.

    SQLite creates its database with 0644 and gives its ``-wal``/``-shm`` files the database's
    mode, so creating the (empty, which SQLite reads as a new database) file first makes all
    three private. An existing file keeps its mode: the user may have chosen it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create the directory ``path`` (and missing parents) as 0700; an existing one is left as it is."""
    where = Path(path)
    # mkdir applies `mode` to the last component only; parents get it through the loop.
    missing = []
    for parent in (where, *where.parents):
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # created meanwhile by someone else: theirs to set
            pass
    return where


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Do ``a`` and ``b`` name the same file (through symlinks and hard links)? False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def fsync_dir(path: Path) -> None:
    """Make a file's creation, rename or removal in ``path`` durable (a no-op where directories
    cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | os.PathLike[str], *, overwrite: bool,
                  exists_error: Callable[[Path], Exception]) -> Iterator[IO[str]]:
    """A text stream whose content appears at ``path`` only once the block completes.

    It writes a 0600 temp file in the same directory, fsyncs it and moves it into place, so a
    failure (an exception, a full disk, a kill) never leaves a truncated ``path`` behind and
    readers see the old file or the whole new one. Without ``overwrite`` an existing ``path``
    is never replaced, even one created while the block ran: ``exists_error(path)`` is raised.

    A symlink is followed: the file it names is replaced, the link stays. A path that names
    no regular file (a device such as ``/dev/stdout`` or ``/dev/null``, a FIFO, a socket) is
    a stream, not a file to replace: it is opened and written into (renaming over it would put
    a regular file in place of the device, which root is allowed to do).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        with open(path, "w", encoding="utf-8", newline="\n") as stream:
            yield stream
            stream.flush()
        return
    target = Path(os.path.realpath(path))
    if not overwrite and os.path.lexists(target):
        raise exists_error(Path(path))
    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_new(tmp, target, lambda _: exists_error(Path(path)))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def _link_new(tmp: Path, target: Path, exists_error: Callable[[Path], Exception]) -> None:
    """Give ``tmp`` the name ``target`` only if that name is free (link() never replaces)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise exists_error(target) from None
    except OSError:
        # A filesystem without hard links: a check then a rename (a narrow race, no truncation).
        if os.path.lexists(target):
            raise exists_error(target) from None
        os.replace(tmp, target)
        return
    tmp.unlink()
