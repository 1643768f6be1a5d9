"""Metrics of a run: ``run_batches(..., metrics=batchguard.metrics.Prometheus())``, or
``metrics=batchguard.metrics.OpenTelemetry()`` for the same as OpenTelemetry instruments and a
span per batch.

Built on the lifecycle hooks (:mod:`batchguard.hooks`), not a second path through the engine:
the metrics move when the engine hands a finished batch over (with its retries and dead
letters), and the gauges are the engine's counters at that moment. Nothing is measured per
record: a run with metrics costs what a run with hooks costs, one call per batch end and one per
retry (retries are then collected by the engine, as for an ``on_retry`` hook).

=============================================  =========  =====================================
name (``namespace`` ``batchguard``)            type       labels besides ``stage``, ``job``
=============================================  =========  =====================================
``batchguard_records_total``                   counter    ``outcome``: succeeded,
                                                          dead_lettered, compensated, pending
``batchguard_retries_total``                   counter    ``error_class``: transient,
                                                          recoverable (rate limits are
                                                          recoverable)
``batchguard_dead_letters_total``              counter    ``error_type``: the exception's type
``batchguard_breaker_transitions_total``       counter    ``from_state``, ``to_state``
``batchguard_in_flight``, ``_queued``,         gauge
``_retrying``
``batchguard_breaker_state``                   gauge      0 closed, 1 half_open, 2 open
``batchguard_batch_duration_seconds``          histogram  a batch's time from read to its end
=============================================  =========  =====================================

The duration is a batch's, not an attempt's: the engines time batches already, while timing
every attempt would put two clock reads on every record of every run. ``job`` is the job's
name ("" for a run that is not a job). At the end of a run the counters equal the report:
``records_total{outcome="succeeded"}`` is ``success_count``, ``dead_lettered`` is
``failure_count``, ``compensated`` is ``compensated_count`` (records of rolled-back atomic
batches), and the retries sum to ``retry_count`` when the run was not stopped early (a retry
scheduled but never started is counted here, not in the report). Records an aborted run undoes
at its end (``on_abort="compensate"``) were counted succeeded when their batch ended: a counter
does not go back, so there the report is the one to read.

``batchguard run --metrics-port N`` serves them on 127.0.0.1:N; in a program, call
:meth:`Prometheus.serve` (or ``prometheus_client.start_http_server``) yourself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from ._native import Counters, RetryEvent
from ._urls import require_module
from .dlq.base import DeadLetter
from .results import BatchReport, BatchStats

__all__ = ["BREAKER_STATES", "OpenTelemetry", "Prometheus"]

BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
"""The value of ``batchguard_breaker_state`` for each breaker state."""

DEFAULT_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Batch durations in seconds: a batch of fast records takes milliseconds, of HTTP calls minutes."""

_LABELS: Final = ("stage", "job")
# One set of metric families per (registry, namespace): prometheus_client refuses to register a
# name twice, and two Prometheus() objects on one registry (two runs) share the same series.
_families: dict[tuple[int, str], tuple[Any, dict[str, Any]]] = {}
_families_lock = threading.Lock()


def _prometheus_client() -> Any:
    return require_module("prometheus_client", needed_by="batchguard.metrics.Prometheus",
                          extra="prometheus")


def _metrics(registry: Any, namespace: str, buckets: Sequence[float]) -> dict[str, Any]:
    prom = _prometheus_client()
    with _families_lock:
        known = _families.get((id(registry), namespace))
        if known is not None and known[0] is registry:
            return known[1]
        common = {"namespace": namespace, "registry": registry}
        metrics = {
            "records": prom.Counter("records", "Records that reached an outcome",
                                    [*_LABELS, "outcome"], **common),
            "retries": prom.Counter("retries", "Retries scheduled, by error class",
                                    [*_LABELS, "error_class"], **common),
            "dead_letters": prom.Counter("dead_letters", "Records dead-lettered, by error type",
                                         [*_LABELS, "error_type"], **common),
            "transitions": prom.Counter("breaker_transitions", "Circuit breaker state changes",
                                        [*_LABELS, "from_state", "to_state"], **common),
            "in_flight": prom.Gauge("in_flight", "Attempts running", _LABELS, **common),
            "queued": prom.Gauge("queued", "Records read and not started yet", _LABELS, **common),
            "retrying": prom.Gauge("retrying", "Records waiting for a retry", _LABELS, **common),
            "breaker_state": prom.Gauge("breaker_state", "Circuit breaker: 0 closed, 1 half_open, "
                                        "2 open", _LABELS, **common),
            "concurrency_limit": prom.Gauge("concurrency_limit", "Calls that may be in flight "
                                            "(concurrency=Adaptive(...))", _LABELS, **common),
            "batch_duration": prom.Histogram("batch_duration_seconds", "A batch's time from read to end",
                                             _LABELS, buckets=tuple(buckets), **common),
        }
        _families[(id(registry), namespace)] = (registry, metrics)
        return metrics


