"""The engine against the loops users write by hand: issue 2's four scenarios, as ratios.

    python benches/bench_engine.py [--quick] [--json out.json] [--processes 3] [--only a-int,d]

Scenarios (DESIGN §9, issue 2 "Must show"):

* ``a-int`` / ``a-dict``: 1M trivial records, ``fn`` returns an int / a small dict. Baseline:
  ``[fn(r) for r in records]``; ``list(map(fn, records))`` is the floor for any C caller.
* ``b``: 1M records, every 10th raises ValueError. Baseline: a bare try/except loop.
* ``c``: 5k records that each ``time.sleep(0.001)``, concurrency 64. Baseline: the ideal
  ``n * (measured duration of one sleep) / 64``; also ThreadPoolExecutor(64).
* ``d``: 200k records, every 20th fails once with ConnectionError, zero retry delay. Baseline:
  a bare retry loop; also tenacity.

Method: each scenario runs in a fresh subprocess (``--processes`` times, 3 by default). Inside
one, the input is built once, every contender is warmed up on a small prefix, then the
contenders run in interleaved rounds (the starting contender rotates every round), each timed
call preceded by ``gc.collect()`` with the GC left enabled, and each contender's best round is
kept. Slow contenders run fewer rounds, some on a prefix of the input; their time is then
compared per record. Ratios are computed inside each process (so drift between processes
cancels) and the table shows their median over the processes, with the range. Every
contender's output is checked once per process against the expected values, so none can win by
doing less, and so is what it leaves behind (GC-tracked objects still alive once its output is
dropped): a leak slows every later collection.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from batchguard import CircuitBreaker, Classifier, RetryPolicy, run_batches  # noqa: E402

Records = list[dict[str, int]]
Fn = Callable[[dict[str, int]], Any]

# ---------------------------------------------------------------------------- workloads


def make_records(n: int) -> Records:
    return [{"id": i, "v": i} for i in range(n)]


def plus_one(r: dict[str, int]) -> int:
    return r["v"] + 1


def small_dict(r: dict[str, int]) -> dict[str, int]:
    return {"id": r["id"], "w": r["v"] + 1}


def every_tenth_invalid(r: dict[str, int]) -> int:
    if r["id"] % 10 == 0:
        raise ValueError("invalid value")
    return r["v"] + 1


def sleep_1ms(r: dict[str, int]) -> int:
    time.sleep(0.001)
    return r["v"] + 1


def make_flaky() -> Fn:
    """Record i fails its first attempt with ConnectionError iff i % 20 == 0.

    The state lives in the closure, so every timed call gets a fresh one.
    """
    failed: set[int] = set()

    def flaky(r: dict[str, int]) -> int:
        i = r["id"]
        if i % 20 == 0 and i not in failed:
            failed.add(i)
            raise ConnectionError("connection reset by peer")
        return r["v"] + 1

    return flaky


def _noop_progress(progress: Any) -> None:
    pass


# ---------------------------------------------------------------------------- the hand-written contenders


def bare_listcomp(records: Records, fn: Fn) -> list[Any]:
    return [fn(r) for r in records]


def bare_map(records: Records, fn: Fn) -> list[Any]:
    return list(map(fn, records))


def bare_try_loop(records: Records, fn: Fn) -> tuple[list[Any], list[Any]]:
    out: list[Any] = []
    failed: list[Any] = []
    for r in records:
        try:
            out.append(fn(r))
        except Exception as exc:  # noqa: BLE001 - this is the loop users write
            failed.append((r, exc))
    return out, failed


def try_loop_without_traceback(records: Records, fn: Fn) -> tuple[list[Any], list[Any]]:
    """Keeps the error, as an engine must for its report, but not its traceback and frames."""
    out: list[Any] = []
    failed: list[Any] = []
    for r in records:
        try:
            out.append(fn(r))
        except Exception as exc:  # noqa: BLE001
            failed.append((r, exc.with_traceback(None)))
    return out, failed


def try_loop_record_only(records: Records, fn: Fn) -> tuple[list[Any], list[Any]]:
    """The floor: remembers which records failed, not why."""
    out: list[Any] = []
    failed: list[Any] = []
    for r in records:
        try:
            out.append(fn(r))
        except Exception:  # noqa: BLE001
            failed.append(r)
    return out, failed


def bare_retry_loop(records: Records, fn: Fn) -> tuple[list[Any], list[Any]]:
    out: list[Any] = []
    failed: list[Any] = []
    for r in records:
        for _attempt in range(3):
            try:
                out.append(fn(r))
                break
            except ConnectionError:
                continue
        else:
            failed.append(r)
    return out, failed


def tenacity_loop(records: Records, fn: Fn) -> tuple[list[Any], list[Any]]:
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_none

    wrapped = retry(stop=stop_after_attempt(3), retry=retry_if_exception_type(ConnectionError),
                    wait=wait_none(), reraise=True)(fn)
    out: list[Any] = []
    failed: list[Any] = []
    for r in records:
        try:
            out.append(wrapped(r))
        except Exception as exc:  # noqa: BLE001
            failed.append((r, exc))
    return out, failed


# The seed's loop (/work/shared/seeds/000, process_batch_isolated), verbatim but for the DLQ,
# which is a list here: the cheapest DLQ there is.


@dataclass
class SeedBatchResult:
    successful: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    success_count: int
    failure_count: int
    errors: list[dict[str, Any]]


class SeedListDLQ:
    def __init__(self) -> None:
        self.entries: list[Any] = []

    def send(self, record: Any, error: BaseException, stage: str) -> None:
        self.entries.append((record, error, stage))


def process_batch_isolated(records: list[dict[str, Any]], processor: Callable[[Any], Any],
                           dlq: SeedListDLQ, stage: str) -> SeedBatchResult:
    successful = []
    failed = []
    errors = []

    for i, record in enumerate(records):
        try:
            result = processor(record)
            successful.append(result)
        except Exception as e:  # noqa: BLE001
            error_info = {
                "record_index": i,
                "record_id": record.get("entity_id") or record.get("id"),
                "error_type": type(e).__name__,
                "error_message": str(e),
                "stage": stage,
            }
            errors.append(error_info)
            failed.append(record)
            dlq.send(record, e, stage)

    return SeedBatchResult(
        successful=successful,
        failed=failed,
        success_count=len(successful),
        failure_count=len(failed),
        errors=errors,
    )


def seed_loop(records: Records, fn: Fn) -> SeedBatchResult:
    return process_batch_isolated(records, fn, SeedListDLQ(), "process")


class QueuePool:
    """The best hand-written pool: persistent threads pulling (fn, slot, record) off a Queue."""

    def __init__(self, workers: int) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        get, done = self.queue.get, self.queue.task_done
        while True:
            item = get()
            if item is None:
                done()
                return
            fn, results, i, record = item
            try:
                results[i] = fn(record)
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
            done()

    def map(self, fn: Fn, records: Records) -> list[Any]:
        results: list[Any] = [None] * len(records)
        put = self.queue.put
        for i, record in enumerate(records):
            put((fn, results, i, record))
        self.queue.join()
        return results

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()


def tpe_fresh(records: Records, fn: Fn) -> list[Any]:
    with ThreadPoolExecutor(64) as pool:
        return list(pool.map(fn, records))


# ---------------------------------------------------------------------------- the engines

FULL_FEATURES: dict[str, Any] = {
    "retry": RetryPolicy(max_attempts=3),
    "breaker": CircuitBreaker(),
    "on_progress": _noop_progress,
    "max_failures": 0.5,
    "success_threshold": 0.9,
    "classifier": Classifier.default(),
}


def engine(name: Literal["native", "python"], **options: Any) -> Callable[[Records, Fn], Any]:
    def run(records: Records, fn: Fn) -> Any:
        return run_batches(records, fn, engine=name, **options)

    return run


# ---------------------------------------------------------------------------- what a contender produced


@dataclass(frozen=True)
class Outcome:
    values: list[Any]
    failures: int
    status: str | None = None
    retries: int | None = None
    failed_ids: list[int] | None = None
    """An engine's dead-lettered records, by id, in input order."""


