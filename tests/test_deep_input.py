"""A deeply nested input line is a parse error, not a crash (issue 7, defect 17).

A 5000-deep JSON line used to abort ``batchguard run`` with a RecursionError traceback; it is
dead-lettered as an InputParseError like any line that does not parse, and the run goes on.
A JSON array input nested that deep cannot be read at all: a clear error, exit 2.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from batchguard._inputs import UnparsedLine, open_input
from batchguard.cli import main
from batchguard.dlq import SqliteDLQ

DEEP_ARRAY = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000


def _lines() -> list[str]:
    lines = [json.dumps({"id": i}) for i in range(10)]
    lines[3] = DEEP_ARRAY
    lines[7] = DEEP_OBJECT
    return lines


def test_the_reader_turns_a_too_deep_line_into_an_unparsed_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(_lines()) + "\n")
    records = list(open_input(str(path)))
    assert len(records) == 10
    bad = [r for r in records if isinstance(r, UnparsedLine)]
    assert [(r.line, str(r) == line) for r, line in zip(bad, (DEEP_ARRAY, DEEP_OBJECT), strict=True)] == [
        (4, True), (8, True)]
    assert all("nested too deeply" in r.error for r in bad)
    stdin = list(open_input("-", "jsonl", stdin=io.BytesIO("\n".join(_lines()).encode())))
    assert sum(isinstance(r, UnparsedLine) for r in stdin) == 2


def test_run_dead_letters_a_too_deep_line_and_goes_on(workdir: Path) -> None:
    (workdir / "in.jsonl").write_text("\n".join(_lines()) + "\n")
    result = CliRunner().invoke(main, ["run", "in.jsonl", "--fn", "cli_fns:echo", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output  # partial success, not a crash
    assert "Succeeded:     8" in result.output and "InputParseError: 2" in result.output
    with SqliteDLQ(workdir / "batchguard.db") as dlq:
        entries = sorted(dlq.list(), key=lambda entry: entry.record_index)
    assert [(e.record_index, e.error_type, e.error_class) for e in entries] == [
        (3, "InputParseError", "permanent"), (7, "InputParseError", "permanent")]
    assert entries[0].payload == DEEP_ARRAY and entries[0].error_message.startswith("line 4: invalid JSON")


def test_a_too_deep_json_array_input_is_a_clear_error(workdir: Path) -> None:
    (workdir / "in.json").write_text("[" + DEEP_ARRAY + "]")
    result = CliRunner().invoke(main, ["run", "in.json", "--fn", "cli_fns:echo", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "nested too deeply" in result.output and "Traceback" not in result.output
