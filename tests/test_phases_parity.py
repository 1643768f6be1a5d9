"""The phases on both engines (issue 9 item 1): for random checks (ready, warning, blocked, a
check that raises) and random failure plans (transient then ok, permanent, fatal), "native" and
"python" reach the same dry-run report, the same sample, and the same full run: counts, values,
DLQ entries (stage "validate" for blocked records) and ``report.validation``; and both match
what the rules say, computed here.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard import MemoryDLQ
from batchguard.validation import ValidationIssue, ValidationSummary
from helpers_contract import FailurePlan, assert_conservation, dlq_view, no_wait, outcome_view, run

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VERDICTS = ("ready", "warning", "blocked", "raises")
FAILURES = ("transient", "permanent")


class Rules:
    """A check from a table: ``verdicts[record]`` ("ready" when absent); remembers its calls."""

    def __init__(self, verdicts: dict[int, str]) -> None:
        self.verdicts = verdicts

    def __call__(self, record: int) -> Any:
        verdict = self.verdicts.get(record, "ready")
        if verdict == "raises":
            raise LookupError(f"no such customer {record}")
        if verdict == "blocked":
            return [ValidationIssue("id", f"record {record} is blocked", "unblock it")]
        if verdict == "warning":
            return ValidationIssue("id", f"record {record} is odd", None, severity="warning", impact="none")
        return None


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=0, max_value=40))
    verdicts = draw(st.dictionaries(st.integers(0, max(n - 1, 0)), st.sampled_from(VERDICTS), max_size=n))
    outcomes: dict[tuple[int, int], str] = {}
    for record in draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n, unique=True)):
        kind = draw(st.sampled_from(FAILURES))
        attempts = draw(st.integers(1, 3)) if kind == "transient" else 1
        for attempt in range(1, attempts + 1):
            outcomes[(record, attempt)] = kind
    return {"n": n, "verdicts": verdicts, "outcomes": outcomes,
            "batch_size": draw(st.integers(1, 12)), "concurrency": draw(st.sampled_from([1, 3]))}


def _blocked(scenario: dict[str, Any], record: int) -> bool:
    return scenario["verdicts"].get(record, "ready") in ("blocked", "raises")


@SETTINGS
@given(scenario=scenarios(), bulk=st.booleans())
def test_a_full_run_with_validate_is_the_same_on_both_engines(scenario: dict[str, Any], bulk: bool) -> None:
    views, plans = [], []
    for engine in ("python", "native"):
        plan, dlq = FailurePlan(scenario["outcomes"]), MemoryDLQ()
        # bulk: one call per group, failing at its first failing record (bisection isolates it)
        fn: Any = (lambda batch, plan=plan: [plan(r) for r in batch]) if bulk else plan
        report = run(range(scenario["n"]), fn, engine=engine, validate=Rules(scenario["verdicts"]),
                     dlq=dlq, retry=no_wait(3), batch_size=scenario["batch_size"],
                     concurrency=scenario["concurrency"], bulk=bulk)
        assert_conservation(report)
        # By record: at concurrency > 1 batches end, and are stored, in either engine's order.
        entries = sorted((dlq_view(e) for e in dlq.list()), key=lambda view: view["record_index"])
        views.append((outcome_view(report), report.validation, entries))
        plans.append(plan)
    assert views[0] == views[1]
    records = range(scenario["n"])
    blocked = [r for r in records if _blocked(scenario, r)]
    warned = [r for r in records if scenario["verdicts"].get(r) == "warning"]
    assert views[0][1] == ValidationSummary(blocked=len(blocked), warnings=len(warned))
    for plan in plans:  # a blocked record never reached fn, on either engine
        assert not set(plan.attempts) & set(blocked)
        assert set(plan.attempts) == set(records) - set(blocked)
    stages = {entry["record_index"]: entry["stage"] for entry in views[0][2]}
    assert {i for i, stage in stages.items() if stage == "validate"} == set(blocked)


@SETTINGS
@given(scenario=scenarios())
def test_a_dry_run_is_the_same_on_both_engines(scenario: dict[str, Any]) -> None:
    reports = []
    for engine in ("python", "native"):
        plan = FailurePlan(scenario["outcomes"])
        report = run(iter(range(scenario["n"])), plan, engine=engine, mode="dry-run",
                     validate=Rules(scenario["verdicts"]), batch_size=scenario["batch_size"],
                     concurrency=scenario["concurrency"])
        assert plan.call_count == 0
        data = report.to_json()
        data.pop("duration_s")
        reports.append(data)
    assert reports[0] == reports[1]
    records = range(scenario["n"])
    blocked = sum(_blocked(scenario, r) for r in records)
    warned = sum(scenario["verdicts"].get(r) == "warning" for r in records)
    assert (reports[0]["blocked"], reports[0]["warnings"], reports[0]["ready"]) == (
        blocked, warned, scenario["n"] - blocked - warned)


@SETTINGS
@given(scenario=scenarios(), count=st.integers(1, 6))
def test_a_sample_is_the_same_on_both_engines(scenario: dict[str, Any], count: int) -> None:
    reports = []
    for engine in ("python", "native"):
        plan = FailurePlan(scenario["outcomes"])
        report = run(range(scenario["n"]), plan, engine=engine, mode="sample", sample_count=count,
                     validate=Rules(scenario["verdicts"]), retry=no_wait(3),
                     sample_key=lambda r: (r * 7919) % 101)
        assert not set(plan.attempts) & {r for r in range(scenario["n"]) if _blocked(scenario, r)}
        reports.append([{k: v for k, v in item.to_json().items() if k != "duration_s"}
                        for item in report.items])
    assert reports[0] == reports[1]
    runnable = [r for r in range(scenario["n"]) if not _blocked(scenario, r)]
    assert len(reports[0]) == min(count, len(runnable))