def outcome_of(output: Any) -> Outcome:
    if isinstance(output, tuple):
        return Outcome(output[0], len(output[1]))
    if isinstance(output, SeedBatchResult):
        return Outcome(output.successful, output.failure_count)
    if isinstance(output, list):
        return Outcome([v for v in output if not isinstance(v, BaseException)],
                       sum(isinstance(v, BaseException) for v in output))
    return Outcome(output.successful, output.failure_count, output.status, output.retry_count,
                   [r["id"] for r in output.failed])


@dataclass(frozen=True)
class Expected:
    values: list[Any]
    failures: int
    status: str
    retries: int = 0
    failed_ids: list[int] = field(default_factory=list)


def check(output: Any, expected: Expected) -> str:
    """"ok", or what differs (a contender that does less must not win)."""
    got = outcome_of(output)
    problems = []
    if got.failures != expected.failures:
        problems.append(f"failures {got.failures} != {expected.failures}")
    if len(got.values) != len(expected.values):
        problems.append(f"{len(got.values)} values != {len(expected.values)}")
    elif got.values != expected.values:
        first = next(i for i, (a, b) in enumerate(zip(got.values, expected.values, strict=True)) if a != b)
        problems.append(f"value {first}: {got.values[first]!r} != {expected.values[first]!r}")
    if got.status is not None and got.status != expected.status:
        problems.append(f"status {got.status!r} != {expected.status!r}")
    if got.retries is not None and got.retries != expected.retries:
        problems.append(f"retry_count {got.retries} != {expected.retries}")
    if got.failed_ids is not None and got.failed_ids != expected.failed_ids:
        problems.append(f"report.failed ids {got.failed_ids[:5]}... != {expected.failed_ids[:5]}...")
    return "ok" if not problems else "; ".join(problems)


