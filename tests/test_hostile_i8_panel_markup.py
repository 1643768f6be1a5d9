"""The rich panel the CLI prints on a terminal shows record ids, error messages, error types,
the job name and the DLQ URL as the text they are, never as rich markup (hostile tester,
issue 8).

Before the fix they went into the panel's tables as plain strings, which rich parses as markup:
an error message holding ``[/]`` or ``[/items]`` (a JSON path, a regex) raised MarkupError
after the run had finished, so ``batchguard run`` on a terminal ended in a traceback instead of
its report, and one holding ``[bold]`` or ``[link=...]`` was restyled, its brackets dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

import batchguard
from batchguard._report.model import CliContext, build
from batchguard._report.panel import render_panel
from batchguard.cli import main

MESSAGES = ["no field at [/items]", "[/] closes nothing", "[bold red]looks styled[/bold red]",
            "[link=https://example.invalid]click[/link]"]




def _fail(record: Any) -> Any:
    raise ValueError(MESSAGES[record])


@pytest.mark.parametrize("engine", ["native", "python"])
def test_the_panel_shows_user_text_as_it_is(engine: str) -> None:
    report = batchguard.run_batches(range(len(MESSAGES)), _fail, engine=engine,
                                    id_of=lambda r: f"id[/{r}]", retry=batchguard.RetryPolicy(max_attempts=1))
    model = build(report, cli=CliContext(dlq_url="sqlite:///dead[/x].db", store_url=None,
                                         default_url="sqlite:///batchguard.db"))
    console = Console(force_terminal=True, width=400, record=True, color_system=None)
    console.print(render_panel(model))
    text = console.export_text()
    for n, message in enumerate(MESSAGES):
        assert message in text, text
        assert f"id[/{n}]" in text, text
    assert "sqlite:///dead[/x].db" in text, text


def test_dlq_list_and_jobs_list_tables_show_user_text_as_it_is(monkeypatch: pytest.MonkeyPatch,
                                                                workdir: Path) -> None:
    # Added with the second fix: `batchguard dlq list` / `jobs list` on a terminal print rich
    # tables of error messages and job names through cli.console.table, parsed as markup too.
    import batchguard.cli.console as cli_console

    terminal = Console(force_terminal=True, width=400, record=True, color_system=None)
    monkeypatch.setattr(cli_console, "is_tty", lambda stream: True)
    monkeypatch.setattr(cli_console, "console", lambda: terminal)
    batchguard.run_batches(range(len(MESSAGES)), _fail, dlq="sqlite:///dead[red].db", job="job[/j]",
                           store="sqlite:///jobs[red].db", retry=batchguard.RetryPolicy(max_attempts=1))
    listed = CliRunner().invoke(main, ["dlq", "list", "--dlq", "sqlite:///dead[red].db"])
    jobs = CliRunner().invoke(main, ["jobs", "list", "--store", "sqlite:///jobs[red].db"])
    assert listed.exit_code == 0 and jobs.exit_code == 0, (listed.output, jobs.output)
    text = terminal.export_text()
    assert all(message in text for message in MESSAGES), text
    assert "job[/j]" in text and "jobs[red].db" in text, text
