"""The report of a run whose atomic batches were rolled back (issue 10 item 5, review finding):
the records that really failed come first, with their own error and recommendation, and the
rolled-back records show as such, on both engines."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from batchguard import MemoryDLQ
from batchguard._report.model import build
from batchguard._report.panel import render_panel
from batchguard._report.text import render_text
from helpers_contract import ENGINES, no_wait, run


class UniqueViolation(Exception):
    """A database's duplicate-key error (the "integrity" rule matches its name and message)."""


def _insert(record: int) -> int:
    if record == 150:
        raise UniqueViolation(f"duplicate key value violates unique constraint (id)=({record})")
    return record


@pytest.mark.parametrize("engine", ENGINES)
def test_the_record_that_failed_is_shown_first_and_the_rolled_back_ones_as_such(engine: str) -> None:
    report = run(range(300), _insert, engine=engine, batch_size=100, dlq=MemoryDLQ(), retry=no_wait(1),
                 compensate=lambda record, value: None, atomic_batches=True)
    assert (report.failure_count, report.compensated_count) == (1, 99)
    model = build(report)
    # The sample starts with the record that failed, with its own error.
    first = model.samples[0]
    assert (first.record_index, first.error_type) == (150, "UniqueViolation")
    assert [s.error_type for s in model.samples[1:]] == ["BatchRolledBack"] * 9
    # Its pattern comes first and keeps its recommendation; the rolled-back records' pattern
    # recommends replaying them, not the failed record's "integrity".
    cause, undone = model.patterns
    assert (cause.error_type, cause.count, cause.recommendation.kind) == ("UniqueViolation", 1, "integrity")
    assert (undone.error_type, undone.count, undone.recommendation.kind) == ("BatchRolledBack", 99, "rolled_back")
    text = render_text(model)
    assert "BatchRolledBack: 99 records undone because record 150 failed" in text
    assert "\n1. record 150 (#150, batch 1)\n   PERMANENT UniqueViolation: duplicate key" in text
    assert "likely:   integrity" in text and "likely:   rolled back" in text
    console = Console(width=200, record=True)
    console.print(render_panel(model))
    panel = console.export_text()
    assert "BatchRolledBack: 99 records undone because record 150 failed" in panel
    assert panel.index("150") < panel.index("BatchRolledBack: 99")  # its pattern is listed first
    data = json.loads(json.dumps(model.to_json()))
    assert data["samples"][0]["record_index"] == 150
    assert [p["recommendation"]["kind"] for p in data["patterns"]] == ["integrity", "rolled_back"]
    assert data["rollback_causes"] == [150]
