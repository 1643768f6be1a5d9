"""The triage commands (issue 9 item 4): ``dlq review`` (the seed 003 screen), ``dlq skip``,
``dlq retry ID...`` / ``--error-type``, ``dlq list --status`` and ``dlq show`` with the status
history. The commands the review prints are run verbatim and do what they say."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from batchguard.dlq import DeadLetter, SqliteDLQ, open_dlq
from test_cli import invoke
from test_dlq_conformance import entry


def _entries() -> list[DeadLetter]:
    made = []
    for i in range(11):
        if i < 6:
            made.append(entry(i, run_id="nightly", error_type="HTTPError", error_class="recoverable",
                              http_status=503, error_message=f"503 Service Unavailable for order {100 + i}"))
        elif i < 9:
            made.append(entry(i, run_id="nightly", error_type="TimeoutError", error_class="recoverable",
                              error_message=f"timed out after {i} s"))
        else:
            made.append(entry(i, run_id="nightly", error_message=f"amount '{i}x' is not a number"))
    return made


@pytest.fixture
def url(tmp_path: Path) -> str:
    where = tmp_path / "dead letters"  # a space: every printed --dlq must be quoted
    where.mkdir()
    made = f"sqlite:///{where / 'dlq.db'}"
    with SqliteDLQ(where / "dlq.db") as queue:
        queue.send(_entries())
        queue.resolve(["nightly:0"], "order 100 was re-sent by hand", by="alice")
    return made


def _queue(url: str) -> Any:
    return open_dlq(url)


def _command(screen: str, label: str, *, nth: int = 0) -> list[str]:
    """The arguments of the ``nth`` command the screen labels ``label`` (without "batchguard")."""
    found = [line.split(label, 1)[1].strip() for line in screen.splitlines() if line.strip().startswith(label)]
    args = shlex.split(found[nth])
    assert args[0] == "batchguard"
    return args[1:]


def test_review_shows_the_run_the_totals_the_patterns_and_each_entry_with_its_actions(url: str) -> None:
    result = invoke("dlq", "review", "--dlq", url, "--limit", "3")
    assert result.exit_code == 0, result.output
    screen = result.output
    quoted = shlex.quote(url)
    assert f"DEAD LETTER QUEUE REVIEW: {url}" in screen
    assert "Run:          nightly" in screen
    assert "Entries:      10 open, 1 resolved, 0 replayed (11 in all)" in screen
    assert "ERROR PATTERNS of the open entries:" in screen
    assert "1. HTTPError (recoverable, HTTP 503): 5 entries (50.0%)" in screen
    assert "   Message:  <n> Service Unavailable for order <n>" in screen
    assert "   Examples: nightly:1, nightly:2, nightly:3" in screen
    assert "2. TimeoutError (recoverable): 3 entries (30.0%)" in screen
    assert "3. ValueError (permanent): 2 entries (20.0%)" in screen
    assert f"   Run:      batchguard dlq retry --error-type HTTPError --fn MODULE:CALLABLE --dlq {quoted}" in screen
    assert screen.count("   Check:    ") == 3 and screen.count("   Change:   ") == 3
    assert "FAILED ITEMS (1-3 of 10):" in screen
    assert "1. Record 1 (index 1, batch 0)" in screen and "   HTTP:     503" in screen
    assert "   Pattern:  1 (see ERROR PATTERNS)" in screen
    assert "     - attempt 1 (2024-06-01T12:00:00): ValueError: bad value 1" in screen
    assert f"     retry:        batchguard dlq retry nightly:1 --fn MODULE:CALLABLE --dlq {quoted}" in screen
    assert f"     skip:         batchguard dlq skip nightly:1 --reason 'WHY' --dlq {quoted}" in screen
    assert f"     investigate:  batchguard dlq show nightly:1 --dlq {quoted}" in screen
    assert "nightly:0" not in screen.split("FAILED ITEMS")[1]  # resolved: not in the open review
    assert f"more: batchguard dlq review --offset 3 --limit 3 --dlq {quoted}" in screen
    assert "BULK ACTIONS:" in screen


def test_the_commands_the_review_prints_run_verbatim_and_do_what_they_say(url: str) -> None:
    screen = invoke("dlq", "review", "--dlq", url, "--limit", "2", "--fn", "cli_fns:echo").output

    retried = invoke(*_command(screen, "retry:", nth=0), "-q")  # nightly:1
    assert retried.exit_code == 0, retried.output
    assert "1 dead letters succeeded and are marked replayed" in retried.output

    why = _command(screen, "skip:", nth=1)  # nightly:2
    why[why.index("WHY")] = "duplicate of order 101"
    skipped = invoke(*why)
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 dead letter (status resolved: duplicate of order 101); 8 open entries left" in skipped.output

    with _queue(url) as queue:
        assert queue.get("nightly:1").status == "replayed"
        resolved = queue.get("nightly:2")
        assert (resolved.status, resolved.status_reason) == ("resolved", "duplicate of order 101")
        assert queue.count() == 8

    shown = invoke(*_command(screen, "investigate:", nth=1))
    assert shown.exit_code == 0
    assert "Status:        resolved (by " in shown.output and "duplicate of order 101" in shown.output
    assert "Status history:" in shown.output

    more = invoke(*_command(screen, "more:"))
    assert more.exit_code == 0 and "FAILED ITEMS (3-4 of 8):" in more.output

    by_type = invoke(*shlex.split(screen.split("Retry one error type only:\n", 1)[1].splitlines()[0])[1:], "-q")
    assert by_type.exit_code == 0, by_type.output
    with _queue(url) as queue:
        assert queue.count(error_type="HTTPError") == 0
        assert queue.count(status="replayed", error_type="HTTPError") == 4
        assert queue.count() == 5


def test_skip_names_every_unknown_id_changes_nothing_and_needs_a_reason(url: str) -> None:
    result = invoke("dlq", "skip", "nightly:3", "nightly:77", "nope", "--reason", "x", "--dlq", url)
    assert result.exit_code == 2
    assert "nothing was changed" in result.output
    assert "'nightly:77'" in result.output and "'nope'" in result.output
    missing = invoke("dlq", "skip", "nightly:3", "--dlq", url)
    assert missing.exit_code == 2 and "Missing option '--reason'" in missing.output
    blank = invoke("dlq", "skip", "nightly:3", "--reason", "  ", "--dlq", url)
    assert blank.exit_code == 2 and "give a reason" in blank.output
    with _queue(url) as queue:
        assert queue.count() == 10 and queue.count(status="resolved") == 1


def test_retry_takes_ids_or_filters_and_an_entry_not_open_only_with_status_all(url: str) -> None:
    both = invoke("dlq", "retry", "nightly:3", "--error-type", "HTTPError", "--fn", "cli_fns:echo", "--dlq", url)
    assert both.exit_code == 2 and "not both" in both.output
    closed = invoke("dlq", "retry", "nightly:0", "--fn", "cli_fns:echo", "--dlq", url, "-q")
    assert closed.exit_code == 2
    assert "not open: nightly:0 (resolved: order 100 was re-sent by hand)" in closed.output
    assert "--status all" in closed.output
    anyway = invoke("dlq", "retry", "nightly:0", "--status", "all", "--fn", "cli_fns:echo", "--dlq", url, "-q")
    assert anyway.exit_code == 0, anyway.output
    unknown = invoke("dlq", "retry", "nightly:3", "gone:1", "--fn", "cli_fns:echo", "--dlq", url, "-q")
    assert unknown.exit_code == 2 and "'gone:1'" in unknown.output
    with _queue(url) as queue:
        history = queue.get("nightly:0").history
        assert [c.status for c in history] == ["resolved", "replayed"] and history[0].by == "alice"
        assert queue.get("nightly:3").status == "open"


def test_list_count_and_export_take_the_status(url: str, tmp_path: Path) -> None:
    listed = invoke("dlq", "list", "--dlq", url)
    assert "DEAD LETTER QUEUE: 10 open entries" in listed.output and "also 1 resolved (--status)" in listed.output
    assert "nightly:0" not in listed.output
    resolved = invoke("dlq", "list", "--status", "resolved", "--dlq", url)
    assert "1 resolved entries" in resolved.output and "nightly:0" in resolved.output
    as_json = json.loads(invoke("dlq", "list", "--status", "all", "--json", "--limit", "100", "--dlq", url).output)
    assert len(as_json) == 11 and as_json[0]["status"] == "resolved" and as_json[0]["status_by"] == "alice"
    assert invoke("dlq", "count", "--dlq", url).output.strip() == "10"
    assert invoke("dlq", "count", "--status", "all", "--dlq", url).output.strip() == "11"
    bad = invoke("dlq", "count", "--status", "skipped", "--dlq", url)
    assert bad.exit_code == 2 and "'skipped' is not one of" in bad.output
    out = tmp_path / "open.jsonl"
    exported = invoke("dlq", "export", str(out), "--dlq", url)
    assert "exported 10 dead letters to" in exported.output and "(status open; --status all exports" in exported.output
    assert len(out.read_text().splitlines()) == 10


def test_review_json_holds_the_screen(url: str) -> None:
    result = invoke("dlq", "review", "--json", "--limit", "2", "--fn", "cli_fns:echo", "--dlq", url)
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["totals"] == {"open": 10, "resolved": 1, "replayed": 0, "replaying": 0, "all": 11}
    assert data["runs"] == ["nightly"] and data["status"] == "open" and data["next_offset"] == 2
    first = data["patterns"][0]
    assert (first["error_type"], first["http_status"], first["count"]) == ("HTTPError", 503, 5)
    assert first["recommendation"]["kind"] == "server_error"
    assert first["recommendation"]["command"] == (
        f"batchguard dlq retry --error-type HTTPError --fn cli_fns:echo --dlq {shlex.quote(url)}")
    assert [e["id"] for e in data["entries"]] == ["nightly:1", "nightly:2"]
    assert data["entries"][0]["pattern"] == 1 and data["entries"][0]["actions"][0].startswith("retry:")


def test_review_of_a_queue_with_nothing_open_says_so_and_where_the_rest_is(url: str) -> None:
    with _queue(url) as queue:
        queue.resolve([e.id for e in queue.list()], "all triaged")
    result = invoke("dlq", "review", "--dlq", url)
    assert result.exit_code == 0
    assert "No open entries to review." in result.output
    assert f"batchguard dlq review --status all --dlq {shlex.quote(url)}" in result.output
    resolved = invoke("dlq", "review", "--status", "resolved", "--dlq", url, "--limit", "1")
    assert "ERROR PATTERNS of the resolved entries:" in resolved.output
    assert "   Status:   resolved by alice" in resolved.output
    assert "retry anyway: batchguard dlq retry nightly:0 --status all" in resolved.output


def test_review_never_offers_a_bulk_retry_of_unparsed_lines(tmp_path: Path) -> None:
    """dlq retry leaves an input line that did not parse in the queue: a bulk action retrying
    only such lines did nothing. The review offers the retry of a type it can run instead."""
    made = f"sqlite:///{tmp_path / 'dlq.db'}"
    with SqliteDLQ(tmp_path / "dlq.db") as queue:
        queue.send([entry(i, run_id="nightly", error_type="InputParseError", payload=f'{{"id": {i},',
                          error_message=f"line {i + 1}: invalid JSON") for i in range(3)]
                   + [entry(9, run_id="nightly", error_type="KeyError", error_message="'amount'")])
    only_lines = invoke("dlq", "review", "--dlq", made, "--error-type", "InputParseError")
    assert only_lines.exit_code == 0, only_lines.output
    assert "dlq retry" not in only_lines.output.split("BULK ACTIONS:", 1)[1], only_lines.output
    mixed = invoke("dlq", "review", "--dlq", made)
    bulk = mixed.output.split("BULK ACTIONS:", 1)[1]
    assert "--error-type KeyError" in bulk and "retry --error-type InputParseError" not in bulk, bulk


def test_a_retry_reports_next_steps_with_the_fn_it_was_given(url: str) -> None:
    """The replay's report named --fn MODULE:CALLABLE in its retry commands, though the command
    had just been given the function: the printed next step could not be pasted as it was."""
    result = invoke("dlq", "retry", "--error-type", "TimeoutError", "--fn", "cli_fns:fail_odd", "--dlq", url, "-q")
    assert result.exit_code == 1, result.output
    retries = [line for line in result.output.splitlines() if "batchguard dlq retry" in line]
    assert retries and all("--fn cli_fns:fail_odd" in line for line in retries), result.output
    assert "MODULE:CALLABLE" not in result.output


def test_a_retry_that_matches_nothing_says_so_instead_of_every_record_succeeded(url: str) -> None:
    """A mistyped --error-type replayed nothing and printed 'BATCH COMPLETE ... NEXT STEPS: none:
    every record succeeded', as if the dead letters had been fixed."""
    result = invoke("dlq", "retry", "--error-type", "TimeoutEror", "--fn", "cli_fns:echo", "--dlq", url, "-q")
    assert "every record succeeded" not in result.output and "BATCH COMPLETE" not in result.output, result.output
    assert "nothing was replayed: no open dead letter matches error_type=TimeoutEror" in result.output
    assert f"batchguard dlq list --status all --dlq {shlex.quote(url)}" in result.output
