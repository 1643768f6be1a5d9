"""Stopping an async run whose workers are idle (waiting out a backoff, an open breaker or the
rate limit) logs no "_GatheringFuture exception was never retrieved" traceback (hostile tester,
issue 7: "nothing surprising").

Found: Ctrl-C (or cancelling ``arun_batches``) while every worker waited printed one asyncio
error with a CancelledError traceback per run, on both engines. ``asyncio.shield`` drops its
callback on the inner future once the outer one is cancelled, so the gather of the workers,
which ends with their CancelledError, was never retrieved.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading

import pytest

import batchguard
from batchguard import RetryPolicy

ENGINES = ["native", "python"]
WAITING = RetryPolicy(max_attempts=5, base_delay=600, max_delay=600, jitter="none")


async def _down(record: int) -> int:
    raise ConnectionError("down")


def _never_retrieved(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()
    return [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


@pytest.mark.parametrize("engine", ENGINES)
def test_cancelled_arun_batches_logs_nothing(engine: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(batchguard.arun_batches(range(8), _down, concurrency=4,
                                                             engine=engine, retry=WAITING))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
        assert _never_retrieved(caplog) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_of_an_async_run_logs_nothing(engine: str, caplog: pytest.LogCaptureFixture) -> None:
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                batchguard.run_batches(range(8), _down, concurrency=4, engine=engine, retry=WAITING)
        finally:
            timer.join()
        assert _never_retrieved(caplog) == []
