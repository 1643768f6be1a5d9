"""OpenTelemetry (issue 10 item 3): the run's metrics through an in-memory reader, and a span
per batch with the batch's counts, read back from an in-memory exporter."""

from __future__ import annotations

from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy
from helpers_contract import ENGINES

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from batchguard.metrics import OpenTelemetry


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for p in metric.data.data_points:
                    value = p.count if hasattr(p, "count") else p.value
                    points.setdefault(metric.name, []).append((dict(p.attributes), value))
    return points


def _sum(points: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **attrs: str) -> Any:
    return sum(v for a, v in points.get(name, []) if all(a.get(k) == w for k, w in attrs.items()))


@pytest.mark.parametrize("engine", ENGINES)
def test_spans_per_batch_with_their_counts_and_metrics_equal_to_the_report(engine: str) -> None:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tries: dict[int, int] = {}

    def fn(record: int) -> int:
        tries[record] = tries.get(record, 0) + 1
        if record % 6 == 1:
            raise ValueError("bad")
        if record % 4 == 0 and tries[record] == 1:
            raise ConnectionError("again")
        return record

    report = batchguard.run_batches(
        range(20), fn, engine=engine, batch_size=5, stage="load",
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        metrics=OpenTelemetry(MeterProvider(metric_readers=[reader]), tracer_provider))
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.attributes["batch.index"])
    assert [s.name for s in spans] == ["batchguard.batch"] * 4
    assert [(s.attributes["batch.succeeded"], s.attributes["batch.failed"], s.attributes["batch.retries"])
            for s in spans] == [(b.succeeded, b.failed, b.retries) for b in report.batches]
    assert sum(s.attributes["batch.failed"] for s in spans) == report.failure_count == 4
    assert all(s.attributes["stage"] == "load" and s.attributes["run_id"] == report.run_id for s in spans)
    assert all(s.end_time >= s.start_time for s in spans)
    points = _points(reader)
    assert _sum(points, "batchguard.records", outcome="succeeded") == report.success_count == 16
    assert _sum(points, "batchguard.records", outcome="dead_lettered") == 4
    assert _sum(points, "batchguard.retries", error_class="recoverable") == report.retry_count == 5
    assert _sum(points, "batchguard.dead_letters", error_type="ValueError") == 4
    assert _sum(points, "batchguard.batch_duration") == 4
    assert _sum(points, "batchguard.in_flight") == 0
