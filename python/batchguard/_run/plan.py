"""The plan of a run: every argument checked, before any record is read.

``make_plan`` turns what a caller passed to ``run_batches`` / ``arun_batches`` (or what
``replay`` and the CLI pass) into a :class:`Plan`: the engine config, the classifier, the opened
DLQ, and for a job its name and store. Each error names its argument, its bound and its value.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from .. import _native
from .._checks import check_count, check_duration, check_flag, closest, is_finite_number, shown
from .._retry_table import PolicyTable, reject_results
from ..alerts import check_alerts
from ..batching import calculate_batch_size
from ..compensation import Compensation, check_compensation
from ..dlq.base import DeadLetterQueue
from ..dlq.codec import check_storable
from ..dlq.urls import open_dlq
from ..errors import ConfigError, ConfigTypeError, ResultRejected
from ..executors.choose import check_executor
from ..executors.protocol import Executor
from ..hooks import check_hooks, wants_retries
from ..policies import CircuitBreaker, Classifier, ErrorClass, RateLimit, RetryPolicies, RetryPolicy
from ..results import BatchProgress, BatchReport
from ..sinks import ResultWriter
from ..steering import check_retry_budget, split_concurrency
from ..validation.issues import check_phase_options
from .config import EngineConfig
from .options import DEFAULT_MODE, DEFAULTS, RunOptions
from .sink import check_results

if TYPE_CHECKING:  # an annotation only: the job store's package imports the run core itself
    from ..jobs.store import JobStore

__all__ = ["DEFAULT_BATCH_SIZE", "Plan", "close_opened_dlq", "is_coroutine_function", "make_plan"]

DEFAULT_BATCH_SIZE = 1000
ENGINES = ("native", "python")

# Upper bounds, each what the native engine takes on every platform and what a run can sanely use.
MAX_BATCH_SIZE = sys.maxsize
"""What both engines can index a batch with (Python's ``islice`` and Rust's ``isize``): 2**63 - 1
on a 64-bit platform. Any larger input is read lazily, so a batch size past the input's length
is simply the whole input (never an allocation of ``batch_size`` slots)."""
MAX_SYNC_CONCURRENCY = _native.MAX_CONCURRENCY
"""A sync fn gets one thread per unit of concurrency, and the native engine's pool stops there:
past it threads cost more memory and switching than they add in throughput, and an I/O-bound fn
that needs more in flight belongs in an ``async def``."""
MAX_ASYNC_CONCURRENCY = 65_536
"""An async fn gets one worker coroutine per unit of concurrency, all created when the run
starts (a few KB each): past this many the workers' memory and the event loop's scheduling
dominate, and no single service takes that many requests in flight."""
MAX_FAILURES_COUNT = 2**63 - 1
"""An error budget count is a u64 in the native engine and an SQLite INTEGER in a job store."""


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name} must be a number in [0, 1], got {type(value).__name__} {shown(value)}")
    if not (is_finite_number(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {shown(value)}")
    return float(value)


def _check_max_failures(value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"max_failures must be an int count or a float rate in (0, 1], got "
                              f"{type(value).__name__} {shown(value)}")
    if isinstance(value, int):
        return check_count("max_failures (a count)", value, minimum=0, maximum=MAX_FAILURES_COUNT,
                           why="a 64-bit count")
    if not 0.0 < value <= 1.0:  # nan and inf fail this too
        raise ConfigError(f"max_failures as a rate must be in (0, 1], got {value!r} (an int is a count)")
    return value


def _check_callable(name: str, value: Any, *, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not callable(value):
        raise ConfigTypeError(f"{name} must be callable, got {type(value).__name__} {shown(value)}")
    return value


@dataclass(frozen=True)
class Plan:
    """A validated run: everything an engine and the recorder need."""

    records: Iterable[Any]
    fn: Callable[[Any], Any]
    total: int | None
    config: EngineConfig
    classifier: Classifier
    dlq: DeadLetterQueue | None
    id_of: Callable[[Any], Any] | None
    on_progress: Callable[[BatchProgress], Any] | None
    success_threshold: float | None
    stage: str
    engine: str
    pickle_payloads: bool
    is_async: bool = False
    timeout: float | None = None
    bulk: bool = False
    reopen_dlq: Callable[[], DeadLetterQueue] | None = None
    """Set when ``dlq`` was opened for this run (from a URL, or as a job store's default queue):
    whoever opened it closes it when the run ends (:func:`close_opened_dlq`), and the report
    reopens it with this to read entries past its in-memory sample."""
    job: str | None = None
    """The name of the resumable job this run is (see ``run_batches``), or None."""
    store: JobStore | str | None = None
    """The job's store (a ``JobStore`` or a URL; None: the default store)."""
    force: bool = False
    """Rerun the job even when it has completed."""
    expected_total: int | None = None
    """``total=`` for an input without a length: progress and ETA only (the report counts the
    records actually read)."""
    mode: str = DEFAULT_MODE
    """"full", "dry-run" or "sample" (``batchguard.validation``)."""
    validate: Callable[[Any], Any] | None = None
    """``check(record)``: the record's ValidationIssues (sync or ``async def``)."""
    sample_count: int = 3
    sample_key: Callable[[Any], Any] | None = None
    hooks: tuple[object, ...] = ()
    """The run's lifecycle hook targets: ``hooks=``, then ``metrics=``, then the monitor of
    ``alerts=`` (``batchguard.hooks``, ``batchguard.alerts``)."""
    compensation: Compensation | None = None
    """``compensate=``, ``atomic_batches=``, ``on_abort=``, ``keep_outcomes=`` (``batchguard.compensation``)."""
    executor: Executor | None = None
    """Where the batches run (``executor=``, ``batchguard.executors``); None: here."""
    dlq_url: str | None = None
    """``dlq=`` when it was given as a URL: an executor's workers can open it themselves."""
    results: str | ResultWriter = "keep"
    """``results=``: "keep", "drop", or the sink each batch's values are written to."""
    finish_report: Callable[[BatchReport[Any]], BatchReport[Any]] | None = None
    """What the run adds to its report before any hook sees it (a full run's validation
    counts, ``validation.full``): the run core applies it before ``on_run_end``."""


def is_coroutine_function(fn: Any) -> bool:
    """``async def`` functions, and callables whose ``__call__`` is one (partials included)."""
    while hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        fn = fn.func
    call = getattr(fn, "__call__", None)  # noqa: B004 - the method itself: is it `async def`?
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _check_hook(name: str, value: Any) -> Any:
    """An optional callable the engines call and use the result of, never awaiting it: an
    ``async def`` one would give coroutine objects (never run, as ids, as keys) silently."""
    _check_callable(name, value)
    if value is not None and is_coroutine_function(value):
        raise ConfigTypeError(f"{name} must be a plain function: it is called, never awaited, and "
                              f"{shown(value)} is an async def function")
    return value


def _check_timeout(value: Any) -> float | None:
    """Seconds in (0, MAX_DURATION_S]; None or ``float("inf")`` (the usual Python spelling of
    "no limit") mean no timeout, and are both stored as None."""
    if value is None or (isinstance(value, float) and value == math.inf):
        return None
    return check_duration("timeout", value, positive=True)


def _check_slow_calls(breaker: CircuitBreaker | None, timeout: float | None, *, is_async: bool) -> None:
    """An async fn's call is cancelled at ``timeout``, so a ``slow_call_s`` at or past it could
    never see a slow call. (A sync call runs to its end whatever the timeout: it can be slow.)"""
    slow = None if breaker is None else breaker.slow_call_s
    if is_async and slow is not None and timeout is not None and slow >= timeout:
        raise ConfigError(f"CircuitBreaker(slow_call_s={slow:g}) must be under timeout={timeout:g} for an "
                          "async fn: its call is cancelled at the timeout (a TimeoutError), so no call "
                          "could ever take longer than slow_call_s; lower slow_call_s, or raise the timeout")


def _check_keywords(options: dict[str, Any]) -> None:
    """A misspelt keyword is an error, as Python makes it for a signature that names them all."""
    for name in options.keys() - DEFAULTS.keys():
        # bulk and mode are parameters of their own (the overloads need them), not RunOptions keys
        close = closest(name, [*DEFAULTS, "bulk", "mode"])
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigTypeError(f"unexpected keyword argument {name!r}{hint}")


def _check_job(job: Any, store: Any, force: Any, mode: Any) -> None:
    if job is not None and not isinstance(job, str):
        raise ConfigTypeError(f"job must be a non-empty str, got {type(job).__name__} {job!r}")
    if job is not None and not job:
        raise ConfigError(f"job must be a non-empty str, got {job!r}")
    if job is None and store is not None and mode != "sample":  # a sample keeps its outcomes there
        raise ConfigError("store is only used with job=...: name the job to make the run resumable")
    check_flag("force", force)
    if job is None and force:
        raise ConfigError("force=True is only used with job=...: it reruns a completed job")


def make_plan(records: Any, fn: Any, *, bulk: Any = False, mode: Any = DEFAULT_MODE,
              **given: Unpack[RunOptions[Any]]) -> Plan:
    """Check every argument before any record is read; each error names its argument.

    The keywords are ``run_batches``'s (:class:`RunOptions`, ``bulk``, ``mode``); a keyword not given
    takes its default from :data:`DEFAULTS`.
    """
    options: dict[str, Any] = {**DEFAULTS, **given}
    _check_keywords(options)
    job, store, force = options["job"], options["store"], options["force"]
    _check_job(job, store, force, mode)
    batch_size, concurrency, retry = options["batch_size"], options["concurrency"], options["retry"]
    classifier, breaker, dlq = options["classifier"], options["breaker"], options["dlq"]
    id_of, on_progress, stage = options["id_of"], options["on_progress"], options["stage"]
    success_threshold, max_failures = options["success_threshold"], options["max_failures"]
    engine, pickle_payloads, timeout = options["engine"], options["pickle_payloads"], options["timeout"]
    rate_limit, key_of = options["rate_limit"], options["key_of"]
    delay_between_batches = options["delay_between_batches"]
    validate, sample_count, sample_key = options["validate"], options["sample_count"], options["sample_key"]
    check_phase_options(mode, validate, sample_count, sample_key)
    hook_targets = tuple(target for target in (options["hooks"], options["metrics"]) if target is not None)
    for name in ("hooks", "metrics"):
        if options[name] is not None:
            check_hooks(options[name], name)
    _check_hook("sample_key", sample_key)
    compensation = _check_compensation(options, job=job, mode=mode)
    if isinstance(records, (str, bytes, bytearray)):
        raise ConfigTypeError(f"records must be an iterable of records, not {type(records).__name__}")
    if not isinstance(records, Iterable):
        raise ConfigTypeError(f"records must be iterable (a list, generator, ...), got {type(records).__name__}")
    _check_callable("fn", fn, optional=False)
    total = len(records) if isinstance(records, Sized) else None
    expected_total = options["total"]
    if expected_total is not None:
        check_count("total", expected_total, minimum=0, maximum=(1 << 63) - 1,
                    why="a record index is a 64-bit int")
        if total is not None:
            expected_total = None  # the input's own length is the truth
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    elif isinstance(batch_size, str):
        if batch_size != "auto":
            raise ConfigTypeError(f'batch_size must be an int >= 1, "auto" or None, got str {shown(batch_size)}')
        if total is None and expected_total is None:
            raise ConfigError('batch_size="auto" needs an input with a length (a list, not a '
                              'generator), or total=N')
        batch_size = calculate_batch_size(total if total is not None else expected_total)
    else:
        check_count("batch_size", batch_size, minimum=1, maximum=MAX_BATCH_SIZE,
                    why="the largest size either engine can index a batch with")
    is_async = is_coroutine_function(fn)
    concurrency, adaptive = split_concurrency(concurrency, bulk=bool(bulk))
    retry_budget = check_retry_budget(options["retry_budget"])
    if is_async:
        check_count("concurrency", concurrency, minimum=1, maximum=MAX_ASYNC_CONCURRENCY,
                    why="one worker coroutine each, all created up front")
    else:
        check_count("concurrency", concurrency, minimum=1, maximum=MAX_SYNC_CONCURRENCY,
                    why="a sync fn gets one thread each; an async def fn can have more in flight")
    retry, table = _check_retry(retry)
    if classifier is None:
        classifier = Classifier.default()
    elif not isinstance(classifier, Classifier):
        if callable(classifier):
            classifier = Classifier.default().with_callable(classifier)
        else:
            raise ConfigTypeError(f"classifier must be a Classifier or a callable, got {type(classifier).__name__}")
    if table is not None:
        classifier = classifier.with_retry_table(table)
    if retry.retry_on_result is not None:
        # A rejected value is RECOVERABLE unless the user's rules say otherwise.
        if classifier.type_class(ResultRejected) is None:
            classifier = classifier.with_rule(ResultRejected, ErrorClass.RECOVERABLE).with_retry_table(table)
        fn = reject_results(fn, retry.retry_on_result, is_async=is_async, bulk=bool(bulk))
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise ConfigTypeError(f"breaker must be a CircuitBreaker or None, got {type(breaker).__name__}")
    _check_hook("id_of", id_of)
    _check_hook("on_progress", on_progress)
    if success_threshold is not None:
        success_threshold = _check_fraction("success_threshold", success_threshold)
    max_failures = _check_max_failures(max_failures)
    monitor = check_alerts(options["alerts"], max_failures=max_failures)
    if monitor is not None:  # a hook target with a timer thread (batchguard.alerts)
        hook_targets += (monitor,)
    if not isinstance(stage, str):
        raise ConfigTypeError(f"stage must be a non-empty str, got {type(stage).__name__} {stage!r}")
    if not stage:
        raise ConfigError(f"stage must be a non-empty str, got {stage!r}")
    check_storable("stage", stage)
    if not isinstance(engine, str):
        raise ConfigTypeError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got "
                              f"{type(engine).__name__} {shown(engine)}")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {shown(engine)}")
    timeout = _check_timeout(timeout)
    _check_slow_calls(breaker, timeout, is_async=is_async)
    if rate_limit is not None and not isinstance(rate_limit, RateLimit):
        raise ConfigTypeError(f"rate_limit must be a RateLimit(per_second=..., burst=...), got "
                              f"{type(rate_limit).__name__}")
    delay_between_batches = check_duration("delay_between_batches", delay_between_batches)
    _check_hook("key_of", key_of)
    check_flag("bulk", bulk)
    if bulk and key_of is not None:
        raise ConfigError("bulk=True and key_of cannot be combined: a bulk call runs a whole batch at once")
    check_flag("pickle_payloads", pickle_payloads)
    if dlq is not None and not isinstance(dlq, (str, DeadLetterQueue)):
        raise ConfigTypeError(f"dlq must be a DeadLetterQueue or a URL str, got {type(dlq).__name__}")
    results = check_results(options["results"])
    if mode != DEFAULT_MODE:
        results = "keep"  # a dry-run or a sample writes nothing (batchguard.validation): no results either
    seed = (retry.seed if retry.seed is not None else random.getrandbits(64)) & ((1 << 64) - 1)
    config = EngineConfig(batch_size=batch_size, concurrency=concurrency, retry=retry,
                          breaker=breaker, max_failures=max_failures, seed=seed,
                          traceback_limit=1 << 62 if dlq is not None else 100,
                          timeout=timeout,
                          rate_per_second=None if rate_limit is None else float(rate_limit.per_second),
                          rate_burst=1.0 if rate_limit is None else float(rate_limit.burst),
                          delay_between_batches=float(delay_between_batches), key_of=key_of,
                          collect_retries=wants_retries(*hook_targets),
                          retry_table=table, retry_budget=retry_budget, adaptive=adaptive,
                          values_per_batch=results != "keep")
    executor = check_executor(options["executor"], is_async=is_async, mode=mode, engine=engine,
                              key_of=key_of, hooks=options["hooks"], metrics=options["metrics"],
                              alerts=options["alerts"], compensation=compensation)
    if executor is not None and results != "keep":
        # A worker's batch comes back with its values, and the driver would keep them all.
        raise ConfigError("executor= cannot be combined with results= other than \"keep\" yet: "
                          "write the values from fn, or run without executor=")
    if executor is not None and (adaptive is not None or retry_budget is not None):
        raise ConfigError("retry_budget= and concurrency=Adaptive(...) steer the local scheduler; they do not "
                          "work with executor= yet: drop one of them")
    # Opened last, once every argument is known good: a rejected call leaves no queue open.
    queue, reopen_dlq = _open_dlq(dlq)
    return Plan(records, fn, total, config, classifier, queue, id_of, on_progress,
                success_threshold, stage, engine, pickle_payloads, is_async, timeout, bulk,
                reopen_dlq=reopen_dlq, job=job, store=store, force=force,
                expected_total=expected_total, mode=mode,
                validate=validate, sample_count=sample_count, sample_key=sample_key,
                compensation=compensation, results=results,
                hooks=hook_targets, executor=executor,
                dlq_url=dlq if isinstance(dlq, str) else None)


