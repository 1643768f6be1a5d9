"""batchguard: fault-tolerant batch processing with a Rust engine.

>>> import batchguard
>>> report = batchguard.run_batches(range(5), lambda x: x * 2)
>>> report.status, report.successful
('complete', [0, 2, 4, 6, 8])
"""

from .api import arun_batches, run_batches
from .batching import Batch, calculate_batch_size, create_batches
from .dlq import Attempt, DeadLetter, DeadLetterQueue, MemoryDLQ
from .errors import (
    BatchguardError,
    BatchguardWarning,
    BulkResultError,
    ConfigError,
    DLQError,
    DLQUnavailableError,
    JobConflictError,
    JobError,
)
from .policies import CircuitBreaker, Classifier, ErrorClass, RetryPolicy
from .results import BatchProgress, BatchReport, BatchStats, RecordError

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "Batch",
    "BatchProgress",
    "BatchReport",
    "BatchStats",
    "BatchguardError",
    "BatchguardWarning",
    "BulkResultError",
    "CircuitBreaker",
    "Classifier",
    "ConfigError",
    "DLQError",
    "DLQUnavailableError",
    "DeadLetter",
    "DeadLetterQueue",
    "ErrorClass",
    "JobConflictError",
    "JobError",
    "MemoryDLQ",
    "RecordError",
    "RetryPolicy",
    "arun_batches",
    "calculate_batch_size",
    "create_batches",
    "run_batches",
]
