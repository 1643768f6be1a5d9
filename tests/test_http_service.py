"""Against a real HTTP service on 127.0.0.1 that throttles (429 + Retry-After) and goes down
(503) for a while: every record ends succeeded, the rate limit holds as the server measures
it, no throttled record comes back before its Retry-After, and the circuit breaker keeps the
calls made during the outage few (issue 4, "Must show").

Everything is measured on the server's side, from its log of arrivals; the bounds are derived
in ``helpers_http`` from the configuration, not tuned to what a run happened to do.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

import batchguard
from batchguard import CircuitBreaker, MemoryDLQ, RateLimit, RetryPolicy
from helpers_contract import ENGINES, assert_conservation
from helpers_http import (
    AsyncClient,
    Client,
    FlakyService,
    gaps_after_throttling,
    latencies,
    outage_request_bound,
    worst_rate_excess,
)

N_RECORDS = 60
THROTTLED = frozenset(range(3, N_RECORDS, 7))  # their first request gets 429
RETRY_AFTER = 1  # seconds: what the 429 asks for (whole seconds, as HTTP writes it)
OUTAGE_AFTER = 25  # the 25th request starts the outage...
OUTAGE_S = 0.4  # ...which lasts this long
CONCURRENCY = 4
RATE = RateLimit(per_second=150, burst=5)
BREAKER = CircuitBreaker(window=10, minimum_calls=5, failure_rate_threshold=0.5, open_duration=0.2,
                         half_open_calls=1)
# Clock granularity and the few instructions between the engine's grant and the callback's
# first line.
CLOCK_SLACK_S = 0.001

OUTAGE_BOUND = outage_request_bound(BREAKER, CONCURRENCY, OUTAGE_S)
# Each request fails at most once with 429, or with 503 during the outage: this many failures
# per record can never exhaust the attempts, so every record must end succeeded. The 429's
# Retry-After (1 s) is longer than max_delay, the default cap on it: max_retry_after lets it be.
RETRY = RetryPolicy(max_attempts=2 + OUTAGE_BOUND, base_delay=0.02, max_delay=0.1, jitter="full",
                    seed=4, max_retry_after=2.0)


def _run(service: FlakyService, engine: str, kind: str, breaker: CircuitBreaker | None = BREAKER,
         dlq: MemoryDLQ | None = None) -> tuple[batchguard.BatchReport, Client]:
    client = AsyncClient(service.url) if kind == "async" else Client(service.url)
    report = batchguard.run_batches(range(N_RECORDS), client, engine=engine, concurrency=CONCURRENCY,
                                    rate_limit=RATE, retry=RETRY, breaker=breaker, batch_size=20,
                                    dlq=dlq)
    return report, client


def test_the_outage_bound_is_far_below_what_the_rate_limit_alone_allows() -> None:
    # Otherwise the outage assertion below would prove nothing about the breaker.
    assert OUTAGE_BOUND == 4 + 5 + 3 + 3
    assert OUTAGE_BOUND * 3 < RATE.burst + RATE.per_second * OUTAGE_S


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("engine", ENGINES)
def test_throttled_and_failing_service_every_record_succeeds_within_the_limits(engine: str, kind: str) -> None:
    dlq = MemoryDLQ()
    started = time.monotonic()
    with FlakyService(throttle=THROTTLED, retry_after=RETRY_AFTER, outage_after=OUTAGE_AFTER,
                      outage_s=OUTAGE_S) as service:
        report, client = _run(service, engine, kind, dlq=dlq)
    elapsed = time.monotonic() - started
    arrivals = service.sorted_arrivals()

    # Every record succeeded, once: one 200 per record, in input order in the report.
    assert_conservation(report)
    assert report.status == "complete", report.summary()
    assert report.successful == [{"id": i} for i in range(N_RECORDS)]
    assert len(dlq) == 0
    statuses = Counter(a.status for a in arrivals)
    assert Counter(a.record for a in arrivals if a.status == 200) == Counter(range(N_RECORDS))
    assert {a.record for a in arrivals if a.status == 429} == THROTTLED
    assert statuses[429] == len(THROTTLED)
    # Nothing but the outage produced the other failures.
    assert set(statuses) <= {200, 429, 503}
    assert all(service.in_outage(a.at) for a in arrivals if a.status == 503)
    assert report.retry_count == len(arrivals) - N_RECORDS

    # The rate: no interval holds more than burst + rate * its length. As the engine let the
    # attempts go (the callback's first line)...
    excess = worst_rate_excess([at for _, at in client.starts], RATE.per_second, RATE.burst)
    assert excess <= CLOCK_SLACK_S, f"attempts started {excess * 1e3:.2f} ms faster than {RATE} allows"
    # ...and as the server saw them arrive. A request reaches the server some time L after its
    # attempt started (thread hand-offs, connect, accept); if the starts obey the bucket, n
    # arrivals within t seconds started within t + (max L - min L), so that spread, measured
    # request by request in this run, is the only allowance the server-side check needs.
    path = latencies(client.starts, arrivals)
    spread = max(path) - min(path)
    excess = worst_rate_excess([a.at for a in arrivals], RATE.per_second, RATE.burst)
    assert excess <= spread + CLOCK_SLACK_S, (
        f"the server saw requests {excess * 1e3:.2f} ms faster than {RATE} allows "
        f"(latency spread {spread * 1e3:.2f} ms)")

    # No throttled record came back before its Retry-After.
    gaps = gaps_after_throttling(arrivals)
    assert {record for record, _, _ in gaps} == THROTTLED
    early = [(record, gap) for record, gap, retry_after in gaps if gap < retry_after]
    assert not early, f"came back before Retry-After={RETRY_AFTER} s: {early}"

    # The outage happened, the breaker opened, and it kept the calls during the outage few.
    assert service.outage_started is not None
    during = [a for a in arrivals if service.in_outage(a.at)]
    assert during and all(a.status == 503 for a in during)
    assert report.breaker_trips >= 1
    assert len(during) <= OUTAGE_BOUND, f"{len(during)} requests during the outage"

    # Bounded: a request per record, one 429 per throttled record, the outage's 503s.
    assert len(arrivals) <= N_RECORDS + len(THROTTLED) + OUTAGE_BOUND
    assert elapsed < 30


@pytest.mark.timeout(60)
def test_without_a_breaker_the_outage_takes_many_more_calls() -> None:
    """The control for the bound above: the same run with no breaker hammers the outage
    (retries every 20-100 ms per record, only the rate limit holding them back)."""
    with FlakyService(throttle=(), outage_after=OUTAGE_AFTER, outage_s=OUTAGE_S) as service:
        report, _ = _run(service, "native", "sync", breaker=None)
    assert report.status == "complete"
    during = [a for a in service.sorted_arrivals() if service.in_outage(a.at)]
    assert len(during) > OUTAGE_BOUND, f"only {len(during)} requests during the outage"
