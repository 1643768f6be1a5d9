"""``batchguard run --retry-budget RATIO`` (issue 10 item 6): the run gets
``RetryBudget(ratio=RATIO)``, its report says so, and a bad ratio is a
usage error naming the option."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from batchguard.cli import main


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["run", *args, "-q"], catch_exceptions=False)


def _records(workdir: Path, n: int) -> str:
    path = workdir / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    return str(path)


def test_retry_budget_reaches_the_run_and_its_report(workdir: Path) -> None:
    report_path = workdir / "report.json"
    result = _invoke(_records(workdir, 20), "--fn", "json:dumps", "--retry-budget", "0.2",
                     "--report-json", str(report_path))
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["retries_over_budget"] == {"waited": 0, "dead_lettered": 0}
    plain_path = workdir / "plain.json"
    assert _invoke(_records(workdir, 20), "--fn", "json:dumps", "--report-json", str(plain_path)).exit_code == 0
    assert "retries_over_budget" not in json.loads(plain_path.read_text())


def test_a_negative_retry_budget_is_a_usage_error_naming_it(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["run", _records(workdir, 3), "--fn", "json:dumps", "--retry-budget", "-1"])
    assert result.exit_code == 2
    assert "--retry-budget" in result.output
    assert "ratio" in result.output