# ---------------------------------------------------------------------------- scenarios


@dataclass
class Contender:
    name: str
    run: Callable[[Records, Fn], Any]
    n: int | None = None
    """Records this contender runs on (a prefix); None: all of them."""
    rounds: int | None = None
    """None: the scenario's rounds."""
    target: str | None = None


@dataclass
class Scenario:
    key: str
    title: str
    n: int
    rounds: int
    make_fn: Callable[[], Fn]
    expected: Callable[[Records], Expected]
    contenders: list[Contender]
    baseline: str
    """The contender ratios are taken against (c: the ideal, see ``ideal``)."""
    also_vs: str | None = None
    also_label: str = ""
    """The column header of the ratio against ``also_vs``."""
    concurrency: int = 1
    setup: Callable[[], list[Any]] | None = None
    """Starts what the contenders share (thread pools); returns it, to be closed at the end."""


def expect_all(fn: Fn) -> Callable[[Records], Expected]:
    return lambda records: Expected([fn(r) for r in records], 0, "complete")


def expect_invalid(records: Records) -> Expected:
    values = [r["v"] + 1 for r in records if r["id"] % 10]
    failures = len(records) - len(values)
    # success_threshold=0.9 (full features) keeps partial_success at exactly 10% failed.
    return Expected(values, failures, "partial_success",
                    failed_ids=[r["id"] for r in records if r["id"] % 10 == 0])


def expect_flaky(records: Records) -> Expected:
    return Expected([r["v"] + 1 for r in records], 0, "complete",
                    retries=sum(1 for r in records if r["id"] % 20 == 0))