def _check_retry(retry: Any) -> tuple[RetryPolicy, PolicyTable | None]:
    """``retry=``: the default policy, and the lookup of the policies by error (None: one
    policy for every error)."""
    if retry is None:
        return RetryPolicy(), None
    if isinstance(retry, RetryPolicy):
        return retry, None
    if isinstance(retry, Mapping):
        fields = set(RetryPolicy.__dataclass_fields__)
        if retry and all(isinstance(key, str) and key in fields for key in retry):
            raise ConfigTypeError(f"retry must be a RetryPolicy, a RetryPolicies or a mapping of errors to "
                                  f"RetryPolicy; {shown(dict(retry))} looks like a RetryPolicy's fields: "
                                  f"retry=RetryPolicy({', '.join(f'{k}={v!r}' for k, v in retry.items())})?")
        try:
            retry = RetryPolicies(by_error=retry)
        except ConfigError as exc:
            raise type(exc)(f"retry: {exc}") from None
    if not isinstance(retry, RetryPolicies):
        raise ConfigTypeError(f"retry must be a RetryPolicy, a RetryPolicies or a mapping of ErrorClass, "
                              f"exception type or predicate to RetryPolicy, got {type(retry).__name__}")
    return retry.default, (PolicyTable(retry) if retry.by_error else None)


