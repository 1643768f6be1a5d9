"""Hostile: terminal control sequences in what a record or an error carries never reach the
terminal raw (issue 9 items 1, 3 and 4).

A record id or an error message is the input's or a remote service's text. Printed raw, an ESC
sequence in it clears the operator's screen (``ESC[2J``), retitles the window (``ESC]0;...BEL``)
or recolours everything after it; the screens show it escaped (``\\x1b[2J``) instead.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from batchguard import MemoryDLQ, RetryPolicy, ValidationIssue, run_batches
from batchguard._report.model import build
from batchguard._report.panel import render_panel
from batchguard.cli import main

# CSI clear screen, OSC retitle ended by BEL, an 8-bit CSI (C1), a backspace and a DEL
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x9b31m\x08\x7f"
RAW = ("\x1b", "\x07", "\x9b", "\x08", "\x7f")


class Hostile(Exception):
    """An error whose message carries terminal control sequences."""


def _fail(record: dict[str, str]) -> None:
    raise Hostile(f"upstream said {HOSTILE} for {record['id']}")


def _report() -> object:
    records = [{"id": f"rec{HOSTILE}{n}"} for n in range(3)]
    return run_batches(records, _fail, dlq=MemoryDLQ(), id_of=lambda r: r["id"],
                       retry=RetryPolicy(max_attempts=1))


def _no_raw_controls(text: str) -> None:
    for char in RAW:
        assert char not in text, f"{char!r} reached the screen raw"


def test_the_text_report_shows_control_characters_escaped() -> None:
    text = str(_report())
    _no_raw_controls(text)
    assert "\\x1b[2J" in text  # still there for the operator to read, escaped
    assert "upstream said" in text


def test_the_rich_panel_shows_control_characters_escaped() -> None:
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="standard", width=200).print(
        render_panel(build(_report())))  # type: ignore[arg-type]
    screen = out.getvalue()
    # rich's own styles are ESC[...m; what the record and the error carried must not be there
    assert "\x1b[2J" not in screen and "\x1b]0;" not in screen and "\x07" not in screen
    assert "\x9b" not in screen and "\x08" not in screen and "\x7f" not in screen
    assert "\\x1b[2J" in screen


def test_json_keeps_the_exact_text() -> None:
    # JSON is for programs: it escapes control characters itself and keeps the message exact.
    data = _report().to_json()  # type: ignore[attr-defined]
    assert HOSTILE in data["samples"][0]["error_message"]
    assert data["samples"][0]["record_id"] == f"rec{HOSTILE}0"
    assert json.loads(json.dumps(data)) == data


def test_dlq_list_and_review_show_control_characters_escaped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dlq.db'}"
    run_batches([{"id": f"rec{HOSTILE}{n}"} for n in range(2)], _fail, dlq=url,
                id_of=lambda r: r["id"], retry=RetryPolicy(max_attempts=1))
    for command in (["dlq", "list", "--dlq", url], ["dlq", "review", "--dlq", url]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
        assert "upstream said" in result.output
        for char in ("\x1b", "\x07", "\x9b"):  # the messages' own; plain output has no styles
            assert char not in result.output, (command, char)


def _check(record: dict[str, int]) -> ValidationIssue:
    if record["n"] % 2:
        return ValidationIssue(f"field{HOSTILE}", f"bad {HOSTILE}", f"fix {HOSTILE}")
    return ValidationIssue(f"w{HOSTILE}", f"meh {HOSTILE}", None, severity="warning",
                           impact=f"costs {HOSTILE}")


def test_the_dry_run_and_sample_screens_show_control_characters_escaped() -> None:
    records = [{"id": f"rec{HOSTILE}{n}", "n": n} for n in range(4)]
    dry = run_batches(records, lambda r: r, mode="dry-run", validate=_check, id_of=lambda r: r["id"])
    _no_raw_controls(dry.summary())
    assert "\\x1b[2J" in dry.summary()
    sample = run_batches(records, _fail, mode="sample", id_of=lambda r: r["id"],
                         retry=RetryPolicy(max_attempts=1))
    _no_raw_controls(sample.summary())
    assert "upstream said" in sample.summary()
