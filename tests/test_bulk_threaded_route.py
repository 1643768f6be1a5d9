"""run_batches gives a sync bulk fn to the native engine's threaded driver, not to asyncio."""

from __future__ import annotations

import asyncio
import threading

from batchguard import RetryPolicy, run_batches


def test_a_sync_bulk_fn_needs_no_event_loop_on_the_native_engine() -> None:
    """Called from inside a running loop, where an asyncio driver could not start one."""
    threads: set[str] = set()

    def double(batch: list[int]) -> list[int]:
        threads.add(threading.current_thread().name)
        if 7 in batch:
            raise ValueError("bad record among them")
        return [2 * x for x in batch]

    async def main() -> list[int]:
        report = run_batches(range(40), double, bulk=True, batch_size=10, concurrency=2,
                             retry=RetryPolicy(max_attempts=1))
        assert report.failure_count == 1 and report.errors[0].record_index == 7
        return report.successful

    assert asyncio.run(main()) == [2 * x for x in range(40) if x != 7]
    assert not any(name.startswith("batchguard-sync") for name in threads), threads