def scenario(key: str, quick: bool) -> Scenario:
    big = 100_000 if quick else 1_000_000
    fast_rounds = 3 if quick else 7
    slow_rounds = 2 if quick else 3
    if key in ("a-int", "a-dict"):
        fn = plus_one if key == "a-int" else small_dict
        label = "r['v'] + 1" if key == "a-int" else "{'id': .., 'w': r['v'] + 1}"
        return Scenario(key, f"{big:,} trivial records, fn = {label}", big, fast_rounds, lambda: fn,
                        expect_all(fn), [
                            Contender("[fn(r) for r in records]", bare_listcomp),
                            Contender("list(map(fn, records))", bare_map),
                            Contender("seed loop (process_batch_isolated)", seed_loop),
                            Contender('engine="python" (reference)', engine("python"), rounds=slow_rounds),
                            Contender("native, defaults", engine("native")),
                            Contender("native, every feature on", engine("native", **FULL_FEATURES),
                                      target="<= 1.20x (aim 1.15x)"),
                        ], baseline="[fn(r) for r in records]", also_vs="list(map(fn, records))",
                        also_label="x map")
    if key == "b":
        return Scenario(key, f"{big:,} records, 10% raise ValueError", big, fast_rounds,
                        lambda: every_tenth_invalid, expect_invalid, [
                            Contender("bare try/except loop", bare_try_loop),
                            Contender("try/except, traceback dropped", try_loop_without_traceback),
                            Contender("try/except, failed records only", try_loop_record_only),
                            Contender("seed loop (process_batch_isolated)", seed_loop),
                            Contender('engine="python" (reference)', engine("python"), rounds=slow_rounds),
                            Contender("native, defaults", engine("native")),
                            Contender("native, every feature on", engine("native", **FULL_FEATURES),
                                      target="<= 1.25x"),
                        ], baseline="bare try/except loop", also_vs="try/except, traceback dropped",
                        also_label="x no-tb")
    if key == "c":
        n = 1_000 if quick else 5_000
        pools: dict[str, Any] = {}

        def start_pools() -> list[Any]:
            pools["queue"] = QueuePool(64)
            pools["tpe"] = ThreadPoolExecutor(64)
            return list(pools.values())

        def tpe_reused(records: Records, fn: Fn) -> list[Any]:
            return list(pools["tpe"].map(fn, records))

        def queue_pool(records: Records, fn: Fn) -> list[Any]:
            return pools["queue"].map(fn, records)

        return Scenario(key, f"{n:,} records of time.sleep(0.001), concurrency 64", n, fast_rounds,
                        lambda: sleep_1ms, expect_all(plus_one), [
                            Contender("ThreadPoolExecutor(64).map, fresh", tpe_fresh),
                            Contender("ThreadPoolExecutor(64).map, reused", tpe_reused),
                            Contender("persistent pool, 64 threads + Queue", queue_pool),
                            Contender('engine="python" (reference), c=64', engine("python", concurrency=64)),
                            Contender("native, c=64", engine("native", concurrency=64),
                                      target=">= 0.75 ideal, >= 1.5x TPE"),
                        ], baseline="ideal", also_vs="ThreadPoolExecutor(64).map, fresh", also_label="x TPE",
                        concurrency=64, setup=start_pools)
    if key == "d":
        n = 20_000 if quick else 200_000
        retry = RetryPolicy(max_attempts=3, base_delay=0.0)
        full = {**FULL_FEATURES, "retry": retry}
        return Scenario(key, f"{n:,} records, 5% fail once with ConnectionError, zero delay", n,
                        fast_rounds, make_flaky, expect_flaky, [
                            Contender("bare retry loop", bare_retry_loop),
                            Contender("tenacity @retry", tenacity_loop, n=n // 10, rounds=slow_rounds),
                            Contender('engine="python" (reference)', engine("python", retry=retry),
                                      rounds=slow_rounds),
                            Contender("native, retry only", engine("native", retry=retry),
                                      target="<= 1.50x"),
                            Contender("native, every feature on", engine("native", **full)),
                        ], baseline="bare retry loop")
    raise SystemExit(f"unknown scenario {key!r}; known: {', '.join(SCENARIOS)}")


SCENARIOS = ("a-int", "a-dict", "b", "c", "d")

LEAK_TOLERANCE = 50
"""GC-tracked objects a contender may leave behind after its output is dropped (caches)."""


def measure_sleep(samples: int = 200) -> float:
    """The median duration of one time.sleep(0.001) on this machine, in seconds."""
    durations = []
    for _ in range(samples):
        started = time.perf_counter()
        time.sleep(0.001)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


@contextmanager
def closing_resources(resources: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for resource in resources:
            if isinstance(resource, ThreadPoolExecutor):
                resource.shutdown()
            else:
                resource.close()


def run_scenario(key: str, quick: bool) -> dict[str, Any]:
    """One process's measurements: the best time of each contender, and its correctness."""
    sc = scenario(key, quick)
    records = make_records(sc.n)
    prefixes: dict[int, Records] = {}
    for c in sc.contenders:
        size = c.n or sc.n
        prefixes.setdefault(size, records if size == sc.n else records[:size])
    expected = {size: sc.expected(recs) for size, recs in prefixes.items()}
    best: dict[str, float] = {}
    checks: dict[str, str] = {}
    result: dict[str, Any] = {"scenario": key, "native": native_build()}
    with closing_resources(sc.setup() if sc.setup else []):
        if key == "c":
            result["sleep_s"] = measure_sleep()
        # Enough to start every thread a pool will use, so that no timed round pays for it.
        warm = records[:min(2_000, sc.n)]
        for c in sc.contenders:
            c.run(warm, sc.make_fn())
        rounds = max(c.rounds or sc.rounds for c in sc.contenders)
        order = list(sc.contenders)
        for round_no in range(rounds):
            shift = round_no % len(order)
            for c in order[shift:] + order[:shift]:
                if round_no >= (c.rounds or sc.rounds):
                    continue
                recs = prefixes[c.n or sc.n]
                fn = sc.make_fn()
                first = c.name not in checks
                gc.collect()
                tracked = len(gc.get_objects()) if first else 0
                started = time.perf_counter()
                output = c.run(recs, fn)
                elapsed = time.perf_counter() - started
                best[c.name] = min(best.get(c.name, elapsed), elapsed)
                if first:
                    checks[c.name] = check(output, expected[c.n or sc.n])
                del output, fn
                if first:
                    # What a run leaves behind once its output is gone: a leak also slows every
                    # later contender's collections, so it must show.
                    gc.collect()
                    leaked = len(gc.get_objects()) - tracked
                    if leaked > LEAK_TOLERANCE:
                        leak = f"leaks {leaked:,} GC-tracked objects per run"
                        checks[c.name] = leak if checks[c.name] == "ok" else f"{checks[c.name]}; {leak}"
    result["contenders"] = [
        {"name": c.name, "n": c.n or sc.n, "rounds": c.rounds or sc.rounds, "best_s": best[c.name],
         "per_record_s": best[c.name] / (c.n or sc.n), "check": checks[c.name]}
        for c in sc.contenders
    ]
    return result


# ---------------------------------------------------------------------------- the parent: processes and the table


def elf_sections(data: bytes) -> set[str]:
    """Section names of a little-endian ELF64 file (a debug build has .debug_info)."""
    import struct

    if data[:4] != b"\x7fELF" or data[4] != 2:
        return set()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    names_at, = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)
    sections = set()
    for i in range(shnum):
        name, = struct.unpack_from("<I", data, shoff + i * shentsize)
        sections.add(data[names_at + name:data.index(b"\0", names_at + name)].decode(errors="replace"))
    return sections


def native_build() -> str:
    from batchguard import _native

    data = Path(_native.__file__).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from batchguard import _native

    so = Path(_native.__file__)
    data = so.read_bytes()
    # Other engineers rebuild the engine while this runs: say which build was measured.
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(so.stat().st_mtime))
    debug = "with debug info" if ".debug_info" in elf_sections(data) else "no debug info"
    native = f"{so.name}, built {built}, sha256 {hashlib.sha256(data).hexdigest()[:12]}, {debug}"
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu": model,
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
        "native": native,
    }


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f"{min(values):.2f}-{max(values):.2f}"


