"""A forked child can run batchguard (issue 7 defect 15).

The native engine runs sync callbacks at concurrency > 1 on a process-wide Tokio runtime. A
child forked after a threaded run inherits that runtime's memory but none of its threads: the
runtime's idle-thread count says work will be picked up, nobody picks it up, and the child's
run hangs. The runtime belongs to the process that built it; a child builds its own.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable

import pytest

import batchguard

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _threaded_run(n: int) -> list[int]:
    return batchguard.run_batches(range(n), lambda r: r * 2, concurrency=4, batch_size=16).successful


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit code, or None (after killing it) if it did not exit in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _in_child(body: Callable[[], bool]) -> int:
    """Fork; the child runs ``body()`` and exits 0 when it returns True, 1 otherwise."""
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a multi-threaded process may deadlock: that risk
        # is exactly what these tests show batchguard handles.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            code = 0 if body() else 1
        except BaseException:  # noqa: BLE001 - report through the exit code
            code = 2
        finally:
            os._exit(code)
    return pid


@pytest.mark.timeout(60)
@pytest.mark.parametrize("concurrency", [4, 16])
def test_a_child_forked_after_a_threaded_run_runs_threaded_itself(concurrency: int) -> None:
    assert _threaded_run(100) == [r * 2 for r in range(100)]  # the parent's runtime is up, idle

    def child() -> bool:
        report = batchguard.run_batches(range(200), lambda r: r + 1, concurrency=concurrency, batch_size=16)
        return report.successful == [r + 1 for r in range(200)]

    pid = _in_child(child)
    code = _wait(pid, timeout=20)
    assert code is not None, "the forked child's threaded run hung"
    assert code == 0, f"the forked child's run failed (exit code {code})"
    # The parent's own runtime is untouched.
    assert _threaded_run(50) == [r * 2 for r in range(50)]


@pytest.mark.timeout(60)
def test_a_grandchild_and_a_second_run_in_the_child_work_too() -> None:
    assert _threaded_run(20)

    def child() -> bool:
        if _threaded_run(20) != [r * 2 for r in range(20)] or _threaded_run(30) != [r * 2 for r in range(30)]:
            return False
        grandchild = _in_child(lambda: _threaded_run(40) == [r * 2 for r in range(40)])
        return _wait(grandchild, timeout=15) == 0

    code = _wait(_in_child(child), timeout=30)
    assert code == 0, "a forked process could not run threaded (None: it hung)"
