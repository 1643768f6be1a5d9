"""``batchguard run --metrics-port``: the CLI serves the run's metrics while it runs (issue 10
item 3), scraped over real HTTP from another process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

SLOW_FN = '''
import time

def handle(record):
    time.sleep(0.02)
    if record["n"] % 10 == 9:
        raise ValueError("bad")
    return record["n"]
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _succeeded(text: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "batchguard_records_total" and s.labels.get("outcome") == "succeeded")


def test_run_serves_metrics_during_the_run(tmp_path: Path) -> None:
    (tmp_path / "slowfn.py").write_text(SLOW_FN)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": n, "n": n}) + "\n" for n in range(150)))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchguard", "run", "in.jsonl", "--fn", "slowfn:handle", "--json", "-q",
         "--batch-size", "10", "--dlq", "memory://", "--metrics-port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[float] = []
    try:
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    seen.append(_succeeded(response.read().decode()))
            except (urllib.error.URLError, ConnectionError):
                pass  # not serving yet
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads(out)
    assert f"metrics: http://127.0.0.1:{port}/metrics" in err
    assert report["succeeded"] == 135
    assert seen == sorted(seen)
    assert any(0 < v < 135 for v in seen), f"never seen moving: {seen}"


def test_a_taken_port_stops_the_command_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "slowfn.py").write_text(SLOW_FN)
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "batchguard", "run", "in.jsonl", "--fn", "slowfn:handle",
             "--dlq", "memory://", "--metrics-port", str(port)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"--metrics-port {port}: cannot serve metrics on 127.0.0.1:{port}" in done.stderr