class Prometheus:
    """A run's metrics in a ``prometheus_client`` registry (default: its global ``REGISTRY``).

    Pass it as ``metrics=``; one object serves one run at a time (runs at once each take their
    own object; on one registry they share the series, told apart by ``stage`` and ``job``).
    Needs ``pip install "batchguard[prometheus]"``.
    """

    reads_dlq = False
    """It never reads the DLQ: an SQLite DLQ keeps its background writes (batchguard.hooks)."""

    def __init__(self, registry: Any = None, *, namespace: str = "batchguard",
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        prom = _prometheus_client()
        self.registry = prom.REGISTRY if registry is None else registry
        self._m = _metrics(self.registry, namespace, buckets)
        self._labels: tuple[str, str] = ("process", "")

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve this registry at ``http://addr:port/metrics`` from a daemon thread; returns
        the server (``.shutdown()`` then ``.server_close()`` stop it)."""
        server, _thread = _prometheus_client().start_http_server(port, addr=addr, registry=self.registry)
        return server

    # ---------------------------------------------------------------- hooks (batchguard.hooks)

    def run_started(self, run_id: str, stage: str, job_id: str | None) -> None:
        self._labels = (stage, job_id or "")
        for gauge in ("in_flight", "queued", "retrying", "breaker_state"):
            self._m[gauge].labels(*self._labels).set(0)
        # Every outcome shows from the start (at 0), so a rate() over the run has its first point.
        for outcome in ("succeeded", "dead_lettered", "compensated", "pending"):
            self._m["records"].labels(*self._labels, outcome)

    def observe_retry(self, event: RetryEvent) -> None:
        self._m["retries"].labels(*self._labels, event.error_class).inc()

    def on_dead_letter(self, entry: DeadLetter) -> None:
        self._m["dead_letters"].labels(*self._labels, entry.error_type).inc()

    def on_breaker(self, old: str, new: str) -> None:
        self._m["transitions"].labels(*self._labels, old, new).inc()
        self._m["breaker_state"].labels(*self._labels).set(BREAKER_STATES.get(new, -1))

    def on_batch_complete(self, stats: BatchStats) -> None:
        records = self._m["records"]
        records.labels(*self._labels, "succeeded").inc(stats.succeeded)
        records.labels(*self._labels, "dead_lettered").inc(stats.failed)
        if stats.compensated:
            records.labels(*self._labels, "compensated").inc(stats.compensated)
        if stats.pending:
            records.labels(*self._labels, "pending").inc(stats.pending)
        self._m["batch_duration"].labels(*self._labels).observe(stats.duration_s)

    def observe_counters(self, counters: Counters) -> None:
        m, labels = self._m, self._labels
        m["in_flight"].labels(*labels).set(counters.in_flight)
        m["queued"].labels(*labels).set(counters.queued)
        m["retrying"].labels(*labels).set(counters.retrying)
        m["breaker_state"].labels(*labels).set(BREAKER_STATES.get(counters.breaker_state, -1))
        if counters.concurrency_limit is not None:
            m["concurrency_limit"].labels(*labels).set(counters.concurrency_limit)

    def on_run_end(self, report: BatchReport[Any]) -> None:
        for gauge in ("in_flight", "queued", "retrying"):
            self._m[gauge].labels(*self._labels).set(0)


def _opentelemetry(module: str) -> Any:
    return require_module(module, needed_by="batchguard.metrics.OpenTelemetry", extra="otel")


class OpenTelemetry:
    """The same metrics as :class:`Prometheus`, as OpenTelemetry instruments, and a span per
    batch (``batchguard.batch``, from the batch's read to its end, with its counts as
    attributes; no span per record). Needs ``pip install "batchguard[otel]"``.

    ``meter_provider`` / ``tracer_provider``: None takes OpenTelemetry's global ones. The
    instruments are named as the Prometheus metrics without the ``_total`` suffix
    (``batchguard.records``, ``batchguard.retries``, ...), with the same attributes.
    """

    reads_dlq = False
    """It never reads the DLQ: an SQLite DLQ keeps its background writes (batchguard.hooks)."""

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None) -> None:
        metrics_api, trace_api = _opentelemetry("opentelemetry.metrics"), _opentelemetry("opentelemetry.trace")
        meter = (metrics_api.get_meter("batchguard") if meter_provider is None
                 else meter_provider.get_meter("batchguard"))
        self._tracer = (trace_api.get_tracer("batchguard") if tracer_provider is None
                        else tracer_provider.get_tracer("batchguard"))
        self._records = meter.create_counter("batchguard.records", description="Records that reached an outcome")
        self._retries = meter.create_counter("batchguard.retries", description="Retries scheduled, by error class")
        self._dead = meter.create_counter("batchguard.dead_letters", description="Records dead-lettered, by type")
        self._transitions = meter.create_counter("batchguard.breaker_transitions",
                                                 description="Circuit breaker state changes")
        self._gauges = {name: meter.create_gauge(f"batchguard.{name}", description=text) for name, text in (
            ("in_flight", "Attempts running"), ("queued", "Records read and not started yet"),
            ("retrying", "Records waiting for a retry"),
            ("breaker_state", "Circuit breaker: 0 closed, 1 half_open, 2 open"),
            ("concurrency_limit", "Calls that may be in flight (concurrency=Adaptive(...))"))}
        self._duration = meter.create_histogram("batchguard.batch_duration", unit="s",
                                                description="A batch's time from read to end")
        self._attrs: dict[str, str] = {"stage": "process", "job": ""}
        self._run_id = ""

    def _with(self, **extra: str) -> dict[str, str]:
        return {**self._attrs, **extra}

    def run_started(self, run_id: str, stage: str, job_id: str | None) -> None:
        self._attrs = {"stage": stage, "job": job_id or ""}
        self._run_id = run_id

    def observe_retry(self, event: RetryEvent) -> None:
        self._retries.add(1, self._with(error_class=event.error_class))

    def on_dead_letter(self, entry: DeadLetter) -> None:
        self._dead.add(1, self._with(error_type=entry.error_type))

    def on_breaker(self, old: str, new: str) -> None:
        self._transitions.add(1, self._with(from_state=old, to_state=new))
        self._gauges["breaker_state"].set(BREAKER_STATES.get(new, -1), self._attrs)

    def on_batch_complete(self, stats: BatchStats) -> None:
        for outcome, n in (("succeeded", stats.succeeded), ("dead_lettered", stats.failed),
                           ("compensated", stats.compensated), ("pending", stats.pending)):
            if n:
                self._records.add(n, self._with(outcome=outcome))
        self._duration.record(stats.duration_s, self._attrs)
        # The span is written when the batch is handed over: its start is its read, that long ago.
        end = time.time_ns()
        span = self._tracer.start_span("batchguard.batch", start_time=end - int(stats.duration_s * 1e9),
                                       attributes={**self._attrs, "run_id": self._run_id,
                                                   "batch.index": stats.batch_index, "batch.size": stats.size,
                                                   "batch.succeeded": stats.succeeded,
                                                   "batch.failed": stats.failed, "batch.retries": stats.retries,
                                                   "batch.pending": stats.pending})
        span.end(end_time=end)

    def observe_counters(self, counters: Counters) -> None:
        for name in ("in_flight", "queued", "retrying"):
            self._gauges[name].set(getattr(counters, name), self._attrs)
        self._gauges["breaker_state"].set(BREAKER_STATES.get(counters.breaker_state, -1), self._attrs)
        if counters.concurrency_limit is not None:
            self._gauges["concurrency_limit"].set(counters.concurrency_limit, self._attrs)

    def on_run_end(self, report: BatchReport[Any]) -> None:
        for name in ("in_flight", "queued", "retrying"):
            self._gauges[name].set(0, self._attrs)
