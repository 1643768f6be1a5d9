"""Issue 9 item 4 (review): a blocked record's message holds each issue's fix text, cut at the
template's length, so records with an extra issue (even a warning) formed patterns of their own
(5 on the demo where its rules block two ways). A ValidationBlocked is grouped by its blocking
issues' field and message, not the fix text; its recommendation says to fix the input and re-run
with --validate, never to retry."""

from __future__ import annotations

from typing import Any

from batchguard import MemoryDLQ, RetryPolicy, ValidationIssue, run_batches
from batchguard._report.patterns import PatternCounter

ONCE = RetryPolicy(max_attempts=1)
LONG_FIX = "correct the address in the source system (it needs an @, e.g. ' at ' written out), then export again"


def check(record: dict[str, Any]) -> list[ValidationIssue]:
    issues = []
    if "@" not in record["email"]:
        issues.append(ValidationIssue("email", f"invalid email address {record['email']!r}", LONG_FIX))
    if record["amount"] == 0:
        issues.append(ValidationIssue("amount", "amount is 0", None, severity="warning",
                                      impact="nothing is charged"))
    return issues


RECORDS = [{"id": i, "email": f"user{i} at x.com" if i % 2 else f"u{i}@x.com", "amount": i % 3}
           for i in range(30)]


def test_blocked_records_group_by_their_issues_not_the_fix_text_or_warnings() -> None:
    queue = MemoryDLQ()
    report = run_batches(RECORDS, lambda r: r, validate=check, dlq=queue, retry=ONCE, engine="python")
    for patterns in (report.patterns(), queue.patterns()):
        assert [(p.error_type, p.count) for p in patterns] == [("ValidationBlocked", 15)], patterns
        template = patterns[0].template
        assert "email: invalid email address '<v>'" in template and "fix" not in template, template
        assert "amount" not in template  # a warning does not block: not what the pattern is about


def test_two_blocking_issues_are_named_both_and_a_third_record_kind_stays_apart() -> None:
    counter = PatternCounter()
    one = "blocked by validation: [blocked] email: invalid email address 'a' (fix: x (y; z))"
    both = one + "; [blocked] amount: missing required field \"amount\" (fix: set it)"
    counter.add(1, "ValidationBlocked", "permanent", None, one)
    counter.add(2, "ValidationBlocked", "permanent", None, one.replace("'a'", "'bb'").replace("x (y; z)", "w"))
    counter.add(3, "ValidationBlocked", "permanent", None, both)
    templates = [(p.template, p.count) for p in counter.patterns()]
    assert templates == [("blocked by validation: email: invalid email address '<v>'", 2),
                         ("blocked by validation: email: invalid email address '<v>'; "
                          "amount: missing required field \"<v>\"", 1)], templates


def test_the_recommendation_for_blocked_records_is_fix_the_input_and_rerun_with_validate() -> None:
    report = run_batches(RECORDS, lambda r: r, validate=check, dlq=MemoryDLQ(), retry=ONCE, engine="python")
    recommendation = report.patterns()[0].recommendation
    assert recommendation.kind == "validation"
    assert "--validate" in recommendation.change and "retry" not in recommendation.change.lower()
    assert "retry" not in (recommendation.command or "")
