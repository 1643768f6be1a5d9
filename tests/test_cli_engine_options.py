"""``batchguard run``'s engine options and ``--config FILE.toml``: each changes what a real run
does (CliRunner, real files, the native engine), a bad value is a usage error naming its option,
and a job resumes with the settings it was started with."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batchguard.cli import main
from batchguard.dlq import SqliteDLQ
from batchguard.jobs import job_status

FNS = '''
import threading, time

active = {}
overlap = []
lock = threading.Lock()

def down(record):
    raise ConnectionError("connection refused")

def fail_odd(record):
    if record["id"] % 2:
        raise ValueError(f"odd id {record['id']}")
    return record

def slow_three(record):
    if record["id"] == 3:
        time.sleep(0.5)
    return record

def per_key(record):
    key = record["k"]
    with lock:
        active[key] = active.get(key, 0) + 1
        overlap.append(active[key])
    time.sleep(0.005)
    with lock:
        active[key] -= 1
    return record
'''


@pytest.fixture
def fns(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A module of callbacks in the working directory (importable as ``engine_fns``)."""
    (workdir / "engine_fns.py").write_text(FNS)
    monkeypatch.syspath_prepend(str(workdir))
    sys.modules.pop("engine_fns", None)
    importlib.invalidate_caches()
    yield importlib.import_module("engine_fns")
    sys.modules.pop("engine_fns", None)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["run", *args, "-q"], catch_exceptions=False)


def records(workdir: Path, n: int, *, keys: int = 3) -> str:
    path = workdir / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "k": i % keys, "name": f"r{i}"}) + "\n" for i in range(n)))
    return str(path)


def entries(workdir: Path) -> list[Any]:
    with SqliteDLQ(workdir / "batchguard.db") as dlq:
        return dlq.list(limit=100_000)


def pending_of(result: Result) -> int:
    for line in result.output.splitlines():
        if line.startswith("Pending:"):
            return int(line.split()[1].replace(",", ""))
    return 0


# ---------------------------------------------------------------------------- behaviour


def test_max_failures_stops_early_with_records_pending(workdir: Path, fns: Any) -> None:
    path = records(workdir, 100)
    result = invoke(path, "--fn", "engine_fns:fail_odd", "--max-attempts", "1", "--batch-size", "10",
                    "--max-failures", "3")
    assert result.exit_code == 1
    assert len(entries(workdir)) == 4  # past 3 dead letters the run stops
    assert pending_of(result) > 50
    # a rate: past 20% failed, stop
    (workdir / "batchguard.db").unlink()
    result = invoke(path, "--fn", "engine_fns:fail_odd", "--max-attempts", "1", "--batch-size", "10",
                    "--max-failures", "20%")
    assert result.exit_code == 1 and pending_of(result) > 0
    assert len(entries(workdir)) < 50


def test_without_max_failures_every_record_is_final(workdir: Path, fns: Any) -> None:
    result = invoke(records(workdir, 100), "--fn", "engine_fns:fail_odd", "--max-attempts", "1")
    assert result.exit_code == 1 and pending_of(result) == 0
    assert len(entries(workdir)) == 50


def test_a_dependency_down_opens_the_breaker_and_leaves_records_pending(workdir: Path, fns: Any) -> None:
    path = records(workdir, 300)
    result = invoke(path, "--fn", "engine_fns:down", "--base-delay", "0", "--batch-size", "20",
                    "--breaker", "5/10", "--breaker-abort", "0.9")
    assert result.exit_code == 1
    assert "breaker" in result.output.lower()
    assert len(entries(workdir)) < 30
    assert pending_of(result) > 250
    # without the breaker every record is retried and dead-lettered
    (workdir / "batchguard.db").unlink()
    result = invoke(path, "--fn", "engine_fns:down", "--base-delay", "0", "--batch-size", "20")
    assert len(entries(workdir)) == 300 and pending_of(result) == 0


def test_key_field_runs_equal_keys_one_at_a_time(workdir: Path, fns: Any) -> None:
    path = records(workdir, 60, keys=2)
    result = invoke(path, "--fn", "engine_fns:per_key", "--concurrency", "8")
    assert result.exit_code == 0
    assert max(fns.overlap) > 1  # without a key, records of a key overlap
    fns.overlap.clear()
    result = invoke(path, "--fn", "engine_fns:per_key", "--concurrency", "8", "--key-field", "k")
    assert result.exit_code == 0
    assert max(fns.overlap) == 1


