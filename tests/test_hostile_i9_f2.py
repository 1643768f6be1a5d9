"""Issue 9, small defects a hostile tester found in the operator's workflow (F2).

* ``dlq show`` / ``skip`` / ``remove`` / ``retry`` with an unknown id told the user to run
  ``batchguard dlq list --status all`` without the ``--dlq`` they had given, so the command they
  copied listed the default queue, not theirs: it now carries the ``--dlq``, shell-quoted.
* After Ctrl-C with a password in a Redis ``--dlq``, the hint named PGPASSWORD and ~/.pgpass
  (libpq's); redis-py reads no password from the environment, so it now says so.
* A dry-run's dashboard and progress lines read "succeeded 30 | failed 0" while 10 records were
  blocked: a dry-run runs checks, not --fn, so they say how many records were checked.
* The final snapshot of a generator run without ``total=`` said 0 % complete: it is 100 % when
  the input ran out and no record was left pending (an aborted run's stays below).
* Ctrl-C during ``dlq retry`` / ``jobs retry-failed`` said "entries of finished batches are updated" and no more: it now
  says how many entries were marked replayed, how many stay open, and the command to continue.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from batchguard import BatchProgress, RetryPolicy, ValidationIssue, run_batches
from batchguard.cli.progress import ProgressView
from batchguard.cli.run import _interrupted
from test_cli import invoke, write_jsonl


def always_fails(record: int) -> int:
    raise ValueError(f"record {record} is invalid")


@pytest.fixture
def spaced_queue(workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'my queue.db'}"
    run_batches(range(3), always_fails, dlq=url, retry=RetryPolicy(max_attempts=1))
    return url


@pytest.mark.parametrize("command", [
    ["show", "ffffffff"], ["show", "fff"], ["skip", "ffffffff", "--reason", "x"], ["remove", "ffffffff"],
    ["retry", "ffffffff", "--fn", "cli_fns:echo"]])
def test_unknown_id_message_names_the_dlq_given(spaced_queue: str, command: list[str]) -> None:
    result = invoke("dlq", *command, "--dlq", spaced_queue)
    assert result.exit_code == 2, result.output
    suggested = f"batchguard dlq list --status all --dlq {shlex.quote(spaced_queue)}"
    assert suggested in result.output, result.output
    # The suggested command, run as printed, lists the entries of that queue.
    listed = invoke(*shlex.split(suggested)[1:])
    assert listed.exit_code == 0 and "record 0 is invalid" in listed.output, listed.output


@pytest.mark.parametrize(("dlq", "postgres_hint", "redis_hint"), [
    ("redis://:s3cret@127.0.0.1:6379/0", False, True),
    ("postgresql://app:s3cret@127.0.0.1:5432/jobs", True, False),
    ("host=127.0.0.1 password=s3cret dbname=jobs", True, False),
])
def test_ctrl_c_password_hint_is_the_one_of_the_url_scheme(
        workdir: Path, dlq: str, postgres_hint: bool, redis_hint: bool) -> None:
    # After Ctrl-C of a job whose --dlq hides a password, the resume command shows *** and a
    # hint says how to supply it: PGPASSWORD/~/.pgpass are libpq's; redis-py reads neither.
    message, command = _interrupted("nightly", f"sqlite:///{workdir / 'jobs.db'}", dlq)
    assert command is not None and "***" in command and "s3cret" not in message
    assert ("PGPASSWORD" in message) is postgres_hint, message
    assert ("Redis one can only be given in the URL" in message) is redis_hint, message


def _third_blocked(record: int) -> list[ValidationIssue]:
    return [ValidationIssue("value", "must not be a multiple of 3", "fix it")] if record % 3 == 0 else []


def test_dry_run_progress_counts_checks_not_successes(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots: list[BatchProgress] = []
    report = run_batches(range(30), lambda r: r, mode="dry-run", validate=_third_blocked,
                         batch_size=10, on_progress=snapshots.append)
    assert report.blocked == 10
    # The dashboard, on a terminal.
    view = ProgressView(title="batchguard", mode="dry-run")
    for snapshot in snapshots:
        view.board.add(snapshot)
    console = Console(record=True, width=120, force_terminal=True)
    console.print(view._render(snapshots[-1]))
    board = console.export_text()
    assert "succeeded" not in board and "checked 30" in board, board
    # The plain lines, off a terminal: every one printed at once.
    monkeypatch.setattr("batchguard.cli.progress.PLAIN_PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr("batchguard.cli.progress.PLAIN_BATCH_EVERY_S", 0.0)
    plain = ProgressView(title="batchguard", mode="dry-run", console=Console(force_terminal=False))
    for snapshot in [*snapshots[:-1], replace(snapshots[-1], final=False)]:
        plain(snapshot)
    lines = capsys.readouterr().err
    assert "succeeded" not in lines and "| checked 30 |" in lines, lines
    assert "batch 3/3 done | checked 10 |" in lines, lines

def _fatal_at_15(record: int) -> int:
    if record == 15:
        raise MemoryError("fatal")
    return record


@pytest.mark.parametrize("engine", ["native", "python"])
def test_final_snapshot_of_a_generator_without_total_is_100_percent(engine: str) -> None:
    snapshots: list[BatchProgress] = []
    run_batches((i for i in range(25)), lambda r: r, batch_size=10, engine=engine,
                on_progress=snapshots.append)
    last = snapshots[-1]
    assert last.final and last.total is None and last.percent_complete == 100.0
    assert all(s.percent_complete == 0.0 for s in snapshots[:-1])  # unknown until the end
    aborted: list[BatchProgress] = []
    report = run_batches((i for i in range(100)), _fatal_at_15, batch_size=10, engine=engine,
                         on_progress=aborted.append)
    assert report.status == "aborted" and aborted[-1].final and aborted[-1].percent_complete < 100.0


def interrupted_at_1200(record: int) -> int:
    """A --fn the operator stops with Ctrl-C at record 1,200 (in the replay's second batch)."""
    if record == 1200:
        raise KeyboardInterrupt
    return record


def test_ctrl_c_during_dlq_retry_says_how_many_were_replayed_and_how_to_continue(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'my queue.db'}"
    # A replay marks the entries of finished batches (1,000 records): the first one finishes.
    run_batches(range(1500), always_fails, dlq=url, retry=RetryPolicy(max_attempts=1))
    fn = "test_hostile_i9_f2:interrupted_at_1200"
    result = invoke("dlq", "retry", "--fn", fn, "--dlq", url, "--stage", "process", "--max-attempts", "1")
    assert result.exit_code == 130, result.output
    open_left = invoke("dlq", "count", "--dlq", url).output.strip()
    replayed = invoke("dlq", "count", "--dlq", url, "--status", "replayed").output.strip()
    assert int(replayed) > 0 and int(open_left) + int(replayed) == 1500
    assert f"{int(replayed):,} dead letters were marked replayed" in result.output, result.output
    assert f"{int(open_left):,} stay open" in result.output, result.output
    command = (f"batchguard dlq retry --fn {fn} --dlq {shlex.quote(url)} --stage process")
    assert command in result.output, result.output


def interrupted_at_id_2401(record: dict[str, int]) -> dict[str, int]:
    """A fixed --fn the operator stops with Ctrl-C at the 1,201st odd id (the replay's 2nd batch)."""
    if record["id"] == 2401:
        raise KeyboardInterrupt
    return record


def test_ctrl_c_during_jobs_retry_failed_says_how_many_were_replayed(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 2600)
    store = f"sqlite:///{workdir / 'job store.db'}"
    first = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--job", "nightly", "--store", store,
                   "--max-attempts", "1", "-q")
    assert first.exit_code == 1, first.output
    fn = "test_hostile_i9_f2:interrupted_at_id_2401"
    result = invoke("jobs", "retry-failed", "nightly", "--fn", fn, "--store", store, "--max-attempts", "1")
    assert result.exit_code == 130, result.output
    # Every record that succeeded before the Ctrl-C is marked, also those of the batch it
    # stopped (LF1 item 3): ids 1..2399, 1,200 of them; 2401..2599 stay open.
    assert "1,200 dead letters were marked replayed" in result.output, result.output
    assert "100 stay open" in result.output, result.output
    command = f"batchguard jobs retry-failed nightly --fn {fn} --store {shlex.quote(store)}"
    assert command in result.output, result.output
