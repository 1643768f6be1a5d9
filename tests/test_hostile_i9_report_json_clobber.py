"""Hostile: ``--report-json`` naming the run's own DLQ database, job store or input (issue 9
item 3).

The report is "replaced atomically" at its path, so ``--dlq sqlite:///q.db --report-json q.db``
replaced the dead-letter database with a JSON file: every dead letter lost, and the next
command failed with "file is not a database". The same held for the job store and the input.
Such a path is now refused before the run, naming what it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchguard import open_dlq
from batchguard.cli import main


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": n}) + "\n" for n in range(6)))
    return path


def _run(*args: str) -> object:
    return CliRunner().invoke(main, ["run", *args, "--fn", "cli_fns:fail_odd", "--max-attempts", "1", "-q"])


def test_the_report_never_replaces_the_dlq_database(data: Path, tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    first = _run(str(data), "--dlq", f"sqlite:///{db}")
    assert first.exit_code == 1  # type: ignore[attr-defined]
    for target in (db, Path(f"{db}-wal")):
        refused = _run(str(data), "--dlq", f"sqlite:///{db}", "--report-json", str(target))
        assert refused.exit_code == 2, refused.output  # type: ignore[attr-defined]
        assert "DLQ" in refused.output and "would replace it" in refused.output  # type: ignore[attr-defined]
    queue = open_dlq(f"sqlite:///{db}")
    try:
        assert queue.count() == 3
    finally:
        queue.close()


def test_the_report_never_replaces_a_jsonl_dlq_the_job_store_or_the_input(data: Path, tmp_path: Path) -> None:
    dlq = tmp_path / "dead.jsonl"
    refused = _run(str(data), "--dlq", f"jsonl:///{dlq}", "--report-json", str(dlq))
    assert refused.exit_code == 2 and "DLQ" in refused.output  # type: ignore[attr-defined]
    store = tmp_path / "jobs.db"
    refused = _run(str(data), "--job", "j", "--store", f"sqlite:///{store}", "--report-json", str(store))
    assert refused.exit_code == 2 and "job store" in refused.output  # type: ignore[attr-defined]
    before = data.read_text()
    refused = _run(str(data), "--dlq", f"sqlite:///{tmp_path / 'q.db'}", "--report-json", str(data))
    assert refused.exit_code == 2 and "the input" in refused.output  # type: ignore[attr-defined]
    assert data.read_text() == before
    for mode in ("dry-run", "sample"):
        refused = _run(str(data), "--dlq", f"sqlite:///{tmp_path / 'q.db'}", "--mode", mode,
                       "--validate", "batchguard._demo:validate", "--report-json", str(data))
        assert refused.exit_code == 2 and "the input" in refused.output, refused.output  # type: ignore[attr-defined]
    assert data.read_text() == before


def test_another_path_is_written(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = _run(str(data), "--dlq", f"sqlite:///{tmp_path / 'q.db'}", "--report-json", str(out))
    assert done.exit_code == 1  # type: ignore[attr-defined]
    assert json.loads(out.read_text())["failed"] == 3
