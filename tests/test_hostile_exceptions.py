"""An exception's attributes cannot crash a run (issue 7 defect 7, DESIGN §10 Safety).

The engines read ``retry_after``, ``status_code``/``status``/``response`` and the type's MRO
from whatever the user's fn raised. Each attribute below is broken in its own way (a property
that raises, a number subclass whose conversion raises, an int past float range, NaN, a
negative wait, a metaclass whose ``__mro__`` raises): every record must still be classified,
retried or dead-lettered, on both engines and every driver, never a PanicException or a crash.
"""

from __future__ import annotations

from typing import Any

import pytest

import batchguard
from batchguard import MemoryDLQ, RetryPolicy
from helpers_contract import ENGINES, assert_conservation


class RaisingFloat(float):
    def __float__(self) -> float:
        raise RuntimeError("no float")


class RaisingInt(int):
    def __index__(self) -> int:
        raise RuntimeError("no index")

    def __int__(self) -> int:
        raise RuntimeError("no int")


class RaisingMro(type):
    @property
    def __mro__(cls) -> Any:  # type: ignore[override]
        raise RuntimeError("no mro")


class FloatSubclassRetryAfter(ConnectionError):
    retry_after = RaisingFloat(1e300)


class RaisingRetryAfter(ConnectionError):
    @property
    def retry_after(self) -> float:
        raise RuntimeError("boom")


class IntSubclassStatus(Exception):
    status_code = RaisingInt(503)


class IntSubclassRetryAfter(ConnectionError):
    retry_after = RaisingInt(10**30)


class NoStrNoResponse(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    @property
    def response(self) -> Any:
        raise RuntimeError("no response")


class HugeStatusNanWait(Exception):
    status = 10**100
    retry_after = float("nan")


class NegativeWait(ConnectionError):
    retry_after = -1e308


class BeyondFloatWait(TimeoutError):
    retry_after = 10**400


class HiddenMro(Exception, metaclass=RaisingMro):
    pass


HOSTILE = [FloatSubclassRetryAfter, RaisingRetryAfter, IntSubclassStatus, IntSubclassRetryAfter,
           NoStrNoResponse, HugeStatusNanWait, NegativeWait, BeyondFloatWait, HiddenMro]


def _raise(record: int) -> int:
    raise HOSTILE[record % len(HOSTILE)]()


async def _raise_async(record: int) -> int:
    return _raise(record)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("fn", [_raise, _raise_async], ids=["sync", "async"])
def test_broken_exception_attributes_never_crash_a_run(engine: str, concurrency: int, fn: Any) -> None:
    n = 2 * len(HOSTILE)
    dlq = MemoryDLQ()
    report = batchguard.run_batches(range(n), fn, engine=engine, concurrency=concurrency, dlq=dlq,
                                    retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.01))
    assert_conservation(report)
    assert report.failure_count == n and dlq.count() == n
    assert sorted(report.errors_by_type) == sorted(t.__name__ for t in HOSTILE)
