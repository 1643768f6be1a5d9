"""Start a test server in its own process and read the port it chose (tests/s3_server.py,
tests/gcs_server.py): the child prints ``PORT <n>`` once it listens and serves until killed."""

from __future__ import annotations

import subprocess
import sys
import time


def start(script: str, name: str, timeout_s: float = 60) -> tuple[subprocess.Popen[str], int]:
    """Run ``python script``; return the child and its port, or raise naming ``name``."""
    child = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        if line.startswith("PORT "):
            return child, int(line.split()[1])
    child.kill()
    raise RuntimeError(f"the {name} did not start (exit code {child.wait()})")
