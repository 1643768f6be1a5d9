"""Policies: how failures are classified, retried and circuit-broken.

Every policy is a frozen dataclass that validates itself when built, so a bad value fails at
the line that wrote it, not an hour into a run.
"""

from __future__ import annotations

import copy
import enum
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from .errors import ConfigError, ConfigTypeError

__all__ = [
    "MAX_DURATION_S",
    "MIN_RATE_PER_SECOND",
    "RateLimit",
    "CircuitBreaker",
    "Classifier",
    "ErrorClass",
    "Explanation",
    "Jitter",
    "RetryPolicy",
    "http_status_of",
    "status_value",
]


class ErrorClass(enum.StrEnum):
    """What a failure means, and so what the engine does with the record."""

    TRANSIENT = "transient"
    """Retried at once, without delay, until ``max_attempts``."""
    RECOVERABLE = "recoverable"
    """Retried after a backoff delay, until ``max_attempts``."""
    PERMANENT = "permanent"
    """Not retried: the record is dead-lettered."""
    FATAL = "fatal"
    """The record is dead-lettered and the run stops; unstarted records stay pending."""

    @property
    def retryable(self) -> bool:
        return self in (ErrorClass.TRANSIENT, ErrorClass.RECOVERABLE)


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


def _jitter_stream_seed(seed: int, record_index: int) -> int:
    """The jitter stream of one record: independent of which worker runs it, or when."""
    return (seed ^ (((record_index + 1) * 0xD1B54A32D192ED03) & _MASK64)) & _MASK64


MAX_DURATION_S = 365 * 24 * 60 * 60
"""The longest duration batchguard accepts, in seconds (one year): every timeout, delay,
``open_duration`` and retry-after cap is checked against it when it is given. Longer is almost
surely a unit mistake (milliseconds passed as seconds), and it keeps every deadline the engines
compute (now + duration) far inside what their timers and clocks can hold."""

MIN_RATE_PER_SECOND = 1.0 / MAX_DURATION_S
"""The slowest :class:`RateLimit` accepted: one attempt per :data:`MAX_DURATION_S`, so that the
interval between two attempts is itself a duration batchguard accepts."""

MAX_COUNT = 2**32 - 1
"""The largest per-record or per-breaker count (``max_attempts``, ``half_open_calls``, ``burst``):
the native engine holds these in 32 bits."""

MAX_BREAKER_WINDOW = 1_000_000
"""The largest ``CircuitBreaker.window``: the breaker keeps up to its last ``window`` outcomes in
memory (the window grows as outcomes arrive; a larger one is a mistake that would cost memory)."""


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, shortened when huge (``10**400`` has 401 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def is_finite_number(value: int | float) -> bool:
    """Not nan or inf, nor an int too large for a float (which ``math.isfinite`` overflows on)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return -sys.float_info.max <= value <= sys.float_info.max


def check_duration(name: str, value: Any, *, positive: bool = False) -> float:
    """A number of seconds in ``[0, MAX_DURATION_S]`` (``(0, ...]`` when ``positive``), as a
    float. ``name`` is what the messages call it (``"timeout"``, ``"RetryPolicy.max_delay"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name} must be a number of seconds, got {type(value).__name__} {shown(value)}")
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{name} must be a number of seconds, got nan")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {shown(value)}")
    if value > MAX_DURATION_S:
        raise ConfigError(f"{name} must be at most {MAX_DURATION_S} s (one year, batchguard.MAX_DURATION_S), "
                          f"got {shown(value)}; a longer wait is almost surely a unit mistake")
    return float(value)


