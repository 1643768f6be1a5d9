"""Issue 9 item 2 (review): the sample screen said "Skipped as blocked by validation: 118" with
1,000 blocked records in the input: the sample checks only the records it would take as
candidates, so the count is of those. The line says exactly that, and where the full count is."""

from __future__ import annotations

from typing import Any

import batchguard
from batchguard import ValidationIssue


def check(record: dict[str, Any]) -> ValidationIssue | None:
    return ValidationIssue("n", "odd", "make it even") if record["n"] % 2 else None


def test_the_blocked_line_says_it_counts_candidates_not_the_input() -> None:
    records = [{"id": i, "n": i, "text": "x" * (i % 97)} for i in range(2000)]  # 1,000 blocked
    report = batchguard.run_batches(records, lambda r: r, validate=check, mode="sample", engine="python")
    assert 0 < report.blocked_skipped < 1000
    summary = report.summary()
    assert "Skipped as blocked by validation:" not in summary
    assert (f"Blocked by validation among the records tried: {report.blocked_skipped:,} (never sampled; "
            "the dry-run counts them all)") in summary, summary
