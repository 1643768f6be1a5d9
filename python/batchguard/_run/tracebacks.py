"""Tracebacks as ``traceback.format_exception`` writes them, at a fraction of its cost per entry.

A failure-heavy run formats one traceback per dead-lettered record, and nearly all of them
come from the same few places in the code: the same frames, stopped at the same instructions.
``traceback.format_exception`` redoes the whole work each time (it looks every source line
up, stats the file to check its cache, and on Python 3.11+ parses each line again to place
the ``^^^^`` markers), about 40 us per entry, most of a dead letter's cost.

:class:`TracebackFormatter` formats each distinct stack once: a stack is named by its frames'
code objects and the instruction each stopped at (``tb_lasti``), which fix every line
``format_tb`` writes (file, line, function, source line, markers). Only the exception's own
line (its type and message) is formatted for each entry. What the fast path does not cover
(exception groups, syntax errors, notes) is formatted by the standard library as before, so
the text is always the standard library's, byte for byte.
"""

from __future__ import annotations

import sys
import traceback
from types import CodeType, TracebackType
from typing import Final

from ..dlq.codec import Fallbacks, clean_text

__all__ = ["TracebackFormatter"]

_HEADER: Final = "Traceback (most recent call last):\n"
# The standard library's words between the exceptions of a chain (traceback._cause_message and
# _context_message, private there: spelled out here, and held to them by the tests).
_CAUSE: Final = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT: Final = "\nDuring handling of the above exception, another exception occurred:\n\n"

MAX_STACKS: Final = 1024
"""Distinct stacks kept formatted per run; past it the cache starts again (a run whose failures
come from more places than this gains little from caching them anyway)."""

_StackKey = tuple[object, ...]
_NO_STACK: Final = ("", True)


def _stack_key(tb: TracebackType | None) -> _StackKey:
    # sys.__dict__.get: what getattr(sys, "tracebacklimit", None) reads (the module has no
    # __getattr__), without raising and catching an AttributeError for every entry.
    key: list[object] = [sys.__dict__.get("tracebacklimit")]
    while tb is not None:
        code: CodeType = tb.tb_frame.f_code
        key.append(code)
        key.append(tb.tb_lasti)
        tb = tb.tb_next
    return tuple(key)


def _exception_line(exc: BaseException) -> str:
    """``traceback.format_exception_only(exc)`` for an exception that is no SyntaxError and has
    no notes: ``module.Type: message``, the module left out for builtins and ``__main__``."""
    kind = type(exc)
    name = kind.__qualname__
    module = kind.__module__
    if module not in ("__main__", "builtins"):
        name = f"{module if isinstance(module, str) else '<unknown>'}.{name}"
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - the standard library's placeholder, as it writes it
        text = "<exception str() failed>"
    return f"{name}: {text}\n" if text else f"{name}\n"


_MAX_TYPES: Final = 1024
_types_without_notes: dict[type, bool] = {}


def _notes_only_in_dict(kind: type) -> bool:
    """Is an instance's ``__notes__`` (which ``add_note`` puts in its ``__dict__``) found only
    there? True unless the class has a ``__notes__`` of its own or makes attributes up."""
    plain = _types_without_notes.get(kind)
    if plain is None:
        plain = (getattr(kind, "__getattribute__", None) is BaseException.__getattribute__
                 and not hasattr(kind, "__getattr__") and not hasattr(kind, "__notes__"))
        if len(_types_without_notes) >= _MAX_TYPES:
            _types_without_notes.clear()
        _types_without_notes[kind] = plain
    return plain


def _simple(exc: BaseException) -> bool:
    """Does the fast path write exactly what the standard library would for ``exc`` itself?"""
    if isinstance(exc, (BaseExceptionGroup, SyntaxError)):
        return False
    try:
        if _notes_only_in_dict(type(exc)):
            # The look-up below, without the AttributeError it raises and catches when the
            # exception has no notes (nearly always).
            return "__notes__" not in exc.__dict__
        return getattr(exc, "__notes__", None) is None
    except Exception:  # noqa: BLE001 - a __getattr__ that raises: the standard library copes
        return False


class TracebackFormatter:
    """Formats exceptions as ``"".join(traceback.format_exception(exc))``, each distinct stack
    formatted once (see the module docstring). One per run: a stack's source lines are read
    when it is first seen, as ``format_exception`` would read them then.

    >>> formatter = TracebackFormatter()
    >>> try:
    ...     raise ValueError("bad record")
    ... except ValueError as exc:
    ...     formatter.format(exc) == "".join(traceback.format_exception(exc))
    True
    """

    def __init__(self) -> None:
        self._stacks: dict[_StackKey, tuple[str, bool]] = {}  # the text, and is it storable as it is

    def format(self, exc: BaseException) -> str:
        """The traceback of ``exc`` and of the exceptions it was raised from or while handling."""
        if exc.__cause__ is None and exc.__context__ is None and _simple(exc):
            return self._stack(exc.__traceback__) + _exception_line(exc)  # no chain: most entries
        # (exception, the words between its predecessor in the chain and it), newest first.
        chain: list[tuple[BaseException, str | None]] = []
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None:
            if not _simple(current):
                return "".join(traceback.format_exception(exc))
            seen.add(id(current))
            cause, context = current.__cause__, current.__context__
            # The standard library's rule (compact=True): the cause if there is one, else the
            # context unless suppressed, and never an exception already in the chain.
            if cause is not None and id(cause) not in seen:
                chain.append((current, _CAUSE))
                current = cause
            elif context is not None and not current.__suppress_context__ and id(context) not in seen:
                chain.append((current, _CONTEXT))
                current = context
            else:
                chain.append((current, None))
                current = None
        parts: list[str] = []
        for link, words in reversed(chain):
            if words is not None:
                parts.append(words)
            parts.append(self._stack(link.__traceback__))
            parts.append(_exception_line(link))
        return "".join(parts)

    def storable(self, exc: BaseException, fallbacks: Fallbacks | None = None) -> str:
        """:meth:`format` with what no backend stores replaced (``codec.clean_text``, noting the
        fallback in ``fallbacks``): a stack is checked when it is first formatted, so only the
        exception's own line is checked for each entry."""
        if exc.__cause__ is None and exc.__context__ is None and _simple(exc):
            stack, storable = self._stack_entry(exc.__traceback__)
            if not storable:
                stack = clean_text(stack, fallbacks)
            return stack + clean_text(_exception_line(exc), fallbacks)
        return clean_text(self.format(exc), fallbacks)

    def _stack(self, tb: TracebackType | None) -> str:
        """The header and frame lines of one exception's traceback ("" when it has none)."""
        return self._stack_entry(tb)[0]

    def _stack_entry(self, tb: TracebackType | None) -> tuple[str, bool]:
        """:meth:`_stack`, and whether its text is storable as it is (``clean_text`` keeps it)."""
        if tb is None:
            return _NO_STACK
        key = _stack_key(tb)
        entry = self._stacks.get(key)
        if entry is None:
            lines = traceback.format_tb(tb)
            text = _HEADER + "".join(lines) if lines else ""
            if len(self._stacks) >= MAX_STACKS:
                self._stacks.clear()
            entry = self._stacks[key] = (text, clean_text(text) is text)
        return entry
