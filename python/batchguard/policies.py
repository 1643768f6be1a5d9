"""Policies: how failures are classified, retried and circuit-broken.

Every policy is a frozen dataclass that validates itself when built, so a bad value fails at
the line that wrote it, not an hour into a run.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

# The classifier and ErrorClass are policies too, defined in their modules; the argument checks
# the policies share with the rest of the package live in _checks.
from ._checks import (
    MAX_DURATION_S,
    MIN_RATE_PER_SECOND,
    check_duration,
    check_int,
    check_number,
    check_rate,
    shown,
)
from ._classifier import Classifier, Explanation
from ._error_class import ErrorClass, http_status_of, status_value
from .errors import ConfigError, ConfigTypeError

__all__ = [
    "MAX_DURATION_S",
    "MIN_RATE_PER_SECOND",
    "NO_FALLBACK",
    "CircuitBreaker",
    "Classifier",
    "ErrorClass",
    "ErrorKey",
    "Explanation",
    "Jitter",
    "RateLimit",
    "RetryPolicies",
    "RetryPolicy",
    "http_status_of",
    "jitter_seed_at",
    "status_value",
]


Jitter = Literal["none", "full", "equal", "decorrelated"]
_JITTERS = ("none", "full", "equal", "decorrelated")

_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64: (new state, output). Mirrors ``src/backoff.rs``."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


_JITTER_KEY = 0xD1B54A32D192ED03  # src/backoff.rs JITTER_KEY


def _jitter_stream_seed(seed: int, record_index: int) -> int:
    """The jitter stream of one record: independent of which worker runs it, or when."""
    return (seed + (record_index + 1) * _JITTER_KEY) & _MASK64


def jitter_seed_at(seed: int, first_index: int) -> int:
    """The seed under which a run's record ``i`` draws the jitter of record ``first_index + i``
    of a run with ``seed``: an executor's worker runs a batch alone, its records indexed from
    0, and draws the jitter the whole input's run would (the key is added, so it shifts)."""
    return (seed + first_index * _JITTER_KEY) & _MASK64


class _NoFallback:
    """The type of :data:`NO_FALLBACK` (one instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_FALLBACK"

    def __reduce__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Any = _NoFallback()
"""``RetryPolicy.fallback``'s default: a record that fails for good is dead-lettered."""


def _is_async_callable(value: Any) -> bool:
    call = getattr(value, "__call__", None)  # noqa: B004 - the method itself: is it `async def`?
    return inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(call)


