"""Hostile: terminal control sequences in what a record or an error carries never reach the
terminal raw (issue 9 items 1, 3 and 4).

A record id or an error message is the input's or a remote service's text. Printed raw, an ESC
sequence in it clears the operator's screen (``ESC[2J``), retitles the window (``ESC]0;...BEL``)
or recolours everything after it; the screens show it escaped (``\\x1b[2J``) instead.
"""

from __future__ import annotations

import io
import json

from rich.console import Console

from batchguard import MemoryDLQ, RetryPolicy, run_batches
from batchguard._report.model import build
from batchguard._report.panel import render_panel

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
