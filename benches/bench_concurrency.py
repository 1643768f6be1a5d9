"""The concurrency curve: sync callbacks that block, at concurrency 64 to 1024 (issue 11 item 6).

    python benches/bench_concurrency.py [--n 10000] [--levels 64,256,512,1024] [--processes 3]
                                        [--rounds 3] [--json out.json]

Each record's ``fn`` sleeps 1 ms (a stand-in for a blocking HTTP call) and returns a value. At
each concurrency N three contenders run the same records:

* ``native``: ``run_batches(records, fn, concurrency=N)``;
* ``ThreadPoolExecutor(N)``: what users write by hand, ``list(pool.map(fn, records))``, the
  pool created and shut down inside the timed call (as a script does per job);
* ``reference``: the same run on the pure-Python reference engine (``engine="python"``).

Method: each process (``--processes``, 3 by default, fresh each) warms every contender up on a
small prefix, then runs the contenders in interleaved rounds (the starting one rotates), each
preceded by ``gc.collect()``, and keeps each contender's best round. Every output is checked
against the expected values once per process. The table shows the median over the processes of
records per second, with the range.

The Must show (issue 11): the native engine's throughput at the highest level is at least 0.9x
the best of the lower levels; that ratio is computed inside each process, then the median.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchguard import run_batches  # noqa: E402
from bench_engine import machine, make_records, native_build, sleep_1ms, spread  # noqa: E402

Records = list[dict[str, int]]
Runner = Callable[[Records, int], list[Any]]


def native(records: Records, n: int) -> list[Any]:
    report = run_batches(records, sleep_1ms, concurrency=n)
    return list(report.successful) if report.status == "complete" else [report.status]


def reference(records: Records, n: int) -> list[Any]:
    report = run_batches(records, sleep_1ms, concurrency=n, engine="python")
    return list(report.successful) if report.status == "complete" else [report.status]


def thread_pool(records: Records, n: int) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(sleep_1ms, records))


CONTENDERS: dict[str, Runner] = {
    "native": native,
    "ThreadPoolExecutor": thread_pool,
    "reference": reference,
}


def run_process(n: int, levels: list[int], rounds: int) -> dict[str, Any]:
    records = make_records(n)
    expected = [r["v"] + 1 for r in records]
    warm = records[: min(n, 2_000)]
    names = list(CONTENDERS)
    out: dict[str, dict[str, Any]] = {}
    for level in levels:
        for name in names:
            CONTENDERS[name](warm, level)
        times: dict[str, list[float]] = {name: [] for name in names}
        checks: dict[str, str] = {}
        for round_no in range(rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                gc.collect()
                started = time.perf_counter()
                values = CONTENDERS[name](records, level)
                times[name].append(time.perf_counter() - started)
                if name not in checks:
                    checks[name] = "ok" if values == expected else f"wrong output ({len(values)} values)"
                del values
        out[str(level)] = {name: {"best_s": min(times[name]), "times_s": times[name],
                                  "per_s": n / min(times[name]), "check": checks[name]} for name in names}
    return {"native": native_build(), "n": n, "levels": out}


def aggregate(runs: list[dict[str, Any]], levels: list[int]) -> dict[str, Any]:
    rows = []
    for level in levels:
        row: dict[str, Any] = {"concurrency": level}
        for name in CONTENDERS:
            per_s = [run["levels"][str(level)][name]["per_s"] for run in runs]
            row[name] = {"per_s": statistics.median(per_s), "range": spread([p / 1e3 for p in per_s]),
                         "checks": sorted({run["levels"][str(level)][name]["check"] for run in runs})}
        at = [run["levels"][str(level)] for run in runs]
        vs_pool = [a["native"]["per_s"] / a["ThreadPoolExecutor"]["per_s"] for a in at]
        row["x_pool"] = statistics.median(vs_pool)
        rows.append(row)
    top, lower = levels[-1], levels[:-1]
    held = [run["levels"][str(top)]["native"]["per_s"]
            / max(run["levels"][str(level)]["native"]["per_s"] for level in lower) for run in runs]
    return {"rows": rows, "held": statistics.median(held), "held_range": spread(held)}


def render(result: dict[str, Any], info: dict[str, Any], runs: list[dict[str, Any]], levels: list[int]) -> str:
    lines = [
        f"machine: {info['nproc']} CPUs, {info['cpu']}; {info['implementation']} {info['python']}; {info['platform']}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in info['loadavg'])}; native: {info['native']}",
        f"{runs[0]['n']:,} records of `time.sleep(0.001)`; {len(runs)} fresh process(es), best round of each; "
        "records/s as the median over processes (range in k/s)",
        f"  {'concurrency':>11} {'native':>9} {'(range)':>13} {'ThreadPool':>10} {'(range)':>13} "
        f"{'reference':>9} {'(range)':>13} {'native/pool':>11}",
    ]
    for row in result["rows"]:
        line = f"  {row['concurrency']:>11}"
        for name in CONTENDERS:
            line += f" {row[name]['per_s']:>9,.0f} {row[name]['range']:>13}"
        line += f" {row['x_pool']:>11.2f}"
        bad = [c for name in CONTENDERS for c in row[name]["checks"] if c != "ok"]
        if bad:
            line += f"  !! CHECK FAILED: {' | '.join(bad)}"
        lines.append(line)
    verdict = "MEETS" if result["held"] >= 0.9 else "MISSES"
    lines.append(f"native at {levels[-1]} / best native below it: {result['held']:.2f} "
                 f"({result['held_range']}); target >= 0.9: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="records (10,000)")
    parser.add_argument("--levels", default="64,256,512,1024", help="concurrency settings, ascending")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes (3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender and level (3)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    levels = sorted(int(x) for x in args.levels.split(",") if x.strip())
    if len(levels) < 2:
        parser.error("--levels needs at least two settings")
    if args.worker:
        print(json.dumps(run_process(args.n, levels, args.rounds)))
        return 0
    info = machine()
    runs = []
    for i in range(args.processes):
        print(f"process {i + 1}/{args.processes} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--worker", "--n", str(args.n), "--levels", args.levels,
               "--rounds", str(args.rounds)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"process failed ({done.returncode}):\n{done.stderr}", file=sys.stderr)
            return 1
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = aggregate(runs, levels)
    print(render(result, info, runs, levels))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "result": result, "processes": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
