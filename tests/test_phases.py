"""Phases (issue 9 item 1): ``run_batches(..., validate=check, mode="dry-run" | "sample" | "full")``.

A dry-run checks every record on the engine and never calls ``fn``; a sample runs ``fn`` on a
few records spread from short to long, blocked ones never among them; a full run dead-letters
blocked records (stage "validate", PERMANENT, the issues in the entry) without calling ``fn``.
Both engines, sync and async, lists and generators.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import batchguard
from batchguard import ErrorClass, MemoryDLQ
from batchguard.errors import ConfigError, ConfigTypeError
from batchguard.validation import (
    SampleReport,
    ValidationBlocked,
    ValidationIssue,
    ValidationReport,
    ValidationSummary,
)
from helpers_contract import ENGINES, FailurePlan, no_wait, run

BAD = ValidationIssue("email", "no @ in the address", "correct the address at the source")
ZERO = ValidationIssue("amount", "amount is 0", None, severity="warning", impact="nothing is charged")


def rule(record: int) -> list[ValidationIssue]:
    """Blocked: multiples of 7; warning: multiples of 5 (35 is both: blocked)."""
    issues = []
    if record % 7 == 0:
        issues.append(BAD)
    if record % 5 == 0:
        issues.append(ZERO)
    return issues


def expected(records: list[int]) -> tuple[int, int, int]:
    blocked = sum(1 for r in records if r % 7 == 0)
    warned = sum(1 for r in records if r % 7 and r % 5 == 0)
    return len(records) - blocked - warned, warned, blocked


class Recorder:
    """A fn that remembers every record it was given (thread-safe)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, record: Any) -> Any:
        with self.lock:
            self.seen.append(record)
        return record * 10


# --- ValidationIssue ---------------------------------------------------------------------------

def test_an_issue_checks_its_arguments() -> None:
    with pytest.raises(ConfigError, match="got 'block'; did you mean 'blocked'"):
        ValidationIssue("f", "m", None, severity="block")  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="field must be a str"):
        ValidationIssue(3, "m", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="message must be a non-empty str"):
        ValidationIssue("f", "  ", None)
    with pytest.raises(ConfigTypeError, match="fix must be a str or None"):
        ValidationIssue("f", "m", 5)  # type: ignore[arg-type]
    issue = ValidationIssue("f", "m", "do x", severity="warning", impact="slower")
    assert not issue.blocked and issue.to_json()["impact"] == "slower"
    with pytest.raises(AttributeError):
        issue.field = "g"  # type: ignore[misc]


def test_the_phase_keywords_are_checked_before_anything_runs() -> None:
    fn = Recorder()
    with pytest.raises(ConfigError, match=r'mode="dry-run" runs the checks.*pass validate=check'):
        batchguard.run_batches([1], fn, mode="dry-run")
    with pytest.raises(ConfigError, match=r"mode must be one of .*did you mean 'dry-run'"):
        batchguard.run_batches([1], fn, mode="dryrun")  # type: ignore[call-overload]
    with pytest.raises(ConfigTypeError, match="validate must be callable"):
        batchguard.run_batches([1], fn, validate="nope")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="sample_count"):
        batchguard.run_batches([1], fn, mode="sample", sample_count=0)
    with pytest.raises(ConfigTypeError, match="did you mean 'mode'"):
        batchguard.run_batches([1], fn, mdoe="sample")  # type: ignore[call-overload]
    assert fn.seen == []


# --- dry-run -----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("as_generator", [False, True])
def test_a_dry_run_checks_every_record_and_never_calls_fn(engine: str, concurrency: int,
                                                          as_generator: bool) -> None:
    records = list(range(1, 201))
    fn, progress = Recorder(), []
    source = (r for r in records) if as_generator else records
    report = batchguard.run_batches(source, fn, validate=rule, mode="dry-run", engine=engine,
                                    concurrency=concurrency, batch_size=16, on_progress=progress.append)
    assert isinstance(report, ValidationReport)
    assert fn.seen == []
    ready, warned, blocked = expected(records)
    assert (report.ready, report.warnings, report.blocked, report.total) == (ready, warned, blocked, 200)
    assert not report.ok
    # listed in input order, whatever order a concurrent run checked them in
    assert [i.record_id for i in report.blocked_items] == [r - 1 for r in records if r % 7 == 0][:20]
    assert [i.record_index for i in report.warning_items] == [r - 1 for r in records if r % 5 == 0 and r % 7][:20]
    assert report.blocked_items[0].issues == (BAD,)
    assert report.ready_sample[:3] == (0, 1, 2)
    assert progress and progress[-1].succeeded == 200  # the checks ran on the engine, in batches