MAX_BREAKER_WINDOW = 1_000_000
"""The largest ``CircuitBreaker.window``: the breaker keeps up to its last ``window`` outcomes in
memory (the window grows as outcomes arrive; a larger one is a mistake that would cost memory)."""
MIN_SLOW_CALL_S = 0.001
"""The shortest ``CircuitBreaker.slow_call_s``: under a millisecond a call's time is timer noise."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times a record is tried, and how long it waits between tries.

    ``max_attempts`` counts every try, the first included. The n-th retry of a RECOVERABLE
    failure waits ``min(max_delay, base_delay * multiplier ** (n - 1))``, jittered; TRANSIENT
    failures retry at once. An exception's ``retry_after`` (seconds), or the ``Retry-After``
    header of the response it carries, wins when it is longer, up to ``max_retry_after``.

    ``retry_on_result(value)``, when true, rejects what ``fn`` returned (an empty page, a
    "pending" status): the attempt counts as a RECOVERABLE failure with a
    :class:`~batchguard.errors.ResultRejected` error, and is retried like one. ``max_elapsed``
    (seconds, counted from the record's first failure) bounds its retrying: a retry that would
    start later is not scheduled, and the record is dead-lettered with a
    :class:`~batchguard.errors.RetryTimeExceeded` error that names the limit and the last
    error. ``fallback`` (a value, or a callable ``(record, error) -> value``) is used instead of
    dead-lettering: the record counts as succeeded with that value (``report.fallback_count``),
    and the error it replaced is logged (logger "batchguard", ``fallback_used``).

    >>> RetryPolicy(max_attempts=4, base_delay=0.5, jitter="none").schedule(3)
    [0.5, 1.0, 2.0]
    """

    max_attempts: int = 3
    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: Jitter = "full"
    seed: int | None = None
    max_retry_after: float | None = None
    """The longest wait an exception can ask for (its ``retry_after``, or a ``Retry-After``
    header); None: ``max_delay``. A server asking for more is waited on for this long."""
    retry_on_result: Callable[[Any], Any] | None = None
    """``predicate(value)``: true retries the record although ``fn`` returned ``value``. Only
    the run's default policy has one (results are not errors, so no error picks a policy)."""
    max_elapsed: float | None = None
    """Seconds from a record's first failure after which no retry of it starts; None (or
    ``float("inf")``, read as None): no limit."""
    fallback: Any = NO_FALLBACK
    """Used instead of dead-lettering: a value, or a callable ``(record, error) -> value`` (to
    fall back on a callable itself, return it from one). NO_FALLBACK: dead-letter."""

    def __post_init__(self) -> None:
        check_int("RetryPolicy", "max_attempts", self.max_attempts, minimum=1)
        check_duration("RetryPolicy.base_delay", self.base_delay)
        check_number("RetryPolicy", "multiplier", self.multiplier, minimum=1.0)
        check_duration("RetryPolicy.max_delay", self.max_delay)
        if self.max_delay < self.base_delay:
            raise ConfigError(
                f"RetryPolicy.max_delay ({self.max_delay!r}) must be >= base_delay ({self.base_delay!r})"
            )
        if not isinstance(self.jitter, str):
            raise ConfigTypeError(f"RetryPolicy.jitter must be one of {', '.join(_JITTERS)} (a str); got "
                                  f"{type(self.jitter).__name__} {self.jitter!r}")
        if self.jitter not in _JITTERS:
            raise ConfigError(
                f"RetryPolicy.jitter must be one of {', '.join(_JITTERS)}; got {self.jitter!r}"
            )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigTypeError(f"RetryPolicy.seed must be an int or None, got {type(self.seed).__name__}")
        if self.max_retry_after is not None:
            check_duration("RetryPolicy.max_retry_after", self.max_retry_after)
        for name in ("retry_on_result", "fallback"):
            value = getattr(self, name)
            if value is None and name == "retry_on_result":
                continue
            if name == "retry_on_result" and not callable(value):
                raise ConfigTypeError(f"RetryPolicy.retry_on_result must be a callable (value) -> bool, got "
                                      f"{type(value).__name__} {shown(value)}")
            if callable(value) and _is_async_callable(value):
                raise ConfigTypeError(f"RetryPolicy.{name} must be a plain function: it is called, never "
                                      f"awaited, and {shown(value)} is an async def function")
        if self.max_elapsed == math.inf:
            object.__setattr__(self, "max_elapsed", None)  # no limit, as timeout=inf is no timeout
        elif self.max_elapsed is not None:
            check_duration("RetryPolicy.max_elapsed", self.max_elapsed, positive=True)

    def describe(self) -> dict[str, Any]:
        """The policy as JSON-safe data, for a record of how a run was configured (a job's
        stored config): its numbers as they are; ``retry_on_result`` and a callable fallback by
        name; a fallback value by its (shortened) repr, never copied; None: no fallback."""
        described: dict[str, Any] = {
            "max_attempts": self.max_attempts, "base_delay": self.base_delay, "multiplier": self.multiplier,
            "max_delay": self.max_delay, "jitter": self.jitter, "seed": self.seed,
            "max_retry_after": self.max_retry_after,
            "retry_on_result": None if self.retry_on_result is None else _key_name(self.retry_on_result),
            "max_elapsed": self.max_elapsed, "fallback": None}
        if self.has_fallback:
            fallback = self.fallback
            described["fallback"] = _key_name(fallback) if callable(fallback) else shown(fallback)
        return described

    @property
    def has_fallback(self) -> bool:
        """Is a record this policy gives up on served a fallback instead of dead-lettered?"""
        return self.fallback is not NO_FALLBACK

    def fallback_for(self, record: Any, error: BaseException) -> Any:
        """The value a record that failed for good with ``error`` falls back on."""
        fallback = self.fallback
        return fallback(record, error) if callable(fallback) else fallback

    @property
    def retry_after_cap(self) -> float:
        """The longest wait a failure's ``retry_after`` or ``Retry-After`` header is honoured
        for: ``max_retry_after``, else ``max_delay``."""
        return float(self.max_delay if self.max_retry_after is None else self.max_retry_after)

    def base_delay_for(self, retry: int) -> float:
        """The un-jittered delay before the ``retry``-th retry (1-based)."""
        if self.base_delay == 0:
            return 0.0  # zero means no wait, however many retries (not 0 * overflow)
        exponent = retry - 1
        try:
            raw = self.base_delay * self.multiplier ** exponent
        except OverflowError:
            return float(self.max_delay)
        return float(min(self.max_delay, raw))

    def schedule(self, n: int, *, record_index: int = 0, seed: int | None = None) -> list[float]:
        """The first ``n`` delays this policy would wait for one record (before ``retry_after``).

        With a ``seed`` (here or on the policy) the values are exactly those the engines use
        for the record at ``record_index``.
        """
        check_int("RetryPolicy.schedule", "n", n, minimum=0, why="one delay per retry")
        jitter = BackoffState(self, record_index, seed)
        return [jitter.next_delay() for _ in range(n)]


