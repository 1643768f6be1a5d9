"""Lifecycle hooks (issue 10 item 1): what each hook receives, in what order, on both engines;
a hook that raises loses nothing and is counted; a run without on_retry collects no retries."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import batchguard
from batchguard import CircuitBreaker, ErrorClass, MemoryDLQ, RetryPolicy
from batchguard._run.plan import make_plan
from batchguard.hooks import Hooks
from helpers_contract import ENGINES, FailurePlan, run
from test_properties import SETTINGS, Scenario, breakers, scenarios


class Recorder:
    """A hooks object with every method: what it was told, in order, and on which thread."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()

    def _note(self, *event: Any) -> None:
        self.threads.add(threading.get_ident())
        self.seen.append(event)

    def on_retry(self, record: Any, attempt: int, error: BaseException, delay: float) -> None:
        self._note("retry", record, attempt, type(error).__name__, str(error), delay)

    def on_dead_letter(self, entry: Any) -> None:
        self._note("dead", entry.record_index, entry.error_type, len(entry.attempts), entry.stage)

    def on_breaker(self, old: str, new: str) -> None:
        self._note("breaker", old, new)

    def on_batch_complete(self, stats: Any) -> None:
        self._note("batch", stats.batch_index, stats.size, stats.succeeded, stats.failed,
                   stats.retries, stats.pending)

    def on_run_end(self, report: Any) -> None:
        self._note("end", report.status, report.success_count, report.failure_count,
                   report.pending_count)


def _hooked(scenario: Scenario, engine: str) -> tuple[Recorder, Any, FailurePlan]:
    hooks = Recorder()
    plan = FailurePlan(scenario.outcomes)
    report = run(list(range(scenario.n)), plan, engine=engine, dlq=MemoryDLQ(), hooks=hooks,
                 **scenario.kwargs())
    return hooks, report, plan


@SETTINGS
@given(scenario=scenarios(breaker=st.one_of(st.none(), breakers(minimum_calls=1))))
def test_engines_call_the_same_hooks_in_the_same_order(scenario: Scenario) -> None:
    (py_hooks, py_report, py_plan), (native_hooks, native_report, _) = (
        _hooked(scenario, engine) for engine in ENGINES)
    assert native_hooks.seen == py_hooks.seen
    assert native_hooks.threads == py_hooks.threads == {threading.get_ident()}
    # Every scheduled retry was announced once, every dead letter and batch too.
    retries = [e for e in py_hooks.seen if e[0] == "retry"]
    assert len(retries) == sum(1 for (_, a), o in scenario.outcomes.items()
                               if (_, a + 1) in py_plan.calls and o != "ok")
    assert sum(1 for e in py_hooks.seen if e[0] == "dead") == py_report.failure_count
    batches = [e for e in py_hooks.seen if e[0] == "batch"]
    assert sum(b[3] for b in batches) == py_report.success_count
    assert sum(b[4] for b in batches) == py_report.failure_count
    assert sum(b[5] for b in batches) == py_report.retry_count
    assert py_hooks.seen[-1] == ("end", py_report.status, py_report.success_count,
                                 py_report.failure_count, py_report.pending_count)
    assert native_report.hook_errors == py_report.hook_errors == 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_retry_is_announced_before_its_batch_with_its_attempt_and_delay(engine: str, concurrency: int) -> None:
    hooks = Recorder()
    plan = FailurePlan({(2, 1): "recoverable", (2, 2): "recoverable", (5, 1): "permanent"})
    report = run(range(8), plan, engine=engine, concurrency=concurrency, batch_size=4, hooks=hooks,
                 retry=RetryPolicy(max_attempts=3, base_delay=0.01, jitter="none"))
    assert report.success_count == 7 and report.failure_count == 1
    record_2 = [e for e in hooks.seen if e[1] == 2 and e[0] == "retry"]
    assert [(e[2], e[3], e[5]) for e in record_2] == [(1, "RecoverableErr", 0.01), (2, "RecoverableErr", 0.02)]
    order = [e[0] for e in hooks.seen if e[0] != "retry" or e[1] == 2]
    assert order.index("retry") < order.index("batch")
    assert ("dead", 5, "PermanentErr", 1, "process") in hooks.seen
    assert hooks.threads == {threading.get_ident()}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_hook_that_raises_is_logged_once_counted_and_loses_nothing(
        engine: str, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("hook is broken")

    dlq = MemoryDLQ()
    plan = FailurePlan({(r, a): "recoverable" for r in range(0, 20, 3) for a in (1, 2)})
    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = run(range(20), plan, engine=engine, batch_size=5, dlq=dlq,
                     retry=RetryPolicy(max_attempts=2, base_delay=0.0),
                     hooks=Hooks(on_retry=broken, on_dead_letter=broken, on_batch_complete=broken,
                                 on_run_end=broken))
    assert report.failure_count == 7 and dlq.count() == 7, "every dead letter is stored"
    assert report.success_count == 13
    # 7 retries, 7 dead letters, 4 batches, and the run's end.
    assert report.hook_errors == 7 + 7 + 4 + 1
    logged = [r for r in caplog.records if "hook is broken" in r.getMessage()]
    assert sorted(r.getMessage().split()[1] for r in logged) == [
        "on_batch_complete", "on_dead_letter", "on_retry", "on_run_end"]


@pytest.mark.parametrize("engine", ENGINES)
def test_breaker_transitions_reach_on_breaker(engine: str) -> None:
    seen: list[tuple[str, str]] = []
    plan = FailurePlan({(r, 1): "recoverable" for r in range(4)})
    run(range(10), plan, engine=engine, batch_size=5, retry=RetryPolicy(max_attempts=1),
        breaker=CircuitBreaker(failure_rate_threshold=0.5, window=4, minimum_calls=4,
                               open_duration=0.0, counts=(ErrorClass.RECOVERABLE,)),
        hooks=Hooks(on_breaker=lambda old, new: seen.append((old, new))))
    assert seen[:2] == [("closed", "open"), ("open", "half_open")]


def test_retries_are_collected_only_for_a_retry_hook() -> None:
    def config(**kwargs: Any) -> Any:
        return make_plan([1], str, bulk=False, mode="full", **kwargs).config

    assert not config().collect_retries
    assert not config(hooks=Hooks(on_dead_letter=print)).collect_retries
    assert config(hooks=Hooks(on_retry=print)).collect_retries


@pytest.mark.parametrize("hooks", [object(), Hooks(), 42])
def test_hooks_without_any_hook_are_refused(hooks: Any) -> None:
    with pytest.raises(TypeError, match="hooks must have at least one of on_retry"):
        batchguard.run_batches([1], str, hooks=hooks)


def test_a_hook_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match=r"hooks\.on_retry must be callable"):
        batchguard.run_batches([1], str, hooks=Hooks(on_retry=3))  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ENGINES)
def test_async_runs_call_the_hooks_too(engine: str) -> None:
    hooks = Recorder()
    calls: dict[int, int] = {}

    async def fn(record: int) -> int:
        calls[record] = calls.get(record, 0) + 1
        if record == 1 and calls[record] == 1:
            raise ConnectionError("once")
        return record

    report = batchguard.run_batches(range(3), fn, engine=engine, hooks=hooks,
                                   retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    assert report.success_count == 3
    assert [e[0] for e in hooks.seen] == ["retry", "batch", "end"]
    assert hooks.seen[0][:4] == ("retry", 1, 1, "ConnectionError")
