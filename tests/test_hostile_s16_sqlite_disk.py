"""Hostile tests of SqliteDLQ on a full disk (issue 11 item 5, H3): a write of a new shared
traceback, of rows naming a stored one, and a run's writes fail loudly; the file stays
readable, no row names a traceback that is not there, and once there is room again the same
queue object writes, and what it writes is committed (another connection sees it).

Two ways to fill the disk, each in a child process: a real tmpfs, mounted in a user and mount
namespace of its own (``unshare -rm``; skipped where that is not allowed), and RLIMIT_FSIZE
(writes past the limit fail with EFBIG; SIGXFSZ ignored)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCENARIO = r'''
import json, os, resource, signal, sqlite3, subprocess, sys
from batchguard import run_batches
from batchguard.dlq import Attempt, DeadLetter, SqliteDLQ
from batchguard.errors import DLQError

how, where = sys.argv[1], sys.argv[2]
if how == "tmpfs":
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", where], check=True)
path = os.path.join(where, "dlq.db")
AT = "2026-12-07T10:00:00.000+00:00"

def stack(name, size=0):
    return (f'Traceback (most recent call last):\n  File "{name}.py", line 1, in f\n' + "    # pad\n" * size
            + "ValueError: ")

def entries(prefix, n, text):
    return [DeadLetter(id=f"{prefix}-{i}", run_id="run", job_id=None, record_id=i, record_index=i, batch_index=0,
                       stage="process", payload={"i": i}, payload_encoding="json", error_class="permanent",
                       error_type="ValueError", error_message=f"m{i}", traceback=f"{text}m{i}\n",
                       attempts=(Attempt(1, AT, "ValueError", f"m{i}", None),), first_failed_at=AT,
                       last_failed_at=AT) for i in range(n)]

filler = os.path.join(where, "filler")

def fill():
    if how == "tmpfs":
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
    else:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        sizes = [os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 4096, resource.RLIM_INFINITY))

def free():
    if how == "tmpfs":
        os.remove(filler)
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

def committed():
    # What another connection sees: only committed rows.
    conn = sqlite3.connect(path, timeout=30)
    try:
        ids = [i for (i,) in conn.execute("SELECT id FROM dead_letters ORDER BY seq")]
        dangling = conn.execute("SELECT count(*) FROM dead_letters AS d WHERE traceback_digest IS NOT NULL "
                                "AND NOT EXISTS (SELECT 1 FROM dead_letter_tracebacks AS t "
                                "WHERE t.digest = d.traceback_digest)").fetchone()[0]
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return {"ids": ids, "dangling": dangling, "integrity": check}

def attempt(name, write):
    try:
        write()
    except DLQError as exc:
        return f"DLQError: {exc}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"

out = {}
dlq = SqliteDLQ(path)
first = entries("first", 10, stack("first"))
dlq.send(first)  # stores the first stack
fill()
big = stack("big", 300_000)      # more than SQLite's page cache: it spills while the text is inserted
medium = stack("medium", 30_000)  # fits the cache: written at COMMIT
out["big"] = attempt("big", lambda: dlq.send(entries("big", 3, big)))
out["medium"] = attempt("medium", lambda: dlq.send(entries("medium", 3, medium)))
out["rows"] = attempt("rows", lambda: dlq.send(entries("rows", 2000, stack("first"))))
out["one"] = attempt("one", lambda: dlq.send(entries("one", 1, stack("first"))))

def fails(record):
    raise ValueError(f"record {record} " + "x" * 20_000)

out["run"] = attempt("run", lambda: run_batches(range(400), fails, dlq=dlq, batch_size=100))
out["read_while_full"] = [e.id for e in dlq.list(limit=None)] == [e.id for e in first]
out["while_full"] = committed()
free()
later = entries("later", 3, medium) + entries("after", 2, stack("first"))
out["later"] = attempt("later", lambda: dlq.send(later))
out["after_free"] = committed()
out["whole"] = [e.traceback for e in dlq.list(limit=None)] == [e.traceback for e in first + later]
dlq.close()
out["after_close"] = committed()
print(json.dumps(out))
'''


def _scenario(how: str, where: Path) -> dict[str, Any]:
    command = [sys.executable, "-c", SCENARIO, how, str(where)]
    if how == "tmpfs":
        command = ["unshare", "-rm", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_fails_writes_loudly_and_the_queue_writes_again_once_there_is_room(tmp_path: Path,
                                                                                        how: str) -> None:
    if how == "tmpfs" and not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare -rm)")
    out = _scenario(how, tmp_path)
    for write in ("big", "medium", "rows", "one", "run"):
        assert out[write].startswith("DLQError: "), (write, out[write])
    assert out["read_while_full"] is True
    first = [f"first-{i}" for i in range(10)]
    assert out["while_full"] == {"ids": first, "dangling": 0, "integrity": "ok"}
    assert out["later"] == "ok"
    later = [*first, "later-0", "later-1", "later-2", "after-0", "after-1"]
    # Committed: another connection sees the later write, before and after the queue closes.
    assert out["after_free"] == {"ids": later, "dangling": 0, "integrity": "ok"}
    assert out["after_close"] == out["after_free"]
    assert out["whole"] is True