class BackoffState:
    """The per-record retry-delay generator (the reference twin of ``src/backoff.rs``)."""

    __slots__ = ("_policy", "_previous", "_retry", "_state")

    def __init__(self, policy: RetryPolicy, record_index: int, seed: int | None) -> None:
        if seed is None:
            seed = policy.seed if policy.seed is not None else 0
        self._policy = policy
        self._state = _jitter_stream_seed(seed & _MASK64, record_index)
        self._retry = 0
        self._previous = policy.base_delay

    def _uniform(self, low: float, high: float) -> float:
        self._state, out = _splitmix64(self._state)
        return low + (high - low) * ((out >> 11) * (1.0 / (1 << 53)))

    def next_delay(self, policy: RetryPolicy | None = None) -> float:
        """The wait before the record's next retry, shaped by ``policy`` (by default the one
        the stream was made with: a record's failures may be governed by different policies,
        each retry taking the next value of the record's one stream)."""
        if policy is None:
            policy = self._policy
        self._retry += 1
        if policy.jitter == "decorrelated":
            high = max(policy.base_delay, 3.0 * self._previous)
            delay = float(min(policy.max_delay, self._uniform(policy.base_delay, high)))
            self._previous = delay
            return delay
        d = policy.base_delay_for(self._retry)
        if policy.jitter == "none":
            return d
        if policy.jitter == "full":
            return self._uniform(0.0, d)
        # equal, clamped as the native engine does: for a subnormal d of an odd number of ulps,
        # d / 2 rounds up and the sum could pass d by an ulp
        return min(d, d / 2.0 + self._uniform(0.0, d / 2.0))


ErrorKey: TypeAlias = "ErrorClass | type[BaseException] | Callable[[BaseException], Any]"
"""What picks a :class:`RetryPolicy` in :class:`RetryPolicies`: an error class, an exception type
(its subclasses too; the most specific in an exception's MRO wins), or a predicate ``(exc) ->
bool``."""


def _key_name(key: Any) -> str:
    if isinstance(key, type):
        return key.__qualname__
    if isinstance(key, ErrorClass):
        return f"ErrorClass.{key.name}"
    return getattr(key, "__qualname__", None) or shown(key)


# The only keys that are not Exceptions yet have Exceptions under them (ExceptionGroup derives
# from BaseExceptionGroup); any other BaseException stops the run when a call raises it.
_ROOTS_OF_EXCEPTIONS = (BaseException, BaseExceptionGroup)


def _check_key(key: Any) -> ErrorKey:
    if isinstance(key, ErrorClass):
        return key
    if isinstance(key, str):
        try:
            return ErrorClass(key)
        except ValueError:
            raise ConfigTypeError(
                f"RetryPolicies.by_error: the key {key!r} is not an ErrorClass (one of "
                f"{', '.join(c.value for c in ErrorClass)}), an exception type or a predicate; the "
                "policy for every other error is RetryPolicies(default=...)") from None
    if isinstance(key, type):
        if not issubclass(key, BaseException):
            raise ConfigTypeError(f"RetryPolicies.by_error: the key {key.__qualname__} is a class but not an "
                                  "exception type (a subclass of BaseException)")
        if not issubclass(key, Exception) and key not in _ROOTS_OF_EXCEPTIONS:
            raise ConfigTypeError(f"RetryPolicies.by_error: the key {key.__qualname__} is not an Exception: a "
                                  "call raising it stops the run (as Ctrl-C does) and is never retried, so "
                                  "no policy could govern it; key an Exception subclass instead")
        return key
    if callable(key):
        if _is_async_callable(key):
            raise ConfigTypeError(f"RetryPolicies.by_error: the predicate {_key_name(key)} is an async def "
                                  "function; it is called, never awaited")
        predicate: Callable[[BaseException], Any] = key
        return predicate
    raise ConfigTypeError(f"RetryPolicies.by_error: the key {shown(key)} ({type(key).__name__}) must be an "
                          "ErrorClass, an exception type or a predicate (exc) -> bool")


