"""The CLI at scale and with its own ids (issue 7, defects 11, 12 and 3).

* ``batchguard run`` with more than 1000 failures prints its report (it used to crash on a
  closed DLQ, with and without ``--job``).
* ``dlq list`` prints ids that ``dlq show`` and ``dlq remove`` accept (it printed a prefix all
  entries of a run shared), and so does the demo's hint.
* ``dlq export`` never destroys data: not onto the queue's own file (even through a symlink),
  not over an existing file without ``--force``; ``-`` writes to stdout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from batchguard import RetryPolicy, run_batches
from batchguard.dlq import JsonlDLQ, SqliteDLQ
from test_cli import invoke

TESTS = Path(__file__).parent
ENTRY_ID = re.compile(r"^([0-9a-f]{12}-\d{12})\s", re.MULTILINE)


def write_jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    return path


def always_fails(record: int) -> int:
    raise ValueError(f"record {record} is invalid")


# ---------------------------------------------------------------------------- defect 11


@pytest.mark.parametrize("job", [None, "nightly"])
def test_run_prints_its_report_when_more_than_1000_records_fail(workdir: Path, job: str | None) -> None:
    write_jsonl(workdir / "in.jsonl", 2400)
    extra = ["--job", job] if job else []
    result = subprocess.run(
        [sys.executable, "-m", "batchguard", "run", "in.jsonl", "--fn", "cli_fns:fail_odd",
         "--max-attempts", "1", "-q", *extra],
        cwd=workdir, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])})
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # partial success
    assert "FAILED RECORDS (1200)" in result.stdout and "Failed (DLQ):  1200" in result.stdout
    assert "1. record 1 (#1, batch 0)" in result.stdout
    with SqliteDLQ(workdir / "batchguard.db") as dlq:
        assert dlq.count() == 1200


def test_run_with_all_records_failing_in_process(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 2100)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1", "-q",
                    "--dlq", "jsonl:///dead.jsonl", "--batch-size", "100")
    assert result.exit_code == 1, result.output
    assert "FAILED RECORDS (1050)" in result.output and "... and 1040 more" in result.output


# ---------------------------------------------------------------------------- defect 12


def _run_with_failures(workdir: Path, n: int = 30) -> str:
    url = f"sqlite:///{workdir / 'dead.db'}"
    run_batches(range(n), always_fails, dlq=url, retry=RetryPolicy(max_attempts=1))
    return url


def test_dlq_list_prints_ids_that_show_and_remove_accept(workdir: Path) -> None:
    url = _run_with_failures(workdir)
    listed = invoke("dlq", "list", "--dlq", url, "--limit", "5")
    assert listed.exit_code == 0, listed.output
    ids = ENTRY_ID.findall(listed.output)
    assert len(ids) == 5 and len(set(ids)) == 5, listed.output
    shown = invoke("dlq", "show", ids[3], "--dlq", url)
    assert shown.exit_code == 0, shown.output
    assert f"ID:            {ids[3]}" in shown.output and "Record:        3 (index 3" in shown.output
    # show's own remove hint works as printed, on this (not the default) queue.
    hint = re.search(r"remove:\s+(batchguard dlq remove .+)$", shown.output, re.MULTILINE)
    assert hint is not None, shown.output
    removed = invoke(*hint.group(1).split()[1:], "--yes")
    assert removed.exit_code == 0 and "removed 1 dead letters" in removed.output, removed.output
    with SqliteDLQ(workdir / "dead.db") as dlq:
        assert dlq.count() == 29 and dlq.get(ids[3]) is None
    # The footer's hint names a real entry, and it works as printed.
    hint = re.search(r"details: (batchguard dlq show .+)$", listed.output, re.MULTILINE)
    assert hint is not None, listed.output
    again = invoke(*hint.group(1).split()[1:])
    assert again.exit_code == 0 and f"ID:            {ids[0]}" in again.output


def test_the_demo_hint_shows_an_entry_that_exists(workdir: Path) -> None:
    result = invoke("demo", "--records", "300", "--dir", str(workdir / "demo"), "-q")
    assert result.exit_code == 0, result.output
    hint = re.search(r"^\s+(batchguard dlq show .+)$", result.output, re.MULTILINE)
    assert hint is not None, result.output
    shown = invoke(*hint.group(1).split()[1:])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("ID:") and "Error class:" in shown.output


# ---------------------------------------------------------------------------- defect 3


@pytest.fixture
def five_thousand(workdir: Path) -> dict[str, Path]:
    """A SQLite and a JSONL queue with 5000 entries each."""
    files = {"sqlite": workdir / "dead.db", "jsonl": workdir / "dead.jsonl"}
    for scheme, path in files.items():
        run_batches(range(5000), always_fails, dlq=f"{scheme}:///{path}", retry=RetryPolicy(max_attempts=1))
    return files


def _count(path: Path) -> int:
    queue = SqliteDLQ(path) if path.suffix == ".db" else JsonlDLQ(path)
    with queue:
        return queue.count()


@pytest.mark.parametrize("scheme", ["sqlite", "jsonl"])
def test_export_refuses_the_queue_own_file_even_through_a_symlink(five_thousand: dict[str, Path],
                                                                  scheme: str, workdir: Path) -> None:
    own = five_thousand[scheme]
    link = workdir / f"link-to-{own.name}"
    link.symlink_to(own)
    url = f"{scheme}:///{own}"
    for target in (str(own), str(link)):
        for force in ([], ["--force"]):
            result = invoke("dlq", "export", target, "--dlq", url, *force)
            assert result.exit_code == 2, result.output
            assert "own file" in result.output and "Traceback" not in result.output
    assert _count(own) == 5000
    assert link.is_symlink() and os.path.samefile(link, own)


def test_export_does_not_overwrite_without_force(five_thousand: dict[str, Path], workdir: Path) -> None:
    url = f"sqlite:///{five_thousand['sqlite']}"
    precious = workdir / "precious.jsonl"
    precious.write_text("keep me\n")
    refused = invoke("dlq", "export", str(precious), "--dlq", url)
    assert refused.exit_code == 2 and "exists" in refused.output and "--force" in refused.output
    assert precious.read_text() == "keep me\n"
    forced = invoke("dlq", "export", str(precious), "--dlq", url, "--force")
    assert forced.exit_code == 0 and "exported 5,000 dead letters" in forced.output
    assert len(precious.read_text().splitlines()) == 5000
    fresh = invoke("dlq", "export", str(workdir / "new.jsonl"), "--dlq", url, "--error-type", "ValueError")
    assert fresh.exit_code == 0 and len((workdir / "new.jsonl").read_text().splitlines()) == 5000
    assert _count(five_thousand["sqlite"]) == 5000


def test_export_dash_writes_json_lines_to_stdout(five_thousand: dict[str, Path], workdir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchguard", "dlq", "export", "-", "--dlq", f"jsonl:///{five_thousand['jsonl']}"],
        cwd=workdir, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5000 and json.loads(lines[0])["record_index"] == 0
    assert "exported 5,000 dead letters to stdout" in result.stderr
    assert not (workdir / "-").exists() and _count(five_thousand["jsonl"]) == 5000
