"""Issue 9 item 1 (review): a record its check blocked (ValidationBlocked, stage "validate")
was fed to --fn by ``dlq retry`` / ``replay`` / ``jobs retry-failed`` unchecked. Replay leaves
such entries in the queue, counted in ``report.blocked_skipped`` with a warning, unless it is
given ``validate=check`` (``--validate`` on the CLI): then they are checked again -- still
blocked, they stay with the new issues; now valid, they run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchguard import BatchguardWarning, MemoryDLQ, RetryPolicy, ValidationIssue, replay, run_batches
from batchguard._demo import write_dataset
from batchguard.dlq import SqliteDLQ
from test_cli import invoke

ONCE = RetryPolicy(max_attempts=1)
SEEN: list[Any] = []


def needs_email(record: dict[str, Any]) -> list[ValidationIssue]:
    """Blocks a record without an "@" in its email."""
    if "@" not in str(record.get("email")):
        return [ValidationIssue("email", "invalid email address", "correct it in the source")]
    return []


def accept_all(record: Any) -> list[ValidationIssue]:
    """A check that blocks nothing: the rules were relaxed."""
    return []


def note(record: Any) -> Any:
    """The fixed function: remembers what it was given."""
    SEEN.append(record)
    return record


def fail_odd(record: dict[str, Any]) -> Any:
    """Fails for good on an odd id (a dead letter that is not a blocked one)."""
    if record["id"] % 2:
        raise ValueError(f"odd id {record['id']}")
    return record


RECORDS = [{"id": i, "email": "x@y" if i < 6 else "no-at"} for i in range(10)]  # 6..9 blocked


@pytest.fixture
def queue() -> MemoryDLQ:
    SEEN.clear()
    q = MemoryDLQ()
    run_batches(RECORDS, fail_odd, validate=needs_email, dlq=q, retry=ONCE, engine="python")
    assert q.count(stage="validate") == 4 and q.count() == 4 + 3
    return q


def test_replay_leaves_blocked_entries_counted_and_warned(queue: MemoryDLQ) -> None:
    with pytest.warns(BatchguardWarning, match=r"4 dead letters .*blocked by validation.*validate="):
        report = replay(queue, note, retry=ONCE)
    assert report.blocked_skipped == 4
    assert sorted(r["id"] for r in SEEN) == [1, 3, 5]  # never a blocked record
    assert queue.count(stage="validate") == 4 and queue.count() == 4


def test_replay_with_validate_keeps_the_still_blocked_with_their_new_issues(queue: MemoryDLQ) -> None:
    def stricter(record: dict[str, Any]) -> list[ValidationIssue]:
        return [*needs_email(record), ValidationIssue("email", "still no @ here", "fix it upstream")]

    report = replay(queue, note, retry=ONCE, validate=lambda r: stricter(r) if r["id"] >= 6 else [])
    assert report.blocked_skipped == 0
    assert sorted(r["id"] for r in SEEN) == [1, 3, 5]
    still = queue.list(stage="validate")
    assert len(still) == 4 and all(e.error_type == "ValidationBlocked" for e in still)
    assert all("still no @ here" in e.error_message for e in still)


def test_replay_with_validate_runs_the_now_valid(queue: MemoryDLQ) -> None:
    report = replay(queue, note, retry=ONCE, validate=accept_all)
    assert sorted(r["id"] for r in SEEN) == [1, 3, 5, 6, 7, 8, 9]
    assert report.replayed == 7 and queue.count() == 0


def _cli_queue(workdir: Path) -> Path:
    lines = [json.dumps(r) for r in RECORDS]
    (workdir / "in.jsonl").write_text("\n".join(lines) + "\n")
    result = invoke("run", "in.jsonl", "--fn", "test_replay_blocked:fail_odd", "--validate",
                    "test_replay_blocked:needs_email", "--dlq", "sqlite:///q.db", "--max-attempts", "1",
                    "--job", "j1", "--store", "sqlite:///q.db", "-q")
    assert result.exit_code != 0, result.output
    return workdir / "q.db"


def test_cli_dlq_retry_leaves_blocked_then_validate_rechecks(workdir: Path) -> None:
    db = _cli_queue(workdir)
    SEEN.clear()
    result = invoke("dlq", "retry", "--fn", "test_replay_blocked:note", "--dlq", "sqlite:///q.db", "-q")
    assert "4 were blocked by validation" in result.output and "--validate" in result.output, result.output
    assert sorted(r["id"] for r in SEEN) == [1, 3, 5]
    SEEN.clear()
    result = invoke("dlq", "retry", "--fn", "test_replay_blocked:note", "--dlq", "sqlite:///q.db",
                    "--validate", "test_replay_blocked:accept_all", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(r["id"] for r in SEEN) == [6, 7, 8, 9]
    with SqliteDLQ(db) as q:
        assert q.count() == 0


def test_cli_jobs_retry_failed_leaves_blocked_then_validate_rechecks(workdir: Path) -> None:
    _cli_queue(workdir)
    SEEN.clear()
    result = invoke("jobs", "retry-failed", "j1", "--fn", "test_replay_blocked:note",
                    "--store", "sqlite:///q.db", "-q")
    assert "4 were blocked by validation" in result.output and "--validate" in result.output, result.output
    assert sorted(r["id"] for r in SEEN) == [1, 3, 5]
    SEEN.clear()
    result = invoke("jobs", "retry-failed", "j1", "--fn", "test_replay_blocked:note", "--store",
                    "sqlite:///q.db", "--validate", "test_replay_blocked:needs_email", "-q")
    assert sorted(r["id"] for r in SEEN) == []  # still blocked: stay, fn never sees them
    assert "still blocked" in result.output, result.output


def test_the_demos_blocked_records_replay_through_the_fix_only_when_checked_again(workdir: Path) -> None:
    """The walkthrough's triage: the demo's blocked records stay on a plain retry, and run
    through process_fixed once --validate checks them with the rules the fix repairs."""
    write_dataset(workdir / "demo.jsonl", 2000)
    invoke("run", "demo.jsonl", "--fn", "batchguard._demo:process", "--validate", "batchguard._demo:validate",
           "--max-attempts", "1", "-q")
    with SqliteDLQ(workdir / "batchguard.db") as q:
        blocked = q.count(error_type="ValidationBlocked")
    assert blocked > 0
    plain = invoke("dlq", "retry", "--error-type", "ValidationBlocked", "--fn", "batchguard._demo:process_fixed", "-q")
    assert plain.exit_code == 1 and f"{blocked:,} were blocked by validation" in plain.output, plain.output
    checked = invoke("dlq", "retry", "--error-type", "ValidationBlocked", "--fn", "batchguard._demo:process_fixed",
                     "--validate", "batchguard._demo:validate_fixed", "-q")
    assert checked.exit_code == 0 and f"{blocked:,} dead letters succeeded" in checked.output, checked.output
