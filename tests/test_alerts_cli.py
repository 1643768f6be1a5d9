"""``batchguard run --alert-webhook URL`` (issue 10 item 4): the default rules POSTed to a real
receiver on 127.0.0.1 from a CLI run in another process; the URL, a secret, never printed
whole nor stored with a job; ``alert_webhook`` in ``--config``; a resume given it again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alerts_receiver import Receiver, receiver

__all__ = ["receiver"]  # a fixture (alerts_receiver.receiver), used by name

FN = '''
def handle(record):
    if record["n"] % 2:
        raise ValueError("odd")
    return record["n"]
'''
SECRET = "T0K3N-s3cret"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "oddfn.py").write_text(FN)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": n, "n": n}) + "\n" for n in range(60)))
    return tmp_path


def _batchguard(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BATCHGUARD_ALERT_WEBHOOK"}
    return subprocess.run([sys.executable, "-m", "batchguard", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def test_run_posts_the_default_rules_and_never_shows_the_url(workdir: Path, receiver: Receiver) -> None:
    done = _batchguard(workdir, "run", "in.jsonl", "--fn", "oddfn:handle", "--dlq", "memory://", "--json",
                       "--max-attempts", "1", "--batch-size", "10", "--max-failures", "8",
                       "--alert-webhook", receiver.url(f"/hooks/{SECRET}"))
    report = json.loads(done.stdout)
    assert report["status"] == "aborted", done.stderr
    assert f"alerts: 5 rules, POSTed to http://127.0.0.1:{receiver.port}/***" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    fired = {(b["rule"], b["state"]) for b in receiver.bodies()}
    # half the odd records fail: the 20 % failure rate, half the budget of 8, then the abort
    assert {("failure_rate", "firing"), ("failure_rate", "resolved"), ("budget_burn", "firing"),
            ("budget_burn", "resolved"), ("aborted", "firing")} == fired
    assert {b["run_id"] for b in receiver.bodies()} == {report["run_id"]}


def test_config_file_sets_it_a_job_never_stores_it_and_a_resume_takes_it_again(
        workdir: Path, receiver: Receiver) -> None:
    url = receiver.url(f"/hooks/{SECRET}")
    (workdir / "run.toml").write_text(f'alert_webhook = "{url}"\nmax_failures = 4\nmax_attempts = 1\n')
    store = f"sqlite:///{workdir / 'jobs.db'}"
    first = _batchguard(workdir, "run", "in.jsonl", "--fn", "oddfn:handle", "--job", "nightly",
                        "--store", store, "--config", "run.toml", "--batch-size", "10")
    assert SECRET not in first.stdout + first.stderr
    assert [(b["rule"], b["job_id"]) for b in receiver.bodies("aborted")] == [("aborted", "nightly")]
    # Neither the job store nor anything else the run wrote holds the URL.
    assert (workdir / "jobs.db").exists()
    for path in workdir.iterdir():
        if path.is_file() and path.name != "run.toml":
            assert SECRET.encode() not in path.read_bytes(), path.name
    before = len(receiver.bodies())
    resumed = _batchguard(workdir, "jobs", "resume", "nightly", "--store", store, "--max-failures", "100",
                          "--alert-webhook", url)
    assert SECRET not in resumed.stdout + resumed.stderr
    assert f"--alert-webhook http://127.0.0.1:{receiver.port}/*** (saved: default)" in resumed.stderr
    later = receiver.bodies()[before:]
    assert later and {b["job_id"] for b in later} == {"nightly"}
    assert ("failure_rate", "firing") in {(b["rule"], b["state"]) for b in later}


def test_a_bad_url_is_a_usage_error_that_hides_the_token(workdir: Path) -> None:
    done = _batchguard(workdir, "run", "in.jsonl", "--fn", "oddfn:handle", "--dlq", "memory://",
                       "--alert-webhook", f"ftp://example.com/{SECRET}")
    assert done.returncode == 2
    assert "--alert-webhook" in done.stderr and "ftp://example.com/***" in done.stderr
    assert SECRET not in done.stderr
