"""A SQLite job store file that cannot be used says why, and the job lock follows the file.

Issue 7, defect 5: a store that cannot be opened (garbage header, truncated, read-only, disk
full) raised ``AttributeError: '_locks'``, and a store truncated to 0 bytes silently restarted
its job from scratch. Each case here must raise a JobStoreUnavailableError naming the file and
the cause, before any record runs.

Issue 7, defect 6: the job lock lived next to the path as given, so a second process reaching
the same store through a symlink took another lock and ran the whole job again.

Every file is real: corrupted with truncate/write, made read-only with ``chattr +i`` or a
read-only tmpfs, filled up on a 64 KiB tmpfs (the last two need root: skipped otherwise).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchguard import JobError, RetryPolicy, job_status, run_batches
from batchguard.jobs import JobStoreUnavailableError, SqliteJobStore
from helpers_jobs import Work, held_elsewhere

ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
def name() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def stopped_job(path: Path, job: str) -> None:
    """A job stopped halfway (5 of 10 batches done), its store closed and checkpointed."""
    run_batches(range(100), Work(fatal_at=55), batch_size=10, job=job, store=url_of(path), retry=ONCE)
    assert job_status(job, store=url_of(path)).batches_done == 5
    assert not Path(f"{path}-wal").exists()  # everything is in the main file now


def refused(path: Path, job: str, cause: str) -> JobStoreUnavailableError:
    """Resuming ``job`` on the store at ``path`` raises JobStoreUnavailableError before any record runs."""
    calls = Work()
    with pytest.raises(JobStoreUnavailableError) as caught:
        run_batches(range(100), calls, batch_size=10, job=job, store=url_of(path), retry=ONCE)
    assert calls.calls == []
    message = str(caught.value)
    assert str(path) in message, message
    assert cause.lower() in message.lower(), message
    assert isinstance(caught.value, ConnectionError)
    with pytest.raises(JobStoreUnavailableError, match=re.compile(re.escape(cause), re.IGNORECASE)):
        job_status(job, store=url_of(path))
    return caught.value


# ---------------------------------------------------------------------------- damaged files


def test_a_store_with_a_garbage_header_is_unavailable_not_an_attribute_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"this is not a SQLite database\n" * 200)
    refused(path, name, "not a database")


@pytest.mark.parametrize("keep", [100, 4096, 5000, 0.5, -4096], ids=lambda k: f"keep={k}")
def test_a_truncated_store_is_unavailable(tmp_path: Path, name: str, keep: float) -> None:
    path = tmp_path / "jobs.db"
    stopped_job(path, name)
    size = path.stat().st_size
    cut = int(size * keep) if isinstance(keep, float) else (size + keep if keep < 0 else keep)
    assert 0 < cut < size
    os.truncate(path, cut)
    refused(path, name, "cannot open the SQLite job store")


def test_a_store_truncated_to_zero_bytes_does_not_restart_the_job(tmp_path: Path, name: str) -> None:
    path = tmp_path / "jobs.db"
    stopped_job(path, name)
    os.truncate(path, 0)
    error = refused(path, name, "is empty (0 bytes)")
    assert "delete it" in str(error)
    assert path.stat().st_size == 0  # refused, not turned into a new store


def test_an_empty_file_batchguard_did_not_create_is_refused_even_for_a_new_job(tmp_path: Path, name: str) -> None:
    path = tmp_path / "jobs.db"
    path.touch()
    refused(path, name, "is empty (0 bytes)")


def test_a_new_store_file_is_created_and_reopened(tmp_path: Path, name: str) -> None:
    path = tmp_path / "new.db"
    run_batches(range(20), Work(), batch_size=10, job=name, store=url_of(path), retry=ONCE)
    with SqliteJobStore(path) as store:
        state = store.get(name)
    assert state is not None and (state.succeeded, state.failed) == (18, 2)


CREATE_AT_ONCE = textwrap.dedent("""
    import sys, time
    from batchguard.jobs import SqliteJobStore
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    SqliteJobStore(sys.argv[1]).close()
    print("ok")
