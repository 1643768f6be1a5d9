"""A dead-letter queue in an append-only JSON-lines file: readable with ``jq``, ``grep`` and ``tail``."""

from __future__ import annotations

import builtins
import json
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

from .._files import FILE_MODE, fsync_dir
from ..errors import BatchguardWarning, DLQError, DLQUnavailableError
from .base import DeadLetter, Decide, QueueBase, check_page, matches, select, write_jsonl
from .codec import dumps, encode
from .status import DEFAULT_STATUS

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so one writing process at a time
    fcntl = None  # type: ignore[assignment]

__all__ = ["REMOVE_KEY", "JsonlDLQ"]

REMOVE_KEY: Final = "$remove"
"""Key of a tombstone line: ``{"$remove": [ids]}`` removes those entries."""

_CHUNK: Final = 1 << 20

_encode: Callable[[Any], str] = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _Corrupt(Exception):
    """A line that is not a valid entry or tombstone; ``parsed``: it is valid JSON all the same."""

    def __init__(self, why: str, *, parsed: bool) -> None:
        super().__init__(why)
        self.parsed = parsed


def _stacklevel() -> int:
    """The stacklevel that points a warning at the first caller outside this module."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


class JsonlDLQ(QueueBase):
    """Dead letters appended to a JSON-lines file, one entry per line; safe to share between threads.

    The file is a log: an upsert is a later line with the same id (the last one wins, the entry
    keeps the place of its first send) and ``remove`` appends a tombstone
    ``{"$remove": [ids]}``. Reads replay the log (incrementally: only what was appended since
    the last read), so several instances and processes may share one file; writers take an
    exclusive ``flock`` on POSIX. :meth:`compact` rewrites the file without the dead lines.

    A status change (``resolve``, a successful replay) appends the whole entry again, its new
    status and history included: the log's ordinary upsert, which versions of batchguard from
    before statuses existed read too (they ignore the fields they do not know). The line it
    supersedes stays until :meth:`compact`. Lines written before statuses existed carry none
    and read as open: an old log needs no migration.

    Each ``send`` writes its lines with one ``write`` and ``fsync``s before returning. A last
    line left truncated or corrupt by a crash is skipped with a :class:`BatchguardWarning`, and
    dropped by the next write; a corrupt line anywhere else raises :class:`DLQError`.
    The live entries are kept in memory (as with :class:`MemoryDLQ`): for millions of dead
    letters, prefer :class:`SqliteDLQ`.

    >>> import tempfile, os
    >>> q = JsonlDLQ(os.path.join(tempfile.mkdtemp(), "dead.jsonl"))
    >>> q.count()
    0
    >>> q.close()
    """

    def __init__(self, path: str | Path) -> None:
        """Open (creating if needed) the log at ``path`` and replay it."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._entries: dict[str, DeadLetter] = {}
        self._offset = 0  # bytes of the file applied to _entries
        self._lines = 0  # lines applied (or skipped as blank) so far
        self._unterminated = False  # the last applied line lacks its newline (crash before it)
        self._torn: int | None = None  # offset of a corrupt last line, dropped by the next write
        self._warned: tuple[int, int, int] | None = None
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        existed = self.path.exists()
        try:
            self._open()
        except OSError as exc:
            raise DLQUnavailableError(f"cannot open the JSONL dead-letter queue {self.path}: {exc}") from exc
        if not existed:
            fsync_dir(self.path.parent)
        with self._lock, self._locked(exclusive=False) as fd:
            self._replay(fd)

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else "open"
        return f"JsonlDLQ({str(self.path)!r}, {state})"

    def __iter__(self) -> Iterator[DeadLetter]:
        return self.iter()

    # -- the DeadLetterQueue protocol -------------------------------------------------------

    def send(self, entries: Sequence[DeadLetter]) -> None:
        """Append one line per entry, then flush and fsync: durable when it returns."""
        if not entries:
            return
        encoded = [encode(entry) for entry in entries]
        data = b"".join([line + b"\n" for line, _ in encoded])
        with self._lock, self._locked(exclusive=True) as fd:
            self._replay(fd)
            self._append(fd, data, len(entries))
            for _, stored in encoded:  # as a reader of the file sees it
                self._entries[stored.id] = stored

    def count(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """How many entries match ``filters`` (exact matches on FILTER_FIELDS) and ``status``."""
        wanted = select(filters, status)
        with self._lock:
            entries = self._current()
            if not wanted:
                return len(entries)
            return sum(1 for entry in entries.values() if matches(entry, wanted))

    def list(self, *, limit: int | None = None, offset: int = 0, status: str | None = DEFAULT_STATUS,
             **filters: Any) -> list[DeadLetter]:
        """Matching entries in the order of their first send, paged by ``limit``/``offset``."""
        wanted = select(filters, status)
        check_page(limit, offset)
        with self._lock:
            selected = [e for e in self._current().values() if matches(e, wanted)]
        end = None if limit is None else offset + limit
        return selected[offset:end]

    def get(self, entry_id: str) -> DeadLetter | None:
        """The entry with this id, or None."""
        with self._lock:
            return self._current().get(entry_id)

    def remove(self, ids: Iterable[str]) -> int:
        """Append a tombstone for the ids present; unknown ids are ignored. Returns how many went."""
        wanted = list(dict.fromkeys(ids))
        with self._lock, self._locked(exclusive=True) as fd:
            self._replay(fd)
            present = [entry_id for entry_id in wanted if entry_id in self._entries]
            if not present:
                return 0
            self._append(fd, (_encode({REMOVE_KEY: present}) + "\n").encode(), 1)
            for entry_id in present:
                del self._entries[entry_id]
        return len(present)

    def export(self, path: str | os.PathLike[str] | IO[str], *, overwrite: bool = False,
               status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """Write the matching live entries (no tombstones) as JSON lines to a new file, or a text
        stream; returns how many. Refuses this queue's own file, and an existing file unless
        ``overwrite=True``; see :func:`~batchguard.dlq.base.write_jsonl`."""
        return write_jsonl(path, self.list(status=status, **filters), overwrite=overwrite, sources=(self.path,))

    def close(self) -> None:
        """Close the file; further calls raise DLQError. Closing twice is fine."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- triage (QueueBase) -------------------------------------------------------------------

    def _iter(self, wanted: dict[str, Any]) -> Iterator[DeadLetter]:
        with self._lock:
            selected = [e for e in self._current().values() if matches(e, wanted)]
        return iter(selected)

    def _swap(self, ids: builtins.list[str], decide: Decide) -> dict[str, DeadLetter]:
        """Under the file's exclusive lock (every process's writes wait for it): read what the
        other writers appended, decide, append the changed entries."""
        with self._lock, self._locked(exclusive=True) as fd:
            self._replay(fd)
            found = {entry_id: self._entries[entry_id] for entry_id in ids if entry_id in self._entries}
            changed = [entry for entry_id, entry in decide(dict(found)).items() if entry_id in found]
            if changed:
                self._append(fd, b"".join([dumps(entry) + b"\n" for entry in changed]), len(changed))
            for entry in changed:
                self._entries[entry.id] = entry
                found[entry.id] = entry
        return found

    # -- maintenance ------------------------------------------------------------------------------

    def compact(self) -> int:
        """Rewrite the log with only the live entries, atomically (temp file + ``os.replace``).

        Returns how many entries the new file holds. Other instances notice the new file on
        their next call and replay it.
        """
        with self._lock, self._locked(exclusive=True) as fd:
            self._replay(fd)
            tmp_fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                                dir=self.path.parent)
            written = 0
            try:
                with os.fdopen(tmp_fd, "wb") as out:
                    for entry in self._entries.values():
                        written += out.write(dumps(entry) + b"\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp_name, self.path)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
            fsync_dir(self.path.parent)
            # Closing the old file releases our lock on it: writers waiting there see the new
            # inode and lock that. Whatever they append after `written` is replayed next time.
            kept = self._entries
            self._open()
            self._entries = kept
            self._offset = written
            self._lines = len(kept)
            return len(kept)

    # -- internals -----------------------------------------------------------------------------

    def _require_fd(self) -> int:
        if self._fd is None:
            raise DLQError(f"JSONL dead-letter queue {self.path} is closed")
        return self._fd

    def _open(self) -> None:
        """(Re)open the file the path names now, and forget what was replayed from another one."""
        # Entries hold records (often personal data): a new file is 0600 (less if the umask says so).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        self._reset()

    def _reset(self) -> None:
        self._entries = {}
        self._offset = 0
        self._lines = 0
        self._unterminated = False
        self._torn = None

    @contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[int]:
        """flock the file (thread lock held by the caller), following a compaction's replacement."""
        while True:
            fd = self._require_fd()
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                st = os.stat(self.path)
                current = (st.st_dev, st.st_ino) == self._ident
            except FileNotFoundError:
                current = False
            if current:
                break
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            try:
                self._open()
            except OSError as exc:
                raise DLQError(f"cannot reopen the JSONL dead-letter queue {self.path}: {exc}") from exc
        try:
            yield fd
        finally:
            # After compact() reopened the file, `fd` is closed (which released its lock).
            if fcntl is not None and fd == self._fd:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _current(self) -> dict[str, DeadLetter]:
        with self._locked(exclusive=False) as fd:
            self._replay(fd)
        return self._entries

    def _append(self, fd: int, data: bytes, lines: int) -> None:
        """Write ``data`` (whole lines) at the end and fsync; the exclusive lock is held."""
        try:
            if self._torn is not None:
                os.ftruncate(fd, self._torn)  # a crash's leftover, never acknowledged by a send
                self._torn = None
            if self._unterminated:
                data = b"\n" + data
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            raise DLQError(f"cannot write to the JSONL dead-letter queue {self.path}: {exc}") from exc
        self._offset += len(data)
        self._lines += lines
        self._unterminated = False

    def _replay(self, fd: int) -> None:
        """Apply the lines appended since the last replay (a lock on the file is held)."""
        size = os.fstat(fd).st_size
        if size < self._offset:  # truncated behind our back: start over
            self._reset()
        self._torn = None
        if self._unterminated and size > self._offset and os.pread(fd, 1, self._offset) == b"\n":
            # Another writer completed our unterminated last line: that newline ends it.
            self._offset += 1
            self._unterminated = False
        pending = b""
        pos = self._offset
        bad: tuple[int, int, str] | None = None  # (line number, offset, why) of a corrupt line
        while pos < size:
            chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                bad = self._take(line, bad, terminated=True)
        if pending:
            bad = self._take(pending, bad, terminated=False)
        if bad is not None:
            line_no, offset, why = bad
            self._torn = offset
            assert self._ident is not None
            marker = (*self._ident, offset)
            if self._warned != marker:
                self._warned = marker
                warnings.warn(
                    f"{self.path}: line {line_no}, the last one, is truncated or corrupt, probably "
                    f"by a write that a crash interrupted ({why}); it is skipped, and the next "
                    f"write drops it",
                    BatchguardWarning, stacklevel=_stacklevel(),
                )

    def _take(self, line: bytes, bad: tuple[int, int, str] | None, *,
              terminated: bool) -> tuple[int, int, str] | None:
        """Apply one line, or hold it back as corrupt until we know whether it is the last one."""
        if bad is not None:
            if not line.strip():
                return bad  # trailing blank lines do not make the corrupt line a middle one
            line_no, _, why = bad
            raise DLQError(f"{self.path}: line {line_no} is not a valid dead-letter entry ({why})")
        line_no = self._lines + 1
        try:
            self._apply(line)
        except _Corrupt as exc:
            if terminated and (exc.parsed or line_no == 1):
                # Not what a crash leaves (a fragment without its newline, or garbage after the
                # entries): somebody's data, perhaps a file that is no DLQ. Never truncated.
                raise DLQError(f"{self.path}: line {line_no} is not a valid dead-letter entry "
                               f"({exc}); is this file a batchguard JSONL dead-letter queue?"
                               ) from None
            return (line_no, self._offset, str(exc))
        self._lines = line_no
        self._offset += len(line) + terminated
        self._unterminated = not terminated
        return None

    def _apply(self, line: bytes) -> None:
        if not line.strip():
            return
        parsed = False
        try:
            data = json.loads(line)
            parsed = True
            if not isinstance(data, dict):
                raise _Corrupt(f"a JSON {type(data).__name__}, not an object", parsed=True)
            removed = data.get(REMOVE_KEY)
            if removed is not None:
                for entry_id in removed:
                    self._entries.pop(entry_id, None)
                return
            entry = DeadLetter.from_dict(data)
        except _Corrupt:
            raise
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError/UnicodeDecodeError are ValueErrors
            raise _Corrupt(f"{type(exc).__name__}: {exc}", parsed=parsed) from exc
        self._entries[entry.id] = entry