def test_key_field_missing_dead_letters_that_record(workdir: Path, fns: Any) -> None:
    path = workdir / "in.jsonl"
    path.write_text('{"id": 0, "k": 1}\n{"id": 1}\n{oops\n')
    result = invoke(str(path), "--fn", "engine_fns:fail_odd", "--key-field", "k", "--max-attempts", "1")
    assert result.exit_code == 1
    by_index = {e.record_index: e for e in entries(workdir)}
    assert by_index[1].error_type == "KeyError"
    assert by_index[2].error_type == "InputParseError"  # the parse error, not the key's


def test_id_field_names_dead_letters(workdir: Path, fns: Any) -> None:
    invoke(records(workdir, 6), "--fn", "engine_fns:fail_odd", "--max-attempts", "1", "--id-field", "name")
    assert sorted(e.record_id for e in entries(workdir)) == ["r1", "r3", "r5"]


def test_timeout_dead_letters_a_slow_record(workdir: Path, fns: Any) -> None:
    result = invoke(records(workdir, 6), "--fn", "engine_fns:slow_three", "--timeout", "0.1",
                    "--max-attempts", "1")
    assert result.exit_code == 1
    [entry] = entries(workdir)
    assert (entry.record_index, entry.error_type) == (3, "TimeoutError")


def test_rate_limit_paces_attempts(workdir: Path, fns: Any) -> None:
    path = records(workdir, 6)
    started = time.monotonic()
    assert invoke(path, "--fn", "engine_fns:fail_odd", "--max-attempts", "1", "--rate-limit", "20/s").exit_code == 1
    assert time.monotonic() - started >= 0.2  # 6 attempts, one per 50 ms after the first
    started = time.monotonic()
    invoke(path, "--fn", "engine_fns:fail_odd", "--max-attempts", "1", "--rate-limit", "1200/m", "--burst", "6")
    assert time.monotonic() - started < 0.2


def test_delay_between_batches_pauses(workdir: Path, fns: Any) -> None:
    path = records(workdir, 6)
    started = time.monotonic()
    invoke(path, "--fn", "engine_fns:fail_odd", "--batch-size", "2", "--delay-between-batches", "0.15",
           "--max-attempts", "1")
    assert time.monotonic() - started >= 0.3


def test_success_threshold_judges_the_run_and_stage_names_its_entries(workdir: Path, fns: Any) -> None:
    path = records(workdir, 10)  # half of them fail
    for job, threshold, status in (("lenient", "0.4", "completed"), ("strict", "0.6", "failed")):
        result = invoke(path, "--fn", "engine_fns:fail_odd", "--max-attempts", "1", "--job", job,
                        "--success-threshold", threshold, "--stage", "enrich")
        assert result.exit_code == 1
        assert job_status(job, store="sqlite:///batchguard.db").status == status
    assert {e.stage for e in entries(workdir)} == {"enrich"}


def test_seed_and_jitter_make_retry_delays_reproducible(workdir: Path, fns: Any) -> None:
    path = records(workdir, 2)
    delays = []
    for _ in range(2):
        invoke(path, "--fn", "engine_fns:fail_odd", "--base-delay", "0.01", "--max-delay", "0.02",
               "--jitter", "equal", "--seed", "7", "--max-attempts", "3")
        [entry] = entries(workdir)
        delays.append([a.delay_s for a in entry.attempts])
        (workdir / "batchguard.db").unlink()
    assert delays[0] == delays[1]
    assert all(d is None or 0.005 <= d <= 0.02 for d in delays[0])


# ---------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(("args", "option"), [
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--rate-limit", "0/s"], "--rate-limit"),
    (["--rate-limit", "fast"], "--rate-limit"),
    (["--rate-limit", "5/d"], "--rate-limit"),
    (["--rate-limit", "5/s", "--burst", "0"], "--burst"),
    (["--burst", "3"], "--burst"),
    (["--breaker", "5/3"], "--breaker"),
    (["--breaker", "x"], "--breaker"),
    (["--breaker-cooldown", "-1"], "--breaker-cooldown"),
    (["--breaker-abort", "2"], "--breaker-abort"),
    (["--success-threshold", "1.5"], "--success-threshold"),
    (["--max-failures", "1.5"], "--max-failures"),
    (["--max-failures", "-1"], "--max-failures"),
    (["--max-failures", "lots"], "--max-failures"),
    (["--delay-between-batches", "-2"], "--delay-between-batches"),
    (["--max-delay", "0.5"], "--max-delay"),
    (["--jitter", "wild"], "--jitter"),
    (["--stage", ""], "--stage"),
])
def test_a_bad_value_is_a_usage_error_naming_the_option(workdir: Path, fns: Any, args: list[str],
                                                        option: str) -> None:
    result = CliRunner().invoke(main, ["run", records(workdir, 3), "--fn", "engine_fns:fail_odd", *args])
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.output
    assert not (workdir / "batchguard.db").exists()  # nothing ran


