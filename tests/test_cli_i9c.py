"""Issue 9 item 5 (helper I9C): ``--json`` on ``run``, ``dlq list`` and ``jobs list`` for
automation (CliRunner, real files): stdout is one JSON document, URLs redacted."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from batchguard.cli import main


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
    result = CliRunner().invoke(main, ["run", records(workdir, 4), "--fn", "cli_fns:echo", "-q",
                                       "--job", "j1", "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["succeeded"] == 4
    assert data["job"]["name"] == "j1" and data["job"]["status"] == "completed"
    again = CliRunner().invoke(main, ["run", records(workdir, 4), "--fn", "cli_fns:echo", "-q",
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
