""":class:`~batchguard.policies.RetryPolicies` as both engines look a failure's policy up: each
policy by its index (0: the default), the keys split by kind, and each exception type's answer
cached, as its classification is (the native engine reads these fields: ``src/bindings/classify.rs``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._classifier import MAX_CACHED_TYPES
from ._error_class import ErrorClass
from .errors import ConfigError, ResultRejected
from .policies import RetryPolicies, RetryPolicy

__all__ = ["MAX_LOGGED_KINDS", "MAX_POLICIES", "PolicyTable", "SafePredicate", "reject_results"]

logger = logging.getLogger("batchguard")

MAX_POLICIES = 65_535
"""Keys a RetryPolicies may have: the native engine indexes policies with a u16."""

# Predicate answers waiting for their failure's policy lookup (one per call in flight at most,
# normally): a bound, should something classify failures it never looks a policy up for.
_MAX_MATCHED = 4096

MAX_LOGGED_KINDS = 32
"""Kinds of error a broken predicate is logged for (once each): a bound on its log lines and
memory when it raises ever new exception classes."""

_CLASS_ORDER = (ErrorClass.TRANSIENT, ErrorClass.RECOVERABLE, ErrorClass.PERMANENT, ErrorClass.FATAL)


class SafePredicate:
    """A user's predicate as the engines call it: a plain bool, and an Exception it raises is
    no match (logged once per predicate and error type: a broken predicate must not lose a
    record, nor flood the log). A KeyboardInterrupt goes through: it stops the run."""

    __slots__ = ("_logged", "func", "name")

    def __init__(self, func: Callable[[BaseException], Any]) -> None:
        self.func = func
        self.name = getattr(func, "__qualname__", None) or type(func).__qualname__
        self._logged: set[str] = set()

    def __call__(self, exc: BaseException) -> bool:
        try:
            return bool(self.func(exc))
        except Exception as error:  # noqa: BLE001 - a predicate bug must not kill the run
            kind = type(error).__name__
            logged = self._logged
            if kind not in logged and len(logged) < MAX_LOGGED_KINDS:
                logged.add(kind)
                more = (f"; other errors it raises are not logged (it raised {MAX_LOGGED_KINDS} kinds)"
                        if len(logged) == MAX_LOGGED_KINDS else "")
                logger.error("retry policy predicate %s raised %s on %s; it counts as no match (for "
                             "every %s it raises in this run)%s", self.name, kind, type(exc).__name__, kind, more)
            return False


class PolicyTable:
    """The compiled lookup of one run's retry policies (see ``RetryPolicies.policy_for``)."""

    __slots__ = ("_by_type", "_matched", "_source", "any_fallback", "any_max_elapsed", "class_keys", "policies",
                 "predicates", "type_keys")

    def __init__(self, policies: RetryPolicies) -> None:
        if len(policies.by_error) > MAX_POLICIES:
            raise ConfigError(f"RetryPolicies.by_error has {len(policies.by_error)} keys; at most "
                              f"{MAX_POLICIES} are supported")
        self._source = policies
        ordered: list[RetryPolicy] = [policies.default]
        type_keys: list[tuple[type[BaseException], int]] = []
        class_keys: list[int | None] = [None] * len(_CLASS_ORDER)
        predicates: list[tuple[SafePredicate, int]] = []
        for key, policy in policies.by_error.items():
            index = len(ordered)
            ordered.append(policy)
            if isinstance(key, ErrorClass):
                class_keys[_CLASS_ORDER.index(key)] = index
            elif isinstance(key, type):
                type_keys.append((key, index))
            else:
                predicates.append((SafePredicate(key), index))
        self.policies: tuple[RetryPolicy, ...] = tuple(ordered)
        """Every policy, by index: 0 is the default."""
        self.type_keys = tuple(type_keys)
        self.class_keys = tuple(class_keys)
        """Per ErrorClass, in declaration order (transient, recoverable, permanent, fatal)."""
        self.predicates = tuple(predicates)
        self.any_fallback = any(p.has_fallback for p in ordered)
        self.any_max_elapsed = any(p.max_elapsed is not None for p in ordered)
        self._by_type: dict[type, int | None] = {}
        # id(exc) -> (exc, the predicate key's index or 0): what match() found, for index_for.
        # The exception is kept so that its id cannot be another's while it waits here.
        self._matched: dict[int, tuple[BaseException, int]] = {}

    def describe(self) -> dict[str, Any]:
        """The policies as JSON-safe data (``RetryPolicies.describe``)."""
        return self._source.describe()

    def match(self, exc: BaseException) -> None:
        """Run the predicate keys on ``exc`` now, while the failure is classified: a predicate
        that raises KeyboardInterrupt then stops the run where a classifier's would, as in the
        native engine (which looks the policy up with the class). ``index_for`` takes the
        answer instead of calling the predicates again."""
        if not self.predicates:
            return
        matched = self._matched
        if len(matched) >= _MAX_MATCHED:
            matched.clear()  # answers no failure came for (a classify without a retry): recomputed
        matched[id(exc)] = (exc, self._predicate_index(exc))

    def _predicate_index(self, exc: BaseException) -> int:
        for predicate, index in self.predicates:
            if predicate(exc):
                return index
        return 0

    def index_for(self, exc: BaseException, error_class: ErrorClass) -> int:
        """The index of the policy a failure with ``exc`` of ``error_class`` is retried under."""
        if self.predicates:
            found = self._matched.pop(id(exc), None)
            by_predicate = found[1] if found is not None and found[0] is exc else self._predicate_index(exc)
            if by_predicate:
                return by_predicate
        by_type = self._type_index(type(exc))
        if by_type is not None:
            return by_type
        by_class = self.class_keys[_CLASS_ORDER.index(error_class)]
        return 0 if by_class is None else by_class

    def _type_index(self, exc_type: type) -> int | None:
        try:
            return self._by_type[exc_type]
        except KeyError:
            pass
        keys = dict(self.type_keys)
        found = next((keys[k] for k in exc_type.__mro__ if k in keys), None)
        if len(self._by_type) >= MAX_CACHED_TYPES:
            self._by_type.clear()  # bounded, as the classifier's cache (MAX_CACHED_TYPES)
        self._by_type[exc_type] = found
        return found


def reject_results(fn: Callable[[Any], Any], predicate: Callable[[Any], Any], *, is_async: bool,
                   bulk: bool) -> Callable[[Any], Any]:
    """``fn`` whose returned value ``predicate`` rejects raises :class:`ResultRejected` instead,
    so that both engines retry it as any RECOVERABLE failure. A bulk fn's list is rejected as a
    whole when any of its values is: bisection then narrows it down to that record, as for an
    exception. A predicate that raises fails the attempt with its error."""

    def check(value: Any) -> Any:
        for item in (value if bulk and isinstance(value, list) else (value,)):
            if predicate(item):
                raise ResultRejected(item)
        return value

    if is_async:
        async def rejecting_async(record: Any) -> Any:
            return check(await fn(record))

        return rejecting_async

    def rejecting(record: Any) -> Any:
        return check(fn(record))

    return rejecting
