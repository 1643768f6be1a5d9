"""A results sink on a full disk (issue 11 item 1): a child process whose file size limit
(RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk) the sink's file reaches. The
run stops with an error naming the sink and the cause, the file holds whole lines only, and a
job resumed with room to spare writes every value exactly once: none succeeded unwritten.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import batchguard
from helpers_contract import ENGINES

N, BATCH, LIMIT = 600, 20, 150_000


def padded(x: int) -> dict[str, object]:
    """About 1 kB a line: the sink's file reaches LIMIT long before the job store does."""
    return {"x": x, "pad": "p" * 1000}


def run_out_of_room(tmp_path: Path, engine: str, *, job: bool) -> subprocess.CompletedProcess[str]:
    job_args = f"job='j', store={f'sqlite:///{tmp_path}/store.db'!r}," if job else ""
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import batchguard
        from test_sinks_disk_full import padded
        resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))
        batchguard.run_batches(range({N}), padded, batch_size={BATCH}, concurrency=4, engine={engine!r},
                               {job_args} results={str(tmp_path / "out.jsonl")!r})
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def whole_lines(path: Path) -> list[int]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"a torn last line: {data[-40:]!r}"
    return [json.loads(line)["index"] for line in data.splitlines()]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_full_disk_stops_the_run_naming_the_sink_and_leaves_whole_lines(tmp_path: Path, engine: str) -> None:
    child = run_out_of_room(tmp_path, engine, job=False)
    assert child.returncode == 1
    last = child.stderr.strip().splitlines()[-1]
    assert f"results sink {tmp_path / 'out.jsonl'}" in last and "File too large" in last, last
    indices = whole_lines(tmp_path / "out.jsonl")
    assert 0 < len(indices) < N and len(set(indices)) == len(indices)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_stopped_by_a_full_disk_resumes_with_every_value_once(tmp_path: Path, engine: str) -> None:
    child = run_out_of_room(tmp_path, engine, job=True)
    assert child.returncode == 1 and "File too large" in child.stderr
    report = batchguard.run_batches(range(N), padded, batch_size=BATCH, concurrency=4, engine=engine, job="j",
                                    store=f"sqlite:///{tmp_path}/store.db", results=str(tmp_path / "out.jsonl"))
    assert report.skipped_batches > 0 and report.status == "complete"
    counts = collections.Counter(whole_lines(tmp_path / "out.jsonl"))
    assert sorted(counts) == list(range(N)) and set(counts.values()) == {1}
