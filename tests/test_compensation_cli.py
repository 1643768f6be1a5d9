"""``batchguard run --compensate MODULE:UNDO --atomic-batches`` / ``--on-abort compensate`` on a
real SQLite table (issue 10 item 5): what the library does, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from batchguard.cli import main
from batchguard.dlq import SqliteDLQ
from helpers_shop import item_ids, shop


def _input(tmp_path: Path, poison: int | None) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "name": None if i == poison else f"item {i}"}) + "\n"
                              for i in range(12)))
    return source


def test_atomic_batches_from_the_command_line(tmp_path: Path) -> None:
    db, module = shop(tmp_path)
    dlq = tmp_path / "dlq.db"
    result = CliRunner().invoke(main, ["run", str(_input(tmp_path, poison=7)), "--fn", f"{module}:insert",
                                       "--compensate", f"{module}:delete", "--atomic-batches",
                                       "--batch-size", "4", "--dlq", f"sqlite:///{dlq}"])
    assert result.exit_code == 1, result.output
    assert "Compensated:   3 (succeeded, then undone)" in result.output
    assert item_ids(db) == [0, 1, 2, 3, 8, 9, 10, 11]
    with SqliteDLQ(dlq) as queue:
        assert sorted(e.record_index for e in queue.list(limit=100)) == [4, 5, 6, 7]


def test_on_abort_compensate_from_the_command_line_and_resumed_job(tmp_path: Path) -> None:
    db, module = shop(tmp_path, fatal_at=9)
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(_input(tmp_path, poison=None)), "--fn", f"{module}:insert",
                                  "--compensate", f"{module}:delete", "--on-abort", "compensate",
                                  "--batch-size", "4", "--job", "load", "--store", store])
    assert result.exit_code == 1, result.output
    assert item_ids(db) == []  # everything the aborted run did is undone
    saved = json.loads(runner.invoke(main, ["jobs", "status", "load", "--store", store, "--json"]).stdout)
    assert saved["status"] == "aborted"


def test_a_compensate_that_does_not_import_names_the_option(tmp_path: Path) -> None:
    _, module = shop(tmp_path)
    result = CliRunner().invoke(main, ["run", str(_input(tmp_path, poison=None)), "--fn", f"{module}:insert",
                                       "--compensate", "no_such_module_xyz:undo", "--atomic-batches"])
    assert result.exit_code == 2
    assert "--compensate" in result.output and "no_such_module_xyz" in result.output


def test_atomic_batches_without_compensate_is_a_usage_error(tmp_path: Path) -> None:
    _, module = shop(tmp_path)
    result = CliRunner().invoke(main, ["run", str(_input(tmp_path, poison=None)), "--fn", f"{module}:insert",
                                       "--atomic-batches"])
    assert result.exit_code == 2
    assert "atomic_batches=True needs compensate=" in result.output
