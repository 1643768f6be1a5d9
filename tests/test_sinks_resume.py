"""A job's file sink after a kill (issue 11 item 1): the process dies (``os._exit``, as a
``kill -9`` would: nothing flushed, nothing closed) just after a batch's write was synced and
before its checkpoint, or in the middle of a write; the resumed job's file then holds every
value exactly once, and a compressed one stays readable to its end.
"""

from __future__ import annotations

import collections
import gzip
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import sinks
from batchguard.errors import ConfigError
from test_sinks import read_back

pytest.importorskip("zstandard")

N, BATCH = 60, 5


def bad(x: int) -> int:
    """Every seventh record fails: its batch's values and its dead letter both reach the job."""
    if x % 7 == 3:
        raise ValueError(f"no {x}")
    return x * 10


def killed_job(tmp_path: Path, name: str, *, die: str, at_batch: int) -> Path:
    """Run a job with a JSON lines sink in a child process that dies at ``at_batch``'s write:
    ``die="after_sync"`` once the write was synced (before the checkpoint), ``"mid_write"``
    halfway through writing the batch's lines."""
    out = tmp_path / name
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import batchguard
        from batchguard.sinks import JsonLinesWriter
        from test_sinks_resume import bad

        class Dies(JsonLinesWriter):
            batches = 0
            def write(self, indices, values):
                Dies.batches += 1
                if {die!r} == "mid_write" and Dies.batches == {at_batch}:
                    super().write(indices[:2], values[:2])
                    self._out.stream.flush()
                    os.write(self._out._fd, b'{{"index":99,"va')  # a line cut short
                    os._exit(9)
                super().write(indices, values)
            def sync(self):
                super().sync()
                if Dies.batches == {at_batch}:
                    os._exit(9)

        batchguard.run_batches(range({N}), bad, batch_size={BATCH}, job="j", store={f"sqlite:///{tmp_path}/store.db"!r},
                               retry=batchguard.RetryPolicy(max_attempts=1), results=Dies({str(out)!r}))
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr
    return out


@pytest.mark.parametrize("die", ["after_sync", "mid_write"])
@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.jsonl.bz2", "out.jsonl.zst"])
def test_a_job_killed_at_a_write_resumes_into_a_readable_file_with_each_value_once(
        tmp_path: Path, name: str, die: str) -> None:
    out = killed_job(tmp_path, name, die=die, at_batch=4)
    report = batchguard.run_batches(range(N), bad, batch_size=BATCH, job="j", store=f"sqlite:///{tmp_path}/store.db",
                                    retry=batchguard.RetryPolicy(max_attempts=1), results=sinks.jsonl(out))
    assert report.skipped_batches == 3  # the batch killed at its write is run again
    rows = read_back(out)
    counts = collections.Counter(row["index"] for row in rows)
    assert [i for i, n in counts.items() if n > 1] == []
    assert sorted(counts) == [i for i in range(N) if i % 7 != 3]
    assert all(row["value"] == row["index"] * 10 for row in rows)


def test_a_torn_compressed_stream_holding_finished_values_is_refused_not_cut(tmp_path: Path) -> None:
    # One member for every batch (as a file written without a member per sync would be),
    # cut short by a kill: cutting it off would lose values of checkpointed batches.
    out = tmp_path / "old.jsonl.gz"
    whole = gzip.compress(b"".join(b'{"index":%d,"value":%d}\n' % (i, i) for i in range(40)))
    out.write_bytes(whole[:-30])
    with pytest.raises(ConfigError, match=r"cut short .* already finished .*resume into a new path"):
        sinks.jsonl(out).trim(lambda index: index < 20)
    assert out.read_bytes() == whole[:-30]


def test_lines_written_by_something_else_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"index":0,"value":0}\n# a note\n{"index":7,"value":7}\n{"index":8,"va')
    sinks.jsonl(out).trim(lambda index: index < 5)
    assert out.read_bytes() == b'{"index":0,"value":0}\n# a note\n'


@pytest.mark.parametrize("results", [lambda tmp: sinks.parquet(tmp / "out.parquet"),
                                     lambda tmp: "s3://bucket/out.jsonl.gz"], ids=["parquet", "object store"])
def test_a_job_refuses_a_sink_that_holds_nothing_durable_until_it_closes(tmp_path: Path, results: Any) -> None:
    # Killed, such a job would have checkpointed batches whose values are in no readable file
    # (a Parquet file without its footer, an upload never completed): its resume skips them.
    calls: list[int] = []
    with pytest.raises(ConfigError, match=r"only when the run ends.*checkpoint"):
        batchguard.run_batches(range(N), calls.append, batch_size=BATCH, job="j",
                               store=f"sqlite:///{tmp_path}/store.db", results=results(tmp_path))
    assert calls == []
