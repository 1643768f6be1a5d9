"""One report model, three renderings: ``summary()`` text, the CLI's rich panel and JSON say the
same counts, the same failure patterns and the same next steps, because all three read one
:class:`ReportModel` built from the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from batchguard import BatchReport, RetryPolicy, run_batches
from batchguard._report.model import CliContext, ReportModel, build
from batchguard._report.panel import render_panel, render_steps
from batchguard._report.text import pattern_title, percent, render_text
from batchguard.dlq import SqliteDLQ
from helpers_contract import ENGINES

ONCE = RetryPolicy(max_attempts=1)


def picky(record: int) -> int:
    if record % 5 == 0:
        raise KeyError(f"no field for {record}")
    if record % 3 == 0:
        raise ValueError(f"bad value {record}")
    return record


def fatal_at_40(record: int) -> int:
    if record == 40:
        raise MemoryError("simulated")
    return picky(record)


def panel_text(model: ReportModel) -> str:
    """The panel as a terminal shows it, whitespace squeezed and borders dropped."""
    console = Console(record=True, width=200, force_terminal=False)
    console.print(render_panel(model))
    for line in render_steps(model):
        console.print(line, soft_wrap=True)
    return squeeze(console.export_text().replace("│", " "))


def squeeze(text: str) -> str:
    return " ".join(text.split())


def assert_same_model(model: ReportModel, text: str, panel: str, data: dict[str, Any]) -> None:
    """Every fact of ``model`` is in each rendering, and the JSON is the model."""
    assert data == json.loads(json.dumps(model.to_json()))
    assert (data["total"], data["succeeded"], data["failed"], data["pending"]) == (
        model.total, model.succeeded, model.failed, model.pending)
    assert f"Total records: {model.total}" in text and f"Total records {model.total:,}" in panel
    assert f"Succeeded:     {model.succeeded} ({percent(model.success_rate)})" in text
    assert f"Succeeded {model.succeeded:,} ({percent(model.success_rate)})" in panel
    assert f"Failed (DLQ):  {model.failed} ({percent(model.failure_rate)})" in text
    assert f"Failed (DLQ) {model.failed:,} ({percent(model.failure_rate)})" in panel
    assert text.splitlines()[0] == model.headline and model.headline in panel
    assert [(p["error_type"], p["count"]) for p in data["error_types"]] == [
        (p.error_type, p.count) for p in model.error_types]
    for kind in model.error_types:
        assert f"  {kind.error_type}: {kind.count} ({percent(kind.share)})" in text
        assert f"{kind.error_type} {kind.count:,} {percent(kind.share)}" in panel
    assert [(p["error_type"], p["error_class"], p["http_status"], p["template"], p["count"])
            for p in data["patterns"]] == [
        (p.error_type, p.error_class, p.http_status, p.template, p.count) for p in model.patterns]
    for n, (pattern, shown) in enumerate(zip(model.patterns, data["patterns"], strict=True), 1):
        head = f"{n}. {pattern_title(pattern)}"
        assert f"{head}: {pattern.count} ({percent(pattern.share)})" in text
        assert f"{head} {pattern.count:,} records ({percent(pattern.share)})" in panel
        assert f"   message:  {pattern.template}" in text and squeeze(f"message {pattern.template}") in panel
        command = model.pattern_command(pattern)
        assert shown["recommendation"]["command"] == command
        assert shown["recommendation"]["kind"] == pattern.recommendation.kind
        assert command is not None and f"   run:      {command}" in text
        assert squeeze(f"{head}: {command}") in panel  # below the panel, its command whole
    assert [s["action"] for s in data["next_steps"]] == [s.action for s in model.next_steps]
    assert [line for line in model.judged_against if f"Judged against: {line}" not in text] == []
    assert [line for line in model.judged_against if squeeze(f"Judged against {line}") not in panel] == []
    assert [(s["action"], s["command"]) for s in data["next_steps"]] == [
        (s.action, s.command) for s in model.next_steps]
    for step in model.next_steps:
        line = f"{step.action}: {step.command}" if step.command else step.action
        assert f"  {line}" in text and squeeze(line) in panel
    for sample in model.samples:
        assert f"record {sample.record_id!r} (#{sample.record_index}, batch {sample.batch_index})" in text
        assert squeeze(f"{sample.error_type}: {sample.error_message}") in panel


@pytest.mark.parametrize("engine", ENGINES)
def test_text_panel_and_json_of_a_report_with_failures_come_from_one_model(engine: str) -> None:
    report = run_batches(range(60), picky, batch_size=10, retry=ONCE, engine=engine)
    model = build(report)
    assert (model.total, model.succeeded, model.failed) == (60, 32, 28)
    assert [(p.error_type, p.template, p.count) for p in model.patterns] == [
        ("ValueError", "bad value <n>", 16), ("KeyError", "'<v>'", 12)]
    assert [p.example_ids for p in model.patterns] == [(3, 6, 9), (0, 5, 10)]
    assert [p.recommendation.kind for p in model.patterns] == ["validation", "validation"]
    assert len(model.samples) == 10 and model.more_failures == 18
    run = report.run_id
    assert [s.command for s in model.next_steps] == [
        f"batchguard dlq review --run-id {run}",
        f"batchguard dlq retry --error-type ValueError --run-id {run} --fn MODULE:CALLABLE",
        f"batchguard dlq retry --error-type KeyError --run-id {run} --fn MODULE:CALLABLE"]
    assert report.summary() == render_text(model)
    assert report.to_json() == model.to_json()
    assert_same_model(model, report.summary(), panel_text(model), report.to_json())


def test_a_stopped_job_names_its_unprocessed_records_in_every_rendering(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    report = run_batches(range(100), fatal_at_40, batch_size=10, retry=ONCE, job="nightly", store=store)
    assert report.status == "aborted" and report.pending_count
    library = build(report)
    assert library.next_steps[-1].command is None and "job='nightly'" in library.next_steps[-1].action
    assert_same_model(library, report.summary(), panel_text(library), report.to_json())

    cli = build(report, cli=CliContext(dlq_url="sqlite:///dead.db", store_url="sqlite:///jobs.db",
                                       default_url="sqlite:///batchguard.db", fn_spec="my fns:picky"))
    assert [s.command for s in cli.next_steps] == [
        "batchguard dlq review --job nightly --fn 'my fns:picky' --dlq sqlite:///dead.db",
        "batchguard dlq retry --error-type ValueError --job nightly --fn 'my fns:picky' --dlq sqlite:///dead.db",
        "batchguard dlq retry --error-type KeyError --job nightly --fn 'my fns:picky' --dlq sqlite:///dead.db",
        "batchguard dlq retry --error-type MemoryError --job nightly --fn 'my fns:picky' --dlq sqlite:///dead.db",
        "batchguard jobs retry-failed nightly --fn 'my fns:picky' --store sqlite:///jobs.db --dlq sqlite:///dead.db",
        "batchguard jobs resume nightly --store sqlite:///jobs.db",
    ]
    text = render_text(cli)
    assert "Dead letters in: sqlite:///dead.db" in text
    assert_same_model(cli, text, panel_text(cli), cli.to_json())


def test_the_default_locations_are_left_out_of_the_commands() -> None:
    report = run_batches(range(10), picky, retry=ONCE, job=None)
    context = CliContext(dlq_url="sqlite:///batchguard.db", store_url=None, default_url="sqlite:///batchguard.db")
    commands = [s.command or "" for s in build(report, cli=context).next_steps]
    assert commands[0] == f"batchguard dlq review --run-id {report.run_id}"
    assert not [c for c in commands if "--dlq" in c or "--store" in c]


def test_a_clean_run_has_no_next_steps_and_says_so() -> None:
    report = run_batches(range(5), lambda r: r)
    model = build(report)
    assert model.next_steps == () and model.patterns == () and model.samples == () and model.error_types == ()
    assert report.summary().endswith("NEXT STEPS:\n  none: every record succeeded")
    assert "Next steps" not in panel_text(model)


def test_the_json_rendering_is_json_safe_whatever_the_ids() -> None:
    report = run_batches([{"key": (1, 2)}, {"key": (3, 4)}], lambda r: 1 / 0, retry=ONCE,
                         id_of=lambda r: r["key"])
    data = report.to_json()
    json.dumps(data, allow_nan=False)
    assert all(isinstance(s["record_id"], (str, int)) for s in data["samples"])
    instant = BatchReport(run_id="r", status="complete", total=1, success_count=1, failure_count=0,
                          pending_count=0, retry_count=0, successful=[1], duration_s=0.0,
                          breaker_trips=0, dlq_count=0)
    assert math.isinf(instant.throughput) and instant.to_json()["throughput"] is None
    assert instant.to_json()["success_rate"] == 1.0


def test_a_durable_report_renders_from_memory_alone(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "f.db") as dlq:
        report = run_batches(range(1500), picky, dlq=dlq, batch_size=100, retry=ONCE)
    # The queue is closed: every rendering reads only the report's in-memory sample.
    model = build(report, max_samples=1000)
    assert len(model.samples) == model.failed == 700
    assert_same_model(build(report), report.summary(), panel_text(build(report)), report.to_json())
