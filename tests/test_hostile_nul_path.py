"""A DLQ or job store URL whose path holds a NUL (``%00``) is a ConfigError naming the argument,
not a bare ``ValueError: embedded null byte`` from deep inside os/sqlite3 (hostile tester, issue 7
defect 21); the CLI exits 2 without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import batchguard
from batchguard.cli import main
from batchguard.errors import ConfigError


@pytest.mark.parametrize("url", ["sqlite:///a%00b.db", "jsonl:///a%00b.jsonl"])
def test_dlq_path_with_nul(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^dlq URL .*NUL"):
        batchguard.run_batches([1], lambda r: r, dlq=url)


def test_job_store_path_with_nul() -> None:
    with pytest.raises(ConfigError, match=r"^job store URL .*NUL"):
        batchguard.run_batches([1], lambda r: r, job="j", store="sqlite:///a%00b.db")


@pytest.mark.parametrize("flags", [["--dlq", "sqlite:///a%00b.db"],
                                   ["--job", "j", "--store", "sqlite:///a%00b.db"]])
def test_cli_run_exits_2(tmp_path: Path, flags: list[str]) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 1}\n')
    result = CliRunner().invoke(main, ["run", str(data), "--fn", "json:dumps", "--dlq",
                                       f"sqlite:///{tmp_path}/d.db", *flags])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "NUL" in result.output
