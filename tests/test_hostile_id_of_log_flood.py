"""An ``id_of`` that raises is logged once per exception type and run, not once per record
(hostile tester, issue 7 defect 1: "warn once per kind").

Found: 1000 failing records whose id_of raised KeyError logged 2000 WARNING lines ("id_of
raised KeyError for record N; using its index"), two per record: 300k failures would flood
a log with 600k lines.
"""

from __future__ import annotations

import logging

import pytest

import batchguard


def _id_of(record: int) -> int:
    if record % 2:
        raise KeyError("no id")
    if record % 5 == 0:
        raise AttributeError("no id either")
    return record


def _fn(record: int) -> int:
    raise ValueError("bad")


@pytest.mark.parametrize("engine", ["native", "python"])
def test_id_of_failures_are_logged_once_per_type(engine: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        report = batchguard.run_batches(range(400), _fn, id_of=_id_of, engine=engine,
                                        dlq="memory://")
        errors = list(report.errors)
    lines = [r.getMessage() for r in caplog.records if "id_of raised" in r.getMessage()]
    assert len(lines) == 2, lines[:5]
    assert any("KeyError" in line for line in lines) and any("AttributeError" in line for line in lines)
    assert [e.record_id for e in errors[:4]] == [0, 1, 2, 3]
