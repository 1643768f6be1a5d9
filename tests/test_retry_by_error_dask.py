"""Retry policies by error on a real Dask LocalCluster (issue 10 item 2 with issue 11 item 3):
``executor=`` carries a mapping to the workers (predicate keys, type and class keys, fallback
callables, retry_on_result), and the run ends as a local one does.
"""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle

import batchguard
from batchguard import ErrorClass, RetryPolicies, RetryPolicy
from dask_cluster import dask_client  # noqa: F401 - the fixture

# The workers import nothing from the tests directory: this module's functions go by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def tagged(exc: BaseException) -> bool:
    """The predicate key: errors whose message carries the tag."""
    return "#tag" in str(exc)


def negated(record: int, error: BaseException) -> Any:
    return (-record, type(error).__name__)


def fn(record: int) -> Any:
    """Deterministic wherever it runs: every outcome depends on the record alone."""
    if record % 8 == 0:
        raise TimeoutError(f"{record} #tag")
    if record % 4 == 0:
        raise TimeoutError(str(record))
    if record % 5 == 0:
        raise ValueError(record)
    return None if record % 7 == 0 else record


RETRY = RetryPolicies(
    default=RetryPolicy(max_attempts=2, base_delay=0.0, retry_on_result=lambda value: value is None,
                        fallback="rejected"),
    by_error={tagged: RetryPolicy(max_attempts=1, fallback="tagged"),
              TimeoutError: RetryPolicy(max_attempts=2, base_delay=0.0, fallback=negated),
              ErrorClass.PERMANENT: RetryPolicy(fallback=None)})


def test_a_mapping_runs_on_dask_workers_as_it_does_locally(dask_client: Any) -> None:  # noqa: F811
    runs = []
    for executor in (None, dask_client):
        report = batchguard.run_batches(range(40), fn, batch_size=6, retry=RETRY, executor=executor)
        runs.append((report.status, report.success_count, report.failure_count, report.fallback_count,
                     report.retry_count, report.successful))
    assert runs[1] == runs[0]
    status, succeeded, failed, fallbacks, _, successful = runs[0]
    assert (status, succeeded, failed) == ("complete", 40, 0)
    assert successful[0] == "tagged" and successful[4] == (-4, "TimeoutError")
    assert successful[5] is None and successful[7] == "rejected"
    assert fallbacks == sum(1 for r in range(40) if r % 4 == 0 or r % 5 == 0 or r % 7 == 0)

