"""The README's walkthrough, driven as a person does it (issue 9 item 6 and its "Must show"):
``batchguard run`` in a pseudo-terminal read as a screen (pexpect + pyte), its final report's
failure patterns, recommendations and NEXT STEPS, then each next-step command pasted as printed
(``shlex.split`` of the screen's text) and what it did to the dead-letter queue.

The callback is the demo's (``batchguard._demo``): a bad email raises ValueError, a missing
amount KeyError, a cut-short line is an InputParseError; with ``WALK_FIXED=1`` it is the fixed
version the operator deploys before pasting the retry commands.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pexpect")
pytest.importorskip("pyte")

from batchguard._demo import write_dataset
from test_dashboard_pty import Terminal, environment

COLS = 100
"""The README's screens are 100 columns wide: a printed command must fit on one line of them."""

BAD_EMAIL = (3, 17, 31)
NO_AMOUNT = (5, 25)
CUT_SHORT_LINE = 21
"""Line 21 (record 20's place) is cut short, as the demo's corrupt lines are."""

WALK_FNS = '''\
import os

from batchguard._demo import process, process_fixed


def handle(record):
    """The demo's callback, or its fixed version once the operator deployed the fix."""
    return process_fixed(record) if os.environ.get("WALK_FIXED") else process(record)
'''


def write_input(path: Path) -> None:
    lines = []
    for i in range(40):
        record: dict[str, object] = {"id": i, "email": f"user{i}@example.com", "amount": i * 10}
        if i in BAD_EMAIL:
            record["email"] = f"user{i} at example.com"
        if i in NO_AMOUNT:
            del record["amount"]
        lines.append(json.dumps(record))
    lines[CUT_SHORT_LINE - 1] = '{"id": 20, "email": "user20@example.com", "amount": '
    path.write_text("\n".join(lines) + "\n")


