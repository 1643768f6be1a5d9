"""The sample phase: which records to try (:class:`SampleSelector`) and what they did
(:class:`SampleReport`).

The input is read once and may be a generator of any length, so the selector keeps a bounded
set of candidates: the record with the smallest key ("short"), the one with the largest
("long"), and a uniform reservoir sample (seeded: the same input gives the same sample) whose
quantiles stand for the input's ("medium" and, for more than three, the quantiles between).
With ``validate``, a record is checked only when it would become a candidate, and a blocked one
never does: a blocked record is never sampled.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from .._checks import is_finite_number, printable, shown
from ..errors import ConfigError, ConfigTypeError
from .report import RULE, _json_safe

__all__ = ["SampleItem", "SampleReport", "SampleSelector", "labels", "payload_size"]

_ENCODER: Final = json.JSONEncoder(default=str, check_circular=False)
"""One encoder for every record (``json.dumps`` builds one per call when given ``default``).
Without the circular check a self-containing record raises RecursionError: its repr is used."""
RESERVOIR: Final = 256
"""Records the selector holds to estimate the middle quantiles of a long input."""


def payload_size(record: Any) -> int:
    """The default "complexity" of a record: the length of its JSON form (its ``repr`` when it
    has none); a str or bytes record's own length."""
    if isinstance(record, (str, bytes, bytearray)):
        return len(record)
    try:
        return len(_ENCODER.encode(record))
    except (TypeError, ValueError, RecursionError):
        return len(repr(record))


def labels(count: int) -> list[tuple[str, float]]:
    """The label and quantile of each of ``count`` sampled records, shortest first:
    ``short``/``medium``/``long`` for three, the quantile between (``p25``) for more."""
    if count == 1:
        return [("medium", 0.5)]
    out = []
    for n in range(count):
        q = n / (count - 1)
        name = "short" if n == 0 else "long" if n == count - 1 else "medium" if q == 0.5 else f"p{q * 100:.0f}"
        out.append((name, q))
    return out


@dataclass(slots=True)
class _Candidate:
    key: float
    index: int
    record: Any


class SampleSelector:
    """Chooses ``count`` records spread over an input read once, in bounded memory.

    For each record: ``key = selector.key_of(record)``, then if ``selector.wants(index, key)``,
    check it (when there is a check) and ``selector.admit(...)`` it unless it is blocked.
    """

    def __init__(self, count: int, sample_key: Callable[[Any], Any] | None = None, *,
                 reservoir: int = RESERVOIR, seed: int = 0) -> None:
        self.count = count
        self._key = sample_key
        self._size = max(reservoir, 4 * count)
        self._rng = random.Random(seed)
        self._low: _Candidate | None = None
        self._high: _Candidate | None = None
        self._pool: list[_Candidate] = []
        self._slot: int | None = None
        self._seen = 0
        self.blocked_skipped = 0
        """Records that would have been candidates but were blocked by the check."""

    def key_of(self, index: int, record: Any) -> float:
        """The record's complexity: ``sample_key(record)`` (a real number), or its payload size."""
        if self._key is None:
            return float(payload_size(record))
        try:
            value = self._key(record)
        except Exception as exc:
            exc.add_note(f"batchguard: sample_key raised for record {index}")
            raise
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and math.isnan(value)):
            raise ConfigTypeError(f"sample_key must return a number, got {type(value).__name__} "
                                  f"{shown(value)} for record {index}")
        if not is_finite_number(value) and isinstance(value, int):
            # keys are compared as floats: an int past a float's range has none
            raise ConfigError(f"sample_key must return a number a float can hold (up to about 1.8e308), "
                              f"got {shown(value)} for record {index}")
        return float(value)

    def wants(self, index: int, key: float) -> bool:
        """Whether the record at ``index`` would become a candidate (then check it, and admit
        it unless blocked). Draws the reservoir's slot for it, so call it once per record."""
        self._seen += 1
        self._slot = None
        if len(self._pool) < self._size:
            self._slot = len(self._pool)
        else:
            slot = int(self._rng.random() * self._seen)  # randrange's cost, without its checks
            if slot < self._size:
                self._slot = slot
        return (self._slot is not None or self._low is None or key < self._low.key
                or self._high is None or key > self._high.key)

    def admit(self, index: int, key: float, record: Any) -> None:
        """Make the record a candidate (after :meth:`wants` said so, and the check passed)."""
        candidate = _Candidate(key, index, record)
        if self._low is None or key < self._low.key:
            self._low = candidate
        if self._high is None or key > self._high.key:
            self._high = candidate
        if self._slot is not None:
            if self._slot == len(self._pool):
                self._pool.append(candidate)
            else:
                self._pool[self._slot] = candidate

    def blocked(self) -> None:
        """The record :meth:`wants` asked for was blocked: it is not a candidate."""
        self.blocked_skipped += 1

    def chosen(self) -> list[tuple[str, int, Any, float]]:
        """(label, index, record, key) of the sample, shortest first; fewer than ``count`` when
        the input had fewer candidates. "short" and "long" are the smallest and largest keys of
        the whole input (the first such record on a tie), the others the reservoir's quantiles."""
        pool = {c.index: c for c in self._pool}
        for extreme in (self._low, self._high):
            if extreme is not None:
                pool[extreme.index] = extreme
        ordered = sorted(pool.values(), key=lambda c: (c.key, c.index))
        if not ordered:
            return []
        picked: list[tuple[str, _Candidate]] = []
        used: set[int] = set()
        wanted = labels(min(self.count, len(ordered)))
        for name, q in wanted:
            # the extremes as tracked: among equal keys, the first in input order
            target = self._low if q == 0 else self._high if q == 1 else None
            if target is None or target.index in used:
                rank = round(q * (len(ordered) - 1))
                # the nearest unused candidate to the quantile's rank
                for step in range(len(ordered)):
                    for r in (rank - step, rank + step):
                        if 0 <= r < len(ordered) and ordered[r].index not in used:
                            target = ordered[r]
                            break
                    else:
                        continue
                    break
            assert target is not None
            used.add(target.index)
            picked.append((name, target))
        return [(name, c.index, c.record, c.key) for name, c in picked]