""")


def test_processes_creating_one_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    # The empty-file rule must not refuse a store another process is creating right now.
    import time

    for attempt in range(3):
        path = tmp_path / f"race-{attempt}.db"
        start = time.time() + 0.5
        procs = [subprocess.Popen([sys.executable, "-c", CREATE_AT_ONCE, str(path), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        for proc in procs:
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0 and out.strip() == "ok", err


# ---------------------------------------------------------------------------- read-only, disk full


def chattr(flag: str, path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr {flag} is not supported here: {done.stderr.strip()}")


def test_an_immutable_store_file_is_unavailable(tmp_path: Path, name: str) -> None:
    # Root ignores file modes: an immutable file is read-only for root too.
    path = tmp_path / "jobs.db"
    stopped_job(path, name)
    chattr("+i", path)
    try:
        refused(path, name, "the file is not writable")
    finally:
        chattr("-i", path)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where`` for the block (skips the test without the right to mount)."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_store_on_a_read_only_filesystem_is_unavailable(tmp_path: Path, name: str) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        path = mnt / "jobs.db"
        stopped_job(path, name)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        refused(path, name, "read-only file system")


def test_a_new_store_on_a_full_disk_is_unavailable(tmp_path: Path, name: str) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        filler = mnt / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        path = mnt / "jobs.db"
        calls = Work()
        with pytest.raises(JobStoreUnavailableError) as caught:
            run_batches(range(20), calls, batch_size=10, job=name, store=url_of(path), retry=ONCE)
        assert calls.calls == []
        message = str(caught.value)
        assert str(path) in message and ("full" in message or "No space left" in message), message
        assert not path.exists()  # no empty file left behind to be refused later
        filler.unlink()
        run_batches(range(20), calls, batch_size=10, job=name, store=url_of(path), retry=ONCE)
        assert job_status(name, store=url_of(path)).status == "completed"


def test_a_store_whose_disk_fills_up_during_a_run_fails_with_the_cause(tmp_path: Path, name: str) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        path = mnt / "jobs.db"
        payload = "x" * 2000

        def fill_after_first_batch(x: int) -> str:
            if x == 10:  # batch 0 is checkpointed; now take the rest of the disk
                with contextlib.suppress(OSError), (mnt / "filler").open("wb") as out:
                    while True:
                        out.write(b"\0" * 4096)
                        out.flush()
            raise ValueError(payload)  # every record fails: each batch writes 10 large entries

        with pytest.raises(JobStoreUnavailableError, match="full") as caught:
            run_batches(range(100), fill_after_first_batch, batch_size=10, job=name,
                        store=url_of(path), retry=ONCE)
        assert str(path) in str(caught.value)


# ---------------------------------------------------------------------------- the lock and symlinks


@pytest.mark.parametrize("holder_through_link", [True, False], ids=["holder-via-link", "runner-via-link"])
def test_a_job_held_through_a_symlink_is_refused_through_the_real_path(
        tmp_path: Path, name: str, holder_through_link: bool) -> None:
    real = tmp_path / "real" / "jobs.db"
    real.parent.mkdir()
    stopped_job(real, name)
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    link.symlink_to(real)
    holder, runner = (link, real) if holder_through_link else (real, link)
    with held_elsewhere(url_of(holder), name):
        assert job_status(name, store=url_of(runner)).active
        calls = Work()
        with pytest.raises(JobError, match="already running in another process"):
            run_batches(range(100), calls, batch_size=10, job=name, store=url_of(runner), retry=ONCE)
        assert calls.calls == []
    assert not job_status(name, store=url_of(runner)).active


RUNNER = textwrap.dedent("""
    import sys, time
    import batchguard
    url, job, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while time.time() < start:
        pass
    ran = []
    def fn(x):
        ran.append(x)
        time.sleep(0.001)
        return x
    try:
        batchguard.run_batches(range(2000), fn, batch_size=100, job=job, store=url)
    except batchguard.JobError as exc:
        print("refused", len(ran), exc)
    else:
        print("ran", len(ran))
""")


def test_two_processes_through_a_symlink_never_both_run_the_job(tmp_path: Path, name: str) -> None:
    import time

    real = tmp_path / "jobs.db"
    SqliteJobStore(real).close()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    start = time.time() + 0.5
    procs = [subprocess.Popen([sys.executable, "-c", RUNNER, url_of(path), name, str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for path in (real, link)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outcomes.append(out.split()[:2])
    ran = sorted(outcomes)
    assert ran == [["ran", "2000"], ["refused", "0"]], outcomes


def test_a_store_with_a_second_hard_link_refuses_to_run_a_job(tmp_path: Path, name: str) -> None:
    # A hard link is a second name for the file that no lock file next to either name covers
    # (and SQLite itself warns that it can corrupt a database): a run through either is refused.
    real = tmp_path / "jobs.db"
    stopped_job(real, name)
    link = tmp_path / "other-name.db"
    os.link(real, link)
    for path in (real, link):
        calls = Work()
        with pytest.raises(JobError, match="2 hard links") as caught:
            run_batches(range(100), calls, batch_size=10, job=name, store=url_of(path), retry=ONCE)
        assert calls.calls == [] and str(path) in str(caught.value)
    assert job_status(name, store=url_of(link)).batches_done == 5  # reading it is fine
    link.unlink()
    run_batches(range(100), Work(), batch_size=10, job=name, store=url_of(real), retry=ONCE)
    assert job_status(name, store=url_of(real)).status == "completed"


def test_a_directory_named_as_the_store_is_unavailable(tmp_path: Path, name: str) -> None:
    path = tmp_path / "jobs.db"
    path.mkdir()
    refused(path, name, "it is a directory")