@dataclass(frozen=True, eq=False)
class RetryPolicies:
    """A retry policy per kind of error: ``run_batches(..., retry=RetryPolicies(...))``, or a
    plain mapping (``retry={httpx.ReadTimeout: RetryPolicy(max_attempts=5)}``: the default is
    then ``RetryPolicy()``).

    A failure's policy is, first match wins: the first predicate in ``by_error`` (in order)
    that returns true for the exception; the exception type key most specific in the
    exception's MRO; the key of its :class:`ErrorClass`; else ``default``. A policy sets how
    often and how long the record is retried and its fallback; it never makes a PERMANENT or
    FATAL error retryable (the classifier decides that). A record's attempts count across
    policies: each failure is judged by its own policy's ``max_attempts``. ``retry_on_result``
    and ``seed`` belong to ``default`` alone (a result is not an error; one jitter stream per
    run). Predicates should be quick and pure: one that raises counts as no match (logged once).

    >>> policies = RetryPolicies(default=RetryPolicy(max_attempts=2),
    ...                          by_error={TimeoutError: RetryPolicy(max_attempts=5)})
    >>> policies.policy_for(TimeoutError(), ErrorClass.RECOVERABLE).max_attempts
    5
    """

    default: RetryPolicy = field(default_factory=RetryPolicy)
    by_error: Mapping[ErrorKey, RetryPolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.default, RetryPolicy):
            raise ConfigTypeError(f"RetryPolicies.default must be a RetryPolicy, got "
                                  f"{type(self.default).__name__} {shown(self.default)}")
        if not isinstance(self.by_error, Mapping):
            raise ConfigTypeError(f"RetryPolicies.by_error must be a mapping of ErrorClass, exception type or "
                                  f"predicate to RetryPolicy, got {type(self.by_error).__name__}")
        checked: dict[ErrorKey, RetryPolicy] = {}
        for key, policy in self.by_error.items():
            key = _check_key(key)
            name = _key_name(key)
            if not isinstance(policy, RetryPolicy):
                raise ConfigTypeError(f"RetryPolicies.by_error[{name}] must be a RetryPolicy, got "
                                      f"{type(policy).__name__} {shown(policy)}")
            if policy.retry_on_result is not None:
                raise ConfigError(f"RetryPolicies.by_error[{name}] sets retry_on_result: a returned value "
                                  "is not an error, so set it on the default policy (its rejections are "
                                  "ResultRejected errors, which a key can give a policy of their own)")
            if policy.seed is not None:
                raise ConfigError(f"RetryPolicies.by_error[{name}] sets seed: a run has one jitter stream "
                                  "per record, seeded by the default policy's seed")
            try:
                checked[key] = policy
            except TypeError:
                raise ConfigTypeError(f"RetryPolicies.by_error: the key {name} ({type(key).__name__}) is not "
                                      "hashable; a predicate object that defines __eq__ needs a __hash__ too "
                                      "(or pass a plain function)") from None
        object.__setattr__(self, "by_error", types.MappingProxyType(checked))

    def describe(self) -> dict[str, Any]:
        """The default policy's :meth:`RetryPolicy.describe`, with ``by_error``: each key (by
        name, in order) with its policy's."""
        return {**self.default.describe(),
                "by_error": [{"key": _key_name(key), **policy.describe()} for key, policy in self.by_error.items()]}

    def policy_for(self, exc: BaseException, error_class: ErrorClass) -> RetryPolicy:
        """The policy a failure with ``exc`` (of class ``error_class``) is retried under."""
        for key, policy in self.by_error.items():
            if not isinstance(key, (type, ErrorClass)) and key(exc):
                return policy
        for klass in type(exc).__mro__:
            by_type = self.by_error.get(klass)
            if by_type is not None:
                return by_type
        return self.by_error.get(ErrorClass(error_class), self.default)


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Pauses the run while a dependency is failing, instead of burning records on it.

    Closed -> open when, over the last ``window`` calls (at least ``minimum_calls``), the share
    of failures of a class in ``counts`` reaches ``failure_rate_threshold``. While open no call
    starts; after ``open_duration`` seconds, ``half_open_calls`` probes run: all succeed ->
    closed, any fails -> open again. Reaching ``abort_failure_rate`` stops the run.

    Slow calls, as Resilience4j counts them: with ``slow_call_s`` and
    ``slow_call_rate_threshold`` (both or neither), a call that takes longer than
    ``slow_call_s`` seconds is slow, succeeded or not; when the slow calls' share of the window
    reaches the threshold the breaker opens too, and a slow half-open probe fails its probe.
    Calls are timed only when these are set. ``slow_call_s`` is in [0.001, MAX_DURATION_S]
    seconds, and must be under the run's ``timeout`` for an async fn (whose call is cancelled
    at the timeout, so could never be slow). With ``bulk=True`` each bulk call is timed, and
    each record whose outcome it decides (its value, or its failure once bisected alone) is one
    slow call of the window when the call was slow.

    >>> CircuitBreaker(failure_rate_threshold=0.5, window=20, open_duration=5.0).window
    20
    """

    failure_rate_threshold: float = 0.5
    window: int = 20
    minimum_calls: int = 10
    open_duration: float = 30.0
    half_open_calls: int = 3
    abort_failure_rate: float | None = None
    counts: tuple[ErrorClass, ...] = (ErrorClass.TRANSIENT, ErrorClass.RECOVERABLE)
    slow_call_s: float | None = None
    slow_call_rate_threshold: float | None = None

    def __post_init__(self) -> None:
        check_rate("CircuitBreaker", "failure_rate_threshold", self.failure_rate_threshold)
        if (self.slow_call_s is None) != (self.slow_call_rate_threshold is None):
            raise ConfigError("CircuitBreaker.slow_call_s and slow_call_rate_threshold go together: give both "
                              "or neither")
        if self.slow_call_s is not None:
            check_number("CircuitBreaker", "slow_call_s", self.slow_call_s, minimum=0.0, inclusive=False)
            if not MIN_SLOW_CALL_S <= self.slow_call_s <= MAX_DURATION_S:
                raise ConfigError(f"CircuitBreaker.slow_call_s must be in [{MIN_SLOW_CALL_S:g}, {MAX_DURATION_S}] "
                                  f"seconds, got {self.slow_call_s:g}: a call is slow past it; under a "
                                  "millisecond a call's time is timer noise, over a year a unit mistake "
                                  "(batchguard.MAX_DURATION_S)")
            check_rate("CircuitBreaker", "slow_call_rate_threshold", self.slow_call_rate_threshold)
        check_int("CircuitBreaker", "window", self.window, minimum=1, maximum=MAX_BREAKER_WINDOW,
                   why="the breaker keeps up to that many outcomes in memory")
        check_int("CircuitBreaker", "minimum_calls", self.minimum_calls, minimum=1)
        if self.minimum_calls > self.window:
            raise ConfigError(
                f"CircuitBreaker.minimum_calls ({self.minimum_calls}) must be <= window ({self.window})"
            )
        check_duration("CircuitBreaker.open_duration", self.open_duration)
        check_int("CircuitBreaker", "half_open_calls", self.half_open_calls, minimum=1)
        if self.abort_failure_rate is not None:
            check_rate("CircuitBreaker", "abort_failure_rate", self.abort_failure_rate)
        if isinstance(self.counts, (str, ErrorClass)) or not isinstance(self.counts, Iterable):
            raise ConfigTypeError(f"CircuitBreaker.counts must be a tuple of ErrorClass values, got "
                                  f"{type(self.counts).__name__} {self.counts!r}")
        counts = tuple(self.counts)
        if not counts:
            raise ConfigError("CircuitBreaker.counts must name at least one ErrorClass")
        try:
            object.__setattr__(self, "counts", tuple(ErrorClass(c) for c in counts))
        except ValueError as exc:
            raise ConfigError(f"CircuitBreaker.counts: {exc}") from None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Attempts start at most ``per_second`` per second on average and ``burst`` at once,
    counted over all workers (a token bucket in the engine). Retries count too; in bulk mode
    each call counts once.

    >>> RateLimit(per_second=50, burst=10).burst
    10
    """

    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        check_number("RateLimit", "per_second", self.per_second, minimum=0.0, inclusive=False)
        if self.per_second < MIN_RATE_PER_SECOND:
            raise ConfigError(
                f"RateLimit.per_second must be >= {MIN_RATE_PER_SECOND:.3g} (one attempt per "
                f"{MAX_DURATION_S} s, batchguard.MAX_DURATION_S: the interval between two attempts "
                f"must be a duration batchguard accepts), got {self.per_second!r}")
        check_int("RateLimit", "burst", self.burst, minimum=1)
