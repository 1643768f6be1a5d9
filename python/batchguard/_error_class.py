"""What a failure means (:class:`ErrorClass`), and the facts about an exception that decide it
without any rule: the HTTP status it carries, its class's qualified name.

A leaf module: the classifier and the client-library inspectors (``_clients``) both build on it.
"""

from __future__ import annotations

import enum
from typing import Any

from .errors import ConfigError

__all__ = ["ErrorClass", "as_error_class", "class_of_http_status", "http_status_of", "qualified_name",
           "status_value"]


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


def as_error_class(owner: str, value: Any) -> ErrorClass:
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
