"""concurrency=Adaptive(max=256) against a real HTTP service on 127.0.0.1 that allows 200
requests/s and answers 429 beyond (issue 10 item 6, Must show): the run backs off to what the
service takes, so 429s stay a small share of the requests the server counted, and no record is
lost. The exact figures (and fixed concurrencies for comparison) are benches/bench_adaptive.py's;
this test holds a loose bound and no timing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

import batchguard
from throttled_service import ThrottledService

ENGINES = ("native", "python")


def _fetcher(client: httpx.Client, service: ThrottledService) -> Any:
    def fetch(record: int) -> int:
        response = client.get(service.url(record))
        response.raise_for_status()  # a 429 raises httpx.HTTPStatusError: RECOVERABLE, an overload signal
        return int(response.json()["id"])

    return fetch


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_adaptive_concurrency_keeps_429s_to_a_small_share_and_loses_nothing(engine: str) -> None:
    limits: list[int | None] = []
    with ThrottledService(rate=200.0, burst=20.0, latency_s=0.05) as service, \
            httpx.Client(limits=httpx.Limits(max_connections=300, max_keepalive_connections=300)) as client:
        report = batchguard.run_batches(
            range(600), _fetcher(client, service), engine=engine, batch_size=100,
            concurrency=batchguard.Adaptive(max=256),
            retry=batchguard.RetryPolicy(max_attempts=20, base_delay=0.05, max_delay=1.0),
            on_progress=lambda p: limits.append(p.concurrency_limit))
    assert report.status == "complete"
    assert report.successful == list(range(600))
    assert service.count(200) == 600
    # Unchecked, 256 calls in flight against a service that takes ~10 would get most of
    # them refused (the bench: well over half); the limit keeps 429s to a few percent.
    assert service.share(429) < 0.15, f"{service.count(429)} of {len(service.arrivals)} requests were 429"
    limit = report.concurrency_limit
    assert limit is not None
    # It backed off to about what the service takes in flight (200/s x 50 ms = 10, more with
    # the server's own overhead), far below max.
    assert limit.low <= limit.final <= 64 and limit.peak < 256
    assert all(value is not None and 1 <= value <= 256 for value in limits)
    assert report.to_dict()["concurrency_limit"] == {"final": limit.final, "peak": limit.peak, "low": limit.low}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_429_lowers_the_limit_and_plain_failures_do_not(engine: str) -> None:
    class Refused(Exception):
        status_code = 429

    class Broken(ValueError):
        pass

    def fn(record: int) -> int:
        if record in (40, 41):
            raise Broken(record)  # PERMANENT, no overload signal: the limit stays
        if record == 60:
            raise Refused(record)
        return record

    def run(failing: bool) -> batchguard.ConcurrencyLimit:
        report = batchguard.run_batches(range(80) if failing else range(60), fn, engine=engine,
                                        concurrency=batchguard.Adaptive(min=2, max=8, initial=8),
                                        retry=batchguard.RetryPolicy(max_attempts=1))
        assert report.concurrency_limit is not None
        return report.concurrency_limit

    assert run(False).low == 8  # the two PERMANENT failures did not lower it
    assert run(True).low < 8  # the 429 did


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min": 0}, "Adaptive.min"),
    ({"min": 4, "max": 2}, "Adaptive.max"),
    ({"initial": 300}, "Adaptive.initial"),
    ({"increase": 0.0}, "Adaptive.increase"),
    ({"decrease": 1.0}, "Adaptive.decrease"),
])
def test_a_bad_adaptive_policy_is_refused_naming_its_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(batchguard.ConfigError, match=message.replace(".", r"\.")):
        batchguard.Adaptive(**kwargs)


def test_adaptive_with_a_bulk_fn_is_refused() -> None:
    with pytest.raises(batchguard.ConfigError, match="bulk=True a fixed concurrency"):
        batchguard.run_batches([1, 2], lambda batch: batch, bulk=True, concurrency=batchguard.Adaptive(max=4))


def test_adaptive_max_is_checked_as_concurrency() -> None:
    with pytest.raises(batchguard.ConfigError, match="concurrency"):
        batchguard.run_batches([1], lambda r: r, concurrency=batchguard.Adaptive(max=5000))


@pytest.mark.parametrize("engine", ENGINES)
def test_async_calls_in_flight_never_exceed_the_limit(engine: str) -> None:
    """An async fn whose dependency takes 8 calls at once and answers 429 beyond: the limit
    settles near 8, and the calls in flight (counted by fn itself) never pass its peak."""

    class Busy(Exception):
        status_code = 429

    in_flight, most = [0], [0]

    async def fn(record: int) -> int:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            await asyncio.sleep(0.005)
            if in_flight[0] > 8:
                raise Busy(record)
            return record
        finally:
            in_flight[0] -= 1

    report = batchguard.run_batches(range(300), fn, engine=engine, concurrency=batchguard.Adaptive(max=64),
                                    retry=batchguard.RetryPolicy(max_attempts=50, base_delay=0.01, max_delay=0.05))
    assert report.successful == list(range(300))
    limit = report.concurrency_limit
    assert limit is not None
    assert most[0] <= limit.peak < 64
    assert limit.final <= 16


@pytest.mark.parametrize("engine", ENGINES)
def test_the_limit_reaches_prometheus_and_each_progress_snapshot(engine: str) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    seen: list[int | None] = []
    report = batchguard.run_batches(range(200), lambda r: r, engine=engine, batch_size=20, stage="load",
                                    concurrency=batchguard.Adaptive(min=2, max=8, initial=3),
                                    metrics=batchguard.metrics.Prometheus(registry),
                                    on_progress=lambda p: seen.append(p.concurrency_limit))
    limit = report.concurrency_limit
    assert limit is not None and limit.low == 3  # no overload signal: it never went below initial
    assert seen and all(value is not None and 2 <= value <= 8 for value in seen)
    assert seen[-1] == limit.final
    gauge = registry.get_sample_value("batchguard_concurrency_limit", {"stage": "load", "job": ""})
    assert gauge == limit.final
    fixed = batchguard.run_batches(range(5), lambda r: r, engine=engine, concurrency=2,
                                   on_progress=lambda p: seen.append(p.concurrency_limit))
    assert fixed.concurrency_limit is None and seen[-1] is None


@pytest.mark.parametrize("engine", ENGINES)
def test_the_limit_reaches_an_opentelemetry_gauge(engine: str) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    report = batchguard.run_batches(range(100), lambda r: r, engine=engine, batch_size=10,
                                    concurrency=batchguard.Adaptive(min=2, max=8, initial=3),
                                    metrics=batchguard.metrics.OpenTelemetry(MeterProvider(metric_readers=[reader])))
    points = [p.value for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for metric in sm.metrics if metric.name == "batchguard.concurrency_limit"
              for p in metric.data.data_points]
    assert report.concurrency_limit is not None
    assert points == [report.concurrency_limit.final]


class _NoWorkers:
    """An Executor (batchguard.executors) that is never asked to run anything: the run is
    refused before any batch is submitted."""

    slots = 1

    def submit(self, task: Any) -> Any:
        raise AssertionError("a refused run submitted a batch")

    def completed(self, timeout: float | None) -> Any:
        return ()

    def cancel(self, tickets: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("steering", [{"concurrency": batchguard.Adaptive(max=4)},
                                      {"retry_budget": batchguard.RetryBudget()}])
def test_steering_with_an_executor_is_refused_naming_both(steering: dict[str, Any]) -> None:
    with pytest.raises(batchguard.ConfigError, match=r"retry_budget= and concurrency=Adaptive\(\.\.\.\).*executor="):
        batchguard.run_batches(range(3), abs, executor=_NoWorkers(), **steering)


@pytest.mark.parametrize("engine", ENGINES)
def test_threaded_calls_in_flight_never_exceed_the_limit(engine: str) -> None:
    """The sync drivers' twin of the async test: 64 worker threads, a dependency that takes 8
    calls at once; the calls in flight, counted by fn, never pass the limit's peak."""

    class Busy(Exception):
        status_code = 503

    lock = threading.Lock()
    in_flight, most = [0], [0]

    def fn(record: int) -> int:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            busy = in_flight[0] > 8
        try:
            time.sleep(0.002)
            if busy:
                raise Busy(record)
            return record
        finally:
            with lock:
                in_flight[0] -= 1

    report = batchguard.run_batches(range(400), fn, engine=engine, concurrency=batchguard.Adaptive(max=64),
                                    retry=batchguard.RetryPolicy(max_attempts=50, base_delay=0.005, max_delay=0.05))
    assert report.successful == list(range(400))
    limit = report.concurrency_limit
    assert limit is not None
    assert most[0] <= limit.peak < 64
