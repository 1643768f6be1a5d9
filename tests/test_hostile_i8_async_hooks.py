"""``id_of``, ``key_of`` and ``on_progress`` are called, never awaited: an ``async def`` one is
refused before any record is read, on both entry points, instead of quietly doing nothing
(hostile tester, issue 8: from async code, ``arun_batches(..., on_progress=async_fn)`` is the
natural thing to write).

Before the fix each was accepted and called, and the coroutine it returned was used as is:
an async ``on_progress`` never ran (a "never awaited" RuntimeWarning at most); an async
``id_of`` stored ``'<coroutine object ...>'`` as every record id in the DLQ; an async
``key_of`` gave every record a distinct key (a fresh coroutine object), so records meant to
run one at a time per key ran in parallel, silently.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

import pytest

import batchguard
from batchguard.errors import ConfigTypeError


async def _async_hook(value: Any) -> Any:
    return value


class _AsyncCall:
    async def __call__(self, value: Any) -> Any:
        return value


def _records(read: list[int]) -> Iterator[int]:
    for i in range(5):
        read.append(i)
        yield i


def _call(entry: str, records: Any, **kwargs: Any) -> Any:
    async def fn(record: Any) -> Any:
        return record

    if entry == "run":
        return batchguard.run_batches(records, lambda x: x, **kwargs)
    return asyncio.run(batchguard.arun_batches(records, fn, **kwargs))


@pytest.mark.parametrize("entry", ["run", "arun"])
@pytest.mark.parametrize("name", ["id_of", "key_of", "on_progress"])
@pytest.mark.parametrize("hook", [_async_hook, _AsyncCall(), functools.partial(_async_hook)],
                         ids=["async_def", "async_call", "partial"])
def test_an_async_hook_is_refused_before_any_record_is_read(entry: str, name: str, hook: Any) -> None:
    read: list[int] = []
    with pytest.raises(ConfigTypeError, match=rf"{name} must be a plain function.*async def"):
        _call(entry, _records(read), **{name: hook})
    assert read == []


@pytest.mark.parametrize("entry", ["run", "arun"])
def test_sync_hooks_still_run(entry: str) -> None:
    seen: list[Any] = []
    report = _call(entry, range(4), id_of=lambda r: f"r{r}", key_of=lambda r: r % 2,
                   on_progress=seen.append)
    assert report.success_count == 4 and seen
