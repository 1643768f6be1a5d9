"""Every way an exception can carry its wait is honoured (the native engine skips the attribute
reads only for exceptions that cannot carry one: a class attribute, a property, a slot, a
``__getattr__`` or an instance attribute all still count)."""

from __future__ import annotations

import time
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy
from helpers_contract import ENGINES

WAIT = 0.3
POLICY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=1.0, jitter="none")


class OnClass(ConnectionError):
    retry_after = WAIT


class AsProperty(ConnectionError):
    @property
    def retry_after(self) -> float:
        return WAIT


class InSlot(ConnectionError):
    __slots__ = ("retry_after",)

    def __init__(self) -> None:
        super().__init__()
        self.retry_after = WAIT


class ByGetattr(ConnectionError):
    def __getattr__(self, name: str) -> Any:
        if name == "retry_after":
            return WAIT
        raise AttributeError(name)


def on_instance() -> ConnectionError:
    exc = ConnectionError("down")
    exc.retry_after = WAIT  # type: ignore[attr-defined]
    return exc


def with_response_headers() -> ConnectionError:
    exc = ConnectionError("down")
    exc.response = type("Response", (), {"headers": {"Retry-After": str(WAIT)}})()  # type: ignore[attr-defined]
    return exc


CARRIERS = {
    "class attribute": OnClass,
    "property": AsProperty,
    "slot": InSlot,
    "__getattr__": ByGetattr,
    "instance attribute": on_instance,
    "response headers": with_response_headers,
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("carrier", sorted(CARRIERS))
def test_the_wait_is_honoured_however_the_exception_carries_it(carrier: str, engine: str) -> None:
    calls: list[float] = []

    def fn(record: int) -> int:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise CARRIERS[carrier]()
        return record

    report = batchguard.run_batches([1], fn, retry=POLICY, engine=engine)
    assert report.success_count == 1 and len(calls) == 2
    assert calls[1] - calls[0] >= WAIT - 0.01, calls[1] - calls[0]

