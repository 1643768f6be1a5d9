"""A sample's calls can be rolled back (issue 10 item 5, seed 003's ``--rollback-batch``): the
sample keeps its succeeded records and values in the job store, its report names the id and
the command, and ``batchguard rollback`` undoes them on a real SQLite table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import batchguard
from batchguard.cli import main
from helpers_shop import item_ids, shop


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_sample_given_a_store_keeps_its_calls_for_rollback(tmp_path: Path, engine: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    report = batchguard.run_batches(range(100), lambda x: x * 10, mode="sample", sample_count=3,
                                    store=store, engine=engine)
    assert report.ok and report.rollback_id is not None
    assert f"Rollback: batchguard rollback {report.rollback_id} --fn MODULE:UNDO" in report.next_steps
    assert report.to_json()["rollback_id"] == report.rollback_id
    undone: list[tuple[int, int]] = []
    rolled = batchguard.rollback(report.rollback_id, lambda record, value: undone.append((record, value)),
                                 store=store)
    sampled = sorted(item.record_index for item in report.items)
    assert undone == [(i, i * 10) for i in sorted(sampled, reverse=True)]
    assert rolled.summary().startswith(f"Rolled back 3 records of sample {report.rollback_id}.")
    assert "jobs resume" not in rolled.summary()


def test_a_sample_without_a_store_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    report = batchguard.run_batches(range(10), lambda x: x, mode="sample")
    assert report.rollback_id is None
    assert not any(step.startswith("Rollback") for step in report.next_steps)
    assert list(tmp_path.iterdir()) == []  # no store file made behind the caller's back


def test_only_the_succeeded_sampled_records_are_kept(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"

    def fn(x: Any) -> Any:
        if x == 0:  # the shortest record: always sampled
            raise ValueError("no zeros")
        return x

    report = batchguard.run_batches(range(50), fn, mode="sample", store=store,
                                    retry=batchguard.RetryPolicy(max_attempts=1))
    assert not report.ok and report.rollback_id is not None
    assert any(step.startswith("Rollback:") for step in report.next_steps)
    undone: list[Any] = []
    batchguard.rollback(report.rollback_id, lambda record, value: undone.append(record), store=store)
    assert 0 not in undone and len(undone) == sum(item.ok for item in report.items)


def test_the_cli_sample_prints_the_rollback_command_that_undoes_it(tmp_path: Path) -> None:
    db, module = shop(tmp_path)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "name": f"item {i}"}) + "\n" for i in range(20)))
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    runner = CliRunner()
    sampled = runner.invoke(main, ["run", str(source), "--fn", f"{module}:insert", "--mode", "sample",
                                   "--store", store])
    assert sampled.exit_code == 0, sampled.output
    assert len(item_ids(db)) == 3
    (step,) = [line for line in sampled.output.splitlines() if "Rollback: " in line]
    command = step.split("Rollback: ", 1)[1].split()
    assert command[:2] == ["batchguard", "rollback"] and command[-2:] == ["--store", store]
    proceed = next(line for line in sampled.output.splitlines() if "Proceed: " in line)
    assert "--store" not in proceed  # a run without --job takes none
    args = [f"{module}:delete" if word == "MODULE:UNDO" else word for word in command[2:]]
    rolled = runner.invoke(main, ["rollback", *args])
    assert rolled.exit_code == 0, rolled.output
    assert len(item_ids(db)) == 0


def test_a_sample_refuses_a_report_json_on_its_store(tmp_path: Path) -> None:
    _, module = shop(tmp_path)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "name": "a"}\n')
    store = tmp_path / "jobs.db"
    result = CliRunner().invoke(main, ["run", str(source), "--fn", f"{module}:insert", "--mode", "sample",
                                       "--store", f"sqlite:///{store}", "--report-json", str(store)])
    assert result.exit_code == 2
    assert "job store" in result.output
