"""Ctrl-C inside a results write (issue 11 item 1). The recorder writes on the thread that
called ``run_batches``, the one a Ctrl-C interrupts, and hands a batch whose write was
interrupted to the sink again (its write never returned). Whatever line of the write the
KeyboardInterrupt lands on, the file must stay readable and hold each value once.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import batchguard
from batchguard import sinks
from test_sinks import read_back

pytest.importorskip("zstandard")

BATCHES = [(list(range(b * 4, b * 4 + 4)), [{"i": i, "pad": "x" * 30} for i in range(b * 4, b * 4 + 4)])
           for b in range(3)]


def interrupted_at(line: int, write: Any, *args: Any) -> bool:
    """Call ``write(*args)`` raising KeyboardInterrupt at its ``line``-th line event (in any
    frame it calls); False if it finished first."""
    seen = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal seen
        if event == "line":
            seen += 1
            if seen == line:
                raise KeyboardInterrupt
        return tracer

    sys.settrace(tracer)
    try:
        write(*args)
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
    return False


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.jsonl.bz2", "out.jsonl.zst"])
def test_an_interrupt_on_any_line_of_a_write_then_the_write_again_leaves_each_value_once(
        tmp_path: Path, name: str) -> None:
    for line in range(1, 500):
        out = tmp_path / f"{line}-{name}"
        writer = sinks.jsonl(out)
        writer.open(append=False)
        writer.write(*BATCHES[0])
        hit = interrupted_at(line, writer.write, *BATCHES[1])
        if hit:
            writer.write(*BATCHES[1])  # the recorder hands the batch over again
        writer.write(*BATCHES[2])
        writer.close()
        indices = [row["index"] for row in read_back(out)]
        assert collections.Counter(indices) == collections.Counter(range(12)), f"interrupted at line {line}"
        if not hit:
            return
    raise AssertionError("the write never finished")


def test_a_sink_raising_base_exceptions_gets_each_batch_again_until_the_run_raises(tmp_path: Path) -> None:
    calls: list[int] = []

    def sink(indices: list[int], values: list[Any]) -> None:
        calls.append(indices[0])
        if indices[0] == 30 and calls.count(30) == 1:
            raise KeyboardInterrupt  # once: the batch's later hand-over goes through

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(100), lambda x: x, batch_size=10, results=sink)
    assert calls.count(30) == 2 and calls == sorted(calls)
