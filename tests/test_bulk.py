"""Bulk processors (``bulk=True``): one call per batch, bisection to find the poison records
(issue 4, "Must show"), on both engines.

The main fixture is a real SQLite table whose CHECK constraint rejects negative values: the
bulk callback inserts a whole batch with one ``executemany`` in one transaction, so one bad row
rolls back the whole call, exactly as a database bulk load behaves.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchguard
from batchguard import BulkResultError, CircuitBreaker, ConfigError, MemoryDLQ, RetryPolicy
from batchguard.dlq.sqlite import SqliteDLQ
from batchguard.errors import ConfigTypeError
from helpers_contract import (
    ENGINES,
    ERRORS,
    CountingIterator,
    assert_conservation,
    dlq_view,
    outcome_view,
    run,
)

both = pytest.mark.parametrize("engine", ENGINES)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def call_bound(n: int, k: int) -> int:
    """Bisection's worst case for k bad records in a batch of n: one call for the batch, then
    at each of the ceil(log2 n) levels at most k failing groups, each split in two calls."""
    return 2 * k * math.ceil(math.log2(n)) + 1 if n > 1 else 1


def isolation_depth(index: int, n: int) -> int:
    """How many halvings (first half ``len // 2``) isolate position ``index`` of n."""
    depth = 0
    while n > 1:
        middle = n // 2
        index, n = (index, middle) if index < middle else (index - middle, n - middle)
        depth += 1
    return depth


def batch_bound(n: int, batch_size: int, poison: Iterable[int]) -> int:
    """``call_bound`` summed over the batches of an input of n records."""
    bad = set(poison)
    total = 0
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        total += call_bound(size, sum(1 for i in range(start, start + size) if i in bad))
    return total


def rows(n: int, poison: Iterable[int]) -> list[dict[str, int]]:
    bad = set(poison)
    return [{"id": i, "v": -i - 1 if i in bad else i} for i in range(n)]


class SqliteLoader:
    """A bulk callback: inserts its rows with one executemany in one transaction (all or
    nothing) and returns one result (the row's id) per row. Remembers every call and every
    committed row; thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("CREATE TABLE IF NOT EXISTS items ("
                          " id INTEGER PRIMARY KEY,"
                          " v INTEGER NOT NULL CHECK (v >= 0))")
        self.calls: list[list[int]] = []
        self.committed: Counter[int] = Counter()
        self.fail_first_calls = 0
        self._lock = threading.Lock()

    def __call__(self, batch: list[dict[str, int]]) -> list[int]:
        with self._lock:
            self.calls.append([r["id"] for r in batch])
            if len(self.calls) <= self.fail_first_calls:
                raise ConnectionError("database is restarting")
            self.conn.execute("BEGIN")
            try:
                self.conn.executemany("INSERT INTO items (id, v) VALUES (:id, :v)", batch)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            self.committed.update(r["id"] for r in batch)
            return [r["id"] for r in batch]

    def one(self, row: dict[str, int]) -> int:
        """The one-row-per-call version of the same insert."""
        return self([row])[0]

    def table(self) -> list[tuple[int, int]]:
        return self.conn.execute("SELECT id, v FROM items ORDER BY id").fetchall()

    def close(self) -> None:
        self.conn.close()


class AsyncLoader:
    """The loader behind an ``async def`` bulk callback."""

    def __init__(self, loader: SqliteLoader) -> None:
        self.loader = loader

    async def __call__(self, batch: list[dict[str, int]]) -> list[int]:
        await asyncio.sleep(0)
        return self.loader(batch)


@pytest.fixture
def loader(tmp_path: Path) -> Any:
    loader = SqliteLoader(tmp_path / "items.db")
    yield loader
    loader.close()


@pytest.fixture(params=["memory", "sqlite"])
def dlq(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        yield MemoryDLQ()
        return
    queue = SqliteDLQ(tmp_path / "dlq.db")
    yield queue
    queue.close()


def check_load(loader: SqliteLoader, report: Any, dlq: Any, n: int, poison: set[int]) -> None:
    """Every good row inserted exactly once, every poison row dead-lettered as IntegrityError."""
    good = [i for i in range(n) if i not in poison]
    assert_conservation(report)
    assert loader.table() == [(i, i) for i in good]
    assert loader.committed == Counter(good), "a row was inserted more than once, or not at all"
    assert report.successful == good
    assert report.success_count == len(good) and report.failure_count == len(poison)
    entries = sorted(dlq.list(), key=lambda e: e.record_index)
    assert [e.record_index for e in entries] == sorted(poison)
    for entry in entries:
        assert entry.error_type == "IntegrityError" and entry.error_class == "permanent"
        assert "CHECK constraint failed" in entry.error_message
        assert entry.payload == {"id": entry.record_index, "v": -entry.record_index - 1}
        assert len(entry.attempts) == 1
    assert report.status == ("complete" if not poison else "partial_success")


POISON_100 = {
    "adjacent-3-4-5": {3, 4, 5},
    "first": {0},
    "last": {99},
    "scattered": {7, 31, 64, 90},
    "adjacent-run-at-the-end": set(range(90, 100)),
    "none": set(),
    "all": set(range(100)),
}


@both
@pytest.mark.parametrize("case", list(POISON_100))
def test_bulk_load_inserts_every_good_row_once_and_dead_letters_every_poison_row(
        engine: str, case: str, loader: SqliteLoader, dlq: Any) -> None:
    n, poison = 100, POISON_100[case]
    report = batchguard.run_batches(rows(n, poison), loader, bulk=True, batch_size=n, dlq=dlq,
                                    engine=engine, id_of=lambda r: r["id"])
    check_load(loader, report, dlq, n, poison)
    assert len(loader.calls) <= call_bound(n, len(poison))
    if len(poison) == 1:
        # One poison row: the whole batch, then both halves at each level down to it.
        (bad,) = poison
        assert len(loader.calls) == 1 + 2 * isolation_depth(bad, n)


@both
@pytest.mark.parametrize("seed", range(6))
def test_bulk_load_with_random_poison_sets_across_several_batches(engine: str, seed: int,
                                                                  loader: SqliteLoader) -> None:
    rng = random.Random(seed)
    n = rng.choice([37, 250, 1000])
    batch_size = rng.choice([16, 100, 1000])
    poison = set(rng.sample(range(n), rng.choice([1, 2, 5, 20])))
    dlq = MemoryDLQ()
    report = batchguard.run_batches(rows(n, poison), loader, bulk=True, batch_size=batch_size,
                                    dlq=dlq, engine=engine)
    check_load(loader, report, dlq, n, poison)
    assert len(loader.calls) <= batch_bound(n, batch_size, poison)


@both
def test_bulk_makes_far_fewer_calls_than_one_by_one(engine: str, tmp_path: Path) -> None:
    n, poison = 1000, {10, 11, 500, 999}
    bulk_loader = SqliteLoader(tmp_path / "bulk.db")
    single_loader = SqliteLoader(tmp_path / "single.db")
    try:
        bulk_dlq, single_dlq = MemoryDLQ(), MemoryDLQ()
        bulk = batchguard.run_batches(rows(n, poison), bulk_loader, bulk=True, batch_size=n,
                                      dlq=bulk_dlq, engine=engine)
        single = batchguard.run_batches(rows(n, poison), single_loader.one, batch_size=n,
                                        dlq=single_dlq, engine=engine)
        check_load(bulk_loader, bulk, bulk_dlq, n, poison)
        check_load(single_loader, single, single_dlq, n, poison)
        assert bulk_loader.table() == single_loader.table()
        assert [dlq_view(e) for e in bulk_dlq.list()] == [dlq_view(e) for e in single_dlq.list()]
        assert len(single_loader.calls) == n
        assert len(bulk_loader.calls) <= call_bound(n, len(poison)) == 81
    finally:
        bulk_loader.close()
        single_loader.close()


@both
def test_async_bulk_fn_is_bisected_the_same_way(engine: str, loader: SqliteLoader) -> None:
    n, poison = 64, {5, 6, 40}
    dlq = MemoryDLQ()
    report = batchguard.run_batches(rows(n, poison), AsyncLoader(loader), bulk=True, batch_size=n,
                                    dlq=dlq, engine=engine)
    check_load(loader, report, dlq, n, poison)
    assert len(loader.calls) <= call_bound(n, len(poison))


@both
def test_arun_batches_runs_a_bulk_fn_inside_a_running_loop(engine: str, loader: SqliteLoader) -> None:
    n, poison = 30, {29}
    dlq = MemoryDLQ()

    async def main() -> Any:
        return await batchguard.arun_batches(rows(n, poison), AsyncLoader(loader), bulk=True,
                                             batch_size=10, dlq=dlq, engine=engine)

    check_load(loader, asyncio.run(main()), dlq, n, poison)


@both
def test_concurrent_bulk_calls_insert_every_good_row_once(engine: str, loader: SqliteLoader) -> None:
    n, poison = 500, {0, 99, 100, 101, 377}
    dlq = MemoryDLQ()
    report = batchguard.run_batches(rows(n, poison), loader, bulk=True, batch_size=50, concurrency=3,
                                    dlq=dlq, engine=engine)
    check_load(loader, report, dlq, n, poison)
    assert len(loader.calls) <= batch_bound(n, 50, poison)


@both
def test_bulk_reads_a_generator_lazily_batch_by_batch(engine: str, loader: SqliteLoader) -> None:
    n, poison = 95, {3, 50}
    dlq = MemoryDLQ()
    report = batchguard.run_batches(iter(rows(n, poison)), loader, bulk=True, batch_size=20, dlq=dlq,
                                    engine=engine)
    check_load(loader, report, dlq, n, poison)
    assert [b.size for b in report.batches] == [20, 20, 20, 20, 15]
    assert sorted(map(len, loader.calls[:1])) == [20]


# ---------------------------------------------------------------------------- wrong results


@both
@pytest.mark.parametrize(("returns", "says"), [
    (lambda batch: batch[:-1], "results for"),
    (lambda batch: [*batch, None], "results for"),
    (lambda batch: None, "NoneType"),
    (lambda batch: {r: r for r in batch}, "dict"),
    (lambda batch: (r for r in batch), "generator"),
])
def test_bulk_fn_returning_the_wrong_shape_dead_letters_that_batch_with_bulk_result_error(
        engine: str, returns: Any, says: str) -> None:
    calls: list[list[int]] = []

    def fn(batch: list[int]) -> Any:
        calls.append(list(batch))
        # Only the second batch comes back wrong; the others are fine.
        return returns(batch) if batch[0] == 4 else [r * 10 for r in batch]

    dlq = MemoryDLQ()
    report = batchguard.run_batches(range(10), fn, bulk=True, batch_size=4, dlq=dlq, engine=engine)
    assert_conservation(report)
    assert report.successful == [0, 10, 20, 30, 80, 90]
    assert [e.record_index for e in report.errors] == [4, 5, 6, 7]
    for error in report.errors:
        assert error.error_type == "BulkResultError"
        assert says in error.error_message
    assert [(e.record_index, e.error_type) for e in dlq.list()] == [(i, "BulkResultError") for i in range(4, 8)]
    assert [e.payload for e in dlq.list()] == [4, 5, 6, 7]
    # Nothing is lost and nothing is re-run: a wrong answer is not split and retried.
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert issubclass(BulkResultError, TypeError)


# ---------------------------------------------------------------------------- classification in bulk


@both
def test_bulk_fn_failing_once_with_a_recoverable_error_ends_with_every_record_succeeded(
        engine: str, loader: SqliteLoader) -> None:
    loader.fail_first_calls = 1
    dlq = MemoryDLQ()
    report = batchguard.run_batches(rows(40, ()), loader, bulk=True, batch_size=40, dlq=dlq,
                                    engine=engine, retry=RetryPolicy(base_delay=0.01))
    check_load(loader, report, dlq, 40, set())
    assert report.status == "complete"
    assert len(loader.calls) >= 2


@both
def test_single_record_failing_recoverably_is_retried_alone_until_it_succeeds(engine: str) -> None:
    solo: Counter[int] = Counter()
    calls: list[list[int]] = []

    def fn(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        if 5 in batch:
            if len(batch) == 1:
                solo[5] += 1
            if len(batch) > 1 or solo[5] < 3:
                raise ConnectionError("reset by peer")
        return [r * 10 for r in batch]

    report = batchguard.run_batches(range(8), fn, bulk=True, batch_size=8, engine=engine,
                                    retry=RetryPolicy(max_attempts=3, base_delay=0.01, jitter="none"))
    assert report.status == "complete"
    assert report.successful == [r * 10 for r in range(8)]
    assert report.retry_count == 2
    assert calls[-2:] == [[5], [5]]


@both
def test_always_failing_record_in_bulk_is_retried_then_dead_lettered_with_its_attempts(engine: str) -> None:
    def fn(batch: list[int]) -> list[int]:
        if 2 in batch:
            raise ConnectionError("record 2 always resets")
        return batch

    dlq = MemoryDLQ()
    report = batchguard.run_batches(range(4), fn, bulk=True, batch_size=4, engine=engine, dlq=dlq,
                                    retry=RetryPolicy(max_attempts=3, base_delay=0.0))
    assert report.successful == [0, 1, 3]
    (entry,) = dlq.list()
    assert (entry.record_index, entry.error_type, entry.error_class) == (2, "ConnectionError", "recoverable")
    assert [a.attempt for a in entry.attempts] == [1, 2, 3]


@both
def test_fatal_record_in_bulk_stops_the_run_and_leaves_the_rest_pending(engine: str) -> None:
    def fn(batch: list[int]) -> list[int]:
        if 5 in batch:
            raise MemoryError("record 5 is fatal")
        return batch

    dlq = MemoryDLQ()
    report = batchguard.run_batches(range(40), fn, bulk=True, batch_size=8, engine=engine, dlq=dlq)
    assert_conservation(report)
    assert report.status == "aborted" and report.stopped_reason == "fatal"
    assert [(e.record_index, e.error_class) for e in report.errors] == [(5, "fatal")]
    assert len(dlq) == 1
    # The halves before record 5 succeeded; 6 and 7, and every later batch, never ran.
    assert report.successful == [0, 1, 2, 3, 4]
    assert report.pending_count == 40 - 6


@pytest.mark.parametrize("engine", ENGINES)
def test_async_bulk_call_over_the_timeout_is_bisected_to_the_slow_record(engine: str) -> None:
    async def fn(batch: list[int]) -> list[int]:
        if 3 in batch:
            await asyncio.sleep(5)
        return [r * 10 for r in batch]

    dlq = MemoryDLQ()
    report = batchguard.run_batches(range(8), fn, bulk=True, batch_size=8, engine=engine, dlq=dlq,
                                    timeout=0.05, retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    assert report.successful == [r * 10 for r in range(8) if r != 3]
    (entry,) = dlq.list()
    assert (entry.record_index, entry.error_type, entry.error_class) == (3, "TimeoutError", "recoverable")
    assert len(entry.attempts) == 2



@both
@pytest.mark.parametrize("kind", ["sync", "async-blocking", "async-swallowing"])
def test_bulk_call_returning_after_the_timeout_counts_as_timed_out(engine: str, kind: str) -> None:
    sizes: list[int] = []

    def work(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        if len(batch) > 2:
            time.sleep(0.1)  # only the big groups are slow
        return [r * 10 for r in batch]

    async def blocking(batch: list[int]) -> list[int]:
        return work(batch)

    async def swallowing(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        if len(batch) > 2:
            try:
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                return [-1] * len(batch)
        return [r * 10 for r in batch]

    fn = {"sync": work, "async-blocking": blocking, "async-swallowing": swallowing}[kind]
    report = batchguard.run_batches(range(8), fn, bulk=True, batch_size=8, engine=engine, timeout=0.05,
                                    retry=RetryPolicy(max_attempts=1))
    # The whole batch (8) and its halves (4) time out; the quarters (2) are fast.
    assert sizes == [8, 4, 2, 2, 4, 2, 2]
    assert report.status == "complete" and report.successful == [r * 10 for r in range(8)]


# ---------------------------------------------------------------------------- bad configuration


@both
def test_bulk_with_key_of_is_a_config_error(engine: str) -> None:
    calls: list[Any] = []
    with pytest.raises(ConfigError, match="key_of"):
        batchguard.run_batches(range(3), calls.append, bulk=True, key_of=lambda r: r, engine=engine)

    async def main() -> None:
        await batchguard.arun_batches(range(3), calls.append, bulk=True, key_of=lambda r: r, engine=engine)

    with pytest.raises(ConfigError, match="key_of"):
        asyncio.run(main())
    assert calls == []


@both
@pytest.mark.parametrize("value", [1, "yes", None])
def test_bulk_must_be_a_bool(engine: str, value: Any) -> None:
    with pytest.raises(ConfigTypeError, match="bulk"):
        batchguard.run_batches(range(3), lambda b: b, bulk=value, engine=engine)


# ---------------------------------------------------------------------------- the laws, under random plans


class BulkPlan:
    """A deterministic bulk callback over int records. ``outcomes[(record, attempt)]`` says
    what the record's ``attempt``-th try does ("ok" when absent); a record's tries are the
    calls it gets alone (the engine's attempts). A group call fails, with the error of its first
    bad member, when any member's next try would; otherwise it returns ``record * 10`` each."""

    def __init__(self, outcomes: dict[tuple[int, int], str]) -> None:
        self.outcomes = outcomes
        self.tries: Counter[int] = Counter()
        self.calls: list[tuple[int, ...]] = []
        self.returned: set[int] = set()
        self.last_error: dict[int, str] = {}

    def __call__(self, batch: list[int]) -> list[int]:
        self.calls.append(tuple(batch))
        if len(batch) == 1:
            self.tries[batch[0]] += 1
        for record in batch:
            outcome = self.outcomes.get((record, self.tries[record] + (len(batch) > 1)), "ok")
            if outcome != "ok":
                if len(batch) == 1:
                    self.last_error[record] = outcome
                raise ERRORS[outcome](f"{outcome} record={record}")
        self.returned.update(batch)
        return [r * 10 for r in batch]


OUTCOMES = ["ok"] * 24 + ["transient"] * 4 + ["recoverable"] * 4 + ["permanent"] * 6 + ["fatal"]


@st.composite
def bulk_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=0, max_value=50))
    max_attempts = draw(st.integers(min_value=1, max_value=3))
    plans = draw(st.lists(st.lists(st.sampled_from(OUTCOMES), max_size=max_attempts), min_size=n, max_size=n))
    outcomes = {(r, a): o for r, plan in enumerate(plans) for a, o in enumerate(plan, 1) if o != "ok"}
    breaker = draw(st.one_of(st.none(), st.builds(
        CircuitBreaker, failure_rate_threshold=st.sampled_from([0.25, 0.5, 1.0]), window=st.just(4),
        minimum_calls=st.integers(min_value=1, max_value=4), open_duration=st.just(0.0),
        half_open_calls=st.integers(min_value=1, max_value=2))))
    return {"n": n, "outcomes": outcomes, "batch_size": draw(st.integers(min_value=1, max_value=20)),
            "max_attempts": max_attempts,
            "max_failures": draw(st.one_of(st.none(), st.integers(min_value=0, max_value=5))),
            "breaker": breaker}


