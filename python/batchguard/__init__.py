"""batchguard: fault-tolerant batch processing with a Rust engine.

>>> import batchguard
>>> report = batchguard.run_batches(range(5), lambda x: x * 2)
>>> report.status, report.successful
('complete', [0, 2, 4, 6, 8])
"""

import importlib.metadata

from . import alerts, metrics, sinks
from ._run.iterate import BatchResult, BatchStream, iter_batches
from .alerts import AlertRule
from .api import RunOptions, arun_batches, run_batches
from .batching import Batch, calculate_batch_size, create_batches
from .dlq import Attempt, DeadLetter, DeadLetterQueue, MemoryDLQ, StatusChange, open_dlq
from .errors import (
    BatchguardError,
    BatchguardWarning,
    BatchRolledBack,
    BulkResultError,
    CompensationFailed,
    ConfigError,
    ConfigTypeError,
    DeadLetterClaimedError,
    DeadLetterNotFoundError,
    DLQError,
    DLQUnavailableError,
    InputError,
    InputParseError,
    JobConflictError,
    JobError,
    PickleNotAllowedError,
    ResultRejected,
    RetryBudgetExhausted,
    RetryTimeExceeded,
)
from .hooks import Hooks
from .jobs import (
    JobNotFoundError,
    JobStatus,
    JobStore,
    JobStoreUnavailableError,
    PostgresJobStore,
    SqliteJobStore,
    job_batches,
    job_status,
    list_jobs,
    open_job_store,
    record_status,
)
from .jobs.rollback import RollbackReport, rollback
from .policies import (
    MAX_DURATION_S,
    CircuitBreaker,
    Classifier,
    ErrorClass,
    Explanation,
    RateLimit,
    RetryPolicies,
    RetryPolicy,
)
from .replay import ReplayReport, replay
from .results import ActiveBatch, BatchProgress, BatchReport, BatchStats, RecordError
from .sources import Source, read
from .steering import Adaptive, ConcurrencyLimit, RetriesOverBudget, RetryBudget
from .validation import SampleReport, ValidationBlocked, ValidationIssue, ValidationReport, ValidationSummary

__version__ = importlib.metadata.version("batchguard")  # Cargo.toml's, through the wheel

__all__ = [
    "MAX_DURATION_S",
    "ActiveBatch",
    "Adaptive",
    "AlertRule",
    "Attempt",
    "Batch",
    "BatchProgress",
    "BatchReport",
    "BatchResult",
    "BatchRolledBack",
    "BatchStats",
    "BatchStream",
    "BatchguardError",
    "BatchguardWarning",
    "BulkResultError",
    "CircuitBreaker",
    "Classifier",
    "CompensationFailed",
    "ConcurrencyLimit",
    "ConfigError",
    "ConfigTypeError",
    "DLQError",
    "DLQUnavailableError",
    "DeadLetter",
    "DeadLetterClaimedError",
    "DeadLetterNotFoundError",
    "DeadLetterQueue",
    "ErrorClass",
    "Explanation",
    "Hooks",
    "InputError",
    "InputParseError",
    "JobConflictError",
    "JobError",
    "JobNotFoundError",
    "JobStatus",
    "JobStore",
    "JobStoreUnavailableError",
    "MemoryDLQ",
    "PickleNotAllowedError",
    "PostgresJobStore",
    "RateLimit",
    "RecordError",
    "ReplayReport",
    "ResultRejected",
    "RetriesOverBudget",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryPolicies",
    "RetryPolicy",
    "RetryTimeExceeded",
    "RollbackReport",
    "RunOptions",
    "SampleReport",
    "Source",
    "SqliteJobStore",
    "StatusChange",
    "ValidationBlocked",
    "ValidationIssue",
    "ValidationReport",
    "ValidationSummary",
    "alerts",
    "arun_batches",
    "calculate_batch_size",
    "create_batches",
    "iter_batches",
    "job_batches",
    "job_status",
    "list_jobs",
    "metrics",
    "open_dlq",
    "open_job_store",
    "read",
    "record_status",
    "replay",
    "rollback",
    "run_batches",
    "sinks",
]
