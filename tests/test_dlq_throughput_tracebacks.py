"""The cached traceback formatter writes what ``traceback.format_exception`` writes, byte for
byte, for every shape of exception a run can dead-letter (issue 11 item 5)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

import pytest

from batchguard import run_batches
from batchguard._run.tracebacks import MAX_STACKS, TracebackFormatter
from batchguard.dlq import MemoryDLQ
from batchguard.dlq.codec import Fallbacks, clean_text
from batchguard.errors import BatchguardWarning


class Odd(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class Empty(Exception):
    pass


class _Named(Exception):
    pass


_Named.__module__ = 42  # type: ignore[assignment] - a class whose module is not a str


def _deep(n: int) -> None:
    if n == 0:
        raise ValueError(f"deep {n}")
    _deep(n - 1)


def _plain() -> None:
    raise ValueError("bad record 7")


def _caused() -> None:
    try:
        _plain()
    except ValueError as exc:
        raise KeyError("wrapped") from exc


def _context() -> None:
    try:
        _plain()
    except ValueError:
        raise TypeError("while handling")  # noqa: B904 - the implicit context is the point


def _suppressed() -> None:
    try:
        _plain()
    except ValueError:
        raise TypeError("suppressed") from None


def _cycle() -> None:
    first = ValueError("first")
    second = KeyError("second")
    first.__context__ = second
    second.__context__ = first
    raise first


def _cause_and_context() -> None:
    try:
        raise OSError("context")
    except OSError:
        cause = ValueError("cause")
        raise KeyError("both") from cause


def _notes() -> None:
    exc = ValueError("noted")
    exc.add_note("a note\non two lines")
    raise exc


class ClassNotes(Exception):
    __notes__ = ["a note every instance has"]  # noqa: RUF012 - as a class may write it


class MadeUpNotes(Exception):
    def __getattr__(self, name: str) -> object:
        if name == "__notes__":
            return ["made up by __getattr__"]
        raise AttributeError(name)


class NotesProperty(Exception):
    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]
        return ["from a property"]


def _class_notes() -> None:
    raise ClassNotes("class notes")


def _made_up_notes() -> None:
    raise MadeUpNotes("made up")


def _notes_property() -> None:
    raise NotesProperty("property")


def _group() -> None:
    raise ExceptionGroup("many", [ValueError("one"), KeyError("two")])


def _syntax() -> None:
    compile("x = (", "<record>", "exec")


def _unprintable() -> None:
    raise Odd()


def _empty() -> None:
    raise Empty()


def _odd_module() -> None:
    raise _Named("odd module")


def _caught(raiser: Callable[[], None]) -> BaseException:
    try:
        raiser()
    except BaseException as exc:  # noqa: BLE001 - every shape is caught to be formatted
        return exc
    raise AssertionError("did not raise")


SHAPES = [_plain, _caused, _context, _suppressed, _cycle, _cause_and_context, _notes, _group,
          _syntax, _unprintable, _empty, _odd_module, lambda: _deep(30), _class_notes, _made_up_notes,
          _notes_property]


@pytest.mark.parametrize("raiser", SHAPES, ids=lambda f: f.__name__)
def test_formats_every_shape_as_the_standard_library(raiser: Callable[[], None]) -> None:
    formatter = TracebackFormatter()
    exc = _caught(raiser)
    expected = "".join(traceback.format_exception(exc))
    assert formatter.format(exc) == expected
    assert formatter.format(exc) == expected  # the second time, from the cache


def test_a_note_on_one_exception_of_a_type_already_seen_is_written() -> None:
    # The formatter remembers which types keep notes only in the instance: not that the
    # instances it saw had none.
    formatter = TracebackFormatter()
    first, second = _caught(_plain), _caught(_plain)
    second.add_note("only this one")
    assert formatter.format(first) == "".join(traceback.format_exception(first))
    assert formatter.format(second) == "".join(traceback.format_exception(second))
    assert "only this one" in formatter.format(second)


def test_same_place_different_messages_each_keep_their_own_line() -> None:
    formatter = TracebackFormatter()

    def fail(i: int) -> None:
        raise ValueError(f"record {i}")

    texts = [formatter.format(_caught(lambda i=i: fail(i))) for i in range(3)]
    assert [t.splitlines()[-1] for t in texts] == ["ValueError: record 0", "ValueError: record 1",
                                                   "ValueError: record 2"]
    assert len({t.rsplit("\n", 2)[0] for t in texts}) == 1  # one stack, three exception lines


def test_a_different_line_of_the_same_function_is_a_different_stack() -> None:
    formatter = TracebackFormatter()

    def fail(first: bool) -> None:
        if first:
            raise ValueError("first line")
        raise ValueError("second line")

    for first in (True, False, True):
        exc = _caught(lambda first=first: fail(first))
        assert formatter.format(exc) == "".join(traceback.format_exception(exc))


def test_tracebacklimit_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    formatter = TracebackFormatter()
    exc = _caught(lambda: _deep(5))
    formatter.format(exc)
    monkeypatch.setattr(sys, "tracebacklimit", 2, raising=False)
    assert formatter.format(exc) == "".join(traceback.format_exception(exc))


def test_the_cache_stays_bounded() -> None:
    formatter = TracebackFormatter()
    for i in range(MAX_STACKS + 5):
        code = compile(f"def f():\n    raise ValueError({i})\n", f"<gen {i}>", "exec")
        space: dict[str, object] = {}
        exec(code, space)  # distinct code objects: one stack each
        exc = _caught(space["f"])  # type: ignore[arg-type]
        assert formatter.format(exc) == "".join(traceback.format_exception(exc))
    assert len(formatter._stacks) <= MAX_STACKS


def test_a_run_stores_the_standard_librarys_traceback_in_every_entry() -> None:
    errors: list[BaseException] = []

    def fn(record: int) -> None:
        try:
            if record % 2:
                raise ValueError(f"odd {record}")
            raise KeyError(record)
        except Exception as exc:
            errors.append(exc)
            raise

    dlq = MemoryDLQ()
    run_batches(range(6), fn, dlq=dlq, batch_size=2)
    stored = {entry.record_index: entry.traceback for entry in dlq.list()}
    assert stored == {i: "".join(traceback.format_exception(exc)) for i, exc in enumerate(errors)}


def _raised_in_a_file_named(name: str) -> BaseException:
    namespace: dict[str, object] = {}
    exec(compile("def f():\n    raise ValueError('from a file')\n", name, "exec"), namespace)
    return _caught(namespace["f"])  # type: ignore[arg-type]


@pytest.mark.parametrize("raiser", SHAPES, ids=lambda f: f.__name__)
def test_the_storable_traceback_is_the_standard_librarys_made_storable(raiser: Callable[[], None]) -> None:
    formatter = TracebackFormatter()
    exc = _caught(raiser)
    expected = clean_text("".join(traceback.format_exception(exc)))
    assert formatter.storable(exc) == expected
    assert formatter.storable(exc) == expected  # the second time, from the cache


def test_a_stack_that_no_backend_stores_is_made_storable_every_time_and_noted() -> None:
    # A file name with a lone surrogate (a non-UTF-8 name on disk): the stack is cached as it
    # is (format gives the standard library's text), and replaced each time it is stored.
    formatter, fallbacks = TracebackFormatter(), Fallbacks()
    exc = _raised_in_a_file_named("bad\udcff.py")
    with pytest.warns(BatchguardWarning, match="lone surrogates"):
        first = formatter.storable(exc, fallbacks)
    assert first == formatter.storable(exc, fallbacks) == clean_text("".join(traceback.format_exception(exc)))
    assert '"bad\ufffd.py"' in first and "\udcff" in formatter.format(exc)
    assert fallbacks.used == {"text"}


def test_a_message_that_no_backend_stores_is_made_storable_under_a_clean_stack() -> None:
    formatter, fallbacks = TracebackFormatter(), Fallbacks()
    clean, dirty = _caught(lambda: _raise_message("fine")), _caught(lambda: _raise_message("nul \x00 here"))
    assert formatter.storable(clean, fallbacks).endswith("ValueError: fine\n")
    assert fallbacks.used == set()
    with pytest.warns(BatchguardWarning):
        assert formatter.storable(dirty, fallbacks).endswith("ValueError: nul \ufffd here\n")
    assert fallbacks.used == {"text"}


def _raise_message(message: str) -> None:
    raise ValueError(message)
