"""Phases on the command line (issue 9 item 1), on the demo's data: ``batchguard run demo.jsonl
--fn batchguard._demo:process --validate batchguard._demo:validate --mode dry-run|sample|full``.

The expected counts are computed here from the file and the demo's rules as written in this
test, not by the code under test; the next-step commands a screen prints are run verbatim.
"""

from __future__ import annotations

import json
import shlex
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batchguard import _demo, open_dlq
from batchguard.cli import main

RECORDS = 7_200  # one corrupt line (every 7,000th), bad emails, missing and zero amounts

SEEN: list[Any] = []
_SEEN_LOCK = threading.Lock()


def record_seen(record: Any) -> Any:
    """A --fn that remembers what it was given (this module, imported by the CLI)."""
    with _SEEN_LOCK:
        SEEN.append(record)
    return record


def classify(path: Path) -> dict[str, list[Any]]:
    """The demo data sorted by the rules, independently: ids (line numbers for corrupt lines)."""
    out: dict[str, list[Any]] = {"ready": [], "warning": [], "blocked": [], "corrupt": []}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            out["corrupt"].append(number)
            continue
        if "@" not in record["email"] or "amount" not in record:
            out["blocked"].append(record["id"])
        elif record["amount"] == 0:
            out["warning"].append(record["id"])
        else:
            out["ready"].append(record["id"])
    return out


@pytest.fixture
def demo_data(workdir: Path) -> Path:
    path = workdir / "demo data.jsonl"  # a space: the printed commands must quote it
    _demo.write_dataset(path, RECORDS)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def base(path: Path, dlq: str) -> list[str]:
    return ["run", str(path), "--fn", "batchguard._demo:process", "--validate",
            "batchguard._demo:validate", "--dlq", dlq, "-q"]


def step(output: str, prefix: str) -> list[str]:
    """The command of the NEXT STEPS line that starts with ``prefix``, as argv for main."""
    line = next(line for line in output.splitlines() if prefix in line)
    words = shlex.split(line.split(prefix, 1)[1].strip())
    assert words[:2] == ["batchguard", "run"], line
    return words[1:]


def options(argv: list[str]) -> dict[str, str | None]:
    """``run INPUT --flag value ... -q`` as {flag: value} (order aside); -q is --quiet."""
    out: dict[str, str | None] = {}
    words = iter(argv[2:])
    for word in words:
        if word in ("-q", "--quiet"):
            out["--quiet"] = None
        else:
            out[word] = next(words)
    return out


def test_the_demo_rules_match_the_demo_data(demo_data: Path) -> None:
    groups = classify(demo_data)
    assert len(groups["corrupt"]) == 1 and groups["warning"] and len(groups["blocked"]) > 50


def test_dry_run_counts_match_the_rules_and_exit_1(demo_data: Path, workdir: Path) -> None:
    groups = classify(demo_data)
    dlq = f"sqlite:///{workdir / 'dlq.db'}"
    result = invoke(*base(demo_data, dlq), "--mode", "dry-run", "--concurrency", "4", "--batch-size", "500")
    assert result.exit_code == 1, result.output
    out = result.stdout
    blocked = len(groups["blocked"]) + len(groups["corrupt"])
    assert f"Total Items Analyzed: {RECORDS:,}" in out
    assert f"Ready: {len(groups['ready']):,} (" in out
    assert f"Warnings: {len(groups['warning']):,} (" in out
    assert f"Blocked: {blocked:,} (" in out
    first = groups["blocked"][0]
    assert f"1. Item ID: {first}\n   Issue: email: invalid email address" in out
    assert "   Fix: correct the address in the source system" in out
    assert "   Impact: the record is saved with nothing to charge" in out
    # the corrupt line, counted by kind (the listing shows the first 20 blocked records)
    assert "1  blocked  <line>: line <n> does not parse: invalid JSON" in out
    assert not (workdir / "dlq.db").exists()  # a dry-run writes nothing
    as_json = invoke(*base(demo_data, dlq), "--mode", "dry-run", "--json")
    data = json.loads(as_json.stdout)
    assert (data["ready"], data["warnings"], data["blocked"]) == (
        len(groups["ready"]), len(groups["warning"]), blocked)
    assert as_json.exit_code == 1


