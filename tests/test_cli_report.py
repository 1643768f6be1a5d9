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
    return [line for line in lines[start + 1:] if line.startswith(("review", "replay", "finish", "none"))]


def test_next_steps_name_a_non_default_dlq(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--dlq", "sqlite:///dead.db",
                    "--max-attempts", "1")
    assert result.exit_code == 1, result.output
    assert next_steps(result.output) == [
        "review the 5 dead-lettered records: batchguard dlq list --dlq sqlite:///dead.db",
        "replay them once fixed: batchguard dlq retry --fn MODULE:CALLABLE --dlq sqlite:///dead.db",
    ]
    assert "Dead letters in: sqlite:///dead.db" in result.output


def test_next_steps_leave_out_the_default_dlq(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1")
    assert next_steps(result.output) == [
        "review the 5 dead-lettered records: batchguard dlq list",
        "replay them once fixed: batchguard dlq retry --fn MODULE:CALLABLE",
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
    assert steps[0] == "review the 1 dead-lettered records: batchguard dlq list --dlq sqlite:///jobs.db"


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

    assert next_steps(panel) == next_steps(plain) and len(next_steps(plain)) == 2
    squeezed = " ".join(panel.replace("│", " ").split())
    for label, value in (("Total records", 30), ("Succeeded", 15), ("Failed (DLQ)", 15)):
        assert re.search(rf"^{re.escape(label)}:\s+{value}\b", plain, re.M)
        assert f"{label} {value}" in squeezed
    assert "ValueError: 15 (100.0%)" in plain and "ValueError 15 100.0%" in squeezed
