"""Issue 9 item 5 (helper I9C): ``--json`` on ``run``, ``dlq list`` and ``jobs list`` for
automation (CliRunner, real files): stdout is one JSON document, URLs redacted."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

import batchguard
from batchguard.cli import main
from batchguard.errors import JobNotFoundError, JobStoreUnavailableError
from batchguard.jobs import job_status


def records(workdir: Path, n: int) -> str:
    path = workdir / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    return str(path)


def test_run_json_prints_the_report_as_json(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["run", records(workdir, 6), "--fn", "cli_fns:fail_odd",
                                       "--max-attempts", "1", "--base-delay", "0", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert (data["total"], data["succeeded"], data["failed"]) == (6, 3, 3)
    assert data["status"] != "complete"
    assert any("batchguard dlq" in str(step) for step in data["next_steps"])


def test_run_json_with_a_job_carries_the_job_and_redacts_urls(workdir: Path) -> None:
    store = f"sqlite:///{workdir / 'jobs.db'}"
    path = records(workdir, 4)  # written once: a job's input must not change between its runs
    result = CliRunner().invoke(main, ["run", path, "--fn", "cli_fns:echo", "-q",
                                       "--job", "j1", "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["succeeded"] == 4
    assert data["job"]["name"] == "j1" and data["job"]["status"] == "completed"
    again = CliRunner().invoke(main, ["run", path, "--fn", "cli_fns:echo", "-q",
                                      "--job", "j1", "--store", store, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["job"]["status"] == "completed"


def test_dlq_list_json_is_an_array_of_entries(workdir: Path) -> None:
    CliRunner().invoke(main, ["run", records(workdir, 6), "--fn", "cli_fns:fail_odd", "-q",
                              "--max-attempts", "1", "--base-delay", "0"])
    result = CliRunner().invoke(main, ["dlq", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, list) and len(data) == 3
    assert sorted(e["record_id"] for e in data) == [1, 3, 5]
    assert all(e["error_type"] == "ValueError" for e in data)
    none = CliRunner().invoke(main, ["dlq", "list", "--json", "--error-type", "KeyError"])
    assert none.exit_code == 0 and json.loads(none.stdout) == []


def test_jobs_list_json_is_an_array_of_job_states(workdir: Path) -> None:
    store = f"sqlite:///{workdir / 'jobs.db'}"
    dlq = f"sqlite:///{workdir / 'dlq.db'}"
    run = CliRunner().invoke(main, ["run", records(workdir, 4), "--fn", "cli_fns:echo", "-q",
                                    "--job", "j1", "--store", store, "--dlq", dlq])
    assert run.exit_code == 0, run.output
    result = CliRunner().invoke(main, ["jobs", "list", "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [j["name"] for j in data] == ["j1"]
    assert data[0]["status"] == "completed"
    assert data[0]["config"]["meta"]["cli"]["dlq"] == dlq  # stored through redact()
    none = CliRunner().invoke(main, ["jobs", "list", "--store", f"sqlite:///{workdir / 'no.db'}", "--json"])
    assert json.loads(none.stdout) == []


def test_run_json_next_steps_carry_a_non_default_dlq(workdir: Path) -> None:
    dlq = f"sqlite:///{workdir / 'other.db'}"
    result = CliRunner().invoke(main, ["run", records(workdir, 4), "--fn", "cli_fns:fail_odd", "--dlq", dlq,
                                       "--max-attempts", "1", "--base-delay", "0", "--json"])
    data = json.loads(result.stdout)
    assert any(f"--dlq {dlq}" in str(step) for step in data["next_steps"]), data["next_steps"]


SLEEPY = '''
import time

def sleepy(record):
    time.sleep(0.05)
    return record
'''


def test_ctrl_c_says_how_many_batches_are_saved_and_the_resume_command_that_works(tmp_path: Path) -> None:
    """SIGINT to a real ``python -m batchguard run --job`` after a batch is saved: the message
    counts the saved batches and prints the resume command with its --store and --dlq, quoted
    (the directory has a space); that command, run verbatim, completes the job."""
    work = tmp_path / "my dir"
    work.mkdir()
    (work / "sleepy_fns.py").write_text(SLEEPY)
    inp = work / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(200)))
    store = f"sqlite:///{work / 'jobs.db'}"
    dlq = f"sqlite:///{work / 'dead.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(batchguard.__file__).parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "batchguard", "run", str(inp), "--fn", "sleepy_fns:sleepy",
                             "--job", "nightly", "--store", store, "--dlq", dlq, "--batch-size", "10", "-q"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no batch was saved in 30 s"
            try:
                if job_status("nightly", store=store).batches_done >= 1:
                    break
            except (JobNotFoundError, JobStoreUnavailableError):
                pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    saved = job_status("nightly", store=store)
    assert 1 <= saved.batches_done < 20
    assert f"{saved.batches_done} of 20 batches of job 'nightly' are saved" in err, err
    assert "resume with: " in err, err
    command = err.split("resume with: ", 1)[1].splitlines()[0]
    assert command == (f"batchguard jobs resume nightly --store {shlex.quote(store)} --dlq {shlex.quote(dlq)}")
    resumed = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    done = job_status("nightly", store=store)
    assert done.status == "completed" and done.succeeded == 200 and done.batches_done == 20


def test_concurrency_help_says_its_default_and_why() -> None:
    shown = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    assert "--concurrency INTEGER RANGE" in shown
    assert "Default 1: one record at a time, in order, on the calling thread" in shown
    assert "--rate-limit" in shown.split("--concurrency", 1)[1].split("--max-attempts", 1)[0]
