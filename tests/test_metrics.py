"""Prometheus metrics (issue 10 item 3): the real HTTP endpoint, scraped while a run is going,
shows the counters moving, and equal to the report at the end."""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy
from batchguard.hooks import Hooks
from helpers_contract import ENGINES

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from batchguard.metrics import Prometheus  # noqa: E402


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


class Scraper(threading.Thread):
    """GETs /metrics every 20 ms until stopped, keeping each scrape's samples."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.scrapes: list[dict[Any, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with urllib.request.urlopen(self.url, timeout=5) as response:
                self.scrapes.append(_samples(response.read().decode()))
            self.stop.wait(0.02)


def _flaky(record: int, tries: dict[int, int] = {}) -> int:  # noqa: B006 - reset per test below
    tries[record] = tries.get(record, 0) + 1
    time.sleep(0.01)
    if record % 7 == 3:
        raise ValueError(f"bad record {record}")
    if record % 5 == 0 and tries[record] == 1:
        raise ConnectionError("try again")
    return record


@pytest.mark.parametrize("engine", ENGINES)
def test_a_scrape_during_the_run_shows_the_counters_moving_and_the_end_equals_the_report(engine: str) -> None:
    _flaky.__defaults__[0].clear()  # type: ignore[index]
    registry = prometheus_client.CollectorRegistry()
    metrics = Prometheus(registry)
    server = metrics.serve(0)
    scraper = Scraper(f"http://127.0.0.1:{server.server_port}/metrics")
    try:
        scraper.start()
        report = batchguard.run_batches(range(60), _flaky, engine=engine, batch_size=4, concurrency=2,
                                        stage="load", metrics=metrics,
                                        retry=RetryPolicy(max_attempts=2, base_delay=0.0))
        time.sleep(0.1)
        scraper.stop.set()
        scraper.join(5)
    finally:
        server.shutdown()
        server.server_close()
    last = scraper.scrapes[-1]
    succeeded = [_value(s, "batchguard_records_total", outcome="succeeded", stage="load")
                 for s in scraper.scrapes]
    assert succeeded == sorted(succeeded), "a counter never goes back"
    assert any(0 < v < report.success_count for v in succeeded), "seen moving during the run"
    assert succeeded[-1] == report.success_count == 51
    assert _value(last, "batchguard_records_total", outcome="dead_lettered") == report.failure_count == 9
    assert _value(last, "batchguard_records_total", outcome="pending") == report.pending_count == 0
    assert _value(last, "batchguard_retries_total", error_class="recoverable", job="") == report.retry_count == 10
    assert _value(last, "batchguard_dead_letters_total", error_type="ValueError") == 9
    assert _value(last, "batchguard_batch_duration_seconds_count") == len(report.batches) == 15
    assert _value(last, "batchguard_in_flight") == _value(last, "batchguard_queued") == 0
    assert report.hook_errors == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_breaker_transitions_and_state(engine: str) -> None:
    registry = prometheus_client.CollectorRegistry()

    def down(record: int) -> int:
        raise ConnectionError("down")

    batchguard.run_batches(range(12), down, engine=engine, batch_size=4, metrics=Prometheus(registry),
                           retry=RetryPolicy(max_attempts=1),
                           breaker=batchguard.CircuitBreaker(failure_rate_threshold=0.5, window=4,
                                                             minimum_calls=4, open_duration=0.0))
    samples = _samples(prometheus_client.generate_latest(registry).decode())
    assert _value(samples, "batchguard_breaker_transitions_total", from_state="closed", to_state="open") >= 1
    assert _value(samples, "batchguard_dead_letters_total", error_type="ConnectionError") == 12


def test_metrics_and_hooks_together_and_a_job_label(tmp_path: Any) -> None:
    registry = prometheus_client.CollectorRegistry()
    seen: list[int] = []
    report = batchguard.run_batches(range(5), lambda r: r, metrics=Prometheus(registry), job="nightly",
                                    store=f"sqlite:///{tmp_path}/jobs.db",
                                    hooks=Hooks(on_batch_complete=lambda s: seen.append(s.succeeded)))
    samples = _samples(prometheus_client.generate_latest(registry).decode())
    assert seen == [5] and report.success_count == 5
    assert _value(samples, "batchguard_records_total", outcome="succeeded", job="nightly") == 5


def test_two_objects_on_one_registry_share_the_series() -> None:
    registry = prometheus_client.CollectorRegistry()
    for _ in range(2):
        batchguard.run_batches(range(3), lambda r: r, metrics=Prometheus(registry))
    samples = _samples(prometheus_client.generate_latest(registry).decode())
    assert _value(samples, "batchguard_records_total", outcome="succeeded") == 6
