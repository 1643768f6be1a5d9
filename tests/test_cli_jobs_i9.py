"""Issue 9 items 4 (jobs part) and 5: ``batchguard jobs status`` (batch table, record counts,
``--record``, ``--batches``), ``jobs retry-failed``, ``jobs resume`` overriding saved settings,
``run --bulk``, ``run --json`` when the run fails, and passwords kept out of every printed
command. The real CLI (CliRunner, and a real subprocess for Ctrl-C), real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import batchguard
from batchguard import RetryPolicy, run_batches
from batchguard.cli import main
from batchguard.cli.jobs_status import SPAN_ROWS, batch_table_lines
from batchguard.dlq import SqliteDLQ
from batchguard.errors import JobNotFoundError, JobStoreUnavailableError
from batchguard.jobs import BatchSpan, BatchTable, job_status

FNS = '''
import os, time

def sku_fail(record):
    if record["n"] % 5 == 2:
        raise ValueError(f"no price for {record['sku']}")
    if record["n"] == int(os.environ.get("BG_FATAL_AT", "-1")):
        raise MemoryError("simulated out of memory")
    return record

def fixed(record):
    return record

def early_fail(record):
    if record["n"] in (2, 7):
        raise ValueError(f"no price for {record['sku']}")
    if record["n"] == int(os.environ.get("BG_FATAL_AT", "-1")):
        raise MemoryError("simulated out of memory")
    return record

def key_fail(record):
    if record["n"] % 5 == 2:
        raise KeyError("price")
    return record

def bulk_fn(records):
    if any(r["n"] == 13 for r in records):
        raise ValueError("poison row 13 in this call")
    return [r["n"] * 2 for r in records]

def blocked_3(record):
    from batchguard.validation import ValidationIssue
    return [ValidationIssue("n", "ends in 3", "fix it")] if record["n"] % 10 == 3 else []

def logged(record):
    with open("calls.log", "a") as log:
        print(record["n"], file=log)
    if record["n"] == int(os.environ.get("BG_FATAL_AT", "-1")):
        raise MemoryError("simulated out of memory")
    return record

def bulk_fatal(records):
    if any(r["n"] == int(os.environ.get("BG_FATAL_AT", "-1")) for r in records):
        raise MemoryError("simulated out of memory")
    return bulk_fn(records)

def sleepy(record):
    time.sleep(0.05)
    return record
'''


@pytest.fixture
def fns(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module of callbacks, ``i9fns``, in the working directory."""
    (workdir / "i9fns.py").write_text(FNS)
    monkeypatch.syspath_prepend(str(workdir))
    sys.modules.pop("i9fns", None)
    yield workdir
    sys.modules.pop("i9fns", None)


def skus(workdir: Path, n: int, *, bad_line_at: int | None = None) -> str:
    lines = [json.dumps({"sku": f"SKU-{i:04d}", "n": i}) for i in range(n)]
    if bad_line_at is not None:
        lines.insert(bad_line_at, '{"sku": broken')
    path = workdir / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def stopped_job(workdir: Path, *extra: str) -> Result:
    """40 records by SKU, batches of 10; n % 5 == 2 fail; a fatal error at n=25 stops the run
    inside batch 2: batches 0-1 done, 2 stopped, 3 pending."""
    result = cli("run", skus(workdir, 40), "--fn", "i9fns:sku_fail", "--job", "nightly", "--id-field", "sku",
                 "--batch-size", "10", "--max-attempts", "1", "--base-delay", "0", "-q", *extra,
                 env={"BG_FATAL_AT": "25"})
    assert result.exit_code == 1, result.output
    return result


# ---------------------------------------------------------------------------- jobs status