# ---------------------------------------------------------------------------- --config


def test_config_values_apply_and_the_command_line_wins(workdir: Path, fns: Any) -> None:
    path = records(workdir, 100)
    config = workdir / "run.toml"
    config.write_text('max_failures = 3\nmax-attempts = 1\nstage = "from-config"\nbatch_size = 10\n'
                      'rate_limit = "100000/s"\nid_field = "name"\n')
    result = invoke(path, "--fn", "engine_fns:fail_odd", "--config", str(config))
    assert result.exit_code == 1 and pending_of(result) > 0
    got = entries(workdir)
    assert len(got) == 4 and {e.stage for e in got} == {"from-config"}
    assert {e.record_id for e in got} == {"r1", "r3", "r5", "r7"}
    assert all(len(e.attempts) == 1 for e in got)
    (workdir / "batchguard.db").unlink()
    result = invoke(path, "--fn", "engine_fns:fail_odd", "--config", str(config), "--stage", "cli",
                    "--max-failures", "5")
    got = entries(workdir)
    assert len(got) == 6 and {e.stage for e in got} == {"cli"}


@pytest.mark.parametrize(("text", "expected"), [
    ("rate_limt = '5/s'\n", "unknown key 'rate_limt'"),
    ("rate_limit = '5/s'\nfn = 'x:y'\n", "unknown key 'fn'"),
    ("timeout = 'soon'\n", "timeout"),
    ("max_failures = true\n", "max_failures"),
    ("seed = false\n", "seed"),
    ("[run]\ntimeout = 1\n", "unknown key 'run'"),
    ("stage = 3\n", "stage"),
    ("timeout = [\n", "run.toml"),
])
def test_a_bad_config_is_a_usage_error_naming_the_key(workdir: Path, fns: Any, text: str, expected: str) -> None:
    config = workdir / "run.toml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["run", records(workdir, 3), "--fn", "engine_fns:fail_odd",
                                       "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "--config" in result.output


def test_a_config_value_out_of_range_names_the_option(workdir: Path, fns: Any) -> None:
    config = workdir / "run.toml"
    config.write_text("timeout = -1\n")
    result = CliRunner().invoke(main, ["run", records(workdir, 3), "--fn", "engine_fns:fail_odd",
                                       "--config", str(config)])
    assert result.exit_code == 2 and "'--timeout'" in result.output


# ---------------------------------------------------------------------------- jobs


def test_a_job_resumes_with_the_settings_it_was_started_with(workdir: Path, fns: Any) -> None:
    path = records(workdir, 100)
    result = invoke(path, "--fn", "engine_fns:fail_odd", "--job", "nightly", "--max-attempts", "1",
                    "--batch-size", "2", "--max-failures", "2", "--stage", "s1", "--id-field", "name")
    assert result.exit_code == 1
    state = job_status("nightly", store="sqlite:///batchguard.db")
    saved = state.config["meta"]["cli"]["engine"]
    assert saved == {"max_failures": 2, "stage": "s1", "id_field": "name"}
    assert sorted(e.record_id for e in entries(workdir)) == ["r1", "r3", "r5"]  # past 2, it stops
    result = CliRunner().invoke(main, ["jobs", "resume", "nightly", "-q"], catch_exceptions=False)
    assert result.exit_code == 1  # the budget of 2 stops the resumed run too
    got = entries(workdir)
    ids = {e.record_id for e in got}
    assert {"r7", "r9"} <= ids and len(ids) < 10  # went on from batch 2, stopped soon after
    assert {e.stage for e in got} == {"s1"} and all(str(e.record_id).startswith("r") for e in got)
    assert job_status("nightly", store="sqlite:///batchguard.db").status != "completed"
