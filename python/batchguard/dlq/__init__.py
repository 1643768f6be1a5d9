"""Dead-letter queues: where records that failed for good are kept, inspected and replayed.

Backends: :class:`MemoryDLQ`, :class:`SqliteDLQ`, :class:`JsonlDLQ`, :class:`RedisDLQ` (needs the
``redis`` extra), :class:`PostgresDLQ` (``postgres`` extra). :func:`open_dlq` builds one from a
URL such as ``sqlite:///dead_letters.db``.
"""

from .base import (
    FILTER_FIELDS,
    STATUSES,
    Attempt,
    DeadLetter,
    DeadLetterQueue,
    MemoryDLQ,
    StatusChange,
    TransactionalDLQ,
)
from .jsonl import JsonlDLQ
from .postgres import PostgresDLQ
from .redis import RedisDLQ
from .sqlite import SqliteDLQ
from .urls import open_dlq

__all__ = [
    "FILTER_FIELDS",
    "STATUSES",
    "Attempt",
    "DeadLetter",
    "DeadLetterQueue",
    "JsonlDLQ",
    "MemoryDLQ",
    "PostgresDLQ",
    "RedisDLQ",
    "SqliteDLQ",
    "StatusChange",
    "TransactionalDLQ",
    "open_dlq",
]
