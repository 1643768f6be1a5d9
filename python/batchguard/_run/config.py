"""What an engine needs to know about a run: one frozen object both engines read.

The Rust engine reads it by attribute name (``src/bindings/config.rs``), the reference engine by
field; :func:`~batchguard._run.plan.make_plan` builds and validates it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._retry_table import PolicyTable
from ..policies import CircuitBreaker, RetryPolicy
from ..steering import Adaptive, RetryBudget

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """What an engine needs to know about a run (built and validated by ``make_plan``)."""

    batch_size: int
    concurrency: int
    retry: RetryPolicy
    breaker: CircuitBreaker | None
    max_failures: int | float | None
    seed: int
    progress_interval: float = 0.1
    traceback_limit: int = 100
    skip_batches: frozenset[int] = frozenset()
    """Batches a resumed job already finished: read past, not run."""
    timeout: float | None = None
    """Seconds per attempt (see ``run_batches``)."""
    rate_per_second: float | None = None
    rate_burst: float = 1.0
    delay_between_batches: float = 0.0
    key_of: Callable[[Any], Any] | None = None
    """Records with equal keys run one at a time, in input order."""
    collect_retries: bool = False
    """Hand each scheduled retry to the recorder (a ``RetryEvent``): only with an ``on_retry``
    hook, so a run without one pays nothing for it."""
    values_per_batch: bool = False
    """Hand each batch's successful values to the recorder with the batch's end (``BatchEvent``
    ``indices`` / ``values``) and keep none for the run's end: ``results=`` other than "keep".
    False keeps them all for ``report.successful``, the engines' fast path."""
    retry_table: PolicyTable | None = None
    """``retry=RetryPolicies(by_error=...)`` compiled: which policy a failure is under (None:
    ``retry`` for every failure). The classifier holds it too (``Classifier.retry_table``)."""

    @property
    def retry_policies(self) -> tuple[RetryPolicy, ...]:
        """The policies by error, by index from 1 (``retry``, the default, is 0)."""
        return () if self.retry_table is None else self.retry_table.policies[1:]
    retry_budget: RetryBudget | None = None
    """Retries may not exceed a share of first attempts (``retry_budget=``)."""
    adaptive: Adaptive | None = None
    """Calls in flight limited by AIMD (``concurrency=Adaptive(...)``); ``concurrency`` is then
    its ``max``: the workers a run may use."""
