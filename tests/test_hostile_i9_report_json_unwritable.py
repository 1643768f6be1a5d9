"""Hostile: ``--report-json`` onto a device that fills up (issue 9 item 3).

The path is checked before the run; one that cannot be written when the run ends (a full disk:
/dev/full here) printed an error and exited 0, so a script that waits for the report and
trusts the exit code read success and found no file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchguard.cli import main


@pytest.mark.skipif(not os.path.exists("/dev/full") or not os.access("/dev/full", os.W_OK),
                    reason="needs a writable /dev/full")
def test_a_report_that_cannot_be_written_fails_the_command(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": n}) + "\n" for n in range(5)))
    args = ["run", str(data), "--fn", "cli_fns:echo", "--dlq", f"sqlite:///{tmp_path / 'q.db'}", "-q"]
    ok = CliRunner().invoke(main, [*args, "--report-json", str(tmp_path / "r.json")])
    assert ok.exit_code == 0, ok.output
    full = CliRunner().invoke(main, [*args, "--report-json", "/dev/full"])
    assert "cannot write the report to /dev/full" in full.output
    assert full.exit_code == 1, full.output


@pytest.mark.skipif(not os.path.exists("/dev/full") or not os.access("/dev/full", os.W_OK),
                    reason="needs a writable /dev/full")
@pytest.mark.parametrize("mode", ["dry-run", "sample"])
def test_a_phase_report_that_cannot_be_written_fails_the_command(tmp_path: Path, mode: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a CLI sample keeps its outcomes in ./batchguard.db, the default store
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": n}) + "\n" for n in range(5)))
    args = ["run", str(data), "--fn", "cli_fns:echo", "--dlq", f"sqlite:///{tmp_path / 'q.db'}", "-q",
            "--mode", mode, "--validate", "logging:debug"]  # a check that finds nothing
    ok = CliRunner().invoke(main, [*args, "--report-json", str(tmp_path / "r.json")])
    assert ok.exit_code == 0, ok.output
    full = CliRunner().invoke(main, [*args, "--report-json", "/dev/full"])
    assert "cannot write the report to /dev/full" in full.output
    assert full.exit_code == 1, full.output