def test_dry_run_without_validate_is_a_usage_error(demo_data: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(demo_data), "--fn", "batchguard._demo:process",
                                       "--mode", "dry-run"])
    assert result.exit_code == 2 and "needs --validate" in result.output
    bad = CliRunner().invoke(main, ["run", str(demo_data), "--fn", "batchguard._demo:process",
                                    "--validate", "nope_module:check", "--mode", "dry-run"])
    assert bad.exit_code == 2 and "'--validate'" in bad.output and "nope_module" in bad.output


def test_dry_run_of_clean_data_exits_0(workdir: Path) -> None:
    path = workdir / "clean.jsonl"
    path.write_text("".join(json.dumps({"id": i, "email": f"u{i}@x.org", "amount": 5}) + "\n"
                            for i in range(20)))
    result = invoke("run", str(path), "--fn", "batchguard._demo:process", "--validate",
                    "batchguard._demo:validate", "--mode", "dry-run", "-q")
    assert result.exit_code == 0, result.output
    assert "Ready: 20 (100%)" in result.stdout and "Proceed to sample mode: batchguard run" in result.stdout


def test_full_run_never_passes_a_blocked_record_to_fn(demo_data: Path, workdir: Path) -> None:
    groups = classify(demo_data)
    SEEN.clear()
    dlq = f"sqlite:///{workdir / 'full.db'}"
    result = invoke("run", str(demo_data), "--fn", "test_cli_phases:record_seen", "--validate",
                    "batchguard._demo:validate", "--dlq", dlq, "-q", "--concurrency", "4")
    assert result.exit_code == 1, result.output  # blocked records are failures
    seen_ids = sorted(r["id"] for r in SEEN if isinstance(r, dict))
    assert seen_ids == sorted(groups["ready"] + groups["warning"])
    assert (f"Validation: {len(groups['blocked']):,} blocked (dead-lettered at stage 'validate', "
            f"--fn never called), {len(groups['warning']):,} ran with warnings.") in result.stdout
    with open_dlq(dlq) as queue:
        entries = queue.list()
    by_stage: dict[str, list[Any]] = {}
    for entry in entries:
        by_stage.setdefault(entry.stage, []).append(entry)
    assert sorted(e.record_id for e in by_stage["validate"]) == sorted(groups["blocked"])
    assert {e.error_class for e in by_stage["validate"]} == {"permanent"}
    assert all("(fix: " in e.error_message for e in by_stage["validate"])
    # the corrupt line keeps its parse error (dlq retry knows it for an unparsed line)
    assert [e.error_type for e in by_stage["process"]] == ["InputParseError"]


def test_sample_picks_short_medium_long_and_never_a_blocked_record(demo_data: Path, workdir: Path) -> None:
    groups = classify(demo_data)
    runnable = set(groups["ready"] + groups["warning"])
    sizes = {}
    for line in demo_data.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["id"] in runnable:
            sizes[record["id"]] = len(json.dumps(record))
    shortest = min(sizes, key=lambda i: (sizes[i], i))
    longest = max(sizes, key=lambda i: (sizes[i], -i))
    SEEN.clear()
    dlq = f"sqlite:///{workdir / 'sample.db'}"
    result = invoke("run", str(demo_data), "--fn", "test_cli_phases:record_seen", "--validate",
                    "batchguard._demo:validate", "--dlq", dlq, "--mode", "sample", "-q")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"1. [short] Item ID: {shortest} (size {sizes[shortest]})" in out
    assert f"3. [long] Item ID: {longest} (size {sizes[longest]})" in out
    medium = next(line for line in out.splitlines() if line.startswith("2. [medium] Item ID: "))
    medium_id = int(medium.split("Item ID: ")[1].split()[0])
    assert sizes[shortest] <= sizes[medium_id] <= sizes[longest]
    assert sorted(r["id"] for r in SEEN) == sorted({shortest, medium_id, longest})
    assert not (workdir / "sample.db").exists()
    assert "Proceed: batchguard run" in out and "--mode" not in step(out, "Proceed:")


def test_the_printed_next_steps_run_verbatim(demo_data: Path, workdir: Path) -> None:
    groups = classify(demo_data)
    (workdir / "a dir").mkdir()
    dlq = f"sqlite:///{workdir / 'a dir' / 'q.db'}"
    dry = invoke(*base(demo_data, dlq), "--mode", "dry-run", "--batch-size", "700")
    again = step(dry.stdout, "Re-run dry-run to verify fixes:")
    assert again[:2] == ["run", str(demo_data)]
    assert options(again) == options([*base(demo_data, dlq), "--batch-size", "700", "--mode", "dry-run"])
    assert invoke(*again).stdout == dry.stdout
    sample_cmd = step(dry.stdout, "Proceed to sample mode:")
    sampled = invoke(*sample_cmd)
    assert sampled.exit_code == 0 and "3. [long]" in sampled.stdout, sampled.output
    full = invoke(*step(sampled.stdout, "Proceed:"))
    assert "Validation: " in full.stdout, full.output
    with open_dlq(dlq) as queue:
        assert queue.count() == len(groups["blocked"]) + len(groups["corrupt"])