def _run_bulk(scenario: dict[str, Any], engine: str) -> tuple[Any, BulkPlan, MemoryDLQ]:
    plan = BulkPlan(scenario["outcomes"])
    dlq = MemoryDLQ()
    report = run(range(scenario["n"]), plan, engine=engine, bulk=True, dlq=dlq,
                 batch_size=scenario["batch_size"], max_failures=scenario["max_failures"],
                 breaker=scenario["breaker"],
                 retry=RetryPolicy(max_attempts=scenario["max_attempts"], base_delay=0.0, jitter="none"))
    return report, plan, dlq


def check_bulk_laws(scenario: dict[str, Any], report: Any, plan: BulkPlan, dlq: MemoryDLQ) -> None:
    assert_conservation(report)
    assert report.total == scenario["n"]
    assert report.successful == [r * 10 for r in sorted(plan.returned)]
    failed = [e.record_index for e in report.errors]
    assert not set(failed) & plan.returned
    assert sorted(e.record_index for e in dlq.list()) == failed
    for error in report.errors:
        # Only a record's own (solo) tries count as attempts; its class is its last one's.
        assert error.attempts == plan.tries[error.record_index]
        assert error.error_class == plan.last_error[error.record_index]
    assert report.retry_count == sum(plan.tries.values()) - len(plan.tries)
    if report.stopped_reason is None:
        assert report.pending_count == 0
        bad = {r for (r, _), o in scenario["outcomes"].items()}
        assert len(plan.calls) <= batch_bound(scenario["n"], scenario["batch_size"], bad) + sum(
            max(0, t - 1) for t in plan.tries.values())


