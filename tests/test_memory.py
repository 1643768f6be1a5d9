"""Memory stays flat while a run dead-letters a million records into a SqliteDLQ.

The run happens in a subprocess that samples its own resident set size (VmRSS in
/proc/self/status) from ``on_progress``; the test compares the size after the first 100k
dead letters with the peak over the whole run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RECORDS = 1_000_000
WARMUP = 100_000
GROWTH_LIMIT_MB = 100.0

SCRIPT = textwrap.dedent("""
    import json, sys, time
    import batchguard
    from batchguard.dlq import SqliteDLQ

    def rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    samples = []
    def sample(p):
        if not samples or p.records_processed - samples[-1][0] >= 50_000:
            samples.append((p.records_processed, rss_mb()))

    def reject(record):
        raise ValueError(f"record {record} is invalid")

    records, path = int(sys.argv[1]), sys.argv[2]
    started = time.monotonic()
    with SqliteDLQ(path) as dlq:
        report = batchguard.run_batches((i for i in range(records)), reject, dlq=dlq,
                                        retry=batchguard.RetryPolicy(max_attempts=1),
                                        on_progress=sample)
        stored = dlq.count()
    samples.append((records, rss_mb()))
    print(json.dumps({"failed": report.failure_count, "stored": stored, "samples": samples,
                      "seconds": time.monotonic() - started}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_dead_lettering_a_million_records_keeps_memory_flat(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(RECORDS), str(tmp_path / "dlq.db")],
                            capture_output=True, text=True, timeout=280, check=True)
    data = json.loads(result.stdout)
    assert data["failed"] == data["stored"] == RECORDS
    samples = [(int(n), float(mb)) for n, mb in data["samples"]]
    baseline = next(mb for n, mb in samples if n >= WARMUP)
    peak = max(mb for _, mb in samples)
    print(f"\n{RECORDS:,} dead letters in {data['seconds']:.1f} s; RSS after {WARMUP:,}: "
          f"{baseline:.0f} MB, peak {peak:.0f} MB; samples {samples}")
    assert peak - baseline < GROWTH_LIMIT_MB, (
        f"RSS grew by {peak - baseline:.0f} MB between {WARMUP:,} and {RECORDS:,} dead letters "
        f"(limit {GROWTH_LIMIT_MB:.0f} MB): {samples}")
