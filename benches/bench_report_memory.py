"""Issue 7, defect 10: what reading the report of a failure-heavy run costs.

A run dead-letters N records into a SqliteDLQ; then ``summary()``, ``to_dict()`` and a full
iteration of ``report.errors`` are timed, with the process's peak RSS after each (peak RSS
only grows, so each figure includes what came before it).

    python benches/bench_report_memory.py            # 300,000 failures, ~40 s
    python benches/bench_report_memory.py 50000
    python benches/bench_report_memory.py --quick    # 20,000 failures: a smoke run
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable

import batchguard
from batchguard import RetryPolicy
from batchguard.dlq import SqliteDLQ


def reject(record: int) -> int:
    raise ValueError(f"record {record} is invalid")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(label: str, action: Callable[[], object]) -> None:
    started = time.perf_counter()
    action()
    print(f"{label:<32} {time.perf_counter() - started:7.2f} s   peak RSS {peak_rss_mb():6.0f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("failures", type=int, nargs="?", default=None, help="records that fail (300,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 failures: a smoke run")
    args = parser.parse_args(argv)
    n = args.failures if args.failures is not None else 20_000 if args.quick else 300_000
    with tempfile.TemporaryDirectory() as where, SqliteDLQ(os.path.join(where, "f.db"),
                                                           synchronous="NORMAL") as dlq:
        holder: dict[str, batchguard.BatchReport] = {}

        def run() -> None:
            holder["report"] = batchguard.run_batches(range(n), reject, dlq=dlq,
                                                      retry=RetryPolicy(max_attempts=1))

        timed(f"run ({n:,} failures)", run)
        report = holder["report"]
        assert report.failure_count == n
        timed("summary()", report.summary)
        timed("to_dict()", report.to_dict)
        timed("iterate report.errors", lambda: sum(1 for _ in report.errors))


if __name__ == "__main__":
    main()
