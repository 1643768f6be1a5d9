"""What a validation check says about a record: :class:`ValidationIssue`, and how a check's
answer (issues, nothing, a wrong type, an exception) becomes a verdict.

A leaf module (no run-core import): the run core (``_run.entries``, ``_run.plan``) and the
phase runners both read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .._checks import check_count, closest, shown
from ..errors import BatchguardError, ConfigError, ConfigTypeError

__all__ = [
    "BLOCKED",
    "MAX_DESCRIBED_ISSUES",
    "MODES",
    "SEVERITIES",
    "VALIDATE_STAGE",
    "WARNING",
    "Check",
    "Mode",
    "Severity",
    "ValidationBlocked",
    "ValidationIssue",
    "ValidationSummary",
    "averdict_of",
    "check_phase_options",
    "is_blocked",
    "issues_of",
    "raised_issue",
    "verdict_of",
]

Severity = Literal["blocked", "warning"]
BLOCKED: Final = "blocked"
"""The record must be fixed before it runs: a full run dead-letters it, never calling ``fn``."""
WARNING: Final = "warning"
"""The record can run, with a known loss of quality (the issue's ``impact``)."""
SEVERITIES: Final = (BLOCKED, WARNING)

Mode = Literal["full", "dry-run", "sample"]
MODES: Final = ("full", "dry-run", "sample")
VALIDATE_STAGE: Final = "validate"
"""The stage of a blocked record's DLQ entry: it failed validation, ``fn`` never saw it."""
MAX_SAMPLE_COUNT: Final = 1000
"""A sample is a handful of records a person reads through; past this it is a run."""

Check = Callable[[Any], Any]
"""``check(record)``: a ValidationIssue, an iterable of them, or None; or an ``async def``."""


def _text(owner: str, name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        kind = "a str or None" if optional else "a non-empty str"
        raise ConfigTypeError(f"{owner}.{name} must be {kind}, got {type(value).__name__} {shown(value)}")
    if not value.strip() and not optional:
        raise ConfigError(f"{owner}.{name} must be a non-empty str, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """One problem a check found in a record.

    ``field`` names what is wrong (a field name, or any label), ``message`` what is wrong with
    it, ``fix`` what to do about it (None: no known fix), ``severity`` whether the record is
    ``"blocked"`` (must be fixed: a full run dead-letters it without calling ``fn``) or only a
    ``"warning"`` (it runs; ``impact`` says what the warning costs).

    >>> issue = ValidationIssue("email", "no @ in 'bob'", "correct the address in the CRM")
    >>> issue.severity, str(issue)
    ('blocked', "email: no @ in 'bob'")
    >>> ValidationIssue("amount", "zero", None, severity="warn")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    batchguard.errors.ConfigError: ValidationIssue.severity must be ... got 'warn'; did you mean 'warning'?
    """

    field: str
    message: str
    fix: str | None
    severity: Severity = "blocked"
    impact: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.field, str):
            raise ConfigTypeError(f"ValidationIssue.field must be a str, got {type(self.field).__name__} "
                                  f"{shown(self.field)}")
        _text("ValidationIssue", "message", self.message)
        _text("ValidationIssue", "fix", self.fix, optional=True)
        _text("ValidationIssue", "impact", self.impact, optional=True)
        if self.severity not in SEVERITIES:
            if not isinstance(self.severity, str):
                raise ConfigTypeError(f"ValidationIssue.severity must be 'blocked' or 'warning', got "
                                      f"{type(self.severity).__name__} {shown(self.severity)}")
            close = closest(self.severity, SEVERITIES)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ConfigError(f"ValidationIssue.severity must be 'blocked' or 'warning', got "
                              f"{self.severity!r}{hint}")

    @property
    def blocked(self) -> bool:
        """Whether this issue stops its record from running."""
        return self.severity == BLOCKED

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{where}{self.message}"

    def to_json(self) -> dict[str, Any]:
        """The issue as JSON-safe data."""
        return {"field": self.field, "message": self.message, "fix": self.fix,
                "severity": self.severity, "impact": self.impact}


def raised_issue(exc: BaseException) -> ValidationIssue:
    """What a check that raised says about its record: it is blocked, the issue naming the
    exception. A record that cannot be checked must not run unchecked (the check may have
    raised on exactly the bad data it exists to catch)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the verdict
        text = "<unprintable>"
    name = type(exc).__name__
    return ValidationIssue("<check>", f"the check raised {name}: {text}" if text else f"the check raised {name}",
                           "fix the record, or make the check return a ValidationIssue for it "
                           "instead of raising")


def issues_of(answer: Any) -> tuple[ValidationIssue, ...]:
    """A check's answer as a tuple of issues: None (or empty) is none, one issue is one, an
    iterable gives its issues. Anything else is a bug in the check, reported as a blocked
    issue that says what it returned, so it is seen rather than silently taken as "ready"."""
    if answer is None:
        return ()
    if isinstance(answer, ValidationIssue):
        return (answer,)
    if isinstance(answer, Iterable) and not isinstance(answer, (str, bytes, bytearray, Mapping)):
        try:
            issues = tuple(answer)
        except Exception as exc:  # noqa: BLE001 - a generator check that raises part way
            return (raised_issue(exc),)
        if all(isinstance(issue, ValidationIssue) for issue in issues):
            return issues
        wrong = next(i for i in issues if not isinstance(i, ValidationIssue))
        return (_wrong_answer(f"an iterable holding {type(wrong).__name__} {shown(wrong)}"),)
    return (_wrong_answer(f"{type(answer).__name__} {shown(answer)}"),)


def _wrong_answer(what: str) -> ValidationIssue:
    return ValidationIssue("<check>", f"the check returned {what}",
                           "make the check return a ValidationIssue, an iterable of them, or None")


def verdict_of(check: Callable[[Any], Any], record: Any) -> tuple[ValidationIssue, ...]:
    """``check(record)`` as issues (:func:`issues_of`); a check that raises blocks its record
    (:func:`raised_issue`)."""
    try:
        return issues_of(check(record))
    except Exception as exc:  # noqa: BLE001 - a raising check blocks its record
        return (raised_issue(exc),)


async def averdict_of(check: Callable[[Any], Any], record: Any) -> tuple[ValidationIssue, ...]:
    """:func:`verdict_of` of an ``async def`` check."""
    try:
        return issues_of(await check(record))
    except Exception as exc:  # noqa: BLE001 - as verdict_of
        return (raised_issue(exc),)


def is_blocked(issues: tuple[ValidationIssue, ...]) -> bool:
    """Whether any of ``issues`` blocks its record."""
    return any(issue.severity == BLOCKED for issue in issues)


MAX_DESCRIBED_ISSUES: Final = 20
"""Issues a blocked record's DLQ entry names; the rest are counted (a check may return
thousands, and the entry's message is stored and shown)."""


def describe(issues: Iterable[ValidationIssue]) -> str:
    """Issues on one line, with their fixes: what a blocked record's DLQ entry says. At most
    :data:`MAX_DESCRIBED_ISSUES`, then how many more."""
    issues = tuple(issues)
    parts = []
    for issue in issues[:MAX_DESCRIBED_ISSUES]:
        fix = f" (fix: {issue.fix})" if issue.fix else ""
        parts.append(f"[{issue.severity}] {issue}{fix}")
    if len(issues) > MAX_DESCRIBED_ISSUES:
        parts.append(f"and {len(issues) - MAX_DESCRIBED_ISSUES:,} more issues")
    return "; ".join(parts)


class ValidationBlocked(BatchguardError, ValueError):
    """A full run's record that its check blocked: dead-lettered at stage ``"validate"``, class
    PERMANENT, ``fn`` never called. The message lists the issues and their fixes; ``issues``
    holds them."""

    def __init__(self, issues: tuple[ValidationIssue, ...]) -> None:
        self.issues = issues
        super().__init__(f"blocked by validation: {describe(issues)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.issues,))


@dataclass(frozen=True, slots=True)
class ValidationSummary:
    """What validation did in a full run (``report.validation``): how many records were
    ``blocked`` (dead-lettered at stage "validate", ``fn`` never called) and how many ran with
    ``warnings``."""

    blocked: int
    warnings: int

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return {"blocked": self.blocked, "warnings": self.warnings}


def check_phase_options(mode: Any, validate: Any, sample_count: Any, sample_key: Any) -> None:
    """``mode``, ``validate``, ``sample_count`` and ``sample_key`` as ``run_batches`` takes them:
    a wrong one raises ConfigTypeError / ConfigError naming it."""
    if not isinstance(mode, str):
        raise ConfigTypeError(f"mode must be one of {', '.join(map(repr, MODES))}; got "
                              f"{type(mode).__name__} {shown(mode)}")
    if mode not in MODES:
        close = closest(mode, MODES)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}{hint}")
    if validate is not None and not callable(validate):
        raise ConfigTypeError(f"validate must be callable (record -> issues), got "
                              f"{type(validate).__name__} {shown(validate)}")
    if mode == "dry-run" and validate is None:
        raise ConfigError('mode="dry-run" runs the checks and nothing else: pass validate=check, '
                          "a callable that returns the ValidationIssues of a record")
    check_count("sample_count", sample_count, minimum=1, maximum=MAX_SAMPLE_COUNT,
                why="a sample is read through by a person")
    if sample_key is not None and not callable(sample_key):
        raise ConfigTypeError(f"sample_key must be callable (record -> a number), got "
                              f"{type(sample_key).__name__} {shown(sample_key)}")