def check_count(name: str, value: Any, *, minimum: int, maximum: int, why: str = "") -> int:
    """An int in ``[minimum, maximum]`` (a bool is not an int here); ``why`` explains the maximum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{name} must be an int, got {type(value).__name__} {shown(value)}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {shown(value)}")
    if value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}{f' ({why})' if why else ''}, got {shown(value)}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """``bool`` means bool: ``"no"``, ``1`` or ``None`` would be read as a truth value silently."""
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{name} must be True or False, got {type(value).__name__} {shown(value)}")
    return value


def _check_number(owner: str, name: str, value: Any, *, minimum: float = 0.0,
                  inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{owner}.{name} must be a number, got {type(value).__name__} {shown(value)}")
    if not is_finite_number(value):
        raise ConfigError(f"{owner}.{name} must be finite, got {shown(value)}")
    if value < minimum or (not inclusive and value == minimum):
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"{owner}.{name} must be {relation} {minimum:g}, got {shown(value)}")


def _check_int(owner: str, name: str, value: Any, *, minimum: int, maximum: int = MAX_COUNT,
               why: str = "the native engine holds it in 32 bits") -> None:
    check_count(f"{owner}.{name}", value, minimum=minimum, maximum=maximum, why=why)


def _check_rate(owner: str, name: str, value: Any) -> None:
    _check_number(owner, name, value)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{owner}.{name} must be in (0, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times a record is tried, and how long it waits between tries.

    ``max_attempts`` counts every try, the first included. The n-th retry of a RECOVERABLE
    failure waits ``min(max_delay, base_delay * multiplier ** (n - 1))``, jittered; TRANSIENT
    failures retry at once. An exception's ``retry_after`` (seconds), or the ``Retry-After``
    header of the response it carries, wins when it is longer, up to ``max_retry_after``.

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

    def __post_init__(self) -> None:
        _check_int("RetryPolicy", "max_attempts", self.max_attempts, minimum=1)
        check_duration("RetryPolicy.base_delay", self.base_delay)
        _check_number("RetryPolicy", "multiplier", self.multiplier, minimum=1.0)
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
        _check_int("RetryPolicy.schedule", "n", n, minimum=0, why="one delay per retry")
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

    def next_delay(self) -> float:
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
        return d / 2.0 + self._uniform(0.0, d / 2.0)  # equal


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Pauses the run while a dependency is failing, instead of burning records on it.

    Closed -> open when, over the last ``window`` calls (at least ``minimum_calls``), the share
    of failures of a class in ``counts`` reaches ``failure_rate_threshold``. While open no call
    starts; after ``open_duration`` seconds, ``half_open_calls`` probes run: all succeed ->
    closed, any fails -> open again. Reaching ``abort_failure_rate`` stops the run.

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

    def __post_init__(self) -> None:
        _check_rate("CircuitBreaker", "failure_rate_threshold", self.failure_rate_threshold)
        _check_int("CircuitBreaker", "window", self.window, minimum=1, maximum=MAX_BREAKER_WINDOW,
                   why="the breaker keeps up to that many outcomes in memory")
        _check_int("CircuitBreaker", "minimum_calls", self.minimum_calls, minimum=1)
        if self.minimum_calls > self.window:
            raise ConfigError(
                f"CircuitBreaker.minimum_calls ({self.minimum_calls}) must be <= window ({self.window})"
            )
        check_duration("CircuitBreaker.open_duration", self.open_duration)
        _check_int("CircuitBreaker", "half_open_calls", self.half_open_calls, minimum=1)
        if self.abort_failure_rate is not None:
            _check_rate("CircuitBreaker", "abort_failure_rate", self.abort_failure_rate)
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
        _check_number("RateLimit", "per_second", self.per_second, minimum=0.0, inclusive=False)
        if self.per_second < MIN_RATE_PER_SECOND:
            raise ConfigError(
                f"RateLimit.per_second must be >= {MIN_RATE_PER_SECOND:.3g} (one attempt per "
                f"{MAX_DURATION_S} s, batchguard.MAX_DURATION_S: the interval between two attempts "
                f"must be a duration batchguard accepts), got {self.per_second!r}")
        _check_int("RateLimit", "burst", self.burst, minimum=1)


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (``status_code``, ``status``, ``response.status_code``)."""
    for holder, name in ((exc, "status_code"), (exc, "status"),
                         (getattr(exc, "response", None), "status_code")):
        if holder is None:
            continue
        status = status_value(getattr(holder, name, None))
        if status is not None:
            return status
    return None


