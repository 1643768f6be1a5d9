"""The phase options (--validate, --mode, --sample-count, --sample-key) from a --config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchguard import _demo
from batchguard.cli import main


@pytest.fixture
def demo_data(tmp_path: Path) -> Path:
    data = tmp_path / "demo.jsonl"
    _demo.write_dataset(data, 600)
    return data


def test_a_config_file_sets_the_phase_and_the_command_line_wins(tmp_path: Path, demo_data: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a CLI sample keeps its outcomes in ./batchguard.db, the default store
    config = tmp_path / "run.toml"
    config.write_text('validate = "batchguard._demo:validate"\nmode = "dry-run"\n'
                      "sample-count = 4\n", encoding="utf-8")
    runner = CliRunner()
    dry = runner.invoke(main, ["run", str(demo_data), "--fn", "batchguard._demo:process",
                               "--config", str(config), "--json", "-q",
                               "--dlq", f"sqlite:///{tmp_path / 'q.db'}"])
    assert dry.exit_code == 1, dry.output  # the demo data has blocked records
    report = json.loads(dry.stdout)
    assert report["blocked"] > 0 and report["ready"] > 0  # a dry-run's ValidationReport, fn never ran

    sample = runner.invoke(main, ["run", str(demo_data), "--fn", "batchguard._demo:process",
                                  "--config", str(config), "--mode", "sample", "--json", "-q",
                                  "--dlq", f"sqlite:///{tmp_path / 'q.db'}"])
    assert sample.exit_code == 0, sample.output
    assert len(json.loads(sample.stdout)["items"]) == 4  # sample-count from the file, mode from the line


def test_an_unknown_phase_value_in_a_config_file_is_a_usage_error(tmp_path: Path, demo_data: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('mode = "dryrun"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(demo_data), "--fn", "batchguard._demo:process",
                                       "--config", str(config)])
    assert result.exit_code == 2
    assert "mode" in result.output and "dryrun" in result.output