def test_a_password_in_the_dlq_url_is_redacted_in_next_steps(demo_data: Path) -> None:
    result = invoke(*base(demo_data, "postgresql://bob:s3cret@localhost:1/db"), "--mode", "dry-run")
    assert "s3cret" not in result.output
    assert "--dlq 'postgresql://bob:***@localhost:1/db'" in result.stdout or "s3cret" not in result.stdout


def test_on_a_terminal_the_screen_is_rich_and_shows_text_as_it_is(workdir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = workdir / "odd.jsonl"
    path.write_text(json.dumps({"id": "[bold]x[/]", "email": "[/items] no at", "amount": 1}) + "\n")
    monkeypatch.setattr("batchguard.cli.phases.is_tty", lambda stream: True)
    result = invoke("run", str(path), "--fn", "batchguard._demo:process", "--validate",
                    "batchguard._demo:validate", "--mode", "dry-run", "-q")
    assert result.exit_code == 1, result.output
    assert "1. Item ID: [bold]x[/]" in result.stdout
    assert "invalid email address '[/items] no at'" in result.stdout
    # a command is never broken over lines by rich (the terminal wraps it softly): it copies whole
    command = step(result.stdout, "Proceed to sample mode:")
    assert command[-2:] == ["--mode", "sample"] and len(shlex.join(command)) > 80


def test_a_job_started_with_validate_saves_it_for_its_resume(demo_data: Path, workdir: Path) -> None:
    from batchguard.cli.phases import saved_phase
    from batchguard.jobs import job_status

    store = f"sqlite:///{workdir / 'jobs.db'}"
    result = invoke("run", str(demo_data), "--fn", "batchguard._demo:process", "--validate",
                    "batchguard._demo:validate", "--job", "nightly", "--store", store, "-q")
    assert result.exit_code == 1, result.output
    cli = job_status("nightly", store=store).config["meta"]["cli"]
    assert cli["validate"] == "batchguard._demo:validate"
    phase = saved_phase(cli)
    assert phase is not None and phase.validate is _demo.validate and phase.mode == "full"


def test_next_steps_carry_every_option_given_and_run_verbatim(demo_data: Path, workdir: Path) -> None:
    config = workdir / "run.toml"
    config.write_text('max_delay = 3\n')
    given = ["--rate-limit", "5000/s", "--burst", "50", "--breaker", "5/10", "--max-failures", "20%",
             "--timeout", "2", "--jitter", "none", "--id-field", "id", "--stage", "load",
             "--concurrency", "2", "--config", str(config), "--format", "jsonl"]
    dry = invoke(*base(demo_data, f"sqlite:///{workdir / 'q.db'}"), *given, "--mode", "dry-run")
    assert dry.exit_code == 1, dry.output
    again = step(dry.stdout, "Re-run dry-run to verify fixes:")
    flags = options(again)
    assert flags["--rate-limit"] == "5000.0/s" and flags["--breaker"] == "5/10"
    assert flags["--max-failures"] == "0.2" and flags["--config"] == str(config)
    assert flags["--id-field"] == "id" and flags["--stage"] == "load" and flags["--jitter"] == "none"
    assert invoke(*again).stdout == dry.stdout


@pytest.mark.parametrize("mode", ["dry-run", "sample"])
def test_report_json_writes_the_phase_report(demo_data: Path, workdir: Path, mode: str) -> None:
    """--report-json on a dry-run or a sample writes that screen's JSON, privately: it was taken
    and silently ignored, so a script waiting for the file found none."""
    path = workdir / f"{mode}.json"
    result = invoke(*base(demo_data, f"sqlite:///{workdir / 'q.db'}"), "--mode", mode, "--json",
                    "--report-json", str(path))
    assert result.exit_code == (1 if mode == "dry-run" else 0), result.output
    assert json.loads(path.read_text()) == json.loads(result.stdout)
    assert path.stat().st_mode & 0o777 == 0o600
