"""A plain ``TimeoutError`` (``socket.timeout`` is one) raised by a *sync bulk* fn keeps its
attributes and traceback (hostile tester, issue 7: real clients, defect 7).

Found: a sync bulk fn runs on a thread pool through ``loop.run_in_executor``, and asyncio turns
an exception whose type is exactly ``TimeoutError`` (concurrent.futures.TimeoutError is the same
class since 3.11) into a *new* ``TimeoutError(*args)``. So its ``retry_after`` (and a
``response`` with a Retry-After header) was ignored, the retry waited only the backoff, and the
DLQ entry's traceback lost every frame of the user's code. A subclass, an async fn and a
per-record fn were not affected.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy

ENGINES = ["native", "python"]


def _timeout_with_retry_after(seconds: float) -> TimeoutError:
    exc = TimeoutError("the service said: come back later")
    exc.retry_after = seconds  # type: ignore[attr-defined]
    return exc


def _run(entry: str, *args: Any, **kwargs: Any) -> Any:
    """``run_batches``, or ``arun_batches`` awaited (a sync bulk fn runs on the same drivers)."""
    if entry == "run":
        return batchguard.run_batches(*args, **kwargs)
    return asyncio.run(batchguard.arun_batches(*args, **kwargs))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("entry", ["run", "arun"])
def test_retry_after_of_a_plain_timeout_error_is_honoured(engine: str, entry: str) -> None:
    calls: list[float] = []

    def bulk(records: list[Any]) -> list[Any]:
        calls.append(time.monotonic())
        raise _timeout_with_retry_after(0.5)

    _run(entry, [1], bulk, bulk=True, engine=engine,
         retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=1, jitter="none"))
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.45, "the retry did not wait for the exception's retry_after"


def _helper_that_times_out(records: list[Any]) -> list[Any]:
    raise TimeoutError("read timed out")


def _bulk(records: list[Any]) -> list[Any]:
    return _helper_that_times_out(records)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("entry", ["run", "arun"])
def test_traceback_of_a_socket_timeout_keeps_the_users_frames(engine: str, entry: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = _run(entry, [1], _bulk, bulk=True, engine=engine, dlq="memory://",
                      retry=RetryPolicy(max_attempts=1))
    (entry,) = report.dead_letters
    assert entry.error_type == "TimeoutError"
    assert "in _helper_that_times_out" in (entry.traceback or "")
