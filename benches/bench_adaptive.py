"""Issue 10 item 6's Must show, measured: adaptive concurrency and the retry budget against a
real HTTP service on 127.0.0.1 (``tests/throttled_service.py``).

1. A service that allows 200 requests/s (a token bucket, 429 beyond it) and takes 50 ms per
   answered request: ``concurrency=Adaptive(max=256)`` against a sweep of fixed concurrencies
   and a fixed 256: time to finish, the 429 share of the requests the server counted, and (for
   Adaptive) the limit it ended at. The Must show: Adaptive keeps 429s under 5% and finishes
   within 1.3x of the best fixed concurrency; fixed 256's 429 share is far higher.
2. A 2 s outage (503) under ``RetryBudget(ratio=0.2)`` and without a budget: retries counted
   at the server, and the most any budget window held beyond what the budget allows.

Run: ``python benches/bench_adaptive.py`` (``--quick`` for a smoke run, ``--records N``). The
client is httpx; the engine the native one. Both sides share the machine: report ``uptime``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

import batchguard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_budget_http import BUDGET, _fetcher, _worst_excess
from throttled_service import ThrottledService

RETRY = batchguard.RetryPolicy(max_attempts=100, base_delay=0.01, max_delay=0.2)


def throttled_run(concurrency: int | batchguard.Adaptive, records: int) -> dict[str, Any]:
    """One run against the 200 req/s service."""
    with ThrottledService(rate=200.0, burst=20.0, latency_s=0.05) as service, \
            httpx.Client(limits=httpx.Limits(max_connections=300, max_keepalive_connections=300)) as client:

        def fetch(record: int) -> int:
            response = client.get(service.url(record))
            response.raise_for_status()
            return record

        started = time.perf_counter()
        report = batchguard.run_batches(range(records), fetch, batch_size=100, concurrency=concurrency,
                                        retry=RETRY)
        took = time.perf_counter() - started
    assert report.success_count == records, report.summary()
    limit = report.concurrency_limit
    return {"seconds": took, "share_429": service.share(429), "requests": len(service.arrivals),
            "limit": None if limit is None else (limit.final, limit.peak, limit.low)}


def outage_run(budget: batchguard.RetryBudget | None) -> dict[str, Any]:
    """The 2 s outage of tests/test_budget_http.py, with or without the budget."""
    with ThrottledService(rate=1e9, burst=1e9, latency_s=0.005) as service, \
            httpx.Client(limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:
        report = batchguard.run_batches(range(1500), _fetcher(client, service), batch_size=100, concurrency=8,
                                        retry=batchguard.RetryPolicy(max_attempts=50, base_delay=0.05,
                                                                     max_delay=0.5, jitter="none"),
                                        retry_budget=budget)
    arrivals = service.first_and_retries()
    return {"records_lost": 1500 - report.success_count, "retries": sum(1 for _, r in arrivals if r),
            "worst_excess": _worst_excess(arrivals, BUDGET), "over_budget": report.retries_over_budget}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes, one repeat")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    records = args.records or (300 if args.quick else 1500)
    repeats = args.repeats or (1 if args.quick else 3)
    print(f"load average before: {os.getloadavg()}; {records} records, median of {repeats}")
    print(f"{'concurrency':>22} {'seconds':>8} {'429 share':>10} {'requests':>9}  limit (final, peak, low)")
    results: dict[str, dict[str, Any]] = {}
    settings: list[tuple[str, int | batchguard.Adaptive]] = [
        ("Adaptive(max=256)", batchguard.Adaptive(max=256)),
        *((f"fixed {n}", n) for n in (5, 10, 15, 20, 30, 40, 64)), ("fixed 256", 256)]
    for name, concurrency in settings:
        runs = [throttled_run(concurrency, records) for _ in range(repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        share = statistics.median(r["share_429"] for r in runs)
        requests = statistics.median(r["requests"] for r in runs)
        results[name] = {"seconds": seconds, "share_429": share}
        print(f"{name:>22} {seconds:8.2f} {share:10.1%} {requests:9.0f}  {runs[-1]['limit'] or ''}")
    best_name, best = min(((n, r) for n, r in results.items() if n.startswith("fixed")),
                          key=lambda item: item[1]["seconds"])
    adaptive = results["Adaptive(max=256)"]
    print(f"Adaptive / best fixed ({best_name}): {adaptive['seconds'] / best['seconds']:.2f}x the time; "
          f"429 share {adaptive['share_429']:.1%} vs fixed 256's {results['fixed 256']['share_429']:.1%}")
    for label, budget in (("RetryBudget(ratio=0.2, min_per_s=20, window_s=2)", BUDGET), ("no budget", None)):
        outcome = outage_run(budget)
        print(f"2 s outage, {label}: {outcome['retries']} retries at the server, worst window "
              f"{outcome['worst_excess']:+.1f} retries beyond the budget, {outcome['records_lost']} records lost"
              + (f", {outcome['over_budget']}" if outcome["over_budget"] is not None else ""))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
