"""``export`` of every backend never destroys data: not the queue's own file, not an existing file
(unless asked), never a truncated file after a failure; and it writes to a text stream."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchguard.dlq import DeadLetter, DeadLetterQueue, JsonlDLQ, SqliteDLQ
from batchguard.errors import DLQError
from test_dlq_conformance import BACKENDS, Opener, entry


@pytest.fixture(params=BACKENDS)
def dlq(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterQueue]:
    opener = Opener(request.param, request, tmp_path)
    try:
        queue = opener.new()
        queue.send([entry(i) for i in range(5)])
        yield queue
    finally:
        opener.close()


def _lines(path: Path) -> list[DeadLetter]:
    return [DeadLetter.from_json(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_refuses_an_existing_file_without_overwrite(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    with pytest.raises(DLQError, match=r"keep\.jsonl.*exists.*overwrite=True"):
        dlq.export(out)
    assert out.read_text() == "precious\n"
    assert dlq.export(out, overwrite=True) == 5
    assert [e.id for e in _lines(out)] == [entry(i).id for i in range(5)]


def test_export_writes_a_new_file_0600(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    out = tmp_path / "new.jsonl"
    assert dlq.export(out) == 5
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new.jsonl")] == []


def test_export_to_a_text_stream_leaves_it_open(dlq: DeadLetterQueue) -> None:
    out = io.StringIO()
    assert dlq.export(out) == 5
    assert not out.closed
    assert [DeadLetter.from_json(line).id for line in out.getvalue().splitlines()] == [
        entry(i).id for i in range(5)]


def test_export_to_a_binary_stream_is_refused_before_writing(dlq: DeadLetterQueue) -> None:
    out = io.BytesIO()
    with pytest.raises(TypeError, match="binary stream"):
        dlq.export(out)
    assert out.getvalue() == b""


def test_a_failed_export_leaves_the_existing_file_whole(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    out = tmp_path / "old.jsonl"
    out.write_text("old content\n")

    def entries() -> Iterator[DeadLetter]:
        yield entry(1)
        raise RuntimeError("the source failed mid-export")

    from batchguard.dlq.base import write_jsonl

    with pytest.raises(RuntimeError):
        write_jsonl(out, entries(), overwrite=True)
    assert out.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".old")) == []


def _own_file(queue: SqliteDLQ | JsonlDLQ, how: str, tmp_path: Path) -> Path:
    if how == "same path":
        return queue.path
    if how == "relative path":
        return Path(os.path.relpath(queue.path))
    if how == "symlink":
        link = tmp_path / "link.out"
        link.symlink_to(queue.path)
        return link
    link = tmp_path / "hardlink.out"
    os.link(queue.path, link)
    return link


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "hard link"])
@pytest.mark.parametrize("kind", ["sqlite", "jsonl"])
def test_export_onto_the_queues_own_file_is_refused_even_with_overwrite(
        kind: str, how: str, tmp_path: Path) -> None:
    queue: SqliteDLQ | JsonlDLQ = (SqliteDLQ(tmp_path / "q.db") if kind == "sqlite"
                                   else JsonlDLQ(tmp_path / "q.jsonl"))
    try:
        queue.send([entry(i) for i in range(50)])
        target = _own_file(queue, how, tmp_path)
        for overwrite in (False, True):
            with pytest.raises(DLQError, match="own file"):
                queue.export(target, overwrite=overwrite)
        assert queue.count() == 50
    finally:
        queue.close()
    reopened = SqliteDLQ(tmp_path / "q.db") if kind == "sqlite" else JsonlDLQ(tmp_path / "q.jsonl")
    try:
        assert reopened.count() == 50
    finally:
        reopened.close()


def test_sqlite_export_refuses_its_wal_file(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "q.db") as queue:
        queue.send([entry(1)])
        assert Path(f"{queue.path}-wal").exists()
        with pytest.raises(DLQError, match="own file"):
            queue.export(f"{queue.path}-wal", overwrite=True)
        assert queue.count() == 1


def test_export_to_a_directory_names_it(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    with pytest.raises(DLQError, match="directory"):
        dlq.export(tmp_path)
