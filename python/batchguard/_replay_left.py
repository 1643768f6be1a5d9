"""Which dead letters a replay leaves in the queue without feeding them to ``fn``, and the
warning that says why: input lines that did not parse, records their check blocked, undos that
failed (stage "compensate"), and records stored as their ``repr``."""

from __future__ import annotations

import warnings
from typing import Final

from ._run.entries import COMPENSATE_STAGE
from .dlq.base import DeadLetter
from .errors import BatchguardWarning
from .validation.issues import VALIDATE_STAGE, ValidationBlocked

__all__ = ["PARSE_ERROR", "is_blocked_entry", "is_failed_undo", "is_unparsed_line", "warn_left"]

PARSE_ERROR: Final = "InputParseError"
"""The error the ``batchguard`` command dead-letters an input line that does not parse with."""


def is_unparsed_line(entry: DeadLetter) -> bool:
    """Whether ``entry`` holds an input line that did not parse (its payload is the raw text):
    dead-lettered with InputParseError, now or at its first attempt (an earlier replay may
    have given it another error)."""
    first = entry.attempts[0].error_type if entry.attempts else entry.error_type
    return PARSE_ERROR in (entry.error_type, first)


def is_blocked_entry(entry: DeadLetter) -> bool:
    """Whether ``entry`` holds a record its check blocked (stage "validate", or its last error
    ValidationBlocked: a replay's check blocked it, and the entry kept the stage it first failed
    in): ``fn`` never ran on it, and should not until the record is fixed or checked again."""
    return entry.stage == VALIDATE_STAGE or entry.error_type == ValidationBlocked.__name__


def is_failed_undo(entry: DeadLetter) -> bool:
    """Whether ``entry`` is an undo that failed (stage "compensate"): its payload is
    ``{"record": ..., "value": ...}`` of a record ``fn`` already ran on, whose effect stands."""
    return entry.stage == COMPENSATE_STAGE


def warn_left(*, not_replayable: int, parse_skipped: int, undo_skipped: int, blocked_skipped: int) -> None:
    """One BatchguardWarning per kind of entry a replay left in the queue, at its caller's line."""
    if not_replayable:
        warnings.warn(f"{not_replayable} dead letters store their record as repr and cannot "
                      "be replayed; they stay in the queue (run with pickle_payloads=True to keep "
                      "records that JSON cannot hold replayable)", BatchguardWarning, stacklevel=3)
    if parse_skipped:
        warnings.warn(f"{parse_skipped} dead letters hold input lines that did not parse "
                      "(InputParseError): their raw text was not fed to fn and they stay in the "
                      "queue (include_parse_errors=True replays it)", BatchguardWarning, stacklevel=3)
    if undo_skipped:
        warnings.warn(f"{undo_skipped} dead letters are undos that failed (stage 'compensate', "
                      "payload {'record': ..., 'value': ...}): fn already ran on those records and their "
                      "effect stands, so they are not fed to fn and stay in the queue; undo them with "
                      "compensate(record, value), then resolve them (dlq skip ID --reason)",
                      BatchguardWarning, stacklevel=3)
    if blocked_skipped:
        warnings.warn(f"{blocked_skipped} dead letters hold records blocked by validation "
                      "(stage 'validate'): fn never ran on them and they stay in the queue; fix the "
                      "records in the input and re-run them, or pass validate=check (--validate) to "
                      "check them again and run those now valid", BatchguardWarning, stacklevel=3)
