"""A dry-run or a sample is not the run that hooks and metrics watch: they run checks, or a few
records as (position, record) pairs, and must not hand those to the user's hooks."""

from __future__ import annotations

from typing import Any

import pytest

from batchguard import Hooks, RetryPolicy, ValidationIssue, run_batches


def check(record: int) -> ValidationIssue | None:
    return ValidationIssue("value", "odd", "make it even") if record % 2 else None


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("mode", ["dry-run", "sample"])
def test_phases_call_no_hook(engine: str, mode: str) -> None:
    calls: list[tuple[str, Any]] = []
    hooks = Hooks(on_retry=lambda *a: calls.append(("retry", a)),
                  on_dead_letter=lambda e: calls.append(("dead", e)),
                  on_batch_complete=lambda s: calls.append(("batch", s)),
                  on_run_end=lambda r: calls.append(("end", r)))
    flaky: set[int] = set()

    def fn(record: int) -> int:
        if record not in flaky:  # every record fails once: a retry a hook would see
            flaky.add(record)
            raise ConnectionError("try again")
        return record

    run_batches(list(range(40)), fn, validate=check, mode=mode, hooks=hooks, engine=engine,  # type: ignore[call-overload]
                retry=RetryPolicy(max_attempts=3, base_delay=0.0), batch_size=10)
    assert calls == []
