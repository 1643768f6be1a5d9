"""Issue 9, defects a new user hit in the report and the DLQ triage commands.

* A run where no record succeeded is not headed "BATCH COMPLETE": text, rich panel and JSON
  say "BATCH FAILED (no record succeeded)"; the status the API returns is unchanged (DESIGN §8).
* ``dlq list`` on a terminal folded each id over two or three lines (``671ffaf`` /
  ``6c5c1-0`` / ...): what a person copied from a line was a prefix every entry of the run
  shared, which ``dlq show`` rejected. Every id is now on one line, whole; ``dlq show`` takes
  it, or a unique prefix, and says which entries an ambiguous prefix matches.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from batchguard import RetryPolicy, run_batches
from batchguard._report.model import build
from batchguard._report.panel import render_panel
from batchguard._report.text import render_text
from batchguard.cli import console as cli_console
from test_cli import invoke, write_jsonl

ONCE = RetryPolicy(max_attempts=1)


def always_fails(record: int) -> int:
    raise ValueError(f"record {record} is invalid")


def _panel(report_model: object) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    console.print(render_panel(report_model))  # type: ignore[arg-type]
    return console.export_text()


# ---------------------------------------------------------------------------- headline


def test_a_run_where_every_record_failed_is_not_headed_complete() -> None:
    report = run_batches(range(5), always_fails, retry=ONCE)
    assert report.status == "partial_success"  # DESIGN §8: the API's status is unchanged
    model = build(report)
    assert model.headline == "BATCH FAILED (no record succeeded)"
    assert render_text(model).splitlines()[0] == model.headline
    panel = _panel(model)
    assert model.headline in panel and "COMPLETE" not in panel and "⚠" not in panel
    assert json.loads(json.dumps(report.to_json()))["headline"] == model.headline
    assert report.summary().splitlines()[0] == model.headline


def test_partial_success_and_empty_runs_keep_their_headlines() -> None:
    partial = run_batches([1, 0, 2], lambda x: 10 // x, retry=ONCE)
    assert build(partial).headline == "BATCH COMPLETE (Partial Success)"
    assert build(run_batches([], always_fails)).headline == "BATCH COMPLETE"
    below = run_batches(range(4), always_fails, retry=ONCE, success_threshold=0.5)
    assert below.status == "failed" and build(below).headline == "BATCH FAILED"


def test_the_cli_heads_an_all_failed_run_as_failed(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 3)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1", "-q",
                    "--dlq", "sqlite:///dead.db")
    assert result.output.splitlines()[0] == "BATCH COMPLETE (Partial Success)", result.output
    (workdir / "odd.jsonl").write_text('{"id": 1}\n{"id": 3}\n')
    result = invoke("run", "odd.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1", "-q",
                    "--dlq", "sqlite:///dead.db")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "BATCH FAILED (no record succeeded)", result.output


# ---------------------------------------------------------------------------- dlq list / show


@pytest.fixture
def queue_of_30(workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'dead.db'}"
    run_batches(range(30), always_fails, dlq=url, retry=ONCE)
    return url


@pytest.mark.parametrize("columns", ["60", "80", "120"])
def test_dlq_list_on_a_terminal_prints_whole_ids_that_show_accepts(
        queue_of_30: str, monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    # batchguard.cli.dlq is the command group: its module is in sys.modules.
    for module in (cli_console, sys.modules["batchguard.cli.dlq"]):
        monkeypatch.setattr(module, "is_tty", lambda stream: True)
    listed = invoke("dlq", "list", "--dlq", queue_of_30, "--limit", "5",
                    env={"COLUMNS": columns, "NO_COLOR": "1", "TERM": "dumb"})
    assert listed.exit_code == 0, listed.output
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", listed.output)
    ids = re.findall(r"^\s*([0-9a-f]{12}-\d{12})\s", screen, re.MULTILINE)
    assert len(ids) == 5, screen
    for entry_id in ids:
        shown = invoke("dlq", "show", entry_id, "--dlq", queue_of_30)
        assert shown.exit_code == 0 and f"ID:            {entry_id}" in shown.output, shown.output


def test_dlq_show_takes_a_unique_prefix_and_explains_an_ambiguous_or_unknown_id(queue_of_30: str) -> None:
    listed = invoke("dlq", "list", "--dlq", queue_of_30, "--limit", "30")
    ids = re.findall(r"^([0-9a-f]{12}-\d{12})\s", listed.output, re.MULTILINE)
    assert len(ids) == 30
    shared = ids[29][:-1]  # ...-00000000002: the ids of entries 20 to 29 start with it
    shown = invoke("dlq", "show", ids[7][:-1] + "7", "--dlq", queue_of_30)
    assert shown.exit_code == 0 and ids[7] in shown.output
    # Whitespace copied with the id does not matter.
    assert invoke("dlq", "show", f" {ids[3]}\n", "--dlq", queue_of_30).exit_code == 0
    ambiguous = invoke("dlq", "show", shared, "--dlq", queue_of_30)
    assert ambiguous.exit_code == 2
    assert "matches 10 dead letters" in ambiguous.output and ids[20] in ambiguous.output, ambiguous.output
    unknown = invoke("dlq", "show", "ffffffff", "--dlq", queue_of_30)
    assert unknown.exit_code == 2 and "no dead letter with id 'ffffffff'" in unknown.output
    assert "batchguard dlq list" in unknown.output, unknown.output
