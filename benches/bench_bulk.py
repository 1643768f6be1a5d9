"""Bulk processors: how many calls bisection makes to find the poison records, and what that
costs against a real SQLite table (issue 4).

    python benches/bench_bulk.py [--quick] [--json out.json] [--processes 3]

Part 1, call counts (deterministic, both engines, checked equal): ``run_batches(rows, fn,
bulk=True, batch_size=n)`` for n = 100, 1000, 10000 and k = 0, 1, 5, 20 poison rows, laid out
scattered (a seeded random sample) or adjacent (one block at a seeded random offset); against
the bound 2·k·ceil(log2 n) + 1 and against one-by-one (n calls).

Part 2, wall time against a real SQLite table (file, WAL, synchronous=NORMAL) with a CHECK
constraint (``v >= 0``), n = 10000 (1000 with --quick), k = 0, 1, 5, 20 scattered:

* bulk, native engine: ``fn`` inserts its rows with one ``executemany`` in one transaction;
* bulk, reference engine: the same;
* one-by-one, native engine: ``fn`` inserts one row per call, in its own transaction;
* k = 0 only, the floor: one ``executemany`` of every row in one transaction, no engine.

Method as ``bench_engine.py``: each scenario in a fresh process (3 by default), contenders in
interleaved rounds (the starting one rotating), the table emptied before and ``gc.collect()``
run right before each timed call, the best round kept per process, the median over processes
shown with its range. Every contender's outcome is checked (table contents, dead-lettered rows).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchguard import MemoryDLQ, run_batches  # noqa: E402
from bench_engine import machine, native_build, spread  # noqa: E402

SIZES = (100, 1_000, 10_000)
POISON_COUNTS = (0, 1, 5, 20)


def bound(n: int, k: int) -> int:
    return 2 * k * math.ceil(math.log2(n)) + 1 if n > 1 else 1


def poison_set(n: int, k: int, layout: str, seed: int = 0) -> set[int]:
    rng = random.Random(f"{n}-{k}-{layout}-{seed}")
    if k == 0:
        return set()
    if layout == "scattered":
        return set(rng.sample(range(n), k))
    start = rng.randrange(0, n - k + 1)
    return set(range(start, start + k))


# ---------------------------------------------------------------------------- part 1: call counts


def count_calls(n: int, poison: set[int], engine: str) -> tuple[int, list[int], list[int]]:
    calls = 0

    def fn(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if not poison.isdisjoint(batch):
            raise ValueError("CHECK constraint failed: v >= 0")
        return batch

    report = run_batches(range(n), fn, bulk=True, batch_size=n, engine=engine)
    return calls, report.successful, sorted(e.record_index for e in report.errors)


def call_counts() -> list[dict[str, Any]]:
    rows = []
    for n in SIZES:
        for k in POISON_COUNTS:
            for layout in (("scattered", "adjacent") if k > 1 else ("scattered",)):
                poison = poison_set(n, k, layout)
                native = count_calls(n, poison, "native")
                reference = count_calls(n, poison, "python")
                ok = (native == reference and native[2] == sorted(poison)
                      and native[1] == [i for i in range(n) if i not in poison])
                rows.append({"n": n, "k": k, "layout": layout if k > 1 else "-", "calls": native[0],
                             "bound": bound(n, k), "one_by_one": n, "check": "ok" if ok else
                             f"engines or outcome differ: native {native[0]} calls, reference {reference[0]}"})
    return rows


# ---------------------------------------------------------------------------- part 2: SQLite wall time


class Table:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0))")

    def empty(self) -> None:
        self.conn.execute("DELETE FROM items")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def insert(self, batch: list[tuple[int, int]]) -> list[int]:
        """One transaction: all of ``batch`` or none of it."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT INTO items (id, v) VALUES (?, ?)", batch)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return [row[0] for row in batch]

    def insert_one(self, row: tuple[int, int]) -> int:
        return self.insert([row])[0]

    def ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM items ORDER BY id")]


def contenders(table: Table, k: int) -> dict[str, Callable[[list[tuple[int, int]]], Any]]:
    def bulk(engine: str) -> Callable[[list[tuple[int, int]]], Any]:
        return lambda rows: run_batches(rows, table.insert, bulk=True, batch_size=len(rows), engine=engine,
                                        dlq=MemoryDLQ())

    out = {
        "bulk, native": bulk("native"),
        'bulk, reference (engine="python")': bulk("python"),
        "one-by-one, native": lambda rows: run_batches(rows, table.insert_one, batch_size=1000,
                                                        dlq=MemoryDLQ()),
    }
    if k == 0:
        out["floor: one executemany, no engine"] = table.insert
    return out


