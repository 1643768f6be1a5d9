"""The final report's failure patterns (issue 9 item 3): counted over every dead-lettered record
of a run, exactly, on both engines, with any DLQ; and what the report says about them.
"""

from __future__ import annotations

import collections
import json
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchguard import InputParseError, MemoryDLQ, RetryPolicy, replay, run_batches
from batchguard._report.model import CliContext, build
from batchguard._report.text import render_text
from batchguard.cli.report import report_json
from batchguard.dlq import SqliteDLQ
from batchguard.triage import DEFAULT_RULES, Recommendation, RecommendationRule, message_template, when
from batchguard.validation import ValidationIssue
from helpers_contract import ENGINES

ONCE = RetryPolicy(max_attempts=1)


class ServiceError(Exception):
    """An HTTP client's error as most carry it: the status in ``status_code``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def mixed(record: dict[str, Any]) -> Any:
    """Fails in six ways by record number; the message varies from record to record."""
    n = record["n"]
    if n % 11 == 0:
        raise ServiceError(503, f"503 Service Unavailable for /items/{n}")
    if n % 13 == 0:
        raise ServiceError(429, f"429 Too Many Requests (retry after {n % 7} s)")
    if n % 7 == 0:
        raise ValueError(f"amount {n}.50 is negative for order {n:08d}")
    if n % 5 == 0:
        raise KeyError("email")
    if n % 17 == 0:
        raise TimeoutError(f"read timed out after {n} ms")
    if n % 19 == 0:
        raise sqlite3.IntegrityError(f"UNIQUE constraint failed: users.email ('u{n}@x.io')")
    return n


def expected_patterns(n: int) -> dict[tuple[str, int | None, str], list[int]]:
    """(error type, status, template) -> the record numbers that fail with it, computed from the
    input alone (not from a run)."""
    found: dict[tuple[str, int | None, str], list[int]] = {}
    for i in range(n):
        try:
            mixed({"n": i})
        except ServiceError as exc:
            found.setdefault(("ServiceError", exc.status_code, message_template(str(exc))), []).append(i)
        except Exception as exc:  # noqa: BLE001
            found.setdefault((type(exc).__name__, None, message_template(str(exc))), []).append(i)
    return found


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": f"rec-{i}", "n": i} for i in range(n)]


def shape(report: Any) -> list[tuple[Any, ...]]:
    return [(p.error_type, p.error_class, p.http_status, p.template, p.count, p.example_ids,
             p.recommendation.kind) for p in report.patterns()]


def test_both_engines_and_every_dlq_give_the_same_patterns(tmp_path: Path) -> None:
    # A MemoryDLQ (and no DLQ) count the in-memory dead records when read; a durable DLQ counts
    # entries as they are sent: one answer, whatever the engine, its drivers or the queue.
    n = 3_000
    reports = {}
    for engine in ENGINES:
        for concurrency in (1, 4):
            reports[engine, concurrency, "none"] = run_batches(records(n), mixed, engine=engine, retry=ONCE,
                                                               batch_size=100, concurrency=concurrency)
            reports[engine, concurrency, "memory"] = run_batches(records(n), mixed, engine=engine, retry=ONCE,
                                                                 batch_size=100, concurrency=concurrency,
                                                                 dlq=MemoryDLQ())
            with SqliteDLQ(tmp_path / f"{engine}-{concurrency}.db") as dlq:
                reports[engine, concurrency, "sqlite"] = run_batches(records(n), mixed, engine=engine, retry=ONCE,
                                                                     batch_size=100, concurrency=concurrency,
                                                                     dlq=dlq)
    first = shape(next(iter(reports.values())))
    assert len(first) == 6
    for key, report in reports.items():
        assert shape(report) == first, key


def test_a_durable_run_of_20k_records_counts_every_pattern_exactly(tmp_path: Path) -> None:
    n = 20_000
    with SqliteDLQ(tmp_path / "dead.db") as dlq:
        report = run_batches(records(n), mixed, retry=ONCE, batch_size=500, concurrency=4, dlq=dlq)
    # The queue is closed: the patterns were counted as the entries went out, not read back.
    expected = expected_patterns(n)
    got = {(p.error_type, p.http_status, p.template): p for p in report.patterns()}
    assert set(got) == set(expected)
    failed = sum(len(v) for v in expected.values())
    assert report.failure_count == failed > 1000  # past the report's in-memory sample
    for key, numbers in expected.items():
        pattern = got[key]
        assert pattern.count == len(numbers), key
        assert pattern.share == len(numbers) / failed
        assert pattern.example_ids == tuple(f"rec-{i}" for i in numbers[:3]), key
    assert [p.count for p in report.patterns()] == sorted((len(v) for v in expected.values()), reverse=True)
    kinds = {key[0] + str(key[1] or ""): got[key].recommendation.kind for key in got}
    assert kinds == {"ServiceError503": "server_error", "ServiceError429": "rate_limit",
                     "ValueError": "validation", "KeyError": "validation", "TimeoutError": "timeout",
                     "IntegrityError": "integrity"}
    # The entries store the status the patterns grouped by.
    with SqliteDLQ(tmp_path / "dead.db") as dlq:
        statuses = collections.Counter(e.http_status for e in dlq.list(error_type="ServiceError"))
    assert statuses == {status: len(numbers) for (_, status, _), numbers in expected.items() if status}
    assert set(statuses) == {503, 429}


def test_a_pickled_report_keeps_its_patterns(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dead.db") as dlq:
        report = run_batches(records(500), mixed, retry=ONCE, dlq=dlq)
        copy = pickle.loads(pickle.dumps(report))  # noqa: S301 - our own bytes
    assert shape(copy) == shape(report) and len(shape(report)) == 6


def test_a_replay_report_names_its_examples_by_the_entries_they_replayed(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dead.db") as dlq:
        run_batches(records(200), mixed, retry=ONCE, dlq=dlq)
        again = replay(dlq, mixed, error_type="KeyError", retry=ONCE)
    [pattern] = again.patterns()
    keys = [i for i in range(200) if mixed_fails_with(i, KeyError)]
    assert pattern.count == len(keys) and pattern.example_ids == tuple(f"rec-{i}" for i in keys[:3])
    # Its failures went back into the entries it replayed, which keep their first run's id: the
    # commands select by error type, not by the replay's own run id (which names no entry).
    commands = [s.command or "" for s in build(again).next_steps]
    assert commands[1] == "batchguard dlq retry --error-type KeyError --fn MODULE:CALLABLE", commands
    assert not [c for c in commands if "--run-id" in c or "--job" in c]
    with SqliteDLQ(tmp_path / "dead.db") as dlq:
        assert {e.run_id for e in dlq.list(error_type="KeyError")} != {again.run_id}


def mixed_fails_with(n: int, kind: type[BaseException]) -> bool:
    try:
        mixed({"n": n})
    except kind:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


def test_user_rules_reach_the_report() -> None:
    report = run_batches(records(100), mixed, retry=ONCE)
    ours = RecommendationRule("missing_email", when(type_name="^KeyError$", message="email"),
                              Recommendation("missing_email", "the CRM export", "backfill the emails",
                                             "crm backfill --since {error_type}"))
    model = build(report, rules=(ours, *DEFAULT_RULES))
    [missing] = [p for p in model.patterns if p.error_type == "KeyError"]
    assert missing.recommendation.kind == "missing_email"
    assert model.pattern_command(missing) == "crm backfill --since KeyError"
    assert "crm backfill --since KeyError" in render_text(model)
    assert [p for p in report.patterns(rules=(ours, *DEFAULT_RULES)) if p.recommendation.kind == "missing_email"]
    assert "crm backfill --since KeyError" in report.summary(rules=(ours, *DEFAULT_RULES))
    data = report.to_json(rules=(ours, *DEFAULT_RULES))
    kinds = {p["error_type"]: p["recommendation"]["kind"] for p in data["patterns"]}
    assert kinds["KeyError"] == "missing_email" and report.to_json()["patterns"]


# --------------------------------------------------------------------------- thresholds


def always_odd(record: int) -> int:
    if record % 2:
        raise ValueError(f"odd {record}")
    return record


@pytest.mark.parametrize("engine", ENGINES)
def test_the_report_says_what_the_run_was_judged_against(engine: str) -> None:
    plain = build(run_batches(range(10), always_odd, retry=ONCE, engine=engine))
    assert plain.judged_against == () and "Judged against" not in render_text(plain)

    below = build(run_batches(range(10), always_odd, retry=ONCE, engine=engine, success_threshold=0.9))
    assert below.status == "failed"
    assert below.judged_against == ("success threshold 90.0%: success rate 50.0%, NOT met: the run failed",)
    met = build(run_batches(range(10), always_odd, retry=ONCE, engine=engine, success_threshold=0.5))
    assert met.judged_against == ("success threshold 50.0%: success rate 50.0%, met",)

    budget = build(run_batches(range(100), always_odd, retry=ONCE, engine=engine, max_failures=5, batch_size=10))
    assert budget.stopped_reason == "max_failures"
    assert budget.judged_against == ("max failures 5: passed: the run stopped",)
    rate = build(run_batches(range(10), always_odd, retry=ONCE, engine=engine, max_failures=0.9))
    assert rate.judged_against == ("max failures 90.0% of the records: not passed (5 failed)",)
    data = rate.to_json()
    assert (data["max_failures"], data["success_threshold"]) == (0.9, None)
    assert f"Judged against: {rate.judged_against[0]}" in render_text(rate)


# --------------------------------------------------------------------------- commands


def test_commands_carry_the_runs_options_redacted_and_quoted() -> None:
    report = run_batches(records(60), mixed, retry=ONCE, job=None)
    data = report_json(report, dlq_url="postgresql://app:s3cret@db.internal/dead letters",
                       job_store=None, fn_spec="my jobs:process")
    text = json.dumps(data)
    assert "s3cret" not in text
    flags = f"--run-id {report.run_id} --fn 'my jobs:process' --dlq 'postgresql://app:***@db.internal/dead letters'"
    retries = [p["recommendation"]["command"] for p in data["patterns"]
               if p["recommendation"]["command"].startswith("batchguard dlq retry")]
    assert retries and all(c.endswith(flags) for c in retries), retries
    assert data["next_steps"][0]["command"] == (
        f"batchguard dlq review --run-id {report.run_id} --fn 'my jobs:process' "
        "--dlq 'postgresql://app:***@db.internal/dead letters'")


def test_a_library_report_names_the_run_and_a_placeholder_fn() -> None:
    report = run_batches(records(30), mixed, retry=ONCE)
    model = build(report)
    retry = [s.command for s in model.next_steps if s.command and " retry " in s.command]
    assert retry and all(c.endswith(f"--run-id {report.run_id} --fn MODULE:CALLABLE") for c in retry)
    default = CliContext(dlq_url="sqlite:///batchguard.db", store_url=None, default_url="sqlite:///batchguard.db",
                         fn_spec="jobs:process")
    assert all("--dlq" not in (s.command or "") for s in build(report, cli=default).next_steps)


def test_no_next_step_retries_records_a_retry_cannot_help() -> None:
    """`dlq retry` leaves an unparsed input line in the queue, and a blocked record's stored
    payload stays invalid however the input is fixed: their step is a review, never a retry."""
    def check(record: dict[str, Any]) -> ValidationIssue | None:
        return ValidationIssue("n", "n is a multiple of 3", "fix n") if record["n"] % 3 == 0 else None

    def fn(record: dict[str, Any]) -> int:
        if record["n"] % 5 == 1:
            raise InputParseError(f"line {record['n']}: invalid JSON")
        if record["n"] % 7 == 1:
            raise KeyError("email")
        return int(record["n"])

    report = run_batches(records(60), fn, retry=ONCE, validate=check)
    cli = CliContext(dlq_url="sqlite:///dead.db", store_url=None, default_url="sqlite:///batchguard.db",
                     fn_spec="jobs:process")
    steps = build(report, cli=cli).next_steps
    commands = [s.command or "" for s in steps]
    assert not [c for c in commands if "retry --error-type InputParseError" in c
                or "retry --error-type ValidationBlocked" in c], commands
    for error_type in ("InputParseError", "ValidationBlocked"):
        assert any(f"dlq review --error-type {error_type} --run-id {report.run_id}" in c
                   for c in commands), commands
    assert any("dlq retry --error-type KeyError" in c for c in commands), commands