def test_status_shows_the_batch_table_and_the_record_counts(fns: Path) -> None:
    stopped_job(fns)
    result = cli("jobs", "status", "nightly")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Records:      16 succeeded, 4 dead-lettered, 20 pending" in out, out
    assert "Batches:      2 of 4 done, 1 stopped in flight, 1 pending (size 10)" in out, out
    rows = {line.split()[0]: line.split() for line in out.split("BATCHES", 1)[1].splitlines()[2:] if line.strip()}
    assert rows["0-1"][1:6] == ["done", "20", "16", "4", "0"], out
    # 20, 21, 23, 24 succeeded, 22 and 25 (fatal) failed, 26-29 never ran: pending, it reruns.
    assert rows["2"][1:3] == ["stopped", "(in"] and rows["2"][4:8] == ["10", "4", "2", "4"], out
    assert rows["3"][1:3] == ["pending", "10"], out
    data = json.loads(cli("jobs", "status", "nightly", "--json").output)
    assert data["status"] == "aborted" and data["succeeded"] == 16  # the job's state, as before
    spans = [(s["first"], s["last"], s["state"]) for s in data["batches"]["spans"]]
    assert spans == [(0, 1, "done"), (2, 2, "stopped"), (3, 3, "pending")]
    assert data["batches"]["stopped"] == 1 and data["dead_letters"] is not None


def test_status_pages_batches_one_by_one_and_its_next_page_command_works(fns: Path) -> None:
    stopped_job(fns)
    first = cli("jobs", "status", "nightly", "--batches", "--limit", "2")
    assert first.exit_code == 0, first.output
    assert "Batches 0-1 of 4 of job nightly:" in first.output
    command = first.output.split("next page: ", 1)[1].splitlines()[0]
    assert command == "batchguard jobs status nightly --batches --offset 2 --limit 2"
    second = cli(*shlex.split(command)[1:])
    assert "Batches 2-3 of 4 of job nightly:" in second.output and "next page" not in second.output
    states = [line.split()[:2] for line in second.output.splitlines()[2:] if line.strip()]
    assert states == [["2", "stopped"], ["3", "pending"]], second.output
    as_json = json.loads(cli("jobs", "status", "nightly", "--batches", "--offset", "3", "--json").output)
    assert [b["state"] for b in as_json["batches"]] == ["pending"]


def test_record_ids_that_are_not_indices_are_found_in_the_saved_input(fns: Path) -> None:
    stopped_job(fns)
    dead = cli("jobs", "status", "nightly", "--record", "SKU-0007")
    assert dead.exit_code == 0, dead.output
    assert "Record 'SKU-0007' of job 'nightly': DEAD-LETTERED" in dead.output
    assert "position:  #7, batch 0 (done)" in dead.output and "ValueError: no price for SKU-0007" in dead.output
    show = next(line.split("details:", 1)[1].strip() for line in dead.output.splitlines() if "details:" in line)
    shown = cli(*shlex.split(show)[1:])  # the printed command, run as printed
    assert shown.exit_code == 0 and "SKU-0007" in shown.output, shown.output

    ok = json.loads(cli("jobs", "status", "nightly", "--record", "SKU-0008", "--json").output)
    assert (ok["state"], ok["record_index"], ok["batch_state"]) == ("succeeded", 8, "done")
    stopped = json.loads(cli("jobs", "status", "nightly", "--record", "SKU-0022", "--json").output)
    assert (stopped["state"], stopped["batch_state"]) == ("pending", "stopped")
    assert stopped["entry"]["error_type"] == "ValueError"  # failed in the stopped run; reruns on resume
    later = cli("jobs", "status", "nightly", "--record", "SKU-0031")
    assert "PENDING" in later.output and "batchguard jobs resume nightly" in later.output
    nobody = json.loads(cli("jobs", "status", "nightly", "--record", "SKU-9999", "--json").output)
    assert nobody["state"] == "unknown"
    by_index = json.loads(cli("jobs", "status", "nightly", "--index", "12", "--json").output)
    assert (by_index["state"], by_index["record_id"]) == ("dead_lettered", "SKU-0012")
    both = cli("jobs", "status", "nightly", "--record", "x", "--index", "1")
    assert both.exit_code == 2


