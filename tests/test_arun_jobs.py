"""arun_batches takes what run_batches takes: the same keywords (declared once), jobs included.

A resumable job run from async code checkpoints its batches and resumes like a sync one: the
second call skips the batches the first one finished, whichever driver runs ``fn``.
"""

from __future__ import annotations

import asyncio
import inspect
import pydoc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from batchguard import RetryPolicy, arun_batches, job_status, run_batches
from batchguard.errors import ConfigTypeError
from helpers_jobs import Work

ONCE = RetryPolicy(max_attempts=1)
ENGINES = ["native", "python"]


def _keywords(fn: Callable[..., Any]) -> dict[str, Any]:
    return {name: (p.kind, p.default) for name, p in inspect.signature(fn).parameters.items()}


def test_arun_batches_accepts_every_keyword_run_batches_does() -> None:
    sync, not_sync = _keywords(run_batches), _keywords(arun_batches)
    assert sync == not_sync
    for name in ("batch_size", "concurrency", "dlq", "bulk", "job", "store", "force"):
        assert sync[name][0] is inspect.Parameter.KEYWORD_ONLY, name
    assert sync["job"][1] is None and sync["force"][1] is False and sync["concurrency"][1] == 1


@pytest.mark.parametrize("entry", [run_batches, arun_batches])
def test_help_lists_each_keyword_with_its_default(entry: Callable[..., Any]) -> None:
    text = pydoc.render_doc(entry, renderer=pydoc.plaintext)
    for shown in ("batch_size: \"int | Literal['auto'] | None\" = None", "concurrency: 'int | Adaptive' = 1",
                  "stage: 'str' = 'process'", "job: 'str | None' = None", "force: 'bool' = False",
                  "bulk: 'bool' = False"):
        assert shown in text, f"{shown!r} not in help():\n{text[:600]}"
    assert "**options" not in text


def test_a_misspelt_keyword_is_refused_with_the_right_name() -> None:
    with pytest.raises(ConfigTypeError, match=r"unexpected keyword argument 'batchsize'; did you mean 'batch_size'"):
        run_batches([1], lambda x: x, batchsize=2)  # type: ignore[call-overload]

    async def double(x: int) -> int:
        return 2 * x

    with pytest.raises(TypeError, match="'jobs'; did you mean 'job'"):
        asyncio.run(arun_batches([1], double, jobs="nightly"))  # type: ignore[call-overload]


def _as(kind: Literal["async", "sync"], work: Work) -> Callable[[int], Any]:
    if kind == "sync":
        return work

    async def call(x: int) -> int:
        await asyncio.sleep(0)
        return work(x)

    return call


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_an_async_job_resumes_where_it_stopped(tmp_path: Path, engine: Literal["native", "python"],
                                               kind: Literal["async", "sync"]) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = Work(fatal_at=25)  # MemoryError: FATAL, the run stops inside batch 2

    async def run(fn: Callable[[int], Any] | Callable[[int], Awaitable[Any]]) -> Any:
        return await arun_batches(range(50), fn, batch_size=10, retry=ONCE, engine=engine,
                                  job="nightly", store=store)

    stopped = asyncio.run(run(_as(kind, first)))
    assert stopped.status == "aborted" and stopped.job_id == "nightly"
    assert job_status("nightly", store=store).status == "aborted"
    assert job_status("nightly", store=store).batches_done == 2

    second = Work()
    resumed = asyncio.run(run(_as(kind, second)))
    assert resumed.skipped_batches == 2
    assert sorted(second.calls) == list(range(20, 50)), "a finished batch was run again"
    assert resumed.total == 30 and resumed.success_count + resumed.failure_count == 30
    status = job_status("nightly", store=store)
    assert status.status == "completed" and status.batches_done == 5
    assert status.succeeded + status.failed == 50
    assert status.failed == 5  # 3, 13, 23, 33, 43: the fatal record 25 succeeds on the rerun

    # Completed: a third call runs nothing; force=True runs it all again.
    third = Work()
    again = asyncio.run(run(_as(kind, third)))
    assert third.calls == [] and again.total == 0 and again.skipped_batches == 5
    forced = Work()
    rerun = asyncio.run(arun_batches(range(50), _as(kind, forced), batch_size=10, retry=ONCE,
                                     engine=engine, job="nightly", store=store, force=True))
    assert sorted(forced.calls) == list(range(50)) and rerun.skipped_batches == 0


def test_a_sync_and_an_async_call_resume_each_others_job(tmp_path: Path) -> None:
    """One job, one store: where the call came from does not matter to the checkpoints."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    stopped = run_batches(range(40), Work(fatal_at=15), batch_size=10, retry=ONCE, job="mixed",
                          store=store)
    assert stopped.status == "aborted"
    second = Work()
    resumed = asyncio.run(arun_batches(range(40), _as("async", second), batch_size=10, retry=ONCE,
                                       job="mixed", store=store))
    assert resumed.skipped_batches == 1 and sorted(second.calls) == list(range(10, 40))
    assert job_status("mixed", store=store).status == "completed"


def test_a_cancelled_async_job_is_aborted_and_resumes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    started = Work()

    async def main() -> None:
        gate = asyncio.Event()

        async def fn(x: int) -> int:
            if x == 25:
                gate.set()
                await asyncio.Event().wait()  # never returns: cancelled with the run
            return started(x)

        task = asyncio.create_task(arun_batches(range(50), fn, batch_size=10, retry=ONCE, job="cut",
                                                store=store))
        await gate.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    status = job_status("cut", store=store)
    assert status.status == "aborted" and status.batches_done == 2
    second = Work()
    resumed = asyncio.run(arun_batches(range(50), _as("async", second), batch_size=10, retry=ONCE,
                                       job="cut", store=store))
    assert resumed.skipped_batches == 2 and sorted(second.calls) == list(range(20, 50))