def status_value(value: Any) -> int | None:
    """``value`` if it is an HTTP status (an int from 100 to 599, not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def class_of_http_status(status: int | None) -> ErrorClass | None:
    """408, 425, 429 and 5xx are RECOVERABLE; any other 4xx is PERMANENT."""
    if status is None:
        return None
    if status in (408, 425, 429) or 500 <= status <= 599:
        return ErrorClass.RECOVERABLE
    if 400 <= status <= 499:
        return ErrorClass.PERMANENT
    return None


ClassifierFunc = Callable[[BaseException], "ErrorClass | str | None"]

_DEFAULT_TYPE_RULES: tuple[tuple[type[BaseException], ErrorClass], ...] = (
    (TimeoutError, ErrorClass.RECOVERABLE),
    (ConnectionError, ErrorClass.RECOVERABLE),
    (ValueError, ErrorClass.PERMANENT),
    (TypeError, ErrorClass.PERMANENT),
    (KeyError, ErrorClass.PERMANENT),
    (MemoryError, ErrorClass.FATAL),
)
# DB-API drivers each define their own IntegrityError with no common base class, so this one
# rule matches by class name anywhere in the exception's MRO.
_DEFAULT_NAME_RULES: tuple[tuple[str, ErrorClass], ...] = (("IntegrityError", ErrorClass.PERMANENT),)


def _as_error_class(owner: str, value: Any) -> ErrorClass:
    try:
        return ErrorClass(value)
    except ValueError:
        raise ConfigError(
            f"{owner}: {value!r} is not an ErrorClass (one of {', '.join(c.value for c in ErrorClass)})"
        ) from None


def qualified_name(klass: type) -> str | None:
    """``"module.qualname"`` of a class (what qualified name rules match), or None."""
    module = getattr(klass, "__module__", None)
    qualname = getattr(klass, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a classifier gave an exception its class; ``str()`` reads as a sentence.

    >>> str(Classifier.default().explain(TimeoutError("slow")))
    'type rule TimeoutError via builtins.TimeoutError -> recoverable'
    """

    error_class: ErrorClass
    rule: str
    """Which step decided: "callable", "type rule", "name rule", "inspector", "HTTP status",
    "message rule" or "default"."""
    reason: str
    """The rule and what it matched, e.g. "HTTP status 503"."""

    def __str__(self) -> str:
        return f"{self.reason} -> {self.error_class.value}"


class _TypeVerdict(NamedTuple):
    """What an exception type resolves to, once per type: the inspectors to ask an instance
    (usually none), then the class the type and name rules give (None: no rule matched)."""

    inspectors: tuple[str, ...]
    error_class: ErrorClass | None
    rule: str
    reason: str


_Decision = tuple[ErrorClass, str, str]


