"""Issue 9, defects a new user hit in the report and the DLQ triage commands.

* A run where no record succeeded is not headed "BATCH COMPLETE": text, rich panel and JSON
  say "BATCH FAILED (no record succeeded)"; the status the API returns is unchanged (DESIGN §8).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from batchguard import RetryPolicy, run_batches
from batchguard._report.model import build
from batchguard._report.panel import render_panel
from batchguard._report.text import render_text
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
