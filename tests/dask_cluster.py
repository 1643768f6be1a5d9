"""A real Dask LocalCluster for the executor tests, and the functions its workers run.

:func:`dask_client` (a module fixture: import it into a test module) starts a LocalCluster of
2 worker processes with one thread each, behind nannies (a killed worker comes back), and a
Client on it. This module is shipped to the workers by value (cloudpickle), so its functions
run there although the tests directory is not on the workers' path.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

distributed = pytest.importorskip("distributed")

WORKERS = 2


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A Client on a LocalCluster of 2 worker processes (threads_per_worker=1), for one test
    module: its threads (the scheduler runs in this process) are gone before other modules'
    tests run, some of which count threads or fork."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(WORKERS, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()


def worker_pids(client: Any) -> dict[str, int]:
    """Each live worker's process id, by address (a worker that just died, and that the
    scheduler has not yet dropped, is left out rather than failing the call)."""
    answers: dict[str, Any] = client.run(os.getpid, on_error="ignore")
    return {address: pid for address, pid in answers.items() if isinstance(pid, int)}


# ---------------------------------------------------------------- what the workers run

_tries: dict[tuple[str, int], int] = {}
_tries_lock = threading.Lock()


def planned(record: tuple[str, int]) -> int:
    """The failure plan of the differential tests, the same wherever it runs: a record
    ``(token, i)`` with ``i % 11 == 4`` always raises ValueError (PERMANENT); ``i % 5 == 2``
    raises ConnectionError (RECOVERABLE) on its first two tries in this process; ``i % 13 == 6``
    always raises ConnectionError (retried until its attempts run out). Else ``i * 3``.

    Tries are counted per ``token`` (a run's own), so runs in one worker process never share
    them."""
    token, i = record
    if i % 11 == 4:
        raise ValueError(f"record {i} is malformed")
    if i % 13 == 6:
        raise ConnectionError(f"service refused record {i}")
    if i % 5 == 2:
        with _tries_lock:
            tries = _tries[token, i] = _tries.get((token, i), 0) + 1
        if tries <= 2:
            raise ConnectionError(f"flaky on record {i}, try {tries}")
    return i * 3


def slow_planned(record: tuple[str, int]) -> int:
    """:func:`planned`, 5 ms a call: long enough runs to kill workers in."""
    time.sleep(0.005)
    return planned(record)



def doubled_amount(row: dict[str, Any]) -> float:
    """A source's row: its ``amount`` doubled (KeyError without one)."""
    return float(row["amount"]) * 2


def parquet_fn(row: dict[str, int]) -> int:
    """A Parquet row's ``v`` doubled; ValueError when ``v % 6 == 5``."""
    if row["v"] % 6 == 5:
        raise ValueError(f"bad {row['v']}")
    return row["v"] * 2


def logged_slow_planned(record: tuple[str, int, str]) -> int:
    """:func:`slow_planned` of ``(token, i, log)``, appending ``i`` to the file ``log`` on every
    call that returns: a record run twice (its batch rerun after its worker died) is there twice."""
    token, i, log = record
    value = slow_planned((token, i))
    with open(log, "a", encoding="utf-8") as calls:  # one short append: atomic with O_APPEND
        calls.write(f"{i}\n")
    return value
