"""Exception types raised by batchguard itself (never by the user's callback).

Each subclasses the standard exception a caller would already catch for that kind of
problem, so existing ``except ValueError`` / ``except ConnectionError`` clauses keep working.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "BatchRolledBack",
    "BatchguardError",
    "BatchguardWarning",
    "BulkResultError",
    "CompensationFailed",
    "ConfigError",
    "ConfigTypeError",
    "DLQError",
    "DLQUnavailableError",
    "DeadLetterClaimedError",
    "DeadLetterNotFoundError",
    "InputError",
    "InputParseError",
    "JobConflictError",
    "JobError",
    "JobNotFoundError",
    "JobStoreUnavailableError",
    "PickleNotAllowedError",
    "ResultRejected",
    "RetryTimeExceeded",
]


class BatchguardError(Exception):
    """Base class of every error batchguard raises."""


class ConfigError(BatchguardError, ValueError):
    """An argument or policy has a value batchguard cannot run with.

    The message names the argument (or policy field) and says why.
    """


class ConfigTypeError(ConfigError, TypeError):
    """An argument or policy field has the wrong type (``batch_size=1.5``, ``stage=5``).

    A TypeError, as Python raises for a wrong type, and still a ConfigError (so a ValueError)
    for code that catches every configuration problem in one clause.
    """


class DLQError(BatchguardError):
    """A dead-letter queue could not store, read or remove entries."""


class DLQUnavailableError(DLQError, ConnectionError):
    """A dead-letter queue backend could not be reached (checked before any record runs)."""


class PickleNotAllowedError(DLQError, ValueError):
    """A dead letter stores its record as pickle, and the reader did not opt in to unpickling.

    Anyone who can write to a DLQ (a shared Redis, PostgreSQL table or file) can craft a pickle
    that runs code when it is loaded, so turning such an entry back into its record needs
    ``allow_pickle=True`` (``--allow-pickle`` on the command line), given only for a queue whose
    writers you trust. A ValueError, as for entries that cannot be replayed at all.
    """

    report: Any = None
    """Raised by ``replay`` after it replayed the other entries: its ReplayReport."""


class JobError(BatchguardError):
    """A resumable job could not be started, resumed or checkpointed."""


class JobConflictError(JobError, ValueError):
    """A job name was reused with different input or configuration."""


class JobNotFoundError(JobError, LookupError):
    """No job of that name is in the store."""


class JobStoreUnavailableError(JobError, ConnectionError):
    """The job store could not be opened, reached or written: a damaged, empty, read-only or
    unreachable store is refused before any record runs; a store that fails later (a full
    disk) stops the run with this error. The message names the store and the cause."""


class BulkResultError(BatchguardError, TypeError):
    """A bulk callback returned something other than one result per record."""


class BatchguardWarning(UserWarning):
    """Something batchguard handled but the user should know about (e.g. a payload stored as repr)."""


class InputError(ConfigError):
    """The command line's input cannot be read at all (missing, unreadable, not valid JSON):
    nothing runs."""


class InputParseError(BatchguardError, ValueError):
    """A line of the command line's input could not be parsed; its record is dead-lettered with
    this error (PERMANENT: a ValueError), and the run goes on.

    >>> issubclass(InputParseError, ValueError)
    True
    """


class DeadLetterNotFoundError(DLQError, LookupError):
    """Some of the ids given to a DLQ operation (``resolve``, ``replay(ids=...)``) name no entry:
    nothing was changed. ``ids`` holds the unknown ones, in the order given.

    >>> issubclass(DeadLetterNotFoundError, LookupError)
    True
    """

    def __init__(self, message: str, ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.ids = ids


def _rejected_repr() -> reprlib.Repr:
    shorter = reprlib.Repr()  # its keyword arguments are Python 3.12's
    shorter.maxlevel = 4
    for name in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
        setattr(shorter, name, 20)
    shorter.maxstring = shorter.maxlong = shorter.maxother = 400  # then cut to 200, with "..." at the end
    return shorter


_REJECTED_REPR = _rejected_repr()


class ResultRejected(BatchguardError):
    """``fn`` returned a value its retry policy's ``retry_on_result`` rejected (an empty page, a
    "pending" status): the record is retried as a RECOVERABLE failure, and dead-lettered with
    this error when its attempts run out. ``value_repr`` is the rejected value's ``repr``
    (shortened), so the DLQ entry says what came back.

    >>> str(ResultRejected([]))
    'retry_on_result rejected the value fn returned: []'
    """

    def __init__(self, value: Any) -> None:
        try:
            # reprlib: a rejected page of 100,000 items is not turned into a 1 MB string first.
            shown = _REJECTED_REPR.repr(value)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the record
            shown = f"<unrepresentable {type(value).__name__}>"
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"retry_on_result rejected the value fn returned: {shown}")
        self.value_repr = shown


class RetryTimeExceeded(BatchguardError, TimeoutError):
    """A record's next retry would have started after its policy's ``max_elapsed`` (counted
    from its first failure), so it was dead-lettered instead. The message names the limit,
    when the retry was due and the last error, which is also this error's ``__cause__``.
    """


class BatchRolledBack(BatchguardError):
    """The error a record's DLQ entry carries when its call succeeded but its atomic batch
    (``atomic_batches=True``) was rolled back because another record of the batch failed: its
    effect was undone by ``compensate``, and the entry (stage: the run's) replays it once the
    cause is fixed. The message names the batch and the record that failed with its error.
    """


class CompensationFailed(BatchguardError):
    """The error a DLQ entry of stage "compensate" carries: ``compensate(record, value)`` still
    raised when its retries ran out (or raised a PERMANENT or FATAL error), so the record's
    effect was *not* undone. The entry's payload is ``{"record": ..., "value": ...}``; the undo's
    own error is this error's ``__cause__``, and its type and message are in the message.
    """


class RetryBudgetExhausted(BatchguardError):
    """The error a record's DLQ entry carries when its retry was refused by the run's
    ``retry_budget=RetryBudget(over_budget="dead_letter")``: retries over the budget's window
    had reached its share of first attempts, so the record was dead-lettered instead of
    retried. The message names the budget, the refused retry and the last error, which is also
    this error's ``__cause__`` (its type and message are in the entry's attempts). Replay it
    once the dependency has recovered.
    """


class DeadLetterClaimedError(DLQError):
    """A change of status (``resolve``, ``set_status``; ``batchguard dlq skip``) was refused: a
    running replay has claimed some of the entries (status ``replaying``) and is running their
    records now. The message names the replay's run id, who started it and since when; nothing
    was changed. ``ids`` holds the claimed ones. Wait for the replay to end, or pass
    ``force=True`` (``--force``): the change then wins and the replay leaves those entries as
    they are set.
    """

    def __init__(self, message: str, ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.ids = ids
