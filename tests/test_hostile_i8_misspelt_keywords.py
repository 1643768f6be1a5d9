"""A misspelt keyword is a ConfigTypeError naming the closest keyword, on both entry points,
``bulk`` included (hostile tester, issue 8).

Before the fix the suggestions came from the RunOptions keywords only: ``bulk`` is a parameter
of its own (the overloads need it), so ``bulkk=True``, ``Bulk=True`` or ``buk=True`` got a bare
"unexpected keyword argument" with no hint.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import batchguard
from batchguard.errors import ConfigTypeError


def _call(entry: str, **kwargs: Any) -> Any:
    if entry == "run":
        return batchguard.run_batches([1], lambda x: x, **kwargs)
    return asyncio.run(batchguard.arun_batches([1], lambda x: x, **kwargs))


@pytest.mark.parametrize("entry", ["run", "arun"])
@pytest.mark.parametrize(("typo", "meant"), [
    ("bulkk", "bulk"), ("Bulk", "bulk"), ("buk", "bulk"), ("concurency", "concurrency"),
    ("stor", "store"), ("forse", "force"), ("Job", "job"), ("timout", "timeout"),
])
def test_a_misspelt_keyword_names_the_closest_one(entry: str, typo: str, meant: str) -> None:
    with pytest.raises(ConfigTypeError, match=rf"unexpected keyword argument '{typo}'; did you mean '{meant}'\?"):
        _call(entry, **{typo: True})
