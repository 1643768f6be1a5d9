"""A JSONL DLQ pointed at a file that is not a DLQ never truncates it (hostile tester, issue 7).

Found: ``run_batches(..., dlq="jsonl:///notes.jsonl")`` where notes.jsonl held one line of the
user's own JSON (``{"a": 1}``) treated that complete line as a write torn by a crash and
truncated it away with the first dead letter: the user's data was gone without an error. A
crash can only leave an *unterminated* fragment (or NUL garbage) at the end; a complete line
that is valid JSON, or a complete first line, is somebody's data: refuse with DLQError, as
for a corrupt line in the middle.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import batchguard
from batchguard.dlq import JsonlDLQ
from batchguard.errors import DLQError
from test_dlq_conformance import entry


def _fail(record: int) -> int:
    raise ValueError("bad")


@pytest.mark.parametrize("content", [b'{"a": 1}\n', b'[1, 2, 3]\n', b"hello world\n", b"id,name\n"])
def test_a_foreign_one_line_file_is_refused_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DLQError, match="line 1"):
            batchguard.run_batches(range(3), _fail, dlq=f"jsonl:///{path}")
    assert path.read_bytes() == content


def test_a_json_line_appended_to_a_dlq_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    with JsonlDLQ(path) as queue:
        queue.send([entry(0)])
    with open(path, "ab") as out:
        out.write(b'{"note": "checked by Ann"}\n')
    before = path.read_bytes()
    with pytest.raises(DLQError, match="line 2"):
        JsonlDLQ(path)
    assert path.read_bytes() == before