@pytest.mark.parametrize("engine", ENGINES)
def test_an_async_check_runs_on_the_engine_too(engine: str) -> None:
    async def check(record: int) -> list[ValidationIssue]:
        await asyncio.sleep(0)
        return rule(record)

    records = list(range(1, 60))
    report = batchguard.run_batches(records, Recorder(), validate=check, mode="dry-run", engine=engine,
                                    concurrency=8, batch_size=10)
    assert (report.ready, report.warnings, report.blocked) == expected(records)
    from_loop = asyncio.run(batchguard.arun_batches(iter(records), Recorder(), validate=check,
                                                    mode="dry-run", engine=engine, concurrency=3))
    assert isinstance(from_loop, ValidationReport)
    assert (from_loop.ready, from_loop.warnings, from_loop.blocked) == expected(records)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_check_that_raises_or_answers_nonsense_blocks_its_record(engine: str) -> None:
    def check(record: int) -> Any:
        if record == 2:
            raise KeyError("amount")
        if record == 3:
            return "looks fine"  # not issues: a bug in the check, shown, not taken as ready
        if record == 4:
            return [BAD, "x"]
        return None

    report = batchguard.run_batches([1, 2, 3, 4], Recorder(), validate=check, mode="dry-run", engine=engine)
    assert (report.ready, report.blocked) == (1, 3)
    messages = [item.issues[0].message for item in report.blocked_items]
    assert messages[0] == "the check raised KeyError: 'amount'"
    assert messages[1] == "the check returned str 'looks fine'"
    assert messages[2].startswith("the check returned an iterable holding str")
    assert all(item.issues[0].blocked and item.issues[0].fix for item in report.blocked_items)


def test_the_dry_run_screen_and_json() -> None:
    records = list(range(1, 41))
    report = batchguard.run_batches([{"id": f"r{r}", "n": r} for r in records], Recorder(),
                                    validate=lambda rec: rule(rec["n"]), mode="dry-run")
    text = report.summary()
    assert str(report) == text
    ready, warned, blocked = expected(records)
    assert f"Total Items Analyzed: {len(records)}" in text
    assert f"Ready: {ready} (70%)" in text and f"Warnings: {warned} (18%)" in text
    assert f"Blocked: {blocked} (13%)" in text
    assert "BLOCKED (must fix before proceeding):\n\n1. Item ID: r7\n   Issue: email: no @ in the address\n" \
           "   Fix: correct the address at the source" in text
    assert "WARNINGS (can proceed, quality degradation):\n\n1. Item ID: r5\n   Warning: amount: amount is 0\n" \
           "   Impact: nothing is charged" in text
    assert "NEXT STEPS:\n1. Fix 5 blocked items (see details above)" in text
    data = json.loads(json.dumps(report.to_json()))
    assert data["blocked"] == blocked and data["ok"] is False
    assert data["blocked_items"][0] == {"record_index": 6, "record_id": "r7",
                                        "issues": [BAD.to_json()], "issues_omitted": 0}
    assert {(g["severity"], g["field"], g["count"]) for g in data["issue_counts"]} == {
        ("blocked", "email", blocked), ("warning", "amount", warned + 1)}  # 35 also warned