def test_a_library_job_with_id_of_is_located_through_its_dead_letters(workdir: Path) -> None:
    store = f"sqlite:///{workdir / 'lib.db'}"
    records = [{"sku": f"S{i}", "n": i} for i in range(30)]

    def fn(record: dict[str, Any]) -> int:
        if record["n"] in (4, 17):
            raise KeyError("price")
        if record["n"] == 22:
            raise MemoryError("stop")
        return int(record["n"])

    run_batches(records, fn, batch_size=5, job="lib", store=store, id_of=lambda r: r["sku"],
                retry=RetryPolicy(max_attempts=1))
    found = json.loads(cli("jobs", "status", "lib", "--store", store, "--record", "S17", "--json").output)
    assert (found["state"], found["record_index"]) == ("dead_lettered", 17)
    # No entry and no known input: the CLI says it cannot place the record, and how to.
    unknown = cli("jobs", "status", "lib", "--store", store, "--record", "S3")
    assert "UNKNOWN" in unknown.output and "--index N" in unknown.output, unknown.output
    placed = json.loads(cli("jobs", "status", "lib", "--store", store, "--index", "3", "--json").output)
    assert placed["state"] == "succeeded"


def test_a_table_of_many_spans_shows_its_first_and_last_rows_and_says_what_it_left_out() -> None:
    spans = tuple(BatchSpan(i, i, "done" if i % 2 == 0 else "pending", 10, 10 if i % 2 == 0 else 0,
                            pending=0 if i % 2 == 0 else 10) for i in range(100))
    lines = batch_table_lines("big", "sqlite:///batchguard.db",
                         BatchTable("big", 10, 100, 50, 0, spans))[2].splitlines()
    assert len(lines) == 1 + SPAN_ROWS + 1  # header, the first and last halves, one line for the rest
    assert lines[1].split()[:2] == ["0", "done"] and lines[-1].split()[:2] == ["99", "pending"]
    assert "... 70 more rows: batches 15-84" in lines[1 + SPAN_ROWS // 2]


# ---------------------------------------------------------------------------- retry-failed


def test_retry_failed_replays_the_jobs_dead_letters_and_keeps_its_totals(fns: Path) -> None:
    path = skus(fns, 20)
    first = cli("run", path, "--fn", "i9fns:key_fail", "--job", "j", "--max-attempts", "1", "--base-delay", "0",
                "--batch-size", "5", "-q")
    assert first.exit_code == 1 and job_status("j", store="sqlite:///batchguard.db").failed == 4
    again = cli("jobs", "retry-failed", "j", "--fn", "i9fns:key_fail", "-q")
    assert again.exit_code == 1, again.output  # still broken: the entries stay
    assert "0 dead letters of job 'j' succeeded; 4 failed again" in again.output
    other_type = cli("jobs", "retry-failed", "j", "--fn", "i9fns:fixed", "--error-type", "ValueError", "-q")
    assert other_type.exit_code == 0 and "0 dead letters of job 'j' succeeded; 0 failed" in other_type.output
    fixed = cli("jobs", "retry-failed", "j", "--fn", "i9fns:fixed", "--error-type", "KeyError", "-q")
    assert fixed.exit_code == 0, fixed.output
    assert "4 dead letters of job 'j' succeeded; 0 failed again" in fixed.output
    assert "Job 'j': 20 succeeded, 0 dead-lettered." in fixed.output
    state = job_status("j", store="sqlite:///batchguard.db")
    assert (state.succeeded, state.failed) == (20, 0)
    data = json.loads(cli("jobs", "status", "j", "--json").output)
    assert data["dead_letters"]["replayed"] == 4 and data["dead_letters"]["open"] == 0
    # A record without an id of its own is named file:line (issue 11's sources): line 3 is #2.
    where = json.loads(cli("jobs", "status", "j", "--record", f"{path}:3", "--json").output)
    assert where["state"] == "succeeded" and "replay" in where["detail"]


def test_retry_failed_reports_next_steps_with_the_fn_it_was_given(fns: Path) -> None:
    """Its report's commands named --fn MODULE:CALLABLE though the command had just been given
    the function, so a printed next step could not be pasted as it was."""
    path = skus(fns, 10)
    cli("run", path, "--fn", "i9fns:key_fail", "--job", "j", "--max-attempts", "1", "--base-delay", "0", "-q")
    again = cli("jobs", "retry-failed", "j", "--fn", "i9fns:key_fail", "-q")
    assert again.exit_code == 1, again.output
    retries = [line for line in again.output.splitlines() if "batchguard dlq retry" in line]
    assert retries and all("--fn i9fns:key_fail" in line for line in retries), again.output
    assert "MODULE:CALLABLE" not in again.output


def test_retry_failed_that_matches_nothing_says_so(fns: Path) -> None:
    """A mistyped --error-type printed an empty run's report, 'BATCH COMPLETE ... none: every
    record succeeded', above the job's line that still counts its dead letters."""
    path = skus(fns, 10)
    cli("run", path, "--fn", "i9fns:key_fail", "--job", "j", "--max-attempts", "1", "--base-delay", "0", "-q")
    typo = cli("jobs", "retry-failed", "j", "--fn", "i9fns:fixed", "--error-type", "KeyEror", "-q")
    assert "every record succeeded" not in typo.output and "BATCH COMPLETE" not in typo.output, typo.output
    assert "nothing was replayed: job 'j' has no open dead letter of type KeyEror" in typo.output, typo.output
    assert "batchguard dlq list --job j" in typo.output


def test_status_counts_dead_letters_by_status_and_a_skipped_record_says_why(fns: Path) -> None:
    stopped_job(fns)
    with SqliteDLQ(fns / "batchguard.db") as dlq:
        entry = next(e for e in dlq.list(job_id="nightly") if e.record_id == "SKU-0012")
        dlq.resolve([entry.id], "discontinued product", by="ops")
    out = cli("jobs", "status", "nightly").output
    # 2, 7 and 17 open in done batches, 22 and 25 open in the stopped batch; 12 resolved.
    assert "Dead letters: 5 open, 1 resolved, 0 replayed" in out, out
    assert "2 open ones are of stopped batches, which rerun" in out, out
    skipped = cli("jobs", "status", "nightly", "--record", "SKU-0012")
    assert "DEAD-LETTERED" in skipped.output and "(resolved by ops: discontinued product)" in skipped.output


def test_retry_failed_needs_a_known_job(fns: Path) -> None:
    skus(fns, 1)
    assert cli("run", "in.jsonl", "--fn", "i9fns:fixed", "--job", "j", "-q").exit_code == 0
    result = cli("jobs", "retry-failed", "ghost", "--fn", "i9fns:fixed")
    assert result.exit_code == 2 and "no job named 'ghost'" in result.output


# ---------------------------------------------------------------------------- resume overrides


def test_resume_overrides_saved_settings_and_says_what_it_changed(fns: Path) -> None:
    stopped_job(fns, "--concurrency", "1", "--timeout", "30")
    (fns / "run.toml").write_text('max_attempts = 2\nconcurrency = 3\n')
    result = CliRunner().invoke(main, ["jobs", "resume", "nightly", "--concurrency", "8", "--config", "run.toml",
                                       "-q"], catch_exceptions=False)
    assert result.exit_code == 1, result.output  # resumed to the end; 8 records are dead-lettered
    notice = result.stderr
    assert "Resuming job 'nightly' with" in notice
    assert "--concurrency 8 (saved: 1)" in notice  # the command line wins over --config and saved
    assert "--max-attempts 2 (saved: 1)" in notice  # --config wins over saved
    assert "--timeout" not in notice  # kept as saved, not changed
    cli_meta = job_status("nightly", store="sqlite:///batchguard.db").config["meta"]["cli"]
    assert (cli_meta["concurrency"], cli_meta["max_attempts"], cli_meta["engine"]["timeout"]) == (8, 2, 30.0)
    bad = cli("jobs", "resume", "nightly", "--force", "--rate-limit", "fast")
    assert bad.exit_code == 2 and "--rate-limit" in bad.output


def test_a_completed_job_with_dead_letters_says_so_when_resumed(fns: Path) -> None:
    stopped_job(fns)
    resumed = cli("jobs", "resume", "nightly", "-q")
    assert "Job 'nightly': completed, 4/4 batches done, 32 succeeded, 8 dead-lettered" in resumed.output
    assert resumed.exit_code == 1
    done = cli("jobs", "resume", "nightly")
    assert done.exit_code == 0 and "already completed" in done.output
    assert "8 records are dead-lettered" in done.output, done.output


def test_a_resume_whose_own_records_all_succeed_names_the_jobs_earlier_dead_letters(fns: Path) -> None:
    path = skus(fns, 20)
    first = cli("run", path, "--fn", "i9fns:early_fail", "--job", "k", "--batch-size", "10", "--max-attempts", "1",
                "--base-delay", "0", "-q", env={"BG_FATAL_AT": "15"})
    assert first.exit_code == 1
    assert job_status("k", store="sqlite:///batchguard.db").failed == 2  # 2 and 7, of the done batch 0
    resumed = cli("jobs", "resume", "k")  # batch 1 reruns, and every record of it succeeds
    out = resumed.output
    assert "every record succeeded" not in out, out
    assert "2 dead-lettered" in out and "batchguard jobs retry-failed k" in out, out
    assert resumed.exit_code == 1


def test_a_resumed_job_checks_its_records_as_its_first_run_did(fns: Path) -> None:
    first = cli("run", skus(fns, 40), "--fn", "i9fns:logged", "--validate", "i9fns:blocked_3", "--job", "v",
                "--batch-size", "10", "--max-attempts", "1", "-q", env={"BG_FATAL_AT": "25"})
    assert first.exit_code == 1, first.output
    resumed = cli("jobs", "resume", "v", "-q")
    assert resumed.exit_code == 1, resumed.output  # the 4 blocked records stay dead-lettered
    called = [int(n) for n in (fns / "calls.log").read_text().split()]
    assert not [n for n in called if n % 10 == 3], called  # never passed to --fn, before or after
    state = job_status("v", store="sqlite:///batchguard.db")
    assert (state.status, state.succeeded, state.failed) == ("completed", 36, 4)


# ---------------------------------------------------------------------------- --bulk


def test_bulk_runs_fn_on_lists_and_isolates_the_poison_row_and_the_bad_line(fns: Path) -> None:
    result = cli("run", skus(fns, 40, bad_line_at=5), "--fn", "i9fns:bulk_fn", "--bulk", "--batch-size", "10",
                 "--max-attempts", "1", "--base-delay", "0", "-q", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert (data["total"], data["succeeded"], data["failed"]) == (41, 39, 2)
    with SqliteDLQ(fns / "batchguard.db") as dlq:
        errors = sorted(e.error_type for e in dlq.list())
    assert errors == ["InputParseError", "ValueError"]
    refused = cli("run", skus(fns, 4), "--fn", "i9fns:bulk_fn", "--bulk", "--key-field", "sku")
    assert refused.exit_code == 2 and "--bulk" in refused.output


def test_bulk_from_config_is_saved_with_the_job_and_resumed_in_bulk(fns: Path) -> None:
    (fns / "bulk.toml").write_text("bulk = true\nbatch_size = 10\n")
    first = cli("run", skus(fns, 30), "--fn", "i9fns:bulk_fatal", "--config", "bulk.toml", "--job", "b",
                "--max-attempts", "1", "--base-delay", "0", "-q", env={"BG_FATAL_AT": "25"})
    assert first.exit_code == 1, first.output
    assert job_status("b", store="sqlite:///batchguard.db").config["meta"]["cli"]["engine"]["bulk"] is True
    # Resumed per record, bulk_fatal would get dicts and fail on every one: it gets lists.
    resumed = cli("jobs", "resume", "b", "-q")
    state = job_status("b", store="sqlite:///batchguard.db")
    assert (state.status, state.succeeded, state.failed) == ("completed", 29, 1), resumed.output
    (fns / "bad.toml").write_text('bulk = "yes"\n')
    assert cli("run", skus(fns, 3), "--fn", "i9fns:bulk_fn", "--config", "bad.toml").exit_code == 2


# ---------------------------------------------------------------------------- run --json failures


def test_run_json_prints_an_error_document_when_the_run_cannot_start(fns: Path) -> None:
    usage = CliRunner().invoke(main, ["run", skus(fns, 3), "--json"])
    assert usage.exit_code == 2
    doc = json.loads(usage.stdout)
    assert doc["status"] == "error" and doc["error"]["kind"] == "usage" and "--fn" in doc["error"]["message"]
    assert doc["error"]["exit_code"] == 2
    assert cli("run", "in.jsonl", "--fn", "i9fns:fixed", "--job", "j", "-q").exit_code == 0
    conflict = CliRunner().invoke(main, ["run", "in.jsonl", "--fn", "i9fns:fixed", "--job", "j",
                                         "--batch-size", "7", "--json"])
    assert conflict.exit_code == 2
    doc = json.loads(conflict.stdout)
    assert doc["error"]["kind"] == "cannot_start" and "batch_size=1000" in doc["error"]["message"]
    missing = CliRunner().invoke(main, ["run", "nope.jsonl", "--fn", "i9fns:fixed", "--json"])
    assert missing.exit_code == 2 and json.loads(missing.stdout)["error"]["kind"] == "usage"


# ---------------------------------------------------------------------------- Ctrl-C, passwords


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(batchguard.__file__).parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}


def _interrupt(argv: list[str], cwd: Path, store: str, job: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no batch was saved in 60 s"
            try:
                if job_status(job, store=store).batches_done >= 1:
                    break
            except (JobNotFoundError, JobStoreUnavailableError):
                pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_a_password_in_the_dlq_and_store_urls_never_reaches_output_or_the_store(
        fns: Path, postgres_url: str) -> None:
    secret = f"s3cret{uuid.uuid4().hex[:6]}"
    # The test server trusts local connections: any password is accepted, and must be hidden.
    user, _, rest = postgres_url.partition("://")[2].partition("@")
    base = f"postgresql://{user}:{secret}@{rest}"
    prefix = f"p{uuid.uuid4().hex[:8]}_"
    store = f"{base}?table_prefix={prefix}"
    dlq = f"{base}?table={prefix}dlq"
    skus(fns, 200)
    interrupted = _interrupt([sys.executable, "-m", "batchguard", "run", "in.jsonl", "--fn", "i9fns:sleepy",
                              "--job", "pw", "--store", store, "--dlq", dlq, "--batch-size", "10", "-q"],
                             fns, store, "pw")
    assert interrupted.returncode == 130, interrupted.stderr
    assert secret not in interrupted.stdout + interrupted.stderr
    resume = interrupted.stderr.split("resume with: ", 1)[1].splitlines()[0]
    assert "***" in resume and "--store" in resume and "--dlq" in resume, resume
    assert "passwords are shown as ***" in interrupted.stderr
    status = cli("jobs", "status", "pw", "--store", store)
    listed = cli("jobs", "list", "--store", store, "--json")
    resumed = cli("jobs", "resume", "pw", "--store", store, "-q")  # the DLQ's password is not stored
    assert resumed.exit_code == 2 and "pass --dlq again" in resumed.output
    finished = cli("jobs", "resume", "pw", "--store", store, "--dlq", dlq, "-q")
    assert finished.exit_code == 0, finished.output
    for result in (status, listed, resumed, finished):
        assert secret not in result.output, result.output
    with psycopg.connect(postgres_url) as conn:
        (config,) = conn.execute(f"SELECT config::text FROM {prefix}jobs WHERE name = 'pw'").fetchone()
    assert secret not in config and "***" in config


def test_ctrl_c_with_json_prints_an_error_document_with_the_resume_command(fns: Path) -> None:
    skus(fns, 200)
    store = f"sqlite:///{fns / 'jobs.db'}"
    done = _interrupt([sys.executable, "-m", "batchguard", "run", "in.jsonl", "--fn", "i9fns:sleepy", "--job",
                       "c", "--store", store, "--batch-size", "10", "-q", "--json"], fns, store, "c")
    assert done.returncode == 130, done.stderr
    doc = json.loads(done.stdout)
    assert doc["error"]["kind"] == "interrupted" and doc["error"]["exit_code"] == 130
    assert doc["error"]["resume"] == f"batchguard jobs resume c --store {store}"
    assert "resume with: " in done.stderr
