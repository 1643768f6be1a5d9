"""The phases of a run: validate everything first (dry-run), try a few records (sample), then
run the rest (full). See ``run_batches(..., validate=check, mode=...)``.

``check(record)`` returns the record's :class:`ValidationIssue` objects (one, an iterable, or
None when it is ready), or raises (the record is then blocked with an issue naming the
exception). A dry-run returns a :class:`ValidationReport`, a sample a :class:`SampleReport`;
a full run dead-letters blocked records at stage ``"validate"`` without calling ``fn`` and
counts them, and the records that ran with warnings, in ``report.validation``.
"""

from .issues import (
    BLOCKED,
    MODES,
    SEVERITIES,
    VALIDATE_STAGE,
    WARNING,
    ValidationBlocked,
    ValidationIssue,
    ValidationSummary,
)
from .report import IssueCount, ListedItem, ValidationReport
from .sample import SampleItem, SampleReport, payload_size

__all__ = [
    "BLOCKED",
    "MODES",
    "SEVERITIES",
    "VALIDATE_STAGE",
    "WARNING",
    "IssueCount",
    "ListedItem",
    "SampleItem",
    "SampleReport",
    "ValidationBlocked",
    "ValidationIssue",
    "ValidationReport",
    "ValidationSummary",
    "payload_size",
]