def test_a_dry_run_over_a_large_generator_keeps_a_bounded_listing() -> None:
    n = 50_000

    def records() -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {"id": i, "email": f"user {i}" if i % 3 == 0 else f"u{i}@x"}

    def check(record: dict[str, Any]) -> ValidationIssue | None:
        if "@" not in record["email"]:
            return ValidationIssue("email", f"invalid email {record['email']!r}", "fix it")
        return None

    report = batchguard.run_batches(records(), Recorder(), validate=check, mode="dry-run",
                                    batch_size=1000, concurrency=4)
    assert report.blocked == len(range(0, n, 3)) and report.ready == n - report.blocked
    assert len(report.blocked_items) == 20 and len(report.ready_sample) == 20
    # one group for every message of one shape: the value is masked
    assert [(g.field, g.count) for g in report.issue_counts] == [("email", report.blocked)]
    assert "... and" in report.summary() and "ISSUES BY KIND" in report.summary()


def test_a_dry_run_of_nothing_is_ok() -> None:
    report = batchguard.run_batches([], Recorder(), validate=rule, mode="dry-run")
    assert report.ok and report.total == 0 and "Ready: 0 (0%)" in report.summary()


# --- sample ------------------------------------------------------------------------------------

def sized(n: int) -> dict[str, Any]:
    return {"id": f"rec-{n}", "text": "x" * n}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("as_generator", [False, True])
def test_a_sample_runs_fn_on_the_shortest_a_middle_and_the_longest(engine: str, as_generator: bool) -> None:
    sizes = [50, 3, 999, 400, 120, 7, 640, 2, 1000, 333, 51]
    records = [sized(n) for n in sizes]
    fn = Recorder()
    source = (r for r in records) if as_generator else records
    report = batchguard.run_batches(source, lambda r: len(r["text"]), mode="sample", engine=engine)
    assert isinstance(report, SampleReport)
    assert [(i.label, i.record_id) for i in report.items] == [
        ("short", "rec-2"), ("medium", "rec-120"), ("long", "rec-1000")]
    assert [i.value for i in report.items] == [2, 120, 1000]
    assert all(i.ok and i.attempts == 1 and i.duration_s >= 0 for i in report.items)
    assert report.ok and report.total == len(sizes) and fn.seen == []
    assert "Proceed: mode=\"full\"" in report.summary()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_blocked_record_is_never_sampled(engine: str) -> None:
    records = [sized(n) for n in (5, 10, 20, 30, 40, 2000, 1)]

    def check(record: dict[str, Any]) -> ValidationIssue | None:
        if len(record["text"]) in (2000, 1):
            return ValidationIssue("text", "too long or short", "trim it")
        return None

    fn = Recorder()
    report = batchguard.run_batches(records, lambda r: fn(len(r["text"])), validate=check,
                                    mode="sample", engine=engine)
    assert [i.record_id for i in report.items] == ["rec-5", "rec-20", "rec-40"]
    assert sorted(fn.seen) == [5, 20, 40]
    assert report.blocked_skipped == 2
    assert "Blocked by validation among the records tried: 2 (never sampled;" in report.summary()


def test_sample_key_says_what_long_means_and_sample_count_how_many() -> None:
    records = [{"id": i, "pages": (i * 37) % 101} for i in range(300)]
    report = batchguard.run_batches(iter(records), lambda r: r["pages"], mode="sample",
                                    sample_key=lambda r: r["pages"], sample_count=5)
    labels = [i.label for i in report.items]
    assert labels == ["short", "p25", "medium", "p75", "long"]
    values = [i.value for i in report.items]
    assert values[0] == 0 and values[-1] == 100 and values == sorted(values)
    assert 35 <= values[2] <= 65  # a middle record, from the reservoir's quantiles
    small = batchguard.run_batches([sized(1), sized(2)], lambda r: 1, mode="sample", sample_count=5)
    assert [i.label for i in small.items] == ["short", "long"]
    with pytest.raises(ConfigTypeError, match="sample_key must return a number"):
        batchguard.run_batches(records, lambda r: 1, mode="sample", sample_key=lambda r: "big")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_sample_reports_failures_and_retries_with_the_runs_policies(engine: str) -> None:
    plan = FailurePlan({(5, 1): "transient", (9, 1): "permanent"})
    report = run(list(range(10)), plan, engine=engine, mode="sample", retry=no_wait(),
                 sample_key=lambda r: r, dlq=MemoryDLQ())
    by_id = {i.record_id: i for i in report.items}
    assert sorted(by_id) == [0, 4, 9] or sorted(by_id) == [0, 5, 9]
    assert not by_id[9].ok and by_id[9].error_type == "PermanentErr" and by_id[9].error_class == "permanent"
    assert "FAILED" in report.summary() and not report.ok
    assert "Try the sample again" in report.summary()
    retried = run(list(range(10)), plan, engine=engine, mode="sample", retry=no_wait(),
                  sample_key=lambda r: -abs(r - 5))  # 5 is the "longest"
    five = next(i for i in retried.items if i.record_id == 5)
    assert five.ok and five.attempts == 2 and five.value == 50