@dataclass(frozen=True)
class Classifier:
    """Maps an exception to an :class:`ErrorClass`. First match wins:

    1. ``func(exc)``, the user's callable, when it returns a class (None falls through);
    2. rules on the exception's type, the most specific class in its MRO first: a type rule
       (that class or a subclass), then, for types whose meaning is in the instance (an AWS
       error code, a gRPC status), an inspector that reads it, then a name rule (the class's
       ``"module.qualname"`` or its bare ``__name__``: the inspector's fallback);
    3. an HTTP status on the exception (408/425/429/5xx RECOVERABLE, other 4xx PERMANENT);
    4. message rules (regex search over ``str(exc)``), in the order they were added;
    5. ``default`` (PERMANENT: isolate the record, never kill the run).

    :meth:`default` knows the errors of the common client libraries (requests, urllib3, httpx,
    aiohttp, botocore, grpc, psycopg, psycopg2, SQLAlchemy, redis-py, ssl, socket) without
    importing them; :meth:`explain` says which rule decided.

    >>> c = Classifier.default().with_rule(LookupError, ErrorClass.TRANSIENT)
    >>> c.classify(IndexError("x"))
    <ErrorClass.TRANSIENT: 'transient'>
    """

    type_rules: tuple[tuple[type[BaseException], ErrorClass], ...] = ()
    name_rules: tuple[tuple[str, ErrorClass], ...] = ()
    message_rules: tuple[tuple[str, ErrorClass], ...] = ()
    func: ClassifierFunc | None = None
    default_class: ErrorClass = ErrorClass.PERMANENT
    http_status: bool = True
    inspect_rules: tuple[tuple[str, str], ...] = ()
    """("module.qualname", inspector name) pairs; the inspectors are batchguard's own (see
    ``batchguard._clients``): aws_error_code, grpc_status, wrapped_dbapi_error, tls_verification."""
    _compiled: tuple[tuple[re.Pattern[str], ErrorClass], ...] = field(
        default=(), init=False, repr=False, compare=False)
    _by_type: dict[type[BaseException], ErrorClass] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _by_name: dict[str, ErrorClass] = field(default_factory=dict, init=False, repr=False, compare=False)
    _inspect: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)
    # exception type -> its _TypeVerdict; the native engine keeps the same cache
    _type_cache: dict[type, _TypeVerdict] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from ._clients import INSPECTOR_NAMES  # _clients imports this module

        rules = []
        for rule in self.type_rules:
            exc_type, cls = rule
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise ConfigTypeError(
                    f"Classifier rule: {exc_type!r} is not an exception type (a rule needs a "
                    "subclass of BaseException)"
                )
            rules.append((exc_type, _as_error_class("Classifier rule", cls)))
        object.__setattr__(self, "type_rules", tuple(rules))
        object.__setattr__(self, "_by_type", dict(rules))
        names = tuple((str(n), _as_error_class("Classifier name rule", c)) for n, c in self.name_rules)
        object.__setattr__(self, "name_rules", names)
        object.__setattr__(self, "_by_name", dict(names))
        inspect: dict[str, tuple[str, ...]] = {}
        for qualname, inspector in self.inspect_rules:
            if inspector not in INSPECTOR_NAMES:
                raise ConfigError(f"Classifier inspect rule for {qualname!r}: {inspector!r} is not an "
                                  f"inspector (one of {', '.join(INSPECTOR_NAMES)})")
            if inspector not in inspect.get(str(qualname), ()):
                inspect[str(qualname)] = (*inspect.get(str(qualname), ()), inspector)
        object.__setattr__(self, "inspect_rules", tuple((str(q), i) for q, i in self.inspect_rules))
        object.__setattr__(self, "_inspect", inspect)
        compiled = []
        for pattern, cls in self.message_rules:
            if not isinstance(pattern, str):
                raise ConfigTypeError(f"Classifier message rule: pattern must be a str, got {pattern!r}")
            try:
                compiled.append((re.compile(pattern), _as_error_class("Classifier message rule", cls)))
            except re.error as exc:
                raise ConfigError(f"Classifier message rule {pattern!r} is not a valid regex: {exc}") from None
        object.__setattr__(self, "_compiled", tuple(compiled))
        object.__setattr__(self, "default_class", _as_error_class("Classifier.default_class", self.default_class))
        if self.func is not None and not callable(self.func):
            raise ConfigTypeError(f"Classifier.func must be callable, got {type(self.func).__name__}")
        check_flag("Classifier.http_status", self.http_status)

    @classmethod
    def default(cls) -> Classifier:
        """The rules of DESIGN §4 (timeouts and connection errors retry with backoff, bad data
        — ValueError, TypeError, KeyError, IntegrityError — is dead-lettered, MemoryError stops
        the run), and what batchguard knows of the common client libraries' errors (README,
        "What the default classifier recognises")."""
        # Every run without a classifier asks for one: validating some fifty rules each time
        # would cost a tiny run more than its engine does, so the validated rules are reused and
        # each copy gets a cache of its own.
        fresh = copy.copy(_validated_default(cls))
        object.__setattr__(fresh, "_type_cache", {})
        return fresh

    def with_rule(self, exc_type: type[BaseException], error_class: ErrorClass | str) -> Classifier:
        """A copy with ``exc_type`` (and its subclasses) mapped to ``error_class``."""
        kept = tuple(r for r in self.type_rules if r[0] is not exc_type)
        return replace(self, type_rules=(*kept, (exc_type, _as_error_class("Classifier rule", error_class))))

    def with_name_rule(self, name: str, error_class: ErrorClass | str) -> Classifier:
        """A copy that maps exceptions with a class named ``name`` in their MRO: a qualified
        ``"module.qualname"`` (``"requests.exceptions.Timeout"``), or a bare ``__name__``. No
        import needed."""
        if not isinstance(name, str) or not name:
            raise ConfigTypeError(f"Classifier name rule: the name must be a non-empty str, got {name!r}")
        rule = (name, _as_error_class("Classifier name rule", error_class))
        return replace(self, name_rules=(*(r for r in self.name_rules if r[0] != name), rule))

    def with_message_rule(self, pattern: str, error_class: ErrorClass | str) -> Classifier:
        """A copy that maps exceptions whose message matches ``pattern`` (``re.search``)."""
        rule = (pattern, _as_error_class("Classifier message rule", error_class))
        return replace(self, message_rules=(*self.message_rules, rule))

    def with_callable(self, func: ClassifierFunc) -> Classifier:
        """A copy that asks ``func(exc)`` first; it returns an ErrorClass, or None to fall through."""
        return replace(self, func=func)

    def with_default(self, error_class: ErrorClass | str) -> Classifier:
        return replace(self, default_class=_as_error_class("Classifier.default_class", error_class))

    def type_class(self, exc_type: type[BaseException]) -> ErrorClass | None:
        """The class the type and name rules give ``exc_type`` (cacheable per type), or None.
        An instance of a type with an inspector may still be decided by it (see classify)."""
        return self._type_verdict(exc_type).error_class

    def classify(self, exc: BaseException) -> ErrorClass:
        """The class of ``exc`` under these rules (the reference implementation)."""
        return self._decide(exc)[0]

    def explain(self, exc: BaseException) -> Explanation:
        """Which rule decides ``exc``, and so its class: what a person reads to see why a
        record was, or was not, retried.

        >>> str(Classifier.default().explain(ConnectionRefusedError()))
        'type rule ConnectionError via builtins.ConnectionRefusedError -> recoverable'
        """
        return Explanation(*self._decide(exc))

    def _decide(self, exc: BaseException) -> _Decision:
        if self.func is not None:
            verdict = self.func(exc)
            if verdict is not None:
                name = getattr(self.func, "__qualname__", None) or type(self.func).__qualname__
                return _as_error_class("Classifier.func result", verdict), "callable", f"classifier callable {name}"
        by_type = self._by_type_and_inspectors(exc, 0)
        if by_type is not None:
            return by_type
        if self.http_status:
            status = http_status_of(exc)
            by_status = class_of_http_status(status)
            if by_status is not None:
                return by_status, "HTTP status", f"HTTP status {status}"
        if self._compiled:
            message = str(exc)
            for pattern, cls in self._compiled:
                if pattern.search(message):
                    return cls, "message rule", f"message rule {pattern.pattern!r}"
        return self.default_class, "default", "default"

    def _by_type_and_inspectors(self, exc: BaseException, depth: int) -> _Decision | None:
        """Steps 2 of the resolution: the type's inspectors (each may decide this instance),
        then its type and name rules. ``depth`` counts wrapped errors followed so far."""
        verdict = self._type_verdict(type(exc))
        for inspector in verdict.inspectors:
            found = self._inspect_instance(inspector, exc, depth)
            if found is not None:
                cls, why = found
                raised = qualified_name(type(exc)) or type(exc).__name__
                return cls, "inspector", f"{why} (inspector {inspector} via {raised})"
        if verdict.error_class is None:
            return None
        return verdict.error_class, verdict.rule, verdict.reason

    def _inspect_instance(self, inspector: str, exc: BaseException, depth: int) -> tuple[ErrorClass, str] | None:
        from . import _clients  # _clients imports this module

        def resolve(inner: BaseException, inner_depth: int) -> tuple[ErrorClass, str] | None:
            found = self._by_type_and_inspectors(inner, inner_depth)
            return None if found is None else (found[0], found[2])

        try:
            if inspector == _clients.WRAPPED:
                return _clients.wrapped_dbapi_error(exc, resolve, depth)
            return _clients.INSPECTORS[inspector](exc)
        except Exception:  # noqa: BLE001 - an instance that breaks an inspector is simply not recognised
            return None

    def _type_verdict(self, exc_type: type) -> _TypeVerdict:
        verdict = self._type_cache.get(exc_type)
        if verdict is None:
            verdict = self._type_cache[exc_type] = self._resolve_type(exc_type)
        return verdict

    def _resolve_type(self, exc_type: type) -> _TypeVerdict:
        # Walk the MRO, most specific first. At each class: its type rule (yours: it beats what
        # batchguard knows of the class), then its inspectors are noted (asked per instance),
        # then its qualified and bare name rules (an inspector's fallback); the first rule decides.
        raised = qualified_name(exc_type) or exc_type.__name__
        inspectors: list[str] = []
        for klass in exc_type.__mro__:
            found = self._by_type.get(klass)
            if found is not None:
                return _TypeVerdict(tuple(inspectors), found, "type rule", f"type rule {klass.__qualname__} via {raised}")
            qualified = qualified_name(klass)
            if qualified is not None:
                inspectors.extend(i for i in self._inspect.get(qualified, ()) if i not in inspectors)
            for name in (qualified, klass.__name__):
                if name is not None and name in self._by_name:
                    return _TypeVerdict(tuple(inspectors), self._by_name[name], "name rule",
                                        f"name rule {name} via {raised}")
        return _TypeVerdict(tuple(inspectors), None, "", "")


_VALIDATED_DEFAULTS: dict[type[Classifier], Classifier] = {}


def _validated_default(cls: type[Classifier]) -> Classifier:
    validated = _VALIDATED_DEFAULTS.get(cls)
    if validated is None:
        from ._clients import CLIENT_INSPECT_RULES, CLIENT_NAME_RULES  # _clients imports this module

        validated = _VALIDATED_DEFAULTS[cls] = cls(
            type_rules=_DEFAULT_TYPE_RULES, name_rules=(*_DEFAULT_NAME_RULES, *CLIENT_NAME_RULES),
            inspect_rules=CLIENT_INSPECT_RULES)
    return validated


def coerce_classes(values: Iterable[Any]) -> tuple[ErrorClass, ...]:
    return tuple(ErrorClass(v) for v in values)
