"""A dependency outage under a 20% retry budget (issue 10 item 6, Must show): a real HTTP service
on 127.0.0.1 answers 503 to everything for 2 s in the middle of a run with
``retry_budget=RetryBudget(ratio=0.2, ...)``; the retries the SERVER saw stay within the budget
in every window, and every record still succeeds (held retries wait, none is lost).
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

import httpx
import pytest

import batchguard
from throttled_service import ThrottledService

ENGINES = ("native", "python")
BUDGET = batchguard.RetryBudget(ratio=0.2, min_per_s=20.0, window_s=2.0)
RECORDS = 1500
OUTAGE_AFTER = 200  # requests before the outage starts


def _fetcher(client: httpx.Client, service: ThrottledService) -> Any:
    lock = threading.Lock()
    started = [0]

    def fetch(record: int) -> int:
        with lock:
            started[0] += 1
            if started[0] == OUTAGE_AFTER:
                service.outage(2.0)
        response = client.get(service.url(record))
        response.raise_for_status()  # a 503 raises httpx.HTTPStatusError: RECOVERABLE
        return int(response.json()["id"])

    return fetch


def _worst_excess(arrivals: list[tuple[float, bool]], budget: batchguard.RetryBudget) -> float:
    """The most retries any window of the budget held beyond what it allows, counted at the
    server: for each retry, the retries that arrived within ``window_s`` before it against
    ``ratio`` x the first attempts of that window plus ``min_per_s * window_s``. The engine's
    window slides a slot (a tenth) at a time, so it may count a slot's first attempts longer:
    the firsts are taken over a window one slot longer."""
    slot = budget.window_s / 10
    retries = [at for at, retry in arrivals if retry]
    firsts = [at for at, retry in arrivals if not retry]
    worst = float("-inf")
    for at in retries:
        in_window = bisect.bisect_right(retries, at) - bisect.bisect_left(retries, at - (budget.window_s - slot))
        earned = bisect.bisect_right(firsts, at) - bisect.bisect_left(firsts, at - budget.window_s - slot)
        worst = max(worst, in_window - budget.allowance(earned))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_an_outage_under_a_20_percent_budget_keeps_retries_in_budget_and_loses_nothing(engine: str) -> None:
    with ThrottledService(rate=1e9, burst=1e9, latency_s=0.005) as service, \
            httpx.Client(limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:
        report = batchguard.run_batches(
            range(RECORDS), _fetcher(client, service), engine=engine, batch_size=100, concurrency=8,
            retry=batchguard.RetryPolicy(max_attempts=50, base_delay=0.05, max_delay=0.5, jitter="none"),
            retry_budget=BUDGET)
    assert report.status == "complete"
    assert report.successful == list(range(RECORDS))
    assert service.count(200) == RECORDS
    assert service.count(503) > 0, "the outage hit the run"
    arrivals = service.first_and_retries()
    retries = sum(1 for _, retry in arrivals if retry)
    assert retries == report.retry_count
    # Without the budget every record failing in the outage is retried every 0.05-0.5 s until
    # it ends; with it, no window of the server's log holds more retries than it allows (one
    # of slack: a retry is counted when it starts, the server sees it a moment later).
    assert _worst_excess(arrivals, BUDGET) <= 1
    assert report.retries_over_budget is not None
    assert report.retries_over_budget.waited > 0, "the budget held retries back"
    assert report.retries_over_budget.dead_lettered == 0
