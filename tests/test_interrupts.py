"""Interrupts, panics and threads: the run stops cleanly and nothing dead-lettered is lost.

A BaseException that is not an Exception (KeyboardInterrupt, SystemExit) is never classified:
the run stops, flushes the DLQ, and re-raises it (DESIGN §4).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import batchguard
from batchguard import MemoryDLQ, RetryPolicy
from helpers_contract import CONCURRENCIES, ENGINES, PermanentErr, RecoverableErr, run

both = pytest.mark.parametrize("engine", ENGINES)
each_concurrency = pytest.mark.parametrize("concurrency", CONCURRENCIES)


class StopsAt:
    """Fails PERMANENT on ``bad`` records and raises ``stop`` at record ``at``."""

    def __init__(self, stop: type[BaseException], at: int, bad: set[int]) -> None:
        self.stop = stop
        self.at = at
        self.bad = bad
        self.raised_permanent: set[int] = set()
        self.started_after_stop = 0
        self.calls = 0
        self._stopped = False
        self._lock = threading.Lock()

    def __call__(self, record: int) -> int:
        with self._lock:
            self.calls += 1
            if self._stopped:
                self.started_after_stop += 1
        time.sleep(0.0005)  # hand the GIL over, so the stop takes effect before others race on
        if record == self.at:
            with self._lock:
                self._stopped = True
            raise self.stop()
        if record in self.bad:
            with self._lock:
                self.raised_permanent.add(record)
            raise PermanentErr(f"bad {record}")
        return record


@both
@each_concurrency
@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_fn_propagates_and_the_dlq_keeps_what_was_dead_lettered(
        engine: str, concurrency: int, stop: type[BaseException]) -> None:
    fn = StopsAt(stop, at=27, bad={5, 15, 25})
    dlq = MemoryDLQ()
    with pytest.raises(stop):
        run(range(1000), fn, engine=engine, concurrency=concurrency, batch_size=10, dlq=dlq)
    stored = sorted(e.record_index for e in dlq.list())
    # Every record whose failure was final is in the DLQ, including the one in the batch the
    # interrupt cut short; records in flight at the interrupt may finish, nothing new starts.
    assert stored == sorted(fn.raised_permanent)
    assert {5, 15, 25} <= set(stored)
    assert fn.calls < 100, "records kept starting after the interrupt"
    if concurrency == 1:
        assert fn.started_after_stop == 0 and stored == [5, 15, 25]
    assert all(e.error_class == "permanent" for e in dlq.list())


@both
@each_concurrency
def test_interrupt_while_waiting_on_a_backoff_timer_stops_promptly(engine: str, concurrency: int) -> None:
    def fn(record: int) -> int:
        if record == 0:
            raise RecoverableErr("down")  # waits 3 s before its retry
        return record

    fired: list[float] = []

    def fire() -> None:
        fired.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    timer = threading.Timer(0.3, fire)
    dlq = MemoryDLQ()
    caught_at = None
    timer.start()
    try:
        run(range(5), fn, engine=engine, concurrency=concurrency, dlq=dlq,
            retry=RetryPolicy(max_attempts=2, base_delay=3.0, jitter="none"))
    except KeyboardInterrupt:
        caught_at = time.monotonic()
    finally:
        timer.cancel()
        timer.join()
    assert caught_at is not None, "the run ignored Ctrl-C"
    assert fired and caught_at - fired[0] < 2.0, f"stopped {caught_at - fired[0]:.2f} s after Ctrl-C"
    assert len(dlq) == 0, "a record waiting for its retry is pending, not dead-lettered"


@both
def test_interrupt_raised_from_on_progress_propagates(engine: str) -> None:
    def on_progress(progress: Any) -> None:
        if progress.batches_completed >= 2:
            raise KeyboardInterrupt

    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        run(range(1000), calls.append, engine=engine, batch_size=10, on_progress=on_progress)
    assert len(calls) < 1000


def test_a_rust_panic_becomes_a_python_exception_not_a_crash() -> None:
    code = textwrap.dedent("""
        import batchguard._native as native
        try:
            native._panic_for_test("boom")
        except BaseException as exc:
            print("caught", type(exc).__name__, isinstance(exc, Exception), str(exc))
        print("alive")
    """)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "caught PanicException False boom", child.stdout
    assert lines[-1] == "alive"


@pytest.mark.parametrize("threads", [4])
def test_native_runs_from_many_python_threads_at_once(threads: int) -> None:
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def job(worker: int) -> None:
        def fn(record: int) -> int:
            if record % 13 == worker:
                raise ValueError(f"{worker}:{record}")
            return record * worker

        try:
            barrier.wait(10)
            results[worker] = batchguard.run_batches(range(3000), fn, concurrency=8, batch_size=64,
                                                     engine="native",
                                                     retry=RetryPolicy(max_attempts=2, base_delay=0.0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=job, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors, errors
    assert sorted(results) == list(range(threads))
    for worker, report in results.items():
        expected_ok = [r for r in range(3000) if r % 13 != worker]
        assert report.successful == [r * worker for r in expected_ok]
        assert [e.record_index for e in report.errors] == [r for r in range(3000) if r % 13 == worker]
        assert all(e.error_message.startswith(f"{worker}:") for e in report.errors)
        assert report.total == report.success_count + report.failure_count == 3000
        assert report.status == "partial_success"


class _InterruptingRetryAfter(TimeoutError):
    @property
    def retry_after(self) -> float:
        raise KeyboardInterrupt


class _InterruptingStatus(Exception):
    @property
    def status_code(self) -> int:
        raise KeyboardInterrupt


def _interrupt_in_classifier_callable(exc: BaseException) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("engine", ["python", "native"])
@pytest.mark.parametrize("source", ["classifier-callable", "status_code", "retry_after"])
def test_interrupt_while_classifying_a_failure_stops_the_run(engine: str, source: str) -> None:
    exc_type: type[Exception] = {"classifier-callable": ValueError, "status_code": _InterruptingStatus,
                                 "retry_after": _InterruptingRetryAfter}[source]
    classifier = batchguard.Classifier.default()
    if source == "classifier-callable":
        classifier = classifier.with_callable(_interrupt_in_classifier_callable)
    calls: list[int] = []

    def fn(record: int) -> int:
        calls.append(record)
        if record == 3:
            raise exc_type("x")
        return record

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(1000), fn, engine=engine, classifier=classifier, batch_size=10,
                               retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    assert len(calls) < 100


@pytest.mark.parametrize("engine", ["python", "native"])
# 2**62 records of 8 bytes exceed isize::MAX: the overflow does not depend on how the OS
# overcommits memory (10**12 aborts the process on a default Linux, but not everywhere).
@pytest.mark.parametrize("batch_size", ["2**62"])
def test_a_huge_batch_size_on_a_generator_neither_crashes_nor_panics(engine: str, batch_size: str) -> None:
    code = textwrap.dedent(f"""
        import batchguard
        report = batchguard.run_batches(iter(range(5)), lambda r: r, batch_size={batch_size},
                                        engine={engine!r})
        print(report.status, report.successful)
    """)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "RUST_BACKTRACE": "0"})
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "complete [0, 1, 2, 3, 4]"