@both
@SETTINGS
@given(scenario=bulk_scenarios())
def test_bulk_every_record_ends_in_exactly_one_state(engine: str, scenario: dict[str, Any]) -> None:
    report, plan, dlq = _run_bulk(scenario, engine)
    check_bulk_laws(scenario, report, plan, dlq)


@SETTINGS
@given(scenario=bulk_scenarios())
def test_bulk_engines_agree(scenario: dict[str, Any]) -> None:
    views = []
    for engine in ENGINES:
        report, plan, dlq = _run_bulk(scenario, engine)
        check_bulk_laws(scenario, report, plan, dlq)
        views.append((outcome_view(report), plan.calls,
                      [dlq_view(e) for e in sorted(dlq.list(), key=lambda e: e.record_index)]))
    (python_report, python_calls, python_dlq), (native_report, native_calls, native_dlq) = views
    for key in python_report:
        assert native_report[key] == python_report[key], key
    assert native_calls == python_calls, "the engines bisected differently"
    assert native_dlq == python_dlq


class SlowFirstCall(BulkPlan):
    """A :class:`BulkPlan` whose first call takes longer than the native coordinator's wait
    slice (``MAX_WAIT``, 50 ms): long enough for a driver that reads ahead while a group runs to
    read the next batch every time."""

    def __call__(self, batch: list[int]) -> list[int]:
        if not self.calls:
            time.sleep(0.15)
        return super().__call__(batch)


