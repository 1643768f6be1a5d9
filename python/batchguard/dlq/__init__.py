"""Dead-letter queues: where records that failed for good are kept, inspected and replayed."""

from .base import FILTER_FIELDS, Attempt, DeadLetter, DeadLetterQueue, MemoryDLQ

__all__ = ["FILTER_FIELDS", "Attempt", "DeadLetter", "DeadLetterQueue", "MemoryDLQ"]
