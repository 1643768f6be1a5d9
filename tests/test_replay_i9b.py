"""Issue 9: ``dlq retry`` (replay) as a new user met it, through the CLI on real SQLite queues.

* The replay report's "record" column showed each record's place in the replay (and, for a raw
  line, that place as its id), not the record ids: it shows the entries' record ids, indexes
  and batches now, in text, in ``to_json()`` and in ``report.errors``.
* Input lines that did not parse (InputParseError, the raw text as payload) were fed to the
  fixed function, which failed on the text with another error (TypeError), so the entry lost
  its parse error. They are skipped now (left in the queue, counted and said) unless
  ``--include-parse-errors`` is given; a record a replay fails again shows the error it first
  failed with in the report and in ``dlq show``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batchguard import BatchguardWarning, RetryPolicy, replay
from batchguard.dlq import SqliteDLQ
from test_cli import invoke

ONCE = RetryPolicy(max_attempts=1)


def fail_odd_named(record: dict[str, object]) -> dict[str, object]:
    """Fails for a record whose "n" is odd (ids are names, not numbers)."""
    if int(str(record["n"])) % 2:
        raise ValueError(f"odd n {record['n']}")
    return record


@pytest.fixture
def named_queue(workdir: Path) -> Path:
    """A CLI run over 12 named records: 6 fail (odd n), line 6 does not parse."""
    lines = [json.dumps({"id": f"order-{n + 100}", "n": n}) for n in range(12)]
    lines[5] = '{"id": "order-105", "n": '
    (workdir / "in.jsonl").write_text("\n".join(lines) + "\n")
    (workdir / "fns_i9b.py").write_text(
        "from test_replay_i9b import fail_odd_named\n\n"
        "def fixed(record):\n    return record\n\n"
        "def keyed(record):\n    return record['n']\n")
    result = invoke("run", "in.jsonl", "--fn", "fns_i9b:fail_odd_named", "--max-attempts", "1", "-q",
                    "--dlq", "sqlite:///dead.db", "--batch-size", "4")
    assert result.exit_code == 1, result.output
    return workdir / "dead.db"


def entries(path: Path) -> dict[object, object]:
    with SqliteDLQ(path) as dlq:
        return {e.record_id: e for e in dlq.list()}


# ---------------------------------------------------------------------------- record ids


def test_the_replay_report_names_records_by_their_ids(named_queue: Path) -> None:
    before = entries(named_queue)
    result = invoke("dlq", "retry", "--fn", "fns_i9b:fail_odd_named", "--dlq", "sqlite:///dead.db",
                    "--max-attempts", "1", "-q")
    assert result.exit_code == 1, result.output
    shown = re.findall(r"^\d+\. record (.+) \(#(\d+), batch (\d+)\)$", result.output, re.MULTILINE)
    expected = sorted((repr(e.record_id), str(e.record_index), str(e.batch_index))
                      for e in before.values() if e.error_type == "ValueError")
    assert sorted(shown) == expected, result.output
    assert {s[0] for s in shown} == {"'order-101'", "'order-103'", "'order-107'", "'order-109'",
                                     "'order-111'"}


def test_replay_errors_and_json_carry_the_entries_ids(named_queue: Path) -> None:
    with SqliteDLQ(named_queue) as dlq:
        report = replay(dlq, fail_odd_named, retry=ONCE, error_type="ValueError")
        stored = {e.record_id: e for e in dlq.list()}
    assert [e.record_id for e in report.errors] == ["order-101", "order-103", "order-107",
                                                    "order-109", "order-111"]
    for error in report.errors:
        assert (error.record_index, error.batch_index) == (
            stored[error.record_id].record_index, stored[error.record_id].batch_index)
    assert [s["record_id"] for s in report.to_json()["samples"]] == [e.record_id for e in report.errors]
    assert [d.id for d in report.dead_letters] == [stored[e.record_id].id for e in report.errors]


# ---------------------------------------------------------------------------- unparsed lines


def test_dlq_retry_leaves_unparsed_lines_in_the_queue_and_says_so(named_queue: Path) -> None:
    result = invoke("dlq", "retry", "--fn", "fns_i9b:fixed", "--dlq", "sqlite:///dead.db", "-q")
    assert "5 dead letters succeeded and are marked replayed" in result.output, result.output
    assert "1 hold input lines that did not parse (InputParseError) and were left in the queue" \
        in result.output
    assert "--include-parse-errors" in result.output
    assert result.exit_code == 1  # an entry the replay was asked for is still there
    (left,) = entries(named_queue).values()
    assert left.error_type == "InputParseError"  # kept: never fed to fn
    assert [a.error_type for a in left.attempts] == ["InputParseError"]


def test_unparsed_lines_are_replayed_only_when_asked_and_keep_their_first_error(named_queue: Path) -> None:
    (parse_id,) = [e.id for e in entries(named_queue).values() if e.error_type == "InputParseError"]
    result = invoke("dlq", "retry", "--fn", "fns_i9b:keyed", "--dlq", "sqlite:///dead.db", "-q",
                    "--max-attempts", "1", "--include-parse-errors", "--error-type", "InputParseError")
    assert result.exit_code == 1, result.output
    assert "1 failed again and stay" in result.output
    assert "first failed with: InputParseError: line 6" in result.output, result.output
    # The CLI names a record without an id by where it was read (issue 11 item 2): in.jsonl:6.
    assert f"record '{named_queue.parent / 'in.jsonl'}:6' (#5, batch 1)" in result.output, result.output
    shown = invoke("dlq", "show", parse_id, "--dlq", "sqlite:///dead.db")
    assert "First error:   InputParseError: line 6" in shown.output, shown.output
    assert "Error:         TypeError" in shown.output
    # Its first error still marks it as an unparsed line: a later plain retry leaves it alone.
    again = invoke("dlq", "retry", "--fn", "fns_i9b:fixed", "--dlq", "sqlite:///dead.db", "-q")
    assert "1 hold input lines that did not parse" in again.output, again.output
    assert parse_id in [e.id for e in entries(named_queue).values()]


def test_the_library_skips_unparsed_lines_with_a_warning(named_queue: Path) -> None:
    with SqliteDLQ(named_queue) as dlq:
        with pytest.warns(BatchguardWarning, match="did not parse"):
            report = replay(dlq, lambda record: record, retry=ONCE)
        assert (report.removed, report.kept, report.parse_skipped) == (5, 0, 1)
        assert dlq.count() == 1
        fed: list[object] = []
        report = replay(dlq, fed.append, retry=ONCE, include_parse_errors=True)
        assert fed == ['{"id": "order-105", "n": '] and report.removed == 1 and dlq.count() == 0


def test_records_named_by_id_of_keep_those_names_in_the_replay_report(workdir: Path) -> None:
    from batchguard import run_batches

    url = f"sqlite:///{workdir / 'dead.db'}"

    def always_fails(record: int) -> int:
        raise ValueError(f"bad {record}")

    run_batches([10, 20, 30], always_fails, dlq=url, retry=ONCE, id_of=lambda r: f"sku-{r}")
    report = replay(url, always_fails, retry=ONCE)
    assert [e.record_id for e in report.errors] == ["sku-10", "sku-20", "sku-30"]
    assert "record 'sku-20' (#1, batch 0)" in report.summary()
    assert report.summary().splitlines()[0] == "BATCH FAILED (no record succeeded)"
