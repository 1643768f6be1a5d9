"""Shared helpers for the contract tests (issue #2): both engines, one set of expectations.

Records in these tests are usually plain ints, so a record is its own index and its default
record id; callbacks return ``record * 10`` so a value can be traced back to its record.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import batchguard
from batchguard import Classifier, ErrorClass, RetryPolicy
from batchguard.dlq.base import DeadLetter
from batchguard.results import BatchReport

ENGINES = ("python", "native")
CONCURRENCIES = (1, 4)

# DeadLetter fields that depend on the clock, the run or the process, not on the outcome.
VOLATILE_DLQ_FIELDS = ("id", "run_id", "traceback", "first_failed_at", "last_failed_at")


class Spy:
    """A callback that must never be called, and an input that must never be read."""

    def __init__(self) -> None:
        self.calls = 0
        self.pulled = 0

    def __call__(self, record: Any) -> Any:
        self.calls += 1
        return record

    def records(self) -> Iterator[int]:
        for i in range(10):
            self.pulled += 1
            yield i


class TransientErr(Exception):
    """Mapped to TRANSIENT by CLASSIFIER."""


class RecoverableErr(Exception):
    """Mapped to RECOVERABLE by CLASSIFIER."""


class PermanentErr(Exception):
    """Mapped to PERMANENT by CLASSIFIER."""


class FatalErr(Exception):
    """Mapped to FATAL by CLASSIFIER."""


class RetryAfterErr(Exception):
    """A RECOVERABLE failure (by type rule in CLASSIFIER) that asks for a minimum wait."""

    def __init__(self, message: str, retry_after: Any) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HTTPStatusErr(Exception):
    """An exception carrying an HTTP status the way HTTP client libraries do."""

    def __init__(self, status_code: Any) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


ERRORS: dict[str, type[Exception]] = {
    "transient": TransientErr,
    "recoverable": RecoverableErr,
    "permanent": PermanentErr,
    "fatal": FatalErr,
}

CLASSIFIER = (
    Classifier.default()
    .with_rule(TransientErr, ErrorClass.TRANSIENT)
    .with_rule(RecoverableErr, ErrorClass.RECOVERABLE)
    .with_rule(PermanentErr, ErrorClass.PERMANENT)
    .with_rule(FatalErr, ErrorClass.FATAL)
    .with_rule(RetryAfterErr, ErrorClass.RECOVERABLE)
)


def no_wait(max_attempts: int = 3) -> RetryPolicy:
    """Retries with no delay at all, so outcomes never depend on timing."""
    return RetryPolicy(max_attempts=max_attempts, base_delay=0.0, jitter="none", seed=7)


def run(records: Iterable[Any], fn: Callable[[Any], Any], *, engine: str, **kwargs: Any) -> BatchReport:
    kwargs.setdefault("classifier", CLASSIFIER)
    return batchguard.run_batches(records, fn, engine=engine, **kwargs)


class FailurePlan:
    """A deterministic callback: ``outcomes[(record, attempt)]`` says what the attempt does
    ("ok" when absent); records are ints. Thread-safe; remembers every call."""

    def __init__(self, outcomes: dict[tuple[int, int], str] | None = None, *, pause: float = 0.0) -> None:
        self.outcomes = dict(outcomes or {})
        # Sleeping in every call hands the GIL over, so a stop reported by one worker takes
        # effect before the others can race through many more records.
        self.pause = pause
        self.attempts: dict[int, int] = {}
        self.returned: set[int] = set()
        self.raised: dict[int, list[str]] = {}
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def __call__(self, record: int) -> int:
        with self._lock:
            attempt = self.attempts[record] = self.attempts.get(record, 0) + 1
            self.calls.append((record, attempt))
            outcome = self.outcomes.get((record, attempt), "ok")
            if outcome == "ok":
                self.returned.add(record)
            else:
                self.raised.setdefault(record, []).append(outcome)
        if self.pause:
            time.sleep(self.pause)
        if outcome == "ok":
            return record * 10
        raise ERRORS[outcome](f"{outcome} record={record} attempt={attempt}")

    @property
    def call_count(self) -> int:
        return len(self.calls)


class CountingIterator(Iterator[Any]):
    """Wraps an iterable and counts how many items were pulled from it."""

    def __init__(self, items: Iterable[Any], *, limit: int | None = None) -> None:
        self._items = iter(items)
        self.pulled = 0
        self._limit = limit

    def __iter__(self) -> CountingIterator:
        return self

    def __next__(self) -> Any:
        item = next(self._items)
        self.pulled += 1
        if self._limit is not None and self.pulled > self._limit:
            raise AssertionError(f"the engine read {self.pulled} records: the input is not read lazily")
        return item


def assert_conservation(report: BatchReport) -> None:
    """DESIGN §3: every record in exactly one final state, counted once."""
    assert report.total == report.success_count + report.failure_count + report.pending_count, report
    assert min(report.success_count, report.failure_count, report.pending_count) >= 0
    assert len(report.successful) == report.success_count
    assert len(report.errors) == report.failure_count
    assert len(report.failed) == report.failure_count
    indices = [e.record_index for e in report.errors]
    assert indices == sorted(set(indices)), "a record was dead-lettered twice or out of order"
    assert sum(b.succeeded for b in report.batches) == report.success_count
    assert sum(b.failed for b in report.batches) == report.failure_count
    assert sum(b.retries for b in report.batches) == report.retry_count
    for b in report.batches:
        assert b.succeeded + b.failed + b.pending == b.size, b
    if report.stopped_reason is None:
        assert report.pending_count == 0
        assert report.status in ("complete", "partial_success", "failed")
    else:
        assert report.status == "aborted"


def dlq_view(entry: DeadLetter) -> dict[str, Any]:
    """A DLQ entry without what depends on the clock, the run or the process."""
    data = entry.to_dict()
    for name in VOLATILE_DLQ_FIELDS:
        data.pop(name)
    data["attempts"] = [{k: v for k, v in a.items() if k != "at"} for a in data["attempts"]]
    return data


def batch_view(report: BatchReport) -> list[dict[str, Any]]:
    return [{k: v for k, v in b.to_dict().items() if k != "duration_s"} for b in report.batches]


def outcome_view(report: BatchReport) -> dict[str, Any]:
    """Everything two engines must agree on for the same input (timing excluded)."""
    return {
        "status": report.status,
        "stopped_reason": report.stopped_reason,
        "total": report.total,
        "success_count": report.success_count,
        "failure_count": report.failure_count,
        "pending_count": report.pending_count,
        "retry_count": report.retry_count,
        "successful": list(report.successful),
        "errors": [e.to_dict() for e in report.errors],
        "errors_by_type": report.errors_by_type,
        "dead_letters": [dlq_view(d) for d in report.dead_letters],
        "batches": batch_view(report),
        "breaker_trips": report.breaker_trips,
        "breaker_transitions": [(old, new) for _, old, new in report.breaker_events],
        "dlq_count": report.dlq_count,
    }


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