def _open_dlq(dlq: DeadLetterQueue | str | None) -> tuple[DeadLetterQueue | None,
                                                           Callable[[], DeadLetterQueue] | None]:
    """The queue to run with, and how to open it again when it was opened here from a URL
    (None for the caller's own queue, which the caller keeps open and closes)."""
    if not isinstance(dlq, str):
        return dlq, None
    return open_dlq(dlq), functools.partial(open_dlq, dlq)


def close_opened_dlq(plan: Plan) -> None:
    """Close the queue ``make_plan`` opened from a URL; a caller's own queue stays open.

    Every entry point calls it when the run ends, however it ends: one descriptor (or
    connection) per call would otherwise pile up until the process runs out."""
    if plan.reopen_dlq is not None and plan.dlq is not None:
        plan.dlq.close()


def _check_compensation(options: dict[str, Any], *, job: str | None, mode: str) -> Compensation | None:
    compensation = check_compensation(options["compensate"], options["atomic_batches"], options["on_abort"],
                                      options["keep_outcomes"], is_coroutine=is_coroutine_function)
    # A dry-run never calls fn; a sample's few calls are a trial its caller reviews: neither
    # compensates or keeps outcomes as it goes.
    if compensation is None or mode != DEFAULT_MODE:
        return None
    if compensation.keep_outcomes and job is None:
        raise ConfigError("keep_outcomes=True is used with job=...: the job's store keeps each batch's "
                          "succeeded records and values, for `batchguard rollback JOB`")
    return compensation


