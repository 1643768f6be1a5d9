"""Issue 9 item 3 (review): the rich panel printed each pattern's "run" command in a cell inside
its border, so at 80 columns the command wrapped inside the panel and a person copying it got two
pieces (and the border's characters). The commands are printed below the panel, each alone on
its line with soft_wrap (the terminal wraps it, a copy is whole), as NEXT STEPS are."""

from __future__ import annotations

from rich.console import Console

from batchguard import RetryPolicy, run_batches
from batchguard._report.model import CliContext, build
from batchguard._report.panel import render_panel, render_steps

ONCE = RetryPolicy(max_attempts=1)


def picky(record: int) -> int:
    if record % 5 == 0:
        raise KeyError(f"no field for {record}")
    if record % 3 == 0:
        raise ValueError(f"bad value {record}")
    return record


def test_pattern_commands_are_whole_lines_at_80_columns() -> None:
    report = run_batches(range(60), picky, retry=ONCE, job=None)
    cli = CliContext(dlq_url="sqlite:///some/long/path/to/the/dead-letters.db", store_url=None,
                     default_url="sqlite:///batchguard.db", fn_spec="my_project.handlers:process_fixed")
    model = build(report, cli=cli)
    commands = [model.pattern_command(p) for p in model.patterns]
    assert commands and all(c and len(c) > 80 for c in commands), commands
    console = Console(record=True, width=80, force_terminal=False)
    console.print(render_panel(model))
    for line in render_steps(model):
        console.print(line, soft_wrap=True)
    lines = [line.strip() for line in console.export_text().splitlines()]
    for command in commands:
        assert command in lines, (command, lines)  # one line, nothing else on it: copied whole
    panel = console.export_text().split("╰")[0]
    assert not any(command in " ".join(panel.split()) for command in commands)  # not in a cell
