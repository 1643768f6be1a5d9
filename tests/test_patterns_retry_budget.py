"""Records a retry budget refused get their own recommendation (found by HB): they were
"unknown", and NEXT STEPS said to retry them "once the input or --fn is fixed", the wrong advice
for a dependency that was down."""

from __future__ import annotations

import pytest

import batchguard
from batchguard import MemoryDLQ, RetryBudget, RetryPolicy
from batchguard._report.model import build
from batchguard._report.steps import RETRYABLE_KINDS
from helpers_contract import CLASSIFIER, ENGINES, TransientErr


@pytest.mark.parametrize("engine", ENGINES)
def test_records_the_budget_refused_are_retried_once_the_dependency_is_healthy(engine: str) -> None:
    def down(record: int) -> int:
        raise TransientErr(f"503 from the dependency for {record}")

    report = batchguard.run_batches(
        range(40), down, engine=engine, dlq=MemoryDLQ(), classifier=CLASSIFIER,
        retry=RetryPolicy(max_attempts=3, base_delay=0.0, jitter="none"),
        retry_budget=RetryBudget(ratio=0.0, min_per_s=0.1, window_s=1.0, over_budget="dead_letter"))
    model = build(report)
    (refused,) = [p for p in model.patterns if p.error_type == "RetryBudgetExhausted"]
    assert refused.recommendation.kind == "retry_budget" and "retry_budget" in RETRYABLE_KINDS
    text = report.summary()
    assert "RetryBudgetExhausted records (retry budget) once the cause has passed" in text
