"""``batchguard run`` in a pseudo-terminal, read as the screen a person sees (pexpect + pyte):
the live dashboard mid-run, and its end (issue 9 item 2, "Must show"). On a pipe: plain lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

TESTS = Path(__file__).resolve().parent
ROWS, COLS = 40, 120


def write_input(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "TERM": "xterm-256color", **extra}
    env.pop("FORCE_COLOR", None)
    env.pop("NO_COLOR", None)
    return env


class Terminal:
    """A pseudo-terminal running a command, and the screen its output draws (pyte)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.child = pexpect.spawn(sys.executable, args, cwd=str(cwd), env=env, dimensions=(ROWS, COLS),
                                   encoding="utf-8", timeout=60)
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.Stream(self.screen)
        self.ended = False

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def pump(self, wait: float = 0.1) -> None:
        try:
            self.stream.feed(self.child.read_nonblocking(1 << 16, timeout=wait))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            self.ended = True

    def wait_for(self, seen: Callable[[str], bool], timeout: float = 60) -> str:
        """The screen, once ``seen`` holds for it (the test fails if the run ends first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            screen = self.text()
            if seen(screen):
                return screen
            assert not self.ended, f"the run ended before the screen showed it:\n{screen}"
        raise AssertionError(f"not on the screen after {timeout} s:\n{self.text()}")

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while not self.ended and time.monotonic() < deadline:
            self.pump()
        self.child.close()
        assert self.ended, self.text()
        return int(self.child.exitstatus)


def rows(screen: str) -> dict[int, str]:
    """The batch rows on the screen, by batch number."""
    found = {}
    for line in screen.splitlines():
        if line.startswith("Batch ") and "(items" in line:
            found[int(line.split()[1].split("/")[0])] = line
    return found


def test_the_dashboard_mid_run_shows_each_batch_the_status_counts_and_eta(tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 40)
    term = Terminal(["-m", "batchguard", "run", "in.jsonl", "--fn", "dashboard_fns:slow",
                     "--batch-size", "5", "--concurrency", "2", "--base-delay", "2"],
                    tmp_path, environment(BG_SLEEP="0.25", BG_FLAKY_ID="12"))

    # Mid-run: batch 3 (items 11-15) waits 2 s to retry record 12 while later batches run.
    def mid_run(screen: str) -> bool:
        shown = rows(screen)
        return ("retrying 1" in shown.get(3, "") and any("done" in shown.get(n, "") for n in (1, 2))
                and any("queued" in line for line in shown.values())
                and "✓ succeeded" in screen and "ETA " in screen)  # a whole frame, not half drawn

    screen = mid_run_screen = term.wait_for(mid_run)
    shown = rows(screen)
    assert "Total: 40 records · Batch size: 5 · Concurrency: 2 · Mode: full" in screen
    assert "(items 1-5)" in shown[1] and "100% done" in shown[1]
    assert "(items 11-15)" in shown[3] and "retrying 1" in shown[3] and "elapsed" in shown[3]
    queued = [n for n, line in shown.items() if "0% queued" in line]
    assert queued and all(f"(items {5 * n - 4}-{5 * n})" in shown[n] for n in queued)
    assert 8 in queued or "more batch" in screen  # the last ones are drawn, or counted
    (counts,) = [line for line in screen.splitlines() if line.startswith("✓ succeeded")]
    for part in ("… in progress", "↻ retrying 1", "✗ failed 0", "⏸ queued"):
        assert part in counts, counts
    assert "ETA " in screen and "rec/s" in screen and "Estimated duration: ~" in screen
    assert term.finish() == 0
    end = term.text()
    assert all("100% done" in line for line in rows(end).values()) and len(rows(end)) == 8, end
    assert "(1.6 s, 1 retry)" not in mid_run_screen and "1 retry)" in rows(end)[3]
    assert "✓ succeeded 40   … in progress 0   ↻ retrying 0   ✗ failed 0   ⏸ queued 0" in end
    assert "BATCH COMPLETE" in end and "Traceback" not in end


def test_the_dashboard_folds_finished_batches_on_a_short_terminal(tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 300)
    term = Terminal(["-m", "batchguard", "run", "in.jsonl", "--fn", "dashboard_fns:slow",
                     "--batch-size", "5", "--concurrency", "4"], tmp_path, environment(BG_SLEEP="0.01"))
    term.screen.resize(20, COLS)
    term.child.setwinsize(20, COLS)
    screen = term.wait_for(lambda s: "earlier batches done" in s)
    assert len([line for line in screen.splitlines() if line.strip()]) <= 20
    assert "more batches queued" in screen
    assert term.finish() == 0


def test_on_a_pipe_progress_is_plain_lines(tmp_path: Path) -> None:
    """Slow batches (1.5 s each): a line per finished batch; past 5 s, the run's line."""
    write_input(tmp_path / "in.jsonl", 20)
    done = subprocess.run([sys.executable, "-m", "batchguard", "run", "in.jsonl", "--fn",
                           "dashboard_fns:slow", "--batch-size", "5"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=environment(BG_SLEEP="0.3"))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    batch_lines = [line for line in lines if line.startswith("batch ")]
    assert [line.split(" | ")[0] for line in batch_lines] == [f"batch {n}/4 done" for n in (1, 2, 3, 4)]
    assert all(" | succeeded 5 | failed 0 | retries 0 | " in line for line in batch_lines)
    run_lines = [line for line in lines if line.startswith("batches ")]
    assert run_lines and all(re.fullmatch(r"batches [0-4]/4 \(\d+\.\d%\) \| succeeded \d+ \| failed 0 \| "
                                          r"retrying 0 \| \d+ rec/s \| ETA (\d+ s|-)", line)
                             for line in run_lines), run_lines
    assert "\x1b[" not in done.stderr  # no escape codes in a log
