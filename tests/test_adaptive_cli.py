"""``batchguard run --adaptive`` (issue 10 item 6): --concurrency is then the most calls in
flight and the run gets ``concurrency=Adaptive(max=N)``; its report says so, a job saves it
and ``jobs resume`` keeps it, and with --bulk it is a usage error naming both options."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

import batchguard
from batchguard.cli import main


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["run", *args, "-q"], catch_exceptions=False)


def _records(workdir: Path, n: int) -> str:
    path = workdir / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    return str(path)


def test_adaptive_reaches_the_run_and_its_report(workdir: Path) -> None:
    report_path = workdir / "report.json"
    result = _invoke(_records(workdir, 30), "--fn", "json:dumps", "--concurrency", "8", "--adaptive",
                     "--report-json", str(report_path))
    assert result.exit_code == 0, result.output
    limit = json.loads(report_path.read_text())["concurrency_limit"]
    assert 1 <= limit["low"] <= limit["final"] <= limit["peak"] <= 8
    plain_path = workdir / "plain.json"
    assert _invoke(_records(workdir, 30), "--fn", "json:dumps", "--report-json", str(plain_path)).exit_code == 0
    assert "concurrency_limit" not in json.loads(plain_path.read_text())


def test_a_job_saves_adaptive_with_its_max(workdir: Path) -> None:
    result = _invoke(_records(workdir, 10), "--fn", "json:dumps", "--concurrency", "4", "--adaptive",
                     "--job", "steered")
    assert result.exit_code == 0, result.output
    config = batchguard.job_status("steered").config
    assert config["adaptive"]["max"] == 4 and config["concurrency"] == 4
    # jobs resume keeps the saved option: the rerun is steered too.
    resumed = CliRunner().invoke(main, ["jobs", "resume", "steered", "--force"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert "Concurrency:   adaptive" in resumed.output


def test_adaptive_with_bulk_is_a_usage_error_naming_both(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["run", _records(workdir, 3), "--fn", "json:dumps", "--adaptive", "--bulk"])
    assert result.exit_code == 2, result.output
    assert "--adaptive" in result.output and "bulk" in result.output
