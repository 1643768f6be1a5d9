"""The CLI's live dashboard on vs off (issue 9 item 2: "within 2%").

    python benches/bench_dashboard.py [--quick] [--processes 3] [--rounds 5]

Scenarios:

* ``trivial``: 1M records, ``fn = r + 1``, concurrency 1 (the fastest path: a snapshot cost
  per record would show here first);
* ``sleep``: 5k records that each ``time.sleep(0.001)``, concurrency 64.

"off" runs with no ``on_progress`` (``batchguard run --quiet``); "on" runs the CLI's
``ProgressView`` inside ``view.running()``, drawing to a terminal-like rich console
(``force_terminal=True``, 120x40) whose output goes to /dev/null: every redraw is really
rendered and written, on the dashboard's own thread. The ratio is of the run's time (what the
dashboard must not slow); the block's (its start, and its last draw after the run) is shown
too. Each scenario runs in ``--processes``
fresh processes; inside one, off and on alternate for ``--rounds`` rounds (the first one
rotating), each run preceded by ``gc.collect()`` (as in the other benches: a collection the
previous round's drawing left due would otherwise land in one arm's timing, and at 1M values
it walks the run's whole list of results), the best round of each is kept, and the ratio
on/off is computed in that process.
The table shows the median ratio over the processes, with the range.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from rich.console import Console  # noqa: E402

from batchguard import run_batches  # noqa: E402
from batchguard.cli.progress import ProgressView  # noqa: E402

SCENARIOS = ("trivial", "sleep")


def plus_one(r: int) -> int:
    return r + 1


def sleep_1ms(r: int) -> int:
    time.sleep(0.001)
    return r


def workload(key: str, quick: bool) -> tuple[list[int], Any, int]:
    if key == "trivial":
        return list(range(100_000 if quick else 1_000_000)), plus_one, 1
    return list(range(500 if quick else 5_000)), sleep_1ms, 64


def one_run(key: str, records: list[int], fn: Any, concurrency: int, on: bool) -> tuple[float, float]:
    """(the run's time, the time of the whole block: with the dashboard, its start and its
    last draw after the run too)."""
    gc.collect()
    started = time.perf_counter()
    if not on:
        report = run_batches(records, fn, concurrency=concurrency)
        run = time.perf_counter() - started
    else:
        with open(os.devnull, "w") as devnull:
            console = Console(file=devnull, force_terminal=True, width=120, height=40)
            view = ProgressView(title=f"bench {key}", concurrency=concurrency, console=console)
            with view.running():
                gc.collect()  # what making the view left, as the other arm starts collected
                run_started = time.perf_counter()
                report = run_batches(records, fn, concurrency=concurrency, on_progress=view)
                run = time.perf_counter() - run_started
    block = time.perf_counter() - started
    assert report.success_count == len(records), report.summary()
    return run, block


def in_process(key: str, quick: bool, rounds: int) -> dict[str, Any]:
    records, fn, concurrency = workload(key, quick)
    one_run(key, records[:1000], fn, concurrency, True)  # warm up both paths
    one_run(key, records[:1000], fn, concurrency, False)
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for r in range(rounds):
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            times[on].append(one_run(key, records, fn, concurrency, on))
    off = min(t[0] for t in times[False])
    on_run, on_block = min(t[0] for t in times[True]), min(t[1] for t in times[True])
    return {"scenario": key, "n": len(records), "off_s": off, "on_s": on_run, "ratio": on_run / off,
            "block_ratio": on_block / off}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(in_process(args.child, args.quick, args.rounds)))
        return 0
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; each scenario: {args.processes} fresh processes, best of "
          f"{args.rounds} rounds each of off and on")
    for key in args.only.split(","):
        results = []
        for i in range(args.processes):
            print(f"[{key}] process {i + 1}/{args.processes} ...", file=sys.stderr)
            cmd = [sys.executable, __file__, "--child", key, "--rounds", str(args.rounds)]
            out = subprocess.run([*cmd, *(["--quick"] if args.quick else [])], capture_output=True,
                                 text=True, check=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        ratios = [r["ratio"] for r in results]
        blocks = [r["block_ratio"] for r in results]
        print(f"[{key}] n={results[0]['n']:,}: off best {min(r['off_s'] for r in results) * 1e3:,.1f} ms, "
              f"on best {min(r['on_s'] for r in results) * 1e3:,.1f} ms; the run on/off: median "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}; "
              f"per process: {', '.join(f'{x:.3f}' for x in ratios)}); with the dashboard's "
              f"start and last draw: median {statistics.median(blocks):.3f} "
              f"(range {min(blocks):.3f}-{max(blocks):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
