"""A sync bulk fn that raises a CancelledError of its own never hangs the run (hostile tester,
issue 7: "no hang").

Found: a sync bulk fn raising ``asyncio.CancelledError`` (or ``concurrent.futures.CancelledError``,
which ``run_in_executor`` turns into one: what ``future.result()`` raises for a cancelled
future of the fn's own pool) hung ``run_batches`` forever on both engines, a thread spinning:
the driver read it as its own task being cancelled, absorbed it and awaited the finished call
again. Now an ``asyncio.CancelledError`` stops the run and is re-raised, as from an async fn,
and ``concurrent.futures.CancelledError`` (an Exception) is an ordinary failure.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import asyncio, concurrent.futures, sys, batchguard
    engine, concurrency, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    error = asyncio.CancelledError if kind == "asyncio" else concurrent.futures.CancelledError
    def bulk(records):
        if 5 in records:
            raise error("the fn's own cancellation")
        return list(records)
    try:
        report = batchguard.run_batches(range(20), bulk, bulk=True, engine=engine,
                                        concurrency=concurrency, batch_size=10)
    except BaseException as exc:
        print("raised", type(exc).__module__, type(exc).__name__)
    else:
        print("report", report.success_count, report.failure_count, report.pending_count,
              report.errors[0].error_type)
""")


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("kind", ["asyncio", "futures"])
def test_bulk_fn_raising_cancelled_error_does_not_hang(engine: str, concurrency: int, kind: str) -> None:
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, engine, str(concurrency), kind],
                              capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung")
    assert done.returncode == 0, done.stderr[-2000:]
    if kind == "asyncio":
        assert done.stdout.split() == ["raised", "asyncio.exceptions", "CancelledError"]
    else:  # an Exception like any other: record 5 dead-lettered, the others succeed
        assert done.stdout.split() == ["report", "19", "1", "0", "CancelledError"]