@dataclass(frozen=True, slots=True)
class SampleItem:
    """One sampled record and what ``fn`` did with it."""

    label: str
    """short / medium / long (or the quantile between, ``p25``)."""
    record_index: int
    record_id: Any
    size: float
    """Its complexity: the payload size, or what ``sample_key`` said."""
    ok: bool
    duration_s: float
    """Time spent in ``fn`` for this record, every attempt included."""
    attempts: int
    value: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The item as JSON-safe data (the value as its JSON form, else its ``repr``)."""
        return {"label": self.label, "record_index": self.record_index,
                "record_id": _json_safe(self.record_id), "size": self.size, "ok": self.ok,
                "duration_s": self.duration_s, "attempts": self.attempts,
                "value": _json_value(self.value) if self.ok else None,
                "error_type": self.error_type, "error_message": self.error_message,
                "error_class": self.error_class}


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


@dataclass(frozen=True)
class SampleReport:
    """What the sample phase did: each sampled record with its label, id, duration and result
    or error; ``ok`` when every one succeeded. Nothing was written to a DLQ. With a job store
    (``store=``, ``job=``; the command line's always), its succeeded records and their values
    are kept there under ``rollback_id``, for ``batchguard rollback``."""

    items: tuple[SampleItem, ...]
    total: int
    """Records read to choose the sample."""
    blocked_skipped: int = 0
    """Records the check blocked that would otherwise have been candidates."""
    duration_s: float = 0.0
    next_steps: tuple[str, ...] = field(default=())
    rollback_id: str | None = None
    """What ``batchguard rollback ID --fn MODULE:UNDO`` undoes this sample's calls by, when its
    succeeded records were kept (seed 003's ``--rollback-batch``); None when none were."""

    @property
    def ok(self) -> bool:
        """True when every sampled record succeeded (and there was at least one)."""
        return bool(self.items) and all(item.ok for item in self.items)

    def with_next_steps(self, steps: Sequence[str]) -> SampleReport:
        """A copy whose NEXT STEPS are ``steps`` (the CLI's exact commands)."""
        return replace(self, next_steps=tuple(steps))

    def summary(self) -> str:
        """The sample report as a person reads it (seed 003's Phase 2 screen); control characters
        in ids, results and errors escaped (:func:`~batchguard._checks.printable`)."""
        succeeded = sum(item.ok for item in self.items)
        lines = ["Sample Batch Report", "",
                 f"Sampled: {len(self.items)} of {self.total:,} items (spread by size: short to long)",
                 f"Succeeded: {succeeded}", f"Failed: {len(self.items) - succeeded}"]
        if self.blocked_skipped:
            # The sample checks only the records it would take, so this is not the input's count.
            lines.append(f"Blocked by validation among the records tried: {self.blocked_skipped:,} "
                         "(never sampled; the dry-run counts them all)")
        lines += ["", RULE, ""]
        for n, item in enumerate(self.items, 1):
            mark = "OK" if item.ok else "FAILED"
            tries = f", {item.attempts} attempts" if item.attempts > 1 else ""
            lines.append(f"{n}. [{item.label}] Item ID: {_flat(item.record_id)} (size {item.size:g}) "
                         f"{mark} in {_duration(item.duration_s)}{tries}")
            if item.ok:
                lines.append(f"   Result: {_flat(item.value, 200)}")
            else:
                lines.append(f"   Error: {item.error_type}: {_flat(item.error_message, 200)} "
                             f"({item.error_class})")
            lines.append("")
        if self.next_steps:
            lines += [RULE, "", "NEXT STEPS:"]
            lines += [f"{n}. {step}" for n, step in enumerate(self.next_steps, 1)]
        return printable("\n".join(lines).rstrip())

    def __str__(self) -> str:
        return self.summary()

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-safe data."""
        return {"mode": "sample", "ok": self.ok, "total": self.total,
                "blocked_skipped": self.blocked_skipped, "duration_s": self.duration_s,
                "items": [item.to_json() for item in self.items],
                "next_steps": list(self.next_steps), "rollback_id": self.rollback_id}


def default_sample_steps(report: SampleReport, *, full: str = 'mode="full"',
                         sample: str = 'mode="sample"', rollback: str | None = None) -> tuple[str, ...]:
    """What to do after a sample: review the results, then run the rest (or fix and retry), or
    roll back what it did (``rollback``: the command; by default ``batchguard rollback ID``)."""
    if report.rollback_id is not None and rollback is None:
        rollback = f"batchguard rollback {report.rollback_id} --fn MODULE:UNDO"
    undo = (f"Rollback: {rollback}",) if rollback is not None and any(item.ok for item in report.items) else ()
    if report.ok:
        return ("Review the results above", f"Proceed: {full}", *undo)
    if not report.items:  # nothing ran, so there are no errors above to fix
        if report.blocked_skipped:
            return ("Nothing was sampled: every record it tried was blocked by validation (a dry-run "
                    "lists them with their fixes); fix them", f"Try the sample again: {sample}")
        return ("Nothing was sampled: the input has no records", f"Check the input, then: {sample}")
    return ("Fix what made the sample fail (errors above)", *undo, f"Try the sample again: {sample}",
            f"Then proceed: {full}")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _flat(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
