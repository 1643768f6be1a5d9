"""The ``batchguard`` command: run, dlq, jobs, demo; exit codes; plain output off a terminal.

Most tests use click's CliRunner in-process; the exit-code, interrupt and demo tests run the
real command in a subprocess (``python -m batchguard``, what the console script calls).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batchguard import BatchProgress
from batchguard.cli import main
from batchguard.cli.progress import ProgressView
from batchguard.dlq import SqliteDLQ

TESTS = Path(__file__).parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def invoke(*args: str, stdin: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


def write_jsonl(path: Path, n: int, *, corrupt: dict[int, str] | None = None) -> Path:
    lines = [json.dumps({"id": i, "value": i * 10}) for i in range(n)]
    for index, raw in (corrupt or {}).items():
        lines[index] = raw
    path.write_text("\n".join(lines) + "\n")
    return path


def dlq_entries(path: Path) -> list[Any]:
    with SqliteDLQ(path) as dlq:
        return dlq.list()


def command(*args: str, cwd: Path, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "batchguard", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, **kwargs)


# ---------------------------------------------------------------------------- run


def test_a_corrupt_line_goes_to_the_dlq_and_the_run_goes_on(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 10, corrupt={3: '{"id": 3, "value": '})
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:echo", "--batch-size", "4")
    assert result.exit_code == 1, result.output  # partial_success
    assert "InputParseError" in result.output and "Succeeded:     9" in result.output
    (entry,) = dlq_entries(workdir / "batchguard.db")
    assert (entry.error_type, entry.error_class, entry.record_index) == ("InputParseError", "permanent", 3)
    assert entry.payload == '{"id": 3, "value": ' and entry.payload_encoding == "json"
    assert entry.error_message.startswith("line 4: invalid JSON")


def test_a_clean_run_exits_0(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 25)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:echo")
    assert result.exit_code == 0, result.output
    assert "BATCH COMPLETE" in result.output and "Total records: 25" in result.output


def test_failures_exit_1_and_land_in_the_dlq_with_the_given_options(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 20)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--dlq", "sqlite:///dead.db",
                    "--batch-size", "5", "--concurrency", "3", "--max-attempts", "2", "--base-delay", "0")
    assert result.exit_code == 1
    entries = dlq_entries(workdir / "dead.db")
    assert sorted(e.record_id for e in entries) == list(range(1, 20, 2))
    assert not (workdir / "batchguard.db").exists()


@pytest.mark.parametrize(("name", "content"), [
    ("in.csv", "id,value\n1,a\n2,b\n3,c,EXTRA\n"),
    ("in.json", '[{"id": 1}, {"id": 2}, {"id": 3}]'),
    ("records.txt", '{"id": 1}\n{"id": 2}\n{"id": 3}\n'),
])
def test_csv_json_arrays_and_sniffed_json_lines_are_read(workdir: Path, name: str, content: str) -> None:
    (workdir / name).write_text(content)
    result = invoke("run", name, "--fn", "cli_fns:echo")
    assert "Total records: 3" in result.output, result.output
    if name.endswith(".csv"):
        assert result.exit_code == 1  # the row with an extra field is a parse error
        (entry,) = dlq_entries(workdir / "batchguard.db")
        assert entry.payload == "3,c,EXTRA" and "3 fields, the header has 2" in entry.error_message
    else:
        assert result.exit_code == 0


def test_stdin_is_read_with_a_dash(workdir: Path) -> None:
    result = invoke("run", "-", "--fn", "cli_fns:echo", stdin='{"id": 1}\nnot json\n{"id": 3}\n')
    assert result.exit_code == 1 and "Total records: 3" in result.output
    assert dlq_entries(workdir / "batchguard.db")[0].payload == "not json"


def test_an_async_callback_works(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 5, corrupt={1: "{"})
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:async_echo")
    assert result.exit_code == 1 and "Succeeded:     4" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["run", "missing.jsonl", "--fn", "cli_fns:echo"], "cannot read input 'missing.jsonl'"),
    (["run", ".", "--fn", "cli_fns:echo"], "it is a directory"),
    (["run", "bad.json", "--fn", "cli_fns:echo"], "is not valid JSON"),
    (["run", "in.jsonl", "--fn", "no_such_module:process"], "cannot import 'no_such_module:process'"),
    (["run", "in.jsonl", "--fn", "cli_fns:nope"], "has no attribute 'nope'"),
    (["run", "in.jsonl", "--fn", "cli_fns:not_callable"], "not a callable"),
    (["run", "in.jsonl", "--fn", "cli_fns"], "is not MODULE:CALLABLE"),
    (["run", "in.jsonl", "--fn", "cli_broken_module:f"], "broken on purpose"),
    (["run", "in.jsonl", "--fn", "cli_fns:echo", "--dlq", "ftp://x"], "scheme 'ftp'"),
    (["run", "in.jsonl", "--fn", "cli_fns:echo", "--store", "sqlite:///s.db"], "--store is only used with --job"),
    (["run", "in.jsonl", "--fn", "cli_fns:echo", "--job", "j", "--store", "mysql://x"], "scheme 'mysql'"),
    (["run", "in.jsonl", "--fn", "cli_fns:echo", "--batch-size", "0"], "0 is not in the range"),
    (["run", "in.jsonl", "--fn", "cli_fns:echo", "--no-such-option"], "No such option"),
    (["run", "in.jsonl"], "Missing option '--fn'"),
    (["dlq", "list", "--dlq", "sqlite:///nothing-here.db"], "does not exist"),
    (["jobs", "status", "ghost"], "no job store"),
])
def test_bad_usage_exits_2_with_a_message_that_names_the_problem(
        workdir: Path, args: list[str], message: str) -> None:
    write_jsonl(workdir / "in.jsonl", 3)
    (workdir / "bad.json").write_text("[1, 2,")
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


# ---------------------------------------------------------------------------- jobs


def test_a_job_resumes_from_the_command_line(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 40)
    first = invoke("run", "in.jsonl", "--fn", "cli_fns:fatal_when_asked", "--job", "nightly",
                   "--batch-size", "10", env={"BG_FATAL_AT": "25"})
    assert first.exit_code == 1 and "ABORTED" in first.output
    assert "batchguard jobs resume nightly" in first.output

    status = invoke("jobs", "status", "nightly")
    assert status.exit_code == 0
    assert "Status:       aborted" in status.output and "Batches:      2 of 4" in status.output
    assert "--fn cli_fns:fatal_when_asked" in status.output

    listed = invoke("jobs", "list")
    assert re.search(r"nightly\s+aborted\s+50.0%", listed.output), listed.output

    resumed = invoke("jobs", "resume", "nightly")
    assert resumed.exit_code == 0, resumed.output
    assert "(+2 already done)" in resumed.output and "Total records: 20" in resumed.output
    assert "Job 'nightly': completed, 4/4 batches done" in resumed.output

    again = invoke("jobs", "resume", "nightly")
    assert again.exit_code == 0 and "already completed" in again.output
    rerun = invoke("run", "in.jsonl", "--fn", "cli_fns:fatal_when_asked", "--job", "nightly",
                   "--batch-size", "10")
    assert rerun.exit_code == 0 and "already completed" in rerun.output and "--force" in rerun.output
    as_json = json.loads(invoke("jobs", "status", "nightly", "--json").output)
    assert (as_json["status"], as_json["total"], as_json["runs"]) == ("completed", 40, 2)


def test_a_job_name_reused_with_different_input_exits_2(workdir: Path) -> None:
    write_jsonl(workdir / "a.jsonl", 10)
    (workdir / "b.jsonl").write_text("\n".join(json.dumps({"id": i, "other": True}) for i in range(10)))
    assert invoke("run", "a.jsonl", "--fn", "cli_fns:echo", "--job", "j").exit_code == 0
    result = invoke("run", "b.jsonl", "--fn", "cli_fns:echo", "--job", "j")
    assert result.exit_code == 2 and "different input" in result.output
    forced = invoke("run", "b.jsonl", "--fn", "cli_fns:echo", "--job", "j", "--force")
    assert forced.exit_code == 0


def test_jobs_resume_explains_what_it_cannot_resume(workdir: Path) -> None:
    invoke("run", "-", "--fn", "cli_fns:fatal_when_asked", "--job", "piped", stdin='{"id": 1}\n',
           env={"BG_FATAL_AT": "1"})
    result = invoke("jobs", "resume", "piped")
    assert result.exit_code == 2 and "read its input from stdin" in result.output
    missing = invoke("jobs", "resume", "ghost", "--store", "sqlite:///batchguard.db")
    assert missing.exit_code == 2 and "no job named 'ghost'" in missing.output


def test_jobs_list_without_a_store_says_so(workdir: Path) -> None:
    result = invoke("jobs", "list")
    assert result.exit_code == 0 and "no job store" in result.output
    assert not (workdir / "batchguard.db").exists()


# ---------------------------------------------------------------------------- dlq


@pytest.fixture
def seeded(workdir: Path) -> Path:
    rows = [json.dumps({"id": i}) for i in range(12)]
    rows[5] = "{broken"
    (workdir / "in.jsonl").write_text("\n".join(rows) + "\n")
    invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--job", "seed", "--max-attempts", "1")
    return workdir / "batchguard.db"


def test_dlq_list_shows_error_patterns_and_a_table(seeded: Path) -> None:
    result = invoke("dlq", "list")
    assert result.exit_code == 0
    assert "DEAD LETTER QUEUE: 6 open entries" in result.output
    assert re.search(r"ValueError\s+5\s+83.3%", result.output) and "InputParseError" in result.output
    limited = invoke("dlq", "list", "--error-type", "ValueError", "--limit", "2")
    assert "Entries 1-2 of 5" in limited.output and "--offset 2" in limited.output
    assert "InputParseError" not in limited.output


def test_dlq_show_prints_one_entry_with_its_attempts(seeded: Path) -> None:
    entry = next(e for e in dlq_entries(seeded) if e.error_type == "ValueError")
    result = invoke("dlq", "show", entry.id)
    assert result.exit_code == 0, result.output
    assert entry.id in result.output and "attempt 1 (" in result.output
    assert "Traceback:" in result.output and "odd id" in result.output
    assert invoke("dlq", "show", "ffffffffffff").exit_code == 2


def test_dlq_count_export_and_remove(seeded: Path, workdir: Path) -> None:
    assert invoke("dlq", "count").output.strip() == "6"
    assert invoke("dlq", "count", "--error-class", "permanent", "--job", "seed").output.strip() == "6"
    assert invoke("dlq", "count", "--stage", "other").output.strip() == "0"
    exported = invoke("dlq", "export", "out.jsonl", "--error-type", "InputParseError")
    assert exported.exit_code == 0 and "exported 1 dead letters" in exported.output
    (line,) = (workdir / "out.jsonl").read_text().splitlines()
    assert json.loads(line)["payload"] == "{broken"

    refused = invoke("dlq", "remove")
    assert refused.exit_code == 2 and "--all" in refused.output
    unconfirmed = invoke("dlq", "remove", "--error-type", "InputParseError")
    assert unconfirmed.exit_code == 2 and "--yes" in unconfirmed.output
    removed = invoke("dlq", "remove", "--error-type", "InputParseError", "--yes")
    assert removed.exit_code == 0 and "removed 1 dead letters" in removed.output
    assert invoke("dlq", "count").output.strip() == "5"


def test_dlq_retry_replays_and_reports(seeded: Path) -> None:
    result = invoke("dlq", "retry", "--fn", "cli_fns:echo", "--error-type", "ValueError")
    assert result.exit_code == 0, result.output
    assert "5 dead letters succeeded and are marked replayed" in result.output
    # The line that did not parse is left alone unless asked for (issue 9: its raw text is no record).
    again = invoke("dlq", "retry", "--fn", "cli_fns:fail_odd", "--max-attempts", "1")
    assert again.exit_code == 1 and "0 failed again and stay" in again.output
    assert "1 hold input lines that did not parse" in again.output
    asked = invoke("dlq", "retry", "--fn", "cli_fns:fail_odd", "--max-attempts", "1", "--include-parse-errors")
    assert asked.exit_code == 1 and "1 failed again and stay" in asked.output
    (left,) = dlq_entries(seeded)
    assert [a.error_type for a in left.attempts] == ["InputParseError", "TypeError"]


def test_dlq_retry_with_an_unimportable_fn_exits_2(seeded: Path) -> None:
    result = invoke("dlq", "retry", "--fn", "nowhere:fix")
    assert result.exit_code == 2 and "cannot import 'nowhere:fix'" in result.output


# ---------------------------------------------------------------------------- progress


def progress(done: int, total: int | None) -> BatchProgress:
    return BatchProgress(batches_completed=done, batches_total=None if total is None else -(-total // 10),
                         current_batch_index=done, records_processed=done * 10, succeeded=done * 9,
                         failed=done, retrying=2, in_flight=3, queued=4, elapsed_s=2.0, total=total)


def test_progress_lines_off_a_terminal_are_plain() -> None:
    line = ProgressView.plain_line(progress(3, 100))
    assert line == "batches 3/10 (30.0%) | succeeded 27 | failed 3 | retrying 2 | 15 rec/s | ETA 5 s"
    assert ProgressView.plain_line(progress(3, None)).startswith("batches 3 | ")


def test_the_live_display_renders_every_field() -> None:
    from rich.console import Console

    console = Console(record=True, width=140, force_terminal=True)
    view = ProgressView(title="run")
    console.print(view._render(progress(3, 100)))
    text = console.export_text()
    for part in ("Batch 3/10", "30.0%", "succeeded 27", "failed 3", "retrying 2", "15 rec/s", "ETA 5 s"):
        assert part in text


# ---------------------------------------------------------------------------- real processes


def test_the_console_script_is_declared() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "batchguard"]
    assert script.value == "batchguard.cli:main"


def test_exit_codes_of_the_real_command(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 10)
    ok = command("run", "in.jsonl", "--fn", "cli_fns:echo", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    partial = command("run", "in.jsonl", "--fn", "cli_fns:fail_odd", cwd=tmp_path)
    assert partial.returncode == 1
    missing = command("run", "nope.jsonl", "--fn", "cli_fns:echo", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr
    unimportable = command("run", "in.jsonl", "--fn", "not_a_module:f", cwd=tmp_path)
    assert unimportable.returncode == 2 and "not_a_module:f" in unimportable.stderr
    unknown = command("run", "in.jsonl", "--fn", "cli_fns:echo", "--frobnicate", cwd=tmp_path)
    assert unknown.returncode == 2 and "--frobnicate" in unknown.stderr
    for result in (ok, partial, missing, unimportable, unknown):
        assert not ANSI.search(result.stdout + result.stderr)  # plain off a terminal


def test_an_unreachable_dlq_exits_2_before_any_record_runs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 3)
    started = time.monotonic()
    result = command("run", "in.jsonl", "--fn", "cli_fns:echo", "--dlq",
                     "postgresql://app:s3cret@127.0.0.1:1/db", cwd=tmp_path)
    assert result.returncode == 2 and "127.0.0.1:1" in result.stderr and "s3cret" not in result.stderr
    assert time.monotonic() - started < 20


def test_an_interrupted_job_exits_130_and_resumes(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 2000)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    with subprocess.Popen([sys.executable, "-m", "batchguard", "run", "in.jsonl", "--fn", "cli_fns:slow",
                           "--job", "long", "--batch-size", "20"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 30
        while not _batches_done(tmp_path / "batchguard.db", "long") and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "batchguard jobs resume long" in err
    status = command("jobs", "status", "long", cwd=tmp_path)
    assert "Status:       aborted" in status.stdout and "KeyboardInterrupt" in status.stdout


def _batches_done(db: Path, job: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT batches_done FROM jobs WHERE name = ?", (job,)).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def test_demo_runs_and_shows_the_report(tmp_path: Path) -> None:
    # No timing threshold: these machines are noisy; benches/ measures speed.
    result = command("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "BATCH COMPLETE (Partial Success)" in result.stdout
    assert "InputParseError" in result.stdout and "Retries:" in result.stdout
    assert "batchguard dlq list --dlq sqlite:///" in result.stdout
    with SqliteDLQ(tmp_path / "demo" / "demo.db") as dlq:
        assert dlq.count(job_id="demo") > 0
        assert {e.error_type for e in dlq.list()} == {"ValueError", "KeyError", "InputParseError"}
    retried = command("dlq", "retry", "--fn", "batchguard._demo:process_fixed", "--base-delay", "0",
                      "--dlq", f"sqlite:///{tmp_path / 'demo' / 'demo.db'}", cwd=tmp_path)
    # The corrupt lines are not fed to the fixed fn (issue 9): they stay, as parse errors.
    assert retried.returncode == 1 and "hold input lines that did not parse" in retried.stdout
    with SqliteDLQ(tmp_path / "demo" / "demo.db") as dlq:
        assert dlq.count() == dlq.count(error_type="InputParseError") > 0  # only the corrupt lines stay
