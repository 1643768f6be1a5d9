"""Limits and validators every policy and argument check shares.

Each validator raises ConfigTypeError for a wrong type and ConfigError for a value out of range,
with a message naming the argument (or policy field), the bound and the value.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Iterable
from typing import Any, Final

from .errors import ConfigError, ConfigTypeError

__all__ = ["MAX_COUNT", "MAX_DURATION_S", "MIN_RATE_PER_SECOND", "check_count", "check_duration",
           "check_flag", "check_int", "check_number", "check_rate", "is_finite_number", "shown"]

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


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, shortened when huge (``10**400`` has 401 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


_CONTROLS: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}
"""C0 controls but tab and newline, DEL and the C1 controls (0x9B is an 8-bit CSI): as ``\\xNN``."""


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters shown as ``\\x1b`` instead of
    sent raw. A record id or an error message is someone else's text; raw, ``ESC[2J`` in it
    would clear the operator's screen and ``ESC]0;...BEL`` retitle the window. Tabs and
    newlines stay (a multi-line message reads as one).

    >>> printable("bad \\x1b[2J id\\tok\\n")
    'bad \\\\x1b[2J id\\tok\\n'
    """
    return text.translate(_CONTROLS)


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


def check_number(owner: str, name: str, value: Any, *, minimum: float = 0.0,
                  inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{owner}.{name} must be a number, got {type(value).__name__} {shown(value)}")
    if not is_finite_number(value):
        raise ConfigError(f"{owner}.{name} must be finite, got {shown(value)}")
    if value < minimum or (not inclusive and value == minimum):
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"{owner}.{name} must be {relation} {minimum:g}, got {shown(value)}")


def check_int(owner: str, name: str, value: Any, *, minimum: int, maximum: int = MAX_COUNT,
               why: str = "the native engine holds it in 32 bits") -> None:
    check_count(f"{owner}.{name}", value, minimum=minimum, maximum=maximum, why=why)


def check_rate(owner: str, name: str, value: Any) -> None:
    check_number(owner, name, value)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{owner}.{name} must be in (0, 1], got {value!r}")


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name a misspelt ``name`` most likely meant, if any is close: for the
    "did you mean" of an unknown keyword or setting."""
    matches = difflib.get_close_matches(name, list(known), n=1)
    return matches[0] if matches else None
