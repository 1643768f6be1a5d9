"""The command's final report: the report model rendered as text off a terminal and as a rich
panel on one, with next steps that name a non-default ``--dlq`` / ``--store``."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    """The next-step lines of a plain or rich report, whitespace squeezed."""
    lines = [" ".join(line.replace("│", " ").split()) for line in output.splitlines()]
    start = next(i for i, line in enumerate(lines) if line in ("NEXT STEPS:", "Next steps"))
    return [line for line in lines[start + 1:] if line.startswith(("review", "retry", "or retry", "finish", "none"))]


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
        "--dlq sqlite:///dead.db",
        "retry the 5 ValueError records (validation) once the input or --fn is fixed: batchguard dlq retry "
        f"--error-type ValueError --run-id {run} --fn cli_fns:fail_odd --dlq sqlite:///dead.db",
    ]
    assert "Dead letters in: sqlite:///dead.db" in result.output


def test_next_steps_leave_out_the_default_dlq(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1")
    run = run_id_of(result.output)
    assert next_steps(result.output) == [
        f"review the 5 dead-lettered records, pattern by pattern: batchguard dlq review --run-id {run}",
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
        "--dlq sqlite:///jobs.db",
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