class WideTerminal(Terminal):
    """The dashboard test's terminal, COLS wide and tall enough to keep the whole report."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        pexpect = pytest.importorskip("pexpect")
        pyte = pytest.importorskip("pyte")
        self.child = pexpect.spawn(sys.executable, args, cwd=str(cwd), env=env, dimensions=(200, COLS),
                                   encoding="utf-8", timeout=60)
        self.screen = pyte.Screen(COLS, 200)
        self.stream = pyte.Stream(self.screen)
        self.ended = False


def next_steps(screen: str) -> list[tuple[str, str]]:
    """(what, command) for each step under "Next steps": the action on its line, the command
    alone on the next one, indented, as a person selects it to copy."""
    lines = screen.splitlines()
    start = lines.index("Next steps") + 1
    steps: list[tuple[str, str]] = []
    action: list[str] = []
    for n in range(start, len(lines)):
        line = lines[n]
        if not line.startswith("  "):
            break
        assert len(line) < COLS, f"a line the terminal wrapped: {line!r}"  # it filled the row
        if not line.startswith("    "):
            action.append(line.strip())  # the action's words, wrapped at word boundaries
            continue
        assert line.startswith("    batchguard ") and action and action[-1].endswith(":"), (action, line)
        steps.append((" ".join(action).rstrip(":"), line.strip()))
        action = []
    assert not action, f"an action without its command: {action}"
    return steps


def batchguard(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``command`` as pasted into a shell, ``batchguard`` being this interpreter's."""
    argv = shlex.split(command)
    assert argv[0] == "batchguard", command
    return subprocess.run([sys.executable, "-m", "batchguard", *argv[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=environment(**env))


def statuses(cwd: Path) -> Counter[tuple[str, str]]:
    """(error type, status) of every entry of the job's DLQ."""
    listed = batchguard("batchguard dlq list --status all --json", cwd)
    assert listed.returncode == 0, listed.stderr
    return Counter((entry["error_type"], entry["status"]) for entry in json.loads(listed.stdout))


def test_the_final_report_s_next_steps_work_when_pasted(tmp_path: Path) -> None:
    write_input(tmp_path / "orders.jsonl")
    (tmp_path / "walk_fns.py").write_text(WALK_FNS)
    term = WideTerminal(["-m", "batchguard", "run", "orders.jsonl", "--fn", "walk_fns:handle", "--job", "walk",
                         "--batch-size", "10", "--concurrency", "2", "--base-delay", "0"],
                        tmp_path, environment())
    assert term.finish() == 1  # records failed: not a success
    screen = term.text()

    # The report: the patterns by type with their counts, each with its recommendation.
    assert "Failure patterns (3, most frequent first)" in screen, screen
    assert "1. ValueError, permanent  3 records (50.0%)" in screen
    assert "2. KeyError, permanent  2 records (33.3%)" in screen
    assert "3. InputParseError, permanent  1 records (16.7%)" in screen or \
        "3. InputParseError, permanent  1 record (16.7%)" in screen
    assert screen.count("likely   validation") == 3 and screen.count("change   fix the input") == 3
    assert "Traceback" not in screen

    steps = next_steps(screen)
    assert [what for what, _ in steps] == [
        "review the 6 dead-lettered records, pattern by pattern",
        "retry the 3 ValueError records (validation) once the input or --fn is fixed",
        "retry the 2 KeyError records (validation) once the input or --fn is fixed",
        "fix the 1 InputParseError records in the input, then skip their entries (a retry would not run "
        "them as fixed)",
        "or retry every failed record of job walk",
    ], screen
    assert statuses(tmp_path) == {("ValueError", "open"): 3, ("KeyError", "open"): 2,
                                  ("InputParseError", "open"): 1}

    # Pasted as printed, after deploying the fix: the reviews show, the retries replay.
    done = {}
    for what, command in steps:
        done[what] = batchguard(command, tmp_path, WALK_FIXED="1")
    review, by_value, by_key, parse_review, every = done.values()
    assert review.returncode == 0 and "ERROR PATTERNS" in review.stdout, review.stdout + review.stderr
    assert by_value.returncode == 0 and "3 dead letters succeeded" in by_value.stdout, by_value.stdout
    assert by_key.returncode == 0 and "2 dead letters succeeded" in by_key.stdout, by_key.stdout
    assert parse_review.returncode == 0 and "InputParseError" in parse_review.stdout
    # By then only the unparsed line is left, which a retry leaves alone, and says so.
    assert "1 were not replayed" in every.stdout or "1 was not replayed" in every.stdout, every.stdout
    assert statuses(tmp_path) == {("ValueError", "replayed"): 3, ("KeyError", "replayed"): 2,
                                  ("InputParseError", "open"): 1}


def test_jobs_status_of_an_unparsed_line_offers_only_commands_that_act_on_it(tmp_path: Path) -> None:
    """``jobs status NAME --record FILE:LINE`` for a line that did not parse printed "retry it:
    batchguard dlq retry ID --fn ...", which leaves such an entry in the queue and exits 1; its
    step is to fix the line in the input and skip the entry, as ``dlq review`` says."""
    write_input(tmp_path / "orders.jsonl")
    (tmp_path / "walk_fns.py").write_text(WALK_FNS)
    ran = batchguard("batchguard run orders.jsonl --fn walk_fns:handle --job walk --base-delay 0 -q", tmp_path)
    assert ran.returncode == 1, ran.stderr
    line_id = f"{tmp_path / 'orders.jsonl'}:{CUT_SHORT_LINE}"
    status = batchguard(f"batchguard jobs status walk --record {shlex.quote(line_id)}", tmp_path)
    assert status.returncode == 0 and "DEAD-LETTERED" in status.stdout, status.stdout + status.stderr
    assert "batchguard dlq retry" not in status.stdout and "fix it:    correct the line" in status.stdout
    commands = [line.split(":", 1)[1].strip() for line in status.stdout.splitlines()
                if line.strip().startswith(("details:", "skip it:"))]
    assert len(commands) == 2, status.stdout
    for command in commands:
        pasted = batchguard(command, tmp_path)
        assert pasted.returncode == 0, command + "\n" + pasted.stdout + pasted.stderr
    assert statuses(tmp_path)[("InputParseError", "resolved")] == 1


def test_a_batch_row_stays_one_line_on_a_100_column_terminal(tmp_path: Path) -> None:
    """With 20 batches of 1,000 a row in a retry ("Batch  1/20 (items 1-1,000) ... retrying 1
    (0.4 s elapsed, 6 failed)") is over 100 columns: it wrapped onto a second line, which the
    fold's arithmetic (one line a row) does not count, so a full terminal scrolled instead of
    redrawing. A row is cut with "…" at the terminal's edge instead."""
    write_dataset(tmp_path / "demo.jsonl", 20_000)
    term = WideTerminal(["-m", "batchguard", "run", "demo.jsonl", "--fn", "batchguard._demo:process",
                         "--base-delay", "3", "--jitter", "none"], tmp_path, environment())
    def first_batch_retrying_with_failures(screen: str) -> bool:
        first = screen.split("Batch  1/20", 1)[-1].split("Batch  2/20")[0]  # its row, wrapped or not
        return "retrying" in first and "elapsed," in first and "ETA " in screen  # failures to show

    screen = term.wait_for(first_batch_retrying_with_failures)
    lines = screen.splitlines()
    rules = [n for n, line in enumerate(lines) if line.startswith("──")]
    batch_region = lines[rules[0] + 1:rules[1]]
    assert batch_region and all(line.startswith(("Batch ", "⏸ ", "✓ ", "… ")) for line in batch_region), screen
    row = batch_region[0]
    assert row.startswith("Batch  1/20 (items 1-1,000)") and "retrying" in row and len(row) <= COLS, row
    term.child.terminate(force=True)