def run_sqlite(n: int, k: int, quick: bool) -> dict[str, Any]:
    poison = poison_set(n, k, "scattered")
    rows = [(i, -1 if i in poison else i) for i in range(n)]
    good = [i for i in range(n) if i not in poison]
    rounds = 2 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        table = Table(Path(tmp) / "items.db")
        runs = contenders(table, k)
        for run in runs.values():  # warm up: imports, the engine's first loop
            table.empty()
            run(rows[:50])
        best: dict[str, float] = {}
        checks: dict[str, str] = {}
        names = list(runs)
        for round_no in range(rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                table.empty()
                gc.collect()
                started = time.perf_counter()
                output = runs[name](rows)
                elapsed = time.perf_counter() - started
                best[name] = min(best.get(name, elapsed), elapsed)
                if name not in checks:
                    problems = []
                    if table.ids() != good:
                        problems.append("table holds the wrong rows")
                    if hasattr(output, "errors") and sorted(e.record_index for e in output.errors) != sorted(poison):
                        problems.append("wrong rows dead-lettered")
                    checks[name] = "; ".join(problems) or "ok"
        table.conn.close()
    return {"n": n, "k": k, "native": native_build(),
            "contenders": [{"name": name, "best_s": best[name], "check": checks[name]} for name in names]}


# ---------------------------------------------------------------------------- the table


def render(counts: list[dict[str, Any]], walls: list[dict[str, Any]], info: dict[str, Any],
           processes: int) -> str:
    lines = [
        f"machine: {info['nproc']} CPUs, {info['cpu']}; {info['implementation']} {info['python']}; {info['platform']}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in info['loadavg'])}; native: {info['native']}",
        "",
        "[1] bisection call counts, one batch of n (bulk=True, batch_size=n); native and reference agree",
        f"  {'n':>6} {'k':>3} {'layout':<10} {'calls':>6} {'bound 2k*ceil(log2 n)+1':>24} "
        f"{'one-by-one':>10} {'calls / one-by-one':>18}",
    ]
    for row in counts:
        flag = "" if row["calls"] <= row["bound"] else "  !! OVER THE BOUND"
        if row["check"] != "ok":
            flag += f"  !! CHECK FAILED: {row['check']}"
        lines.append(f"  {row['n']:>6,} {row['k']:>3} {row['layout']:<10} {row['calls']:>6,} {row['bound']:>24,} "
                     f"{row['one_by_one']:>10,} {row['calls'] / row['one_by_one']:>18.4f}{flag}")
    lines += ["", f"[2] wall time into SQLite (WAL, synchronous=NORMAL), poison scattered; {processes} fresh "
              "process(es) per scenario, best round each, median over processes (range)",
              f"  {'n':>6} {'k':>3}  {'contender':<36} {'best':>10} {'x one-by-one':>12} {'(range)':>11}"]
    for scenario in walls:
        runs = scenario["runs"]
        for i, first in enumerate(runs[0]["contenders"]):
            per = [run["contenders"][i] for run in runs]
            speedups = [next(c["best_s"] for c in run["contenders"] if c["name"] == "one-by-one, native")
                        / p["best_s"] for run, p in zip(runs, per, strict=True)]
            checks = sorted({p["check"] for p in per} - {"ok"})
            line = (f"  {scenario['n']:>6,} {scenario['k']:>3}  {first['name']:<36} "
                    f"{statistics.median(p['best_s'] for p in per) * 1e3:>7.1f} ms "
                    f"{statistics.median(speedups):>12.2f} {spread(speedups):>11}")
            if checks:
                line += f"  !! CHECK FAILED: {' | '.join(checks)}"
            lines.append(line)
    lines.append("  x one-by-one: one-by-one's time / this contender's (higher is better)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1000 for the wall times, one process")
    parser.add_argument("--processes", type=int, default=None, help="fresh processes per scenario (3; 1 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement here")
    parser.add_argument("--worker", nargs=2, type=int, metavar=("N", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_sqlite(*args.worker, args.quick)))
        return 0
    processes = args.processes or (1 if args.quick else 3)
    info = machine()
    print("call counts ...", file=sys.stderr, flush=True)
    counts = call_counts()
    n = 1_000 if args.quick else 10_000
    walls = []
    for k in POISON_COUNTS:
        runs = []
        for i in range(processes):
            print(f"[n={n} k={k}] process {i + 1}/{processes} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--worker", str(n), str(k)] + (["--quick"] if args.quick else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"process failed ({done.returncode}):\n{done.stderr}", file=sys.stderr)
                return 1
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        walls.append({"n": n, "k": k, "runs": runs})
    table = render(counts, walls, info, processes)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "counts": counts, "walls": walls, "table": table},
                                              indent=2))
    bad = any(r["check"] != "ok" or r["calls"] > r["bound"] for r in counts) or any(
        c["check"] != "ok" for w in walls for run in w["runs"] for c in run["contenders"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