@pytest.mark.parametrize("engine", ENGINES)
def test_a_sample_with_an_async_fn(engine: str) -> None:
    async def fn(record: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        return len(record["text"])

    records = [sized(n) for n in range(1, 30)]
    report = batchguard.run_batches(records, fn, mode="sample", engine=engine)
    assert [i.value for i in report.items] == [1, 15, 29]
    report = asyncio.run(batchguard.arun_batches(records, fn, mode="sample", engine=engine))
    assert [i.value for i in report.items] == [1, 15, 29]
    assert json.loads(json.dumps(report.to_json()))["items"][1]["label"] == "medium"


# --- full --------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_full_run_dead_letters_blocked_records_without_calling_fn(engine: str, concurrency: int) -> None:
    records = list(range(1, 101))
    fn, dlq = Recorder(), MemoryDLQ()
    # A classifier that calls everything transient: a blocked record is still PERMANENT.
    report = batchguard.run_batches(records, fn, validate=rule, dlq=dlq, engine=engine,
                                    concurrency=concurrency, retry=no_wait(),
                                    classifier=lambda exc: ErrorClass.TRANSIENT)
    ready, warned, blocked = expected(records)
    assert sorted(fn.seen) == [r for r in records if r % 7]
    assert report.success_count == ready + warned and report.failure_count == blocked
    assert report.validation == ValidationSummary(blocked=blocked, warnings=warned)
    entries = dlq.list()
    assert [e.record_index for e in entries] == [r - 1 for r in records if r % 7 == 0]
    entry = entries[0]
    assert (entry.stage, entry.error_class, entry.error_type) == ("validate", "permanent", "ValidationBlocked")
    assert entry.error_message == ("blocked by validation: [blocked] email: no @ in the address "
                                   "(fix: correct the address at the source)")
    assert len(entry.attempts) == 1
    both = next(e for e in entries if e.record_index == 34)  # 35: blocked and warned
    assert "[warning] amount: amount is 0" in both.error_message
    assert {e.stage for e in report.errors} == {"validate"}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_warned_record_that_is_retried_is_counted_once(engine: str) -> None:
    calls = []

    def check(record: int) -> Any:
        calls.append(record)
        return ZERO if record in (5, 10) else None

    plan = FailurePlan({(5, 1): "transient", (5, 2): "transient", (10, 1): "transient",
                        (10, 2): "transient", (10, 3): "transient"})
    report = run(list(range(12)), plan, engine=engine, validate=check, retry=no_wait(3))
    assert report.validation == ValidationSummary(blocked=0, warnings=2)
    assert calls.count(5) == 1 and calls.count(10) == 1  # a retry is not checked again
    assert report.failure_count == 1 and plan.attempts[5] == 3


@pytest.mark.parametrize("engine", ENGINES)
def test_a_full_run_with_an_async_check_or_fn(engine: str) -> None:
    async def acheck(record: int) -> list[ValidationIssue]:
        return rule(record)

    async def afn(record: int) -> int:
        return record * 10

    records = list(range(1, 50))
    _, warned, blocked = expected(records)
    for check, fn in ((acheck, Recorder()), (rule, afn), (acheck, afn)):
        report = batchguard.run_batches(records, fn, validate=check, engine=engine, concurrency=3)
        assert report.validation == ValidationSummary(blocked=blocked, warnings=warned), (check, fn)
        assert report.successful == [r * 10 for r in records if r % 7]
    report = asyncio.run(batchguard.arun_batches(records, afn, validate=acheck, engine=engine))
    assert report.validation == ValidationSummary(blocked=blocked, warnings=warned)


def test_a_blocked_error_pickles_and_names_its_issues() -> None:
    import pickle

    error = ValidationBlocked((BAD,))
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert copy.issues == (BAD,) and str(copy) == str(error)
    assert isinstance(error, ValueError)


def test_a_full_run_without_validate_has_no_validation_counts() -> None:
    report = batchguard.run_batches([1, 2], Recorder())
    assert report.validation is None


@pytest.mark.parametrize("engine", ENGINES)
def test_full_run_transient_failure_of_a_ready_record(engine: str) -> None:
    plan = FailurePlan({(3, 1): "transient", (4, 1): "permanent"})
    report = run(list(range(1, 9)), plan, engine=engine, validate=rule, retry=no_wait())
    assert report.validation == ValidationSummary(blocked=1, warnings=1)
    assert report.errors_by_type == {"PermanentErr": 1, "ValidationBlocked": 1}
    assert plan.attempts[3] == 2 and 7 not in plan.attempts


@pytest.mark.parametrize("engine", ENGINES)
def test_an_async_check_that_times_out_blocks_its_record_and_a_sync_one_is_counted_once(engine: str) -> None:
    import time

    async def slow(record: int) -> None:
        if record == 2:
            await asyncio.sleep(5)

    report = batchguard.run_batches([1, 2, 3], Recorder(), validate=slow, mode="dry-run", engine=engine,
                                    timeout=0.05)
    assert (report.ready, report.blocked, report.total) == (2, 1, 3)
    issue = report.blocked_items[0].issues[0]
    assert report.blocked_items[0].record_index == 1
    assert issue.message.startswith("the check failed: TimeoutError")

    def sync_slow(record: int) -> ValidationIssue | None:
        if record == 2:
            time.sleep(0.3)  # a sync check cannot be interrupted: its late verdict is the verdict
            return BAD
        return None

    report = batchguard.run_batches([1, 2, 3], Recorder(), validate=sync_slow, mode="dry-run",
                                    engine=engine, timeout=0.05)
    assert (report.ready, report.blocked, report.total) == (2, 1, 3)
    assert report.blocked_items[0].issues == (BAD,)


@pytest.mark.parametrize("engine", ENGINES)
def test_id_of_names_the_records_of_every_phase(engine: str) -> None:
    records = [{"key": f"k{i}", "text": "x" * i} for i in range(1, 30)]

    def check(record: dict[str, Any]) -> ValidationIssue | None:
        return BAD if len(record["text"]) % 10 == 0 else None

    def id_of(record: dict[str, Any]) -> str:
        return str(record["key"])

    dry = batchguard.run_batches(records, Recorder(), validate=check, mode="dry-run", id_of=id_of,
                                 engine=engine)
    assert [i.record_id for i in dry.blocked_items] == ["k10", "k20"]
    assert dry.ready_sample[:2] == ("k1", "k2")
    sampled = batchguard.run_batches(records, lambda r: 1, validate=check, mode="sample", id_of=id_of,
                                     engine=engine)
    assert [i.record_id for i in sampled.items] == ["k1", "k15", "k29"]


def test_the_sample_selector_holds_a_bounded_number_of_records() -> None:
    from batchguard.validation.sample import RESERVOIR, SampleSelector

    selector = SampleSelector(3, lambda r: r["n"])
    for index in range(100_000):
        record = {"n": index % 977}
        key = selector.key_of(index, record)
        if selector.wants(index, key):
            selector.admit(index, key, record)
    assert len(selector._pool) == RESERVOIR
    chosen = selector.chosen()
    assert [c[0] for c in chosen] == ["short", "medium", "long"]
    assert chosen[0][2] == {"n": 0} and chosen[-1][2] == {"n": 976}
    assert chosen[0][1] == 0 and chosen[-1][1] == 976  # ties: the first in input order


@pytest.mark.parametrize("engine", ENGINES)
def test_odd_records_are_checked_sampled_and_reported(engine: str) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    records: list[Any] = [Opaque(), b"\xff\x00", None, {"ids": {1, 2}}, "text", float("nan"), 10**400,
                          {"id": {"nested": [1]}, "x": "[/]"}]

    def check(record: Any) -> ValidationIssue | None:
        return BAD if record is None or isinstance(record, bytes) else None

    dry = batchguard.run_batches(records, Recorder(), validate=check, mode="dry-run", engine=engine)
    assert (dry.ready, dry.blocked) == (6, 2)
    data = json.loads(json.dumps(dry.to_json()))
    assert [item["record_index"] for item in data["blocked_items"]] == [1, 2]
    assert "1. Item ID: 1\n" in dry.summary() and "2. Item ID: 2\n" in dry.summary()
    sampled = batchguard.run_batches(records, repr, validate=check, mode="sample", engine=engine)
    assert len(sampled.items) == 3 and all(item.ok for item in sampled.items)
    json.dumps(sampled.to_json())  # every value JSON-safe, whatever fn returned
    assert sampled.items[-1].label == "long" and sampled.items[-1].record_index == 6  # 10**400: 401 digits


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_bulk_full_run_never_passes_a_blocked_record_to_fn(engine: str, concurrency: int) -> None:
    seen: list[list[int]] = []
    lock = threading.Lock()
    flaky = {12: 1, 20: 2}  # record: transient failures before it succeeds (20 is warned)

    def bulk(batch: list[int]) -> list[int]:
        with lock:
            seen.append(list(batch))
            for record in batch:
                if flaky.get(record, 0) > 0:
                    flaky[record] -= 1
                    raise TransientError(f"flaky {record}")
        return [r * 10 for r in batch]

    async def abulk(batch: list[int]) -> list[int]:
        return bulk(batch)

    records = list(range(1, 41))
    _, warned, blocked = expected(records)
    for fn in (bulk, abulk):
        seen.clear()
        flaky.update({12: 1, 20: 2})
        report = batchguard.run_batches(records, fn, bulk=True, validate=rule, engine=engine, batch_size=8,
                                        concurrency=concurrency, retry=no_wait(3),
                                        classifier=lambda exc: ErrorClass.TRANSIENT
                                        if isinstance(exc, TransientError) else None)
        assert not {r for call in seen for r in call if r % 7 == 0}, "a blocked record reached fn"
        assert report.successful == [r * 10 for r in records if r % 7]
        assert report.validation == ValidationSummary(blocked=blocked, warnings=warned)
        assert {e.stage for e in report.errors} == {"validate"} and report.failure_count == blocked


class TransientError(Exception):
    """A failure the bulk tests' classifier retries."""


@pytest.mark.slow
def test_a_type_checker_sees_what_each_mode_returns(tmp_path: Any) -> None:
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("mypy")
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent('''
        import asyncio
        from batchguard import ValidationIssue, arun_batches, run_batches

        def check(record: int) -> ValidationIssue | None:
            return None

        def double(record: int) -> int:
            return record * 2

        reveal_type(run_batches([1], double, validate=check, mode="dry-run"))
        reveal_type(run_batches([1], double, mode="sample", sample_count=5))
        reveal_type(run_batches([1], double, validate=check))
        reveal_type(run_batches([1], double, validate=check, mode="full").validation)
        reveal_type(asyncio.run(arun_batches([1], double, validate=check, mode="dry-run")))
    '''))
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--hide-error-context",
                           "--no-error-summary", "--cache-dir", str(tmp_path / ".cache"), "user.py"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    revealed = [line.split('Revealed type is "')[1].rstrip('"') for line in done.stdout.splitlines()
                if "Revealed type" in line]
    assert revealed == ["batchguard.validation.report.ValidationReport",
                        "batchguard.validation.sample.SampleReport",
                        "batchguard.results.BatchReport[int]",
                        "batchguard.validation.issues.ValidationSummary | None",
                        "batchguard.validation.report.ValidationReport"], done.stdout
    assert "error" not in done.stdout, done.stdout
