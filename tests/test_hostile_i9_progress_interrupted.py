"""Hostile: ``on_progress=batchguard.progress.rich()`` used without ``with``, and the run is
Ctrl-C'd (issue 9 item 2).

A run that raises sends no final snapshot, so the display was never stopped: its drawing
thread kept redrawing after the traceback, and at interpreter shutdown rich's Live was stopped
from a finalizer, printing "Exception ignored in ... sys.meta_path is None" after the
traceback. The display now stops itself at exit, before the interpreter tears down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time, batchguard, batchguard.progress
    from rich.console import Console

    def fn(record):
        time.sleep(0.001)
        if record == 300:
            raise KeyboardInterrupt
        return record

    show = batchguard.progress.rich(console=Console(file=sys.stderr, force_terminal=True, width=100))
    batchguard.run_batches(range(1000), fn, batch_size=50, on_progress=show)
""")


def test_an_interrupted_run_leaves_the_rich_display_stopped_cleanly() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]
    assert "meta_path" not in done.stderr
    # the cursor rich hid is shown again, after everything else
    assert "\x1b[?25h" in done.stderr
