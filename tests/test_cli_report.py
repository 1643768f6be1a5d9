"""The command's final report: the report model rendered as text off a terminal and as a rich
panel on one, with next steps that name a non-default ``--dlq`` / ``--store``."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

import batchguard.cli.report as cli_report
from batchguard.cli import main


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def write_jsonl(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))


def next_steps(output: str) -> list[str]:
    """The next steps of a plain or rich report, one line each, whitespace squeezed. A terminal
    shows a step's action (wrapped at word boundaries) with its command alone on the line below
    it: those lines are joined back, so both renderings compare equal."""
    lines = [" ".join(line.replace("│", " ").split()) for line in output.splitlines()]
    start = next(i for i, line in enumerate(lines) if line in ("NEXT STEPS:", "Next steps"))
    steps: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith(("review", "retry", "or retry", "finish", "none")):
            steps.append(line)
        elif steps and line and "batchguard " not in steps[-1]:
            steps[-1] += f" {line}"
    return steps


def run_id_of(output: str) -> str:
    found = re.search(r"Run(?: ID:)?\s+(run-\S+)", output)
    assert found, output
    return found.group(1)


def test_next_steps_name_a_non_default_dlq(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--dlq", "sqlite:///dead.db",
                    "--max-attempts", "1")
    assert result.exit_code == 1, result.output
    run = run_id_of(result.output)
    assert next_steps(result.output) == [
        f"review the 5 dead-lettered records, pattern by pattern: batchguard dlq review --run-id {run} "
        "--fn cli_fns:fail_odd --dlq sqlite:///dead.db",
        "retry the 5 ValueError records (validation) once the input or --fn is fixed: batchguard dlq retry "
        f"--error-type ValueError --run-id {run} --fn cli_fns:fail_odd --dlq sqlite:///dead.db",
    ]
    assert "Dead letters in: sqlite:///dead.db" in result.output


def test_next_steps_leave_out_the_default_dlq(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1")
    run = run_id_of(result.output)
    assert next_steps(result.output) == [
        f"review the 5 dead-lettered records, pattern by pattern: batchguard dlq review --run-id {run} "
        "--fn cli_fns:fail_odd",
        "retry the 5 ValueError records (validation) once the input or --fn is fixed: batchguard dlq retry "
        f"--error-type ValueError --run-id {run} --fn cli_fns:fail_odd",
    ]


def test_a_stopped_job_is_resumed_from_its_store(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 40)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fatal_when_asked", "--job", "nightly",
                    "--store", "sqlite:///jobs.db", "--batch-size", "10", env={"BG_FATAL_AT": "25"})
    assert result.exit_code == 1 and "ABORTED" in result.output
    steps = next_steps(result.output)
    assert re.fullmatch(r"finish the \d+ records not processed: batchguard jobs resume nightly "
                        r"--store sqlite:///jobs.db", steps[-1]), steps
    # Without --dlq a job's dead letters are in its store: the commands name it.
    assert steps[:3] == [
        "review the 1 dead-lettered records, pattern by pattern: batchguard dlq review --job nightly "
        "--fn cli_fns:fatal_when_asked --dlq sqlite:///jobs.db",
        "retry the 1 MemoryError records (unknown) once the input or --fn is fixed: batchguard dlq retry "
        "--error-type MemoryError --job nightly --fn cli_fns:fatal_when_asked --dlq sqlite:///jobs.db",
        "or retry every failed record of job nightly: batchguard jobs retry-failed nightly "
        "--fn cli_fns:fatal_when_asked --store sqlite:///jobs.db --dlq sqlite:///jobs.db",
    ]


@pytest.mark.parametrize("dlq", [None, "sqlite:///dead.db"])
def test_a_terminal_shows_what_a_pipe_prints(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                             dlq: str | None) -> None:
    write_jsonl(workdir / "in.jsonl", 30)
    args = ["run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1", "--batch-size", "7"]
    args += ["--dlq", dlq] if dlq else []
    plain = invoke(*args).output

    terminal = Console(record=True, width=200, force_terminal=True)
    monkeypatch.setattr(cli_report, "is_tty", lambda stream: True)
    monkeypatch.setattr(cli_report, "console", lambda: terminal)
    rich_result = invoke(*args)
    panel = terminal.export_text()
    assert rich_result.exit_code == 1 and "╭" in panel and "NEXT STEPS" not in panel

    same_run = next_steps(panel.replace(run_id_of(panel), run_id_of(plain)))
    assert same_run == next_steps(plain) and len(next_steps(plain)) == 2
    # Outside the panel, one line each however long: a command is copied whole.
    assert not [line for line in panel.splitlines() if "batchguard dlq" in line and "│" in line
                and line.lstrip("│ ").startswith(("review", "retry"))]
    squeezed = " ".join(panel.replace("│", " ").split())
    for label, value in (("Total records", 30), ("Succeeded", 15), ("Failed (DLQ)", 15)):
        assert re.search(rf"^{re.escape(label)}:\s+{value}\b", plain, re.M)
        assert f"{label} {value}" in squeezed
    assert "ValueError: 15 (100.0%)" in plain and "ValueError 15 100.0%" in squeezed


# --------------------------------------------------------------------------- failure patterns


def test_the_report_shows_failure_patterns_with_commands_that_carry_the_runs_options(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--dlq", "sqlite:///my dead.db",
                    "--max-attempts", "1", "--success-threshold", "0.9")
    assert result.exit_code == 1, result.output
    run = run_id_of(result.output)
    out = result.output
    assert "Judged against: success threshold 90.0%: success rate 50.0%, NOT met: the run failed" in out
    assert "FAILURE PATTERNS (1, most frequent first):\n1. ValueError, permanent: 5 (100.0%)" in out
    assert "   message:  odd id <n>\n   examples: 1, 3, 5\n   likely:   validation\n" in out
    assert (f"   run:      batchguard dlq review --error-type ValueError --run-id {run} "
            "--dlq 'sqlite:///my dead.db'") in out


def test_report_json_writes_the_report_to_a_private_file(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10)
    (workdir / "out").mkdir()
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1",
                    "--report-json", "out/report.json", "--job", "nightly", "--store", "sqlite:///jobs.db")
    assert result.exit_code == 1, result.output
    path = workdir / "out" / "report.json"
    assert path.stat().st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    assert (data["total"], data["failed"], data["job"]["name"]) == (10, 5, "nightly")
    [pattern] = data["patterns"]
    assert (pattern["error_type"], pattern["template"], pattern["count"], pattern["example_ids"]) == (
        "ValueError", "odd id <n>", 5, [1, 3, 5])
    assert pattern["recommendation"]["command"] == (
        "batchguard dlq review --error-type ValueError --job nightly --dlq sqlite:///jobs.db")
    commands = [step["command"] for step in data["next_steps"]]
    assert ("batchguard jobs retry-failed nightly --fn cli_fns:fail_odd --store sqlite:///jobs.db "
            "--dlq sqlite:///jobs.db") in commands
    # The same document --json prints (but the run and its timings).
    again = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1", "--json", "-q",
                   "--report-json", "out/report.json")
    printed = json.loads(again.stdout)
    assert json.loads(path.read_text()) == printed


@pytest.mark.parametrize(("where", "says"), [
    ("missing/report.json", "does not exist"),
    (".", "is a directory"),
])
def test_an_unwritable_report_path_is_a_usage_error_before_the_run(workdir: Path, where: str, says: str) -> None:
    write_jsonl(workdir / "in.jsonl", 3)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--report-json", where,
                    "--dlq", "sqlite:///dead.db")
    assert result.exit_code == 2 and "--report-json" in result.output and says in result.output, result.output
    assert not (workdir / "dead.db").exists()  # nothing ran


def test_a_directory_it_cannot_write_in_is_refused_before_the_run(workdir: Path) -> None:
    # /sys refuses a new file even to root (a chmod 0500 directory does not stop root).
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux's /sys")
    write_jsonl(workdir / "in.jsonl", 3)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--report-json", "/sys/report.json",
                    "--dlq", "sqlite:///dead.db")
    assert result.exit_code == 2 and "cannot write /sys/report.json" in result.output, result.output
    assert not (workdir / "dead.db").exists()


def test_a_file_in_place_of_the_directory_is_refused(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 3)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--report-json", "in.jsonl/r.json")
    assert result.exit_code == 2 and "is not a directory" in result.output, result.output


def down_until_fixed(record: dict[str, Any]) -> dict[str, Any]:
    """A service that refuses odd ids until $BG_FIXED is set (the --fn of the test below)."""
    if int(record["id"]) % 2 and not os.environ.get("BG_FIXED"):
        raise ConnectionError(f"connection refused by 10.0.0.{record['id']}:443")
    return record


def test_the_next_steps_work_when_pasted(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 12)
    dlq, store = "sqlite:///my dead.db", "sqlite:///my jobs.db"
    result = invoke("run", "in.jsonl", "--fn", "test_cli_report:down_until_fixed", "--job", "night run",
                    "--store", store, "--dlq", dlq, "--max-attempts", "1", "-q")
    assert result.exit_code == 1, result.output
    commands = [line.split(": ", 1)[1] for line in next_steps(result.output)]
    review, retry_type, retry_job = (shlex.split(c) for c in commands)
    assert review[:3] == ["batchguard", "dlq", "review"] and review[review.index("--dlq") + 1] == dlq
    assert retry_type[:5] == ["batchguard", "dlq", "retry", "--error-type", "ConnectionError"]
    assert retry_job[:4] == ["batchguard", "jobs", "retry-failed", "night run"]
    assert retry_job[retry_job.index("--store") + 1] == store

    shown = invoke(*review[1:])
    assert shown.exit_code == 0 and "ConnectionError" in shown.output, shown.output
    assert "connection refused by <ip>:<n>" in shown.output, shown.output
    fixed = invoke(*retry_type[1:], env={"BG_FIXED": "1"})
    assert fixed.exit_code == 0, fixed.output
    assert "6 dead letters succeeded" in fixed.output, fixed.output
    after = invoke("dlq", "count", "--dlq", dlq, "--status", "open")
    assert after.output.strip().endswith("0"), after.output
