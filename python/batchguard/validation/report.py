"""The dry-run's result: :class:`ValidationReport`, and the bounded collector that builds it.

A dry-run may check millions of records: the collector counts every one, but keeps only the
first ``keep`` blocked and warned items in input order (a heap of the lowest indices, whatever
order a concurrent run checks them in), ``keep`` ready ids, and the issues grouped by severity,
field and message template (at most ``MAX_GROUPS`` groups, the rest counted under "other").
"""

from __future__ import annotations

import heapq
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from .._checks import printable
from .._report.patterns import message_template
from .issues import BLOCKED, WARNING, ValidationIssue, is_blocked

__all__ = ["MAX_LISTED_ISSUES", "IssueCount", "ListedItem", "ValidationCollector", "ValidationReport", "percent"]

DEFAULT_KEEP: Final = 20
"""Blocked and warned items a report lists (the counts cover all of them)."""
MAX_LISTED_ISSUES: Final = 10
"""Issues a listed record shows; the rest are counted (``issues_omitted``): a check may return
thousands for one record, and the listing must stay a screen."""
MAX_GROUPS: Final = 50
"""Distinct (severity, field, message template) groups counted; the rest go to one "other"."""
RULE: Final = "━" * 50


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a person reads it: 87%, 0.4%; never 0% for a part that is
    there, nor 100% for one that is not all."""
    if whole <= 0:
        return "0%"
    value = 100.0 * part / whole
    if part and value < 0.1:
        return "<0.1%"
    if part < whole and value > 99.9:
        return ">99.9%"
    if part < whole and value >= 99.5:  # rounded up it would read as all of them
        return f"{math.floor(value * 10) / 10:g}%"
    if value >= 10 or value == int(value):
        return f"{math.floor(value + 0.5)}%"  # half up, as a person rounds (12.5% is 13%)
    return f"{math.floor(value * 10 + 0.5) / 10:g}%"


@dataclass(frozen=True, slots=True)
class ListedItem:
    """A record a report lists by name: its place in the input, its id and its issues."""

    record_index: int
    record_id: Any
    issues: tuple[ValidationIssue, ...]
    """Its first :data:`MAX_LISTED_ISSUES` issues."""
    issues_omitted: int = 0
    """Issues of the record past those (counted by kind in the report's ``issue_counts``)."""

    def to_json(self) -> dict[str, Any]:
        """The item as JSON-safe data."""
        return {"record_index": self.record_index, "record_id": _json_safe(self.record_id),
                "issues": [issue.to_json() for issue in self.issues],
                "issues_omitted": self.issues_omitted}


@dataclass(frozen=True, slots=True)
class IssueCount:
    """How many records had an issue of one kind (severity, field, message template)."""

    severity: str
    field: str
    template: str
    count: int
    example: str
    """One message of this group, as the check wrote it."""

    def to_json(self) -> dict[str, Any]:
        """The group as JSON-safe data."""
        return {"severity": self.severity, "field": self.field, "template": self.template,
                "count": self.count, "example": self.example}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class ValidationCollector:
    """Counts a dry-run's verdicts and keeps a bounded listing; safe to call from any thread."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self.ready = 0
        self.warnings = 0
        self.blocked = 0
        # max-heaps by record index (negated): the `keep` lowest indices seen so far
        self._blocked: list[tuple[int, ListedItem]] = []
        self._warned: list[tuple[int, ListedItem]] = []
        self._ready: list[tuple[int, Any]] = []
        self._groups: dict[tuple[str, str, str], list[Any]] = {}
        self._other = 0

    def add(self, record_index: int, record_id: Any, issues: tuple[ValidationIssue, ...]) -> None:
        """Record one record's verdict."""
        keys = [(i.severity, i.field, message_template(i.message), i.message) for i in issues]
        with self._lock:
            if not issues:
                self.ready += 1
                _keep(self._ready, self.keep, record_index, record_id)
                return
            item = ListedItem(record_index, record_id, issues[:MAX_LISTED_ISSUES],
                              max(0, len(issues) - MAX_LISTED_ISSUES))
            if is_blocked(issues):
                self.blocked += 1
                _keep(self._blocked, self.keep, record_index, item)
            else:
                self.warnings += 1
                _keep(self._warned, self.keep, record_index, item)
            for severity, name, template, message in dict.fromkeys(keys):
                group = self._groups.get((severity, name, template))
                if group is not None:
                    group[0] += 1
                elif len(self._groups) < MAX_GROUPS:
                    self._groups[(severity, name, template)] = [1, message]
                else:
                    self._other += 1

    def report(self, *, total: int, unchecked: int, duration_s: float,
               next_steps: Sequence[str] | None = None) -> ValidationReport:
        """The report of what was collected; ``unchecked``: records a stopped run never checked."""
        with self._lock:
            groups = [IssueCount(sev, name, template, count, example)
                      for (sev, name, template), (count, example) in self._groups.items()]
            if self._other:
                groups.append(IssueCount(WARNING if not self.blocked else BLOCKED, "<other>",
                                         f"{MAX_GROUPS}+ other kinds of issue", self._other, ""))
            groups.sort(key=lambda g: (g.severity != BLOCKED, -g.count, g.field, g.template))
            report = ValidationReport(
                total=total, ready=self.ready, warnings=self.warnings, blocked=self.blocked,
                unchecked=unchecked, duration_s=duration_s,
                blocked_items=_in_order(self._blocked), warning_items=_in_order(self._warned),
                ready_sample=tuple(value for _, value in sorted((-i, v) for i, v in self._ready)),
                issue_counts=tuple(groups))
        return replace(report, next_steps=tuple(
            default_next_steps(report) if next_steps is None else next_steps))


def _keep(heap: list[tuple[int, Any]], keep: int, index: int, value: Any) -> None:
    if len(heap) < keep:
        heapq.heappush(heap, (-index, value))
    elif heap and -heap[0][0] > index:
        heapq.heapreplace(heap, (-index, value))


def _in_order(heap: list[tuple[int, ListedItem]]) -> tuple[ListedItem, ...]:
    return tuple(sorted((item for _, item in heap), key=lambda item: item.record_index))


def default_next_steps(report: ValidationReport, *, dry_run: str = 'run again with mode="dry-run"',
                       sample: str = 'mode="sample"') -> tuple[str, ...]:
    """What to do after a dry-run: fix what is blocked and check again, then try a sample.
    The CLI passes its exact commands as ``dry_run`` and ``sample``."""
    if report.blocked:
        return (f"Fix {report.blocked:,} blocked item{'s' if report.blocked != 1 else ''} (see details above)",
                f"Re-run dry-run to verify fixes: {dry_run}",
                f"Proceed to sample mode: {sample}")
    steps = [f"Proceed to sample mode: {sample}"]
    if report.warnings:
        steps.insert(0, f"Review {report.warnings:,} warning{'s' if report.warnings != 1 else ''} "
                        "(they run, with the impact shown)")
    return tuple(steps)


@dataclass(frozen=True)
class ValidationReport:
    """What a dry-run found: every record checked, ``fn`` never called.

    ``ready + warnings + blocked + unchecked == total`` (``unchecked``: records a stopped run
    never reached). ``blocked_items`` and ``warning_items`` list the first few of each in input
    order with their issues (fixes, impacts); ``issue_counts`` groups every issue by severity,
    field and message template; ``ready_sample`` holds the ids of the first ready records.
    ``ok`` is True when nothing is blocked.
    """

    total: int
    ready: int
    warnings: int
    blocked: int
    unchecked: int = 0
    duration_s: float = 0.0
    blocked_items: tuple[ListedItem, ...] = ()
    warning_items: tuple[ListedItem, ...] = ()
    ready_sample: tuple[Any, ...] = ()
    issue_counts: tuple[IssueCount, ...] = ()
    next_steps: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no record is blocked (warnings proceed)."""
        return self.blocked == 0

    def with_next_steps(self, steps: Sequence[str]) -> ValidationReport:
        """A copy whose NEXT STEPS are ``steps`` (the CLI's exact commands)."""
        return replace(self, next_steps=tuple(steps))

    def summary(self) -> str:
        """The dry-run validation report as a person reads it (seed 003's Phase 1 screen); control
        characters in ids and issues escaped (:func:`~batchguard._checks.printable`)."""
        lines = ["Dry-Run Validation Report", "",
                 f"Total Items Analyzed: {self.total - self.unchecked:,}"
                 + (f" (of {self.total:,}; the run stopped first)" if self.unchecked else ""),
                 f"Ready: {self.ready:,} ({percent(self.ready, self.total)})",
                 f"Warnings: {self.warnings:,} ({percent(self.warnings, self.total)})",
                 f"Blocked: {self.blocked:,} ({percent(self.blocked, self.total)})"]
        if self.blocked:
            lines += ["", RULE, "", "BLOCKED (must fix before proceeding):", ""]
            lines += _listed(self.blocked_items, self.blocked, warning=False)
        if self.warnings:
            lines += ["", RULE, "", "WARNINGS (can proceed, quality degradation):", ""]
            lines += _listed(self.warning_items, self.warnings, warning=True)
        if self.issue_counts and (self.blocked > len(self.blocked_items)
                                  or self.warnings > len(self.warning_items)):
            lines += ["", RULE, "", "ISSUES BY KIND:", ""]
            lines += [f"  {g.count:>8,}  {g.severity:<7}  {g.field}: {g.template}" for g in self.issue_counts]
        if self.ready_sample:
            shown = ", ".join(str(rid) for rid in self.ready_sample[:10])
            more = f" (+{self.ready - 10:,} more)" if self.ready > 10 else ""
            lines += ["", RULE, "", f"READY (sample): {shown}{more}"]
        if self.next_steps:
            lines += ["", RULE, "", "NEXT STEPS:"]
            lines += [f"{n}. {step}" for n, step in enumerate(self.next_steps, 1)]
        return printable("\n".join(lines))

    def __str__(self) -> str:
        return self.summary()

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-safe data: what ``summary()`` says, as fields."""
        return {
            "mode": "dry-run", "ok": self.ok, "total": self.total, "ready": self.ready,
            "warnings": self.warnings, "blocked": self.blocked, "unchecked": self.unchecked,
            "percent": {"ready": percent(self.ready, self.total),
                        "warnings": percent(self.warnings, self.total),
                        "blocked": percent(self.blocked, self.total)},
            "duration_s": self.duration_s,
            "blocked_items": [item.to_json() for item in self.blocked_items],
            "blocked_omitted": self.blocked - len(self.blocked_items),
            "warning_items": [item.to_json() for item in self.warning_items],
            "warnings_omitted": self.warnings - len(self.warning_items),
            "ready_sample": [_json_safe(rid) for rid in self.ready_sample],
            "issue_counts": [group.to_json() for group in self.issue_counts],
            "next_steps": list(self.next_steps),
        }


def _listed(items: tuple[ListedItem, ...], count: int, *, warning: bool) -> list[str]:
    lines: list[str] = []
    for n, item in enumerate(items, 1):
        lines.append(f"{n}. Item ID: {_one_line(item.record_id)}")
        for issue in item.issues:
            if issue.severity == WARNING and not warning:
                lines.append(f"   Warning: {_one_line(issue)}")
                continue
            lines.append(f"   {'Warning' if warning else 'Issue'}: {_one_line(issue)}")
            if warning:
                lines.append(f"   Impact: {_one_line(issue.impact or 'not stated')}")
            elif issue.fix:
                lines.append(f"   Fix: {_one_line(issue.fix)}")
        if item.issues_omitted:
            lines.append(f"   ... and {item.issues_omitted:,} more issues")
        lines.append("")
    if count > len(items):
        lines.append(f"... and {count - len(items):,} more (counted by kind below)")
    elif lines:
        lines.pop()
    return lines


def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if not isinstance(
        value, ValidationIssue) else str(value)
    return " ".join(text.split())
