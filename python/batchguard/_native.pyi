"""The Rust engine (``src/``), built by maturin as ``batchguard._native``.

A private module: ``batchguard.run_batches(..., engine="native")`` is its public face. This stub
is written by hand from ``src/bindings/``, and ``make test`` checks it against the built module
with ``python -m mypy.stubtest batchguard._native``, so a signature changed on one side and not
the other fails the build.

The engine reads its arguments by attribute (duck typing; the names it reads are declared once,
in ``src/bindings/config.rs``); the types below name the objects ``batchguard._run`` passes.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Literal, Self, final

from batchguard._outcome import RunRecorder
from batchguard._run.config import EngineConfig
from batchguard.policies import Classifier, Jitter

# PyO3 sets __all__ to everything the module registers, in the order it registers it.
__all__ = [
    "run",
    "backoff_schedule",
    "calculate_batch_size",
    "RunSummary",
    "Counters",
    "ActiveBatch",
    "BatchEvent",
    "BreakerEvent",
    "RetryEvent",
    "DeadRecord",
    "FailedAttempt",
    "DeadRecords",
    "AsyncRun",
    "MAX_CONCURRENCY",
    "DELIVERY_ATTEMPTS",
    "_panic_for_test",
    "_panic_in_worker_for_test",
    "_budget_trace_for_test",
    "_adaptive_trace_for_test",
]


MAX_CONCURRENCY: Final = 1024
"""Largest ``concurrency`` the engine accepts: sync callbacks get one thread each, and past
this many threads cost more than they give. A larger value raises ``ConfigError``."""

DELIVERY_ATTEMPTS: Final = 4
"""Interrupts in a row that may cut one delivery of events to the recorder short before it is
given up (both engines): the first Ctrl-C still flushes what was dead-lettered; a user who keeps
pressing it (a DLQ that hangs) gets out."""

def run(
    records: Iterable[Any],
    func: Callable[[Any], Any],
    config: EngineConfig,
    classifier: Classifier,
    sink: RunRecorder,
    size_hint: int | None = None,
    bulk: bool = False,
) -> RunSummary:
    """Run ``func`` over ``records``; report batch events and progress to ``sink``.

    With ``bulk``, ``func`` takes a list of records (a batch, or a part of one) and returns
    their results in order; a group whose call raises is bisected until each failing record is
    classified alone (as ``batchguard._async`` does for an async bulk fn), on the threaded
    driver's workers whatever the concurrency.

    Records are read ``config.batch_size`` at a time (lists and tuples by position, any other
    iterable through its iterator); each failure is classified by ``classifier`` and retried,
    dead-lettered or made to stop the run as ``config`` says. ``size_hint`` (the input's length,
    when known) only presizes the result list.

    Returns the run's :class:`RunSummary`.

    Raises ``batchguard.errors.ConfigError`` for a configuration the engine rejects, and
    re-raises a ``KeyboardInterrupt`` or ``SystemExit`` raised by ``func`` (or Ctrl-C) after
    the unfinished batches have been reported to ``sink``.

    ``run_batches(records, fn, engine="native")`` comes down to:

    >>> outcome = _native.run(records, fn, plan.config, plan.classifier, recorder, len(records))  # doctest: +SKIP
    """

def backoff_schedule(
    max_attempts: int,
    base_delay: float,
    multiplier: float,
    max_delay: float,
    jitter: Jitter,
    seed: int,
    record_index: int,
    n: int,
) -> list[float]:
    """The first ``n`` retry delays (seconds) the native engine waits for record
    ``record_index`` under a retry policy (before any ``retry_after``).

    ``RetryPolicy.schedule`` computes the same numbers in Python (``BackoffState``, the
    reference engine's); the tests hold the two equal. The same ``seed`` and ``record_index``
    always give the same jitter. ``n`` is at most ``2**20``. Raises
    ``batchguard.errors.ConfigError`` for an invalid policy (negative delay, ``multiplier``
    below 1, unknown ``jitter``, ...), and ``OverflowError`` for a negative int.

    >>> backoff_schedule(4, 0.5, 2.0, 30.0, "none", 0, 0, 3)
    [0.5, 1.0, 2.0]
    """

def calculate_batch_size(total_items: int, max_batch_size: int) -> int:
    """The seed's batch-size heuristic (see ``batchguard.calculate_batch_size``).

    0 records give 1; up to 100, all of them (capped at ``max_batch_size``); up to 1000, about
    ten batches; more, ``max_batch_size``. Raises ``batchguard.errors.ConfigError`` when
    ``max_batch_size`` is below 1.

    >>> calculate_batch_size(500, 100)
    50
    """

def _panic_for_test(message: str) -> None:
    """Panic inside the extension with ``message``.

    Proves a Rust panic reaches Python as ``pyo3_runtime.PanicException`` (a ``BaseException``,
    not an ``Exception``) instead of aborting the interpreter. A test hook (``src/bindings/testing.rs``).
    """

def _panic_in_worker_for_test(record_index: int) -> None:
    """Make the threaded worker that runs ``record_index`` panic once its call has returned,
    while the record is still in flight (once; ``2**64 - 1`` disarms it).

    Proves a dead worker cannot hang a run: the run fails with a RuntimeError that says a
    worker panicked, the DLQ holds what was dead-lettered, and the record is pending. A test hook.
    """

def _budget_trace_for_test(
    ratio: float, min_per_s: float, window_s: float, over_budget: str, script: list[tuple[str, float]],
) -> list[Any]:
    """Run ``script`` on the retry budget's state machine and return each step's answer, then
    ``(waited, dead_lettered)``: the parity tests hold ``reference/budget.py`` to it. A test hook."""

def _adaptive_trace_for_test(
    low: int, high: int, initial: int, increase: float, decrease: float, script: list[tuple[str, int]],
) -> list[Any]:
    """Run ``script`` on the adaptive limit and return the limit after each step, then
    ``(peak, low, decreases)``: the parity tests hold ``reference/adaptive.py`` to it. A test hook."""

_ErrorClassName = Literal["transient", "recoverable", "permanent", "fatal"]
_BreakerState = Literal["closed", "open", "half_open"]

@final
class RunSummary:
    """What a run returns (``run``, ``AsyncRun.finish``; the reference engine builds the same).

    Built once per run; every field is read-only.

    >>> summary.succeeded + summary.failed <= summary.records_read  # doctest: +SKIP
    True
    """

    @property
    def succeeded(self) -> int:
        """Records whose call returned."""
    @property
    def failed(self) -> int:
        """Records dead-lettered."""
    @property
    def records_read(self) -> int:
        """Records taken from the input (skipped batches included)."""
    @property
    def exhausted(self) -> bool:
        """True once the input iterator was read to its end."""
    @property
    def retries(self) -> int:
        """Attempts after a record's first."""
    @property
    def successful(self) -> list[Any]:
        """The return values of the successful calls, in input order."""
    @property
    def stop_reason(self) -> str | None:
        """None for a run that was not stopped, else ``"fatal"``, ``"max_failures"``,
        ``"breaker_abort"`` or ``"interrupt"``."""
    @property
    def breaker_trips(self) -> int:
        """How often the circuit breaker opened."""
    @property
    def skipped_records(self) -> int:
        """Records of skipped batches (a resumed job's finished ones): read past, not run."""
    @property
    def concurrency_limits(self) -> tuple[int, int, int] | None:
        """With ``concurrency=Adaptive(...)``: the limit at the end, its highest and its lowest."""
    @property
    def retries_over_budget(self) -> tuple[int, int]:
        """With ``retry_budget=``: retries that waited for it, and records it dead-lettered."""
    def __new__(
        cls,
        *,
        succeeded: int,
        failed: int,
        records_read: int,
        exhausted: bool,
        retries: int,
        successful: list[Any],
        stop_reason: str | None,
        breaker_trips: int,
        skipped_records: int,
        concurrency_limits: tuple[int, int, int] | None = None,
        retries_over_budget: tuple[int, int] = ...,
    ) -> Self: ...

@final
class Counters:
    """A snapshot of a run's counters, handed with each delivery of events and progress report.

    >>> counters.succeeded + counters.failed  # records final so far  # doctest: +SKIP
    """

    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def retrying(self) -> int:
        """Records waiting for their next try."""
    @property
    def in_flight(self) -> int:
        """Attempts running now."""
    @property
    def queued(self) -> int:
        """Records read and not yet started (including those waiting for their key)."""
    @property
    def batches_completed(self) -> int: ...
    @property
    def current_batch(self) -> int:
        """The newest batch taken from the input."""
    @property
    def breaker_state(self) -> _BreakerState: ...
    @property
    def records_read(self) -> int: ...
    @property
    def batches(self) -> tuple[ActiveBatch, ...] | None:
        """The open batches, in batch order, when the run reports progress (``on_progress``);
        None otherwise: they are counted only for a snapshot someone reads."""
    @property
    def concurrency_limit(self) -> int | None:
        """The adaptive concurrency limit now (None: a fixed concurrency)."""
    def __new__(
        cls,
        *,
        succeeded: int,
        failed: int,
        retrying: int,
        in_flight: int,
        queued: int,
        batches_completed: int,
        current_batch: int,
        breaker_state: str,
        records_read: int,
        batches: tuple[ActiveBatch, ...] | None = None,
        concurrency_limit: int | None = None,
    ) -> Self: ...

@final
class ActiveBatch:
    """One batch not finished yet, at a progress snapshot: a dashboard's row.

    ``succeeded + failed + retrying + in_flight + queued == size``.
    """

    @property
    def index(self) -> int:
        """The batch's index (0-based, in input order)."""
    @property
    def size(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int:
        """Records dead-lettered so far."""
    @property
    def retrying(self) -> int:
        """Records waiting for their next try."""
    @property
    def in_flight(self) -> int:
        """Records started and not yet final nor waiting for a retry (one held behind another
        record of its key counts here)."""
    @property
    def queued(self) -> int:
        """Records not started yet."""
    @property
    def retries(self) -> int:
        """Retries started so far."""
    @property
    def started(self) -> float:
        """When the batch was read, in seconds since the run started."""
    @property
    def elapsed(self) -> float:
        """Seconds since the batch was read."""
    def __new__(
        cls,
        *,
        index: int,
        size: int,
        succeeded: int,
        failed: int,
        retrying: int,
        in_flight: int,
        queued: int,
        retries: int,
        started: float,
        elapsed: float,
    ) -> Self: ...

@final
class BatchEvent:
    """One batch, once every record in it is final (or the run stopped: then ``pending`` of
    its records are not)."""

    @property
    def index(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def retries(self) -> int: ...
    @property
    def duration(self) -> float:
        """Seconds from the batch's first start to its last record's end."""
    @property
    def pending(self) -> int: ...
    @property
    def dead(self) -> DeadRecords | list[DeadRecord] | None:
        """The batch's dead-lettered records (None or empty when there are none)."""
    @property
    def indices(self) -> list[int] | None:
        """With ``EngineConfig.values_per_batch``: the record indices of the batch's successes,
        in record order; None when the run keeps its values for ``RunSummary.successful``."""
    @property
    def values(self) -> list[Any] | None:
        """The values of those successes, alike (``indices[i]`` returned ``values[i]``)."""
    def __new__(
        cls,
        *,
        index: int,
        size: int,
        succeeded: int,
        failed: int,
        retries: int,
        duration: float,
        pending: int,
        dead: DeadRecords | list[DeadRecord] | None,
        indices: list[int] | None = None,
        values: list[Any] | None = None,
    ) -> Self: ...

@final
class BreakerEvent:
    """The circuit breaker moved from ``from_state`` to ``to_state``, ``at`` seconds after the
    run started."""

    @property
    def at(self) -> float: ...
    @property
    def from_state(self) -> _BreakerState: ...
    @property
    def to_state(self) -> _BreakerState: ...
    def __new__(cls, *, at: float, from_state: str, to_state: str) -> Self: ...

@final
class RetryEvent:
    """A record's failed try (``attempt``, 1-based) that will be tried again after ``delay``
    seconds. Only a run with an ``on_retry`` hook collects these (``collect_retries``); they
    are handed over with the next batch end or breaker transition, in the order scheduled."""

    @property
    def record_index(self) -> int: ...
    @property
    def batch_index(self) -> int: ...
    @property
    def record(self) -> Any: ...
    @property
    def attempt(self) -> int: ...
    @property
    def error(self) -> BaseException: ...
    @property
    def error_class(self) -> _ErrorClassName: ...
    @property
    def delay(self) -> float: ...
    def __new__(cls, *, record_index: int, batch_index: int, record: Any, attempt: int,
                error: BaseException, error_class: str, delay: float) -> Self: ...

@final
class DeadRecord:
    """A dead-lettered record: where it was, what it was, and how it failed."""

    @property
    def record_index(self) -> int: ...
    @property
    def batch_index(self) -> int: ...
    @property
    def record(self) -> Any: ...
    @property
    def error_class(self) -> _ErrorClassName: ...
    @property
    def attempts(self) -> list[FailedAttempt]:
        """Its tries, oldest first (never empty)."""
    @property
    def over_budget(self) -> bool:
        """Dead-lettered because the retry budget refused its retry (``over_budget="dead_letter"``)."""
    def __new__(
        cls,
        *,
        record_index: int,
        batch_index: int,
        record: Any,
        error_class: str,
        attempts: list[FailedAttempt],
        over_budget: bool = False,
    ) -> Self: ...

@final
class FailedAttempt:
    """One failed try of a record."""

    @property
    def attempt(self) -> int:
        """The try's number (1-based)."""
    @property
    def at(self) -> float:
        """Its wall-clock time (seconds since the epoch)."""
    @property
    def error(self) -> BaseException:
        """The exception it raised."""
    @property
    def delay(self) -> float | None:
        """The wait before the next try (seconds); None when there was none."""
    def __new__(cls, *, attempt: int, at: float, error: BaseException, delay: float | None) -> Self: ...

@final
class DeadRecords:
    """The dead-lettered records of one batch, handed to Python without converting each one:
    the recorder materializes them only when it persists or shows them.

    Made only by the engine (it has no constructor) and read by index.

    >>> entries = [dead[i] for i in range(len(dead))]  # doctest: +SKIP
    """

    def __len__(self) -> int:
        """How many records of the batch were dead-lettered."""

    def __getitem__(self, index: int, /) -> DeadRecord:
        """The ``index``-th dead record (negative counts from the end); IndexError past the end."""

    def __iter__(self) -> Iterator[DeadRecord]:
        """Every dead record, in the order the batch finished them."""

@final
class AsyncRun:
    """One run of an ``async def`` callback, driven from the event loop's thread.

    The worker coroutines of ``batchguard._async.drive`` pull work from it, await the user's
    coroutine themselves and report each outcome back; every decision (order, retries, backoff,
    breaker, error budget, batches) is the same scheduler's as for ``run``. Only the event
    loop's thread uses it, but it is not tied to that thread (the garbage collector may free
    it on another); a concurrent call from a second thread raises ``RuntimeError`` (already
    borrowed) instead of corrupting it.

    >>> run = _native.AsyncRun(plan.config, plan.classifier, recorder)  # doctest: +SKIP
    >>> outcome = await drive(run, iter(records), fn, concurrency, batch_size, timeout)  # doctest: +SKIP
    """

    def __new__(cls, config: EngineConfig, classifier: Classifier, sink: RunRecorder) -> Self:
        """Start a run; raises ``batchguard.errors.ConfigError`` for a configuration the engine
        rejects."""

    def next_work(self) -> tuple[int, Any] | Literal["feed", "done"] | float | None:
        """What a worker does next.

        ``(index, record)``: run the callback on ``record``, then report with ``succeed`` or
        ``fail``; ``"feed"``: read the next batch and pass it to ``feed``; a float: nothing can
        start for that many seconds; ``None``: nothing can start until an outcome arrives;
        ``"done"``: the run is over.
        """

    def next_group(self, limit: int) -> list[tuple[int, Any]] | Literal["feed", "done"] | float | None:
        """Bulk mode: like ``next_work``, but new records come as a list of ``(index, record)``
        with the rest of their batch (at most ``limit``); a retry comes as a list of one."""

    @property
    def times_calls(self) -> bool:
        """Are calls timed (a breaker that counts slow calls)? Only then does a bulk driver
        call ``restart_timing``."""

    def restart_timing(self, indices: list[int]) -> None:
        """Bulk mode: a call of these in-flight records starts now (a bisection's half, after a
        failed call of the whole): each is timed from now, by the call that decides it."""

    def feed(self, batch: Sequence[Any]) -> None:
        """The next batch of input; fewer than ``batch_size`` records (or none) ends the input.
        With ``key_of`` the keys are computed here (a key that raises dead-letters its record)."""

    def succeed(self, index: int, value: Any) -> None:
        """Record ``index``'s attempt returned ``value``. RuntimeError if it is not in flight."""

    def fail(self, index: int, exc: BaseException) -> bool:
        """Record ``index``'s attempt raised ``exc``: classify it, then retry or dead-letter it.

        Returns True when the run must stop and re-raise ``exc`` (a ``BaseException`` that is not
        an ``Exception``, such as ``KeyboardInterrupt`` or ``asyncio.CancelledError``).
        """

    def abandon(self, index: int) -> None:
        """Record ``index``'s attempt was abandoned (the run is being torn down): it stays pending."""

    def interrupt(self) -> None:
        """Stop starting new work: the run ends as interrupted once in-flight attempts report."""

    def stopping(self) -> bool:
        """True once the run has a stop reason (fatal error, error budget, breaker abort, interrupt)."""

    def finish(self) -> RunSummary:
        """Close the run: abandon what is still in flight, report the unfinished batches to the
        sink, and return what ``run`` returns."""
