"""The keyword arguments of a run, declared once for ``run_batches`` and ``arun_batches``.

Both take ``**options: Unpack[RunOptions]`` (PEP 692), so a checker sees every keyword with its
type; :data:`DEFAULTS` holds their defaults (typed as a RunOptions, so the checker holds the two
together), and :func:`spelled_out` writes the keywords into the function's signature for
``help()`` and ``inspect.signature``, which do not expand ``Unpack``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, ForwardRef, Generic, Literal, TypedDict, TypeVar

if TYPE_CHECKING:  # annotations only: the job store's package imports the run core itself
    from ..alerts.rules import AlertRule
    from ..dlq.base import DeadLetterQueue
    from ..jobs.store import JobStore
    from ..policies import CircuitBreaker, Classifier, ErrorKey, RateLimit, RetryPolicies, RetryPolicy
    from ..results import BatchProgress
    from ..sinks import ResultWriter
    from ..steering import Adaptive, RetryBudget

__all__ = ["DEFAULTS", "DEFAULT_MODE", "RunOptions", "spelled_out"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class RunOptions(TypedDict, Generic[T], total=False):
    """The keywords ``run_batches`` and ``arun_batches`` share (``T``: the record type).

    Each is documented in :func:`batchguard.run_batches`; every one is optional.
    """

    batch_size: int | Literal["auto"] | None
    concurrency: int | Adaptive
    retry: RetryPolicy | RetryPolicies | Mapping[ErrorKey, RetryPolicy] | None
    classifier: Classifier | Callable[[BaseException], Any] | None
    breaker: CircuitBreaker | None
    dlq: DeadLetterQueue | str | None
    id_of: Callable[[T], Any] | None
    on_progress: Callable[[BatchProgress], Any] | None
    success_threshold: float | None
    max_failures: int | float | None
    stage: str
    engine: Literal["native", "python"]
    pickle_payloads: bool
    timeout: float | None
    rate_limit: RateLimit | None
    delay_between_batches: float
    key_of: Callable[[T], Any] | None
    job: str | None
    store: JobStore | str | None
    force: bool
    total: int | None
    validate: Callable[[T], Any] | None
    sample_count: int
    sample_key: Callable[[T], Any] | None
    hooks: object | None
    metrics: object | None
    alerts: Sequence[AlertRule] | None
    retry_budget: RetryBudget | None
    compensate: Callable[[T, Any], Any] | None
    atomic_batches: bool
    on_abort: Literal["stop", "compensate"]
    keep_outcomes: bool
    results: Literal["keep", "drop"] | Callable[[Sequence[int], Sequence[Any]], Any] | ResultWriter | str
    executor: object | None


DEFAULTS: Final[RunOptions[Any]] = {
    "batch_size": None,
    "concurrency": 1,
    "retry": None,
    "classifier": None,
    "breaker": None,
    "dlq": None,
    "id_of": None,
    "on_progress": None,
    "success_threshold": None,
    "max_failures": None,
    "stage": "process",
    "engine": "native",
    "pickle_payloads": False,
    "timeout": None,
    "rate_limit": None,
    "delay_between_batches": 0.0,
    "key_of": None,
    "job": None,
    "store": None,
    "force": False,
    "total": None,
    "validate": None,
    "sample_count": 3,
    "sample_key": None,
    "hooks": None,
    "metrics": None,
    "alerts": None,
    "retry_budget": None,
    "compensate": None,
    "atomic_batches": False,
    "on_abort": "stop",
    "keep_outcomes": False,
    "results": "keep",
    "executor": None,
}
"""Each keyword's value when it is not given."""

DEFAULT_MODE: Final = "full"
"""``mode`` ("full", "dry-run" or "sample"; see ``batchguard.validation``) is a parameter of its
own, like ``bulk``, not a RunOptions key: the overloads of run_batches need it to say what the
call returns (a ValidationReport, a SampleReport, or a BatchReport)."""


def _annotation(hint: Any) -> Any:
    # TypedDict keeps a postponed annotation as a ForwardRef: show the text it was written as.
    return hint.__forward_arg__ if isinstance(hint, ForwardRef) else hint


def spelled_out(func: F) -> F:
    """``func`` with its ``**options`` replaced, in its signature, by each RunOptions keyword
    and its default: what ``help(run_batches)`` and IDEs that read the signature show."""
    signature = inspect.signature(func)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    defaults: Mapping[str, object] = DEFAULTS
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name],
                                 annotation=_annotation(hint))
               for name, hint in RunOptions.__annotations__.items()]
    func.__dict__["__signature__"] = signature.replace(parameters=[*kept, *options])
    return func
