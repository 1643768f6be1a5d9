"""The :class:`Classifier`: which :class:`ErrorClass` an exception gets, and why."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

from . import _clients
from ._checks import check_flag
from ._error_class import ErrorClass, class_of_http_status, http_status_of, qualified_name
from ._error_class import as_error_class as _as_error_class
from .errors import ConfigError, ConfigTypeError

__all__ = ["MAX_CACHED_TYPES", "Classifier", "ClassifierFunc", "Explanation"]

MAX_CACHED_TYPES = 1024
"""Exception types a run's per-type caches hold at most (this one, the policy table's, and
their twins in ``src/bindings/classify.rs``). A cached type is kept alive, so a run that raises
ever new types (classes made at run time) would otherwise keep them all; when a cache is full
it is emptied and refilled, which costs a run with fewer distinct types nothing."""

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


class _PolicyMatcher(Protocol):
    """What the classifier asks of the run's retry policy table (``_retry_table.PolicyTable``,
    which imports this module): run its predicate keys on a failure being classified."""

    def match(self, exc: BaseException) -> None: ...


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
    retry_table: _PolicyMatcher | None = field(default=None, init=False, repr=False, compare=False)
    """The run's retry policies by error (a ``batchguard._retry_table.PolicyTable``), which the
    engines look up next to the class, per exception type cached alike; None: one policy."""

    def __post_init__(self) -> None:

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
            if inspector not in _clients.INSPECTOR_NAMES:
                raise ConfigError(f"Classifier inspect rule for {qualname!r}: {inspector!r} is not an "
                                  f"inspector (one of {', '.join(_clients.INSPECTOR_NAMES)})")
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

    def with_retry_table(self, table: _PolicyMatcher | None) -> Classifier:
        """A copy that also answers which retry policy governs a failure (``table``); the
        rules, and so their per-type cache, are shared."""
        bound = copy.copy(self)
        object.__setattr__(bound, "retry_table", table)
        return bound

    def type_class(self, exc_type: type[BaseException]) -> ErrorClass | None:
        """The class the type and name rules give ``exc_type`` (cacheable per type), or None.
        An instance of a type with an inspector may still be decided by it (see classify)."""
        return self._type_verdict(exc_type).error_class

    def classify(self, exc: BaseException) -> ErrorClass:
        """The class of ``exc`` under these rules (the reference implementation). With a
        ``retry_table``, its predicate keys are asked about ``exc`` too (see ``match``)."""
        error_class = self._decide(exc)[0]
        if self.retry_table is not None:
            self.retry_table.match(exc)
        return error_class

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
        cache = self._type_cache
        verdict = cache.get(exc_type)
        if verdict is None:
            if len(cache) >= MAX_CACHED_TYPES:
                cache.clear()  # see MAX_CACHED_TYPES: a bound, never a cost for a common run
            verdict = cache[exc_type] = self._resolve_type(exc_type)
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
                return _TypeVerdict(tuple(inspectors), found, "type rule",
                                    f"type rule {klass.__qualname__} via {raised}")
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
        validated = _VALIDATED_DEFAULTS[cls] = cls(
            type_rules=_DEFAULT_TYPE_RULES, name_rules=(*_DEFAULT_NAME_RULES, *_clients.CLIENT_NAME_RULES),
            inspect_rules=_clients.CLIENT_INSPECT_RULES)
    return validated