def aggregate(key: str, runs: list[dict[str, Any]], quick: bool) -> dict[str, Any]:
    """Per-process ratios first, then their median over processes."""
    sc = scenario(key, quick)
    rows = []
    for i, c in enumerate(sc.contenders):
        per_proc = [run["contenders"][i] for run in runs]
        row: dict[str, Any] = {
            "name": c.name, "n": per_proc[0]["n"], "rounds": per_proc[0]["rounds"], "target": c.target,
            "best_s": statistics.median(p["best_s"] for p in per_proc),
            "per_record_ns": statistics.median(p["per_record_s"] for p in per_proc) * 1e9,
            "checks": sorted({p["check"] for p in per_proc}),
        }
        if key == "c":
            ideals = [run["sleep_s"] * run_c["n"] / sc.concurrency
                      for run, run_c in zip(runs, per_proc, strict=True)]
            fractions = [ideal / p["best_s"] for ideal, p in zip(ideals, per_proc, strict=True)]
            row["fraction_of_ideal"] = statistics.median(fractions)
            row["fraction_of_ideal_range"] = spread(fractions)
        else:
            ratios = [p["per_record_s"] / run["contenders"][_index(sc, sc.baseline)]["per_record_s"]
                      for run, p in zip(runs, per_proc, strict=True)]
            row["ratio"] = statistics.median(ratios)
            row["ratio_range"] = spread(ratios)
        if sc.also_vs:
            j = _index(sc, sc.also_vs)
            vs = [run["contenders"][j]["per_record_s"] / p["per_record_s"] if key == "c"
                  else p["per_record_s"] / run["contenders"][j]["per_record_s"]
                  for run, p in zip(runs, per_proc, strict=True)]
            row["vs_second"] = statistics.median(vs)
        rows.append(row)
    out: dict[str, Any] = {"key": key, "title": sc.title, "baseline": sc.baseline,
                           "also_vs": sc.also_vs, "also_label": sc.also_label, "rows": rows,
                           "processes": runs}
    if key == "c":
        out["sleep_s"] = statistics.median(run["sleep_s"] for run in runs)
        out["ideal_s"] = out["sleep_s"] * sc.n / sc.concurrency
    return out


def _index(sc: Scenario, name: str) -> int:
    return next(i for i, c in enumerate(sc.contenders) if c.name == name)


