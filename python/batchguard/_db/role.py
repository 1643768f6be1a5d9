"""What a database is used as: how messages name it and which errors it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from ..errors import DLQError, DLQUnavailableError, JobError, JobStoreUnavailableError

__all__ = ["DLQ", "JOB_STORE", "Database", "Role"]


@dataclass(frozen=True, slots=True)
class Role:
    """A database's use: ``noun`` names it in messages ("SQLite job store x.db: ..."), the
    exception types say what the caller catches when it cannot be opened or reached
    (``unavailable``), when an operation fails (``failed``), and when it is used after ``close``."""

    noun: str
    unavailable: type[Exception]
    failed: type[Exception]
    closed: type[Exception]


DLQ: Final = Role("dead-letter queue", unavailable=DLQUnavailableError, failed=DLQError, closed=DLQError)
# A job store that fails mid-run stops the run: JobStoreUnavailableError (a ConnectionError) says why.
JOB_STORE: Final = Role("job store", unavailable=JobStoreUnavailableError, failed=JobStoreUnavailableError,
                        closed=JobError)


class Database(Protocol):
    """A connection to one database, whichever store holds it."""

    def same_database(self, other: Database) -> bool:
        """Whether ``other`` reaches the same database, so that one transaction can hold both."""
        ...
