"""W6 (issue 11 item 1): a run's peak memory does not grow with its input when its results are
streamed.

Each size runs in a fresh child process: ``run_batches`` over a generator of N records, ``fn``
returning a small dict, with ``results=`` a JSON lines file (``batchguard.sinks.jsonl``) and
with ``results="drop"``; the child reports its peak RSS (``ru_maxrss``). A baseline child only
imports batchguard. The Must show: peak RSS at most 100 MB at every size, and flat (the largest
size within 10% of the smallest). ``--keep`` adds ``results="keep"`` at the smallest size, for
contrast (it grows with N).

    python benches/bench_memory.py            # 1M, 2M, 4M records
    python benches/bench_memory.py --full     # 1M, 5M, 10M records (the issue's sizes; ~3 min)
    python benches/bench_memory.py --quick    # 100k, 200k, 400k: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LIMIT_MB = 100.0
FLAT = 1.10


def records(n: int) -> Iterator[int]:
    yield from range(n)


def small_dict(x: int) -> dict[str, Any]:
    return {"id": x, "ok": True, "score": x * 0.5}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(mode: str, n: int, out: str) -> None:
    """One measurement, in this (fresh) process: prints {"peak_mb", "seconds", "written"}."""
    import batchguard

    if mode == "baseline":
        print(json.dumps({"peak_mb": peak_rss_mb(), "seconds": 0.0, "written": 0}))
        return
    results: Any = {"jsonl": batchguard.sinks.jsonl(out), "drop": "drop", "keep": "keep"}[mode]
    started = time.perf_counter()
    report = batchguard.run_batches(records(n), small_dict, results=results)
    seconds = time.perf_counter() - started
    assert report.success_count == n, report.summary()
    written = 0
    if mode == "jsonl":
        with open(out, "rb") as f:
            written = sum(1 for _ in f)
        assert written == n, (written, n)
    print(json.dumps({"peak_mb": peak_rss_mb(), "seconds": seconds, "written": written}))


def measure(mode: str, n: int, where: str) -> dict[str, float]:
    out = os.path.join(where, f"{mode}-{n}.jsonl")
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(n), out], check=True,
                          capture_output=True, text=True)
    if os.path.exists(out):
        os.remove(out)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1M, 5M and 10M records (the issue's sizes)")
    parser.add_argument("--quick", action="store_true", help="100k, 200k, 400k: a smoke run")
    parser.add_argument("--keep", action="store_true", help='also results="keep" at the smallest size')
    parser.add_argument("--child", nargs=3, metavar=("MODE", "N", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, n, out = args.child
        child(mode, int(n), out)
        return 0
    sizes = ((1_000_000, 5_000_000, 10_000_000) if args.full
             else (100_000, 200_000, 400_000) if args.quick or os.environ.get("BENCH_QUICK")
             else (1_000_000, 2_000_000, 4_000_000))
    print(f"# bench_memory (W6): peak RSS of a fresh process per run; load average "
          f"{os.getloadavg()[0]:.2f} at the start; Python {sys.version.split()[0]}")
    failed = False
    with tempfile.TemporaryDirectory() as where:
        base = measure("baseline", 0, where)
        print(f"{'import batchguard only':<28} {'':>12} peak RSS {base['peak_mb']:6.1f} MB")
        for mode in ("jsonl", "drop"):
            peaks = []
            for n in sizes:
                m = measure(mode, n, where)
                peaks.append(m["peak_mb"])
                rate = n / m["seconds"] / 1e3 if m["seconds"] else 0.0
                print(f"{'results=' + mode:<16} {n:>11,} records  peak RSS {m['peak_mb']:6.1f} MB   "
                      f"{m['seconds']:6.1f} s ({rate:,.0f}k rec/s)")
            flat = max(peaks) <= FLAT * min(peaks)
            within = max(peaks) <= LIMIT_MB
            verdict = "ok" if flat and within else "FAILED"
            failed |= verdict == "FAILED"
            print(f"  {mode}: max {max(peaks):.1f} MB (limit {LIMIT_MB:.0f}), largest/smallest "
                  f"{max(peaks) / min(peaks):.3f} (flat: <= {FLAT}) -> {verdict}")
        if args.keep:
            m = measure("keep", sizes[0], where)
            print(f"{'results=keep':<16} {sizes[0]:>11,} records  peak RSS {m['peak_mb']:6.1f} MB   (for contrast)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    sys.exit(main())