def verdict(key: str, row: dict[str, Any]) -> str:
    if not row["target"]:
        return ""
    if key == "a-int" or key == "a-dict":
        ok = row["ratio"] <= 1.20
    elif key == "b":
        ok = row["ratio"] <= 1.25
    elif key == "c":
        ok = row["fraction_of_ideal"] >= 0.75 and row["vs_second"] >= 1.5
    else:
        ok = row["ratio"] <= 1.50
    return "MEETS" if ok else "MISSES"


def render(results: list[dict[str, Any]], info: dict[str, Any], processes: int) -> str:
    lines = [
        f"machine: {info['nproc']} CPUs, {info['cpu']}; {info['implementation']} {info['python']}; "
        f"{info['platform']}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in info['loadavg'])}; native: {info['native']}",
        f"each scenario: {processes} fresh process(es); best of the rounds per process; "
        "ratios per process, then the median (range in brackets)",
    ]
    for sc in results:
        lines.append("")
        key = sc["key"]
        if key == "c":
            lines.append(f"[{key}] {sc['title']}: one sleep(0.001) takes {sc['sleep_s'] * 1e3:.3f} ms, "
                         f"ideal = n x that / 64 = {sc['ideal_s'] * 1e3:.1f} ms")
            head = f"  {'contender':<40} {'n':>9} {'rnd':>3} {'best':>10} {'of ideal':>9} {'(range)':>11} " \
                   f"{sc['also_label']:>7}  target"
        else:
            second = sc["also_label"]
            vs = f" ({second}: vs {sc['also_vs']})" if sc["also_vs"] else ""
            lines.append(f"[{key}] {sc['title']}; ratios per record vs {sc['baseline']}{vs}")
            head = f"  {'contender':<40} {'n':>9} {'rnd':>3} {'best':>10} {'ns/rec':>8} {'ratio':>6} " \
                   f"{'(range)':>11}" + (f" {second:>7}" if sc["also_vs"] else "") + "  target"
        lines.append(head)
        for row in sc["rows"]:
            best = f"{row['best_s'] * 1e3:,.1f} ms"
            if key == "c":
                line = (f"  {row['name']:<40} {row['n']:>9,} {row['rounds']:>3} {best:>10} "
                        f"{row['fraction_of_ideal']:>9.2f} {row['fraction_of_ideal_range']:>11} "
                        f"{row['vs_second']:>7.2f}")
            else:
                line = (f"  {row['name']:<40} {row['n']:>9,} {row['rounds']:>3} {best:>10} "
                        f"{row['per_record_ns']:>8.0f} {row['ratio']:>6.2f} {row['ratio_range']:>11}")
                if sc["also_vs"]:
                    line += f" {row['vs_second']:>7.2f}"
            if row["target"]:
                line += f"  {row['target']}: {verdict(key, row)}"
            bad = [c for c in row["checks"] if c != "ok"]
            if bad:
                line += f"  !! CHECK FAILED: {' | '.join(bad)}"
            lines.append(line)
    lines.append("")
    lines.append("n smaller than the scenario's: run on a prefix, compared per record. "
                 "c: 'of ideal' = ideal time / best time; 'x TPE' = throughput vs a fresh "
                 "ThreadPoolExecutor(64).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one process: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement here")
    parser.add_argument("--processes", type=int, default=None, help="fresh processes per scenario (3; 1 with --quick)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--worker", metavar="SCENARIO", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_scenario(args.worker, args.quick)))
        return 0

    processes = args.processes or (1 if args.quick else 3)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    for key in keys:
        if key not in SCENARIOS:
            parser.error(f"unknown scenario {key!r}; known: {', '.join(SCENARIOS)}")
    info = machine()
    results = []
    failed = False
    for key in keys:
        runs = []
        for i in range(processes):
            print(f"[{key}] process {i + 1}/{processes} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--worker", key] + (["--quick"] if args.quick else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"[{key}] process failed ({done.returncode}):\n{done.stderr}", file=sys.stderr)
                failed = True
                break
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if runs:
            results.append(aggregate(key, runs, args.quick))
    builds = sorted({run["native"] for sc in results for run in sc["processes"]})
    if len(builds) > 1:
        info["native"] += f"; !! THE ENGINE WAS REBUILT DURING THE RUN: processes measured {', '.join(builds)}"
    elif builds and builds[0] not in info["native"]:
        info["native"] += f"; !! the processes measured build {builds[0]}"
    table = render(results, info, processes)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "quick": args.quick,
                                               "processes": processes, "scenarios": results,
                                               "table": table}, indent=2))
    mismatch = any(c != "ok" for sc in results for row in sc["rows"] for c in row["checks"])
    return 1 if failed or mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