# What stops the run in the first group (records 0-9, batch_size 10): its plan and options.
FIRST_GROUP_STOPS: dict[str, tuple[dict[tuple[int, int], str], dict[str, Any]]] = {
    "fatal": ({(3, 1): "fatal"}, {}),
    "max_failures": ({(3, 1): "permanent"}, {"max_failures": 0}),
    "breaker_abort": ({(r, 1): "transient" for r in range(10)}, {"breaker": CircuitBreaker(
        failure_rate_threshold=1.0, window=4, minimum_calls=2, open_duration=0.0,
        abort_failure_rate=0.5)}),
}


@pytest.mark.parametrize("stop", sorted(FIRST_GROUP_STOPS))
def test_bulk_engines_agree_on_a_run_stopped_while_its_first_group_runs(stop: str) -> None:
    """The native engine runs a sync bulk fn on its threaded driver even at concurrency 1: its
    coordinator thread once read the next batch while the worker ran a group, so a run that
    stopped in that group reported an extra batch, all pending, and read records the reference
    engine never reads (a generator's ``total``). Both now read exactly what they run."""
    outcomes, options = FIRST_GROUP_STOPS[stop]
    views = []
    for engine in ENGINES:
        plan, dlq, source = SlowFirstCall(outcomes), MemoryDLQ(), CountingIterator(range(40))
        report = run(source, plan, engine=engine, bulk=True, dlq=dlq, batch_size=10,
                     retry=RetryPolicy(max_attempts=1), **options)
        assert report.stopped_reason == stop
        assert source.pulled == 10, f"{engine}: read {source.pulled} records to run the first 10"
        assert_conservation(report)
        views.append((outcome_view(report), plan.calls, [dlq_view(e) for e in dlq.list()]))
    (python_report, python_calls, python_dlq), (native_report, native_calls, native_dlq) = views
    for key in python_report:
        assert native_report[key] == python_report[key], key
    assert native_calls == python_calls
    assert native_dlq == python_dlq


@SETTINGS
@given(n=st.integers(min_value=1, max_value=300), data=st.data())
def test_bisection_stays_within_the_call_bound_for_any_poison_set(n: int, data: st.DataObject) -> None:
    poison = data.draw(st.sets(st.integers(min_value=0, max_value=n - 1), max_size=n))
    calls: list[int] = []

    def fn(batch: list[int]) -> list[int]:
        calls.append(len(batch))
        if poison.intersection(batch):
            raise ValueError("poison")
        return batch

    report = batchguard.run_batches(range(n), fn, bulk=True, batch_size=n, engine="native")
    assert sorted(e.record_index for e in report.errors) == sorted(poison)
    assert report.successful == [r for r in range(n) if r not in poison]
    assert len(calls) <= call_bound(n, len(poison))
    # Every record is tried alone at most once more than it needs: no call is ever repeated.
    assert sum(calls) <= n * (math.ceil(math.log2(n)) + 1)
