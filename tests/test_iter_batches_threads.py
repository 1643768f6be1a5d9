"""iter_batches used from several threads (issue 11 item 1): a consumer waiting for a batch
while another thread closes the stream, and two threads taking batches from one stream, each
end instead of waiting for ever.
"""

from __future__ import annotations

import threading
import time

import pytest

import batchguard
from helpers_contract import ENGINES


def slow(x: int) -> int:
    time.sleep(0.2)
    return x


def consume_on_a_thread(stream: batchguard.BatchStream[int], got: list[object]) -> threading.Thread:
    def consume() -> None:
        got.extend(batch.batch_index for batch in stream)
        got.append("end")

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("engine", ENGINES)
def test_a_consumer_waiting_for_a_batch_ends_when_another_thread_closes_the_stream(engine: str) -> None:
    stream = batchguard.iter_batches(range(100), slow, batch_size=10, concurrency=2, engine=engine)
    got: list[object] = []
    consumer = consume_on_a_thread(stream, got)
    time.sleep(0.05)  # the consumer waits for the first batch, which takes a second
    stream.close()
    consumer.join(30)
    assert not consumer.is_alive(), "the consumer waits for ever"
    assert got[-1] == "end"


@pytest.mark.parametrize("engine", ENGINES)
def test_two_threads_taking_batches_from_one_stream_both_end(engine: str) -> None:
    stream = batchguard.iter_batches(range(200), lambda x: x, batch_size=10, concurrency=4, engine=engine)
    got: list[object] = []
    consumers = [consume_on_a_thread(stream, got) for _ in range(2)]
    for consumer in consumers:
        consumer.join(30)
    assert not any(consumer.is_alive() for consumer in consumers), "a consumer waits for ever"
    assert sorted(i for i in got if i != "end") == list(range(20)) and got.count("end") == 2
    assert stream.report is not None and stream.report.success_count == 200
