"""``dlq export`` onto something that is not a regular file (hostile tester, issue 7 defect 3).

Found: ``batchguard dlq export /dev/null --force`` (or ``/dev/full``, ``/dev/stdout``) run as
root *replaced the device node* with a 0600 regular file holding the dead letters: the atomic
write renamed its temp file over the path. A device, a FIFO (``>(gzip > x.gz)``, a named
pipe) or a symlink to one is a stream to write into, never a file to replace; and a symlink to
a regular file is written through (the link stays a link), not replaced by a file.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from batchguard.dlq import DeadLetter, MemoryDLQ
from test_dlq_conformance import entry


def _queue() -> MemoryDLQ:
    queue = MemoryDLQ()
    queue.send([entry(i) for i in range(5)])
    return queue


def _drain(fifo: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(fifo, "rb") as src:
            into.append(src.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("through_symlink", [False, True])
def test_export_writes_into_a_fifo_and_leaves_it_a_fifo(tmp_path: Path, overwrite: bool,
                                                          through_symlink: bool) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    target = fifo
    if through_symlink:  # /dev/stdout -> /proc/self/fd/1 -> a pipe
        target = tmp_path / "stdout"
        target.symlink_to(fifo)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    assert _queue().export(target, overwrite=overwrite) == 5
    reader.join(5)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file"
    if through_symlink:
        assert target.is_symlink(), "the symlink was replaced by a regular file"
    lines = got[0].decode().splitlines()
    assert [DeadLetter.from_json(line).record_index for line in lines] == [0, 1, 2, 3, 4]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_overwrite_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real" / "out.jsonl"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    assert _queue().export(link, overwrite=True) == 5
    assert link.is_symlink(), "overwrite replaced the symlink instead of the file it names"
    assert len(real.read_text().splitlines()) == 5
