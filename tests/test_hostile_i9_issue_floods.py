"""Hostile: a check that returns thousands of issues per record (issue 9 item 1).

The dry-run report lists at most 20 records by name so that it stays a screen; a record's
issues were listed in full, so 50 records with 10,000 issues each made a 200 MB report, and
a full run wrote each blocked record's 10,000 issues into its DLQ entry's message (10 MB).
"""

from __future__ import annotations

from batchguard import MemoryDLQ, ValidationIssue, run_batches
from batchguard.validation.issues import MAX_DESCRIBED_ISSUES
from batchguard.validation.report import MAX_LISTED_ISSUES

FLOOD = 5_000


def _flood(record: int) -> list[ValidationIssue]:
    return [ValidationIssue(f"f{n}", "m" * 100, "fix it") for n in range(FLOOD)]


def test_a_dry_run_lists_a_bounded_number_of_issues_per_record() -> None:
    report = run_batches(range(30), lambda r: r, mode="dry-run", validate=_flood)
    assert report.blocked == 30
    item = report.blocked_items[0]
    assert len(item.issues) == MAX_LISTED_ISSUES
    assert item.issues_omitted == FLOOD - MAX_LISTED_ISSUES
    text = report.summary()
    assert f"... and {FLOOD - MAX_LISTED_ISSUES:,} more issues" in text
    assert len(text) < 200_000
    data = report.to_json()
    assert data["blocked_items"][0]["issues_omitted"] == FLOOD - MAX_LISTED_ISSUES
    assert len(data["blocked_items"][0]["issues"]) == MAX_LISTED_ISSUES


def test_a_blocked_records_dead_letter_names_a_bounded_number_of_issues() -> None:
    dlq = MemoryDLQ()
    report = run_batches(range(2), lambda r: r, validate=_flood, dlq=dlq)
    assert report.failure_count == 2
    entry = dlq.list()[0]
    assert entry.stage == "validate"
    assert len(entry.error_message or "") < 50_000
    assert f"and {FLOOD - MAX_DESCRIBED_ISSUES:,} more issues" in (entry.error_message or "")


def test_few_issues_are_all_listed() -> None:
    report = run_batches(range(3), lambda r: r, mode="dry-run",
                         validate=lambda r: [ValidationIssue("a", "x", None), ValidationIssue("b", "y", None)])
    assert [len(i.issues) for i in report.blocked_items] == [2, 2, 2]
    assert all(i.issues_omitted == 0 for i in report.blocked_items)
    assert "more issues" not in report.summary()
