"""Failure patterns: dead-lettered records grouped by what went wrong, counted in bounded memory.

A pattern is one (error type, error class, HTTP status, message template). The template is the
error message with what varies from record to record masked (:func:`message_template`), so
``"user 17 not found"`` and ``"user 4242 not found"`` are one pattern. :class:`PatternCounter`
counts a run's (or a DLQ's) failures by pattern as they happen, keeping at most a fixed number of
patterns and three example record ids each, whatever the number of failures; ``patterns()``
gives them most frequent first, each with its recommendation (:mod:`.rules`).

>>> counter = PatternCounter()
>>> for n in (17, 4242, 9):
...     counter.add(f"u{n}", "LookupError", "permanent", None, f"user {n} not found")
>>> counter.add("u1", "ReadTimeout", "recoverable", None, "read timed out (5.0 s)")
>>> for p in counter.patterns():
...     print(p.error_type, repr(p.template), p.count, p.example_ids)
LookupError 'user <n> not found' 3 ('u17', 'u4242', 'u9')
ReadTimeout 'read timed out (<n> s)' 1 ('u1',)
>>> counter.patterns()[1].recommendation.kind
'timeout'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .rules import DEFAULT_RULES, ROLLED_BACK, ROLLED_BACK_TYPE, Recommendation, RecommendationRule, recommend

__all__ = ["MAX_CACHED_TEMPLATES", "MAX_EXAMPLES", "MAX_PATTERNS", "OTHER_MESSAGES", "OTHER_TYPE", "CountedEntry",
           "FailurePattern",
           "PatternCounter", "PatternKey", "digit_shape", "json_safe", "message_template"]

MAX_TEMPLATE_CHARS: Final = 160
"""A template is cut to this many characters (and ends in "…" when it was cut)."""
_MAX_INPUT_CHARS: Final = 2000  # what of a message is looked at: a template is short anyway
MAX_PATTERNS: Final = 100
"""Distinct patterns a counter keeps by default (plus one "other messages" per error type and
one "other" for the rest)."""
MAX_TEMPLATES_PER_TYPE: Final = 20
"""Templates kept for one (error type, class, status) before its records go to its "other
messages" pattern: a message with an unmasked variable part cannot use up every slot."""
MAX_EXAMPLES: Final = 3
"""Example record ids kept per pattern (the first ones in record order)."""
OTHER_MESSAGES: Final = "(other messages)"
"""The template of an error type's records past :data:`MAX_TEMPLATES_PER_TYPE` templates."""
OTHER_TYPE: Final = "(other)"
"""The error type (and class) of the records counted past :data:`MAX_PATTERNS` patterns."""

# One pass per kind, each run only when the message can hold one (a cheap `in` test first): one
# regex alternating over every kind tried each branch at every position, 4-5x slower.
_URLS: Final = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_EMAILS: Final = re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_QUOTED: Final = re.compile(r"(?<![\w'])'[^'\n]*'" r'|(?<![\w"])"[^"\n]*"')
# Every numeric kind starts with a hex digit: the lookahead lets the other positions fail at once.
_NUMBERS: Final = re.compile(r"""(?=[0-9A-Fa-f])(?:
    (?P<uuid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b)
  | (?P<hex>0[xX][0-9A-Fa-f]+\b|(?=[0-9A-Fa-f]*[0-9])(?=[0-9A-Fa-f]*[A-Fa-f])[0-9A-Fa-f]{8,}\b)
  | (?P<ip>\d{1,3}(?:\.\d{1,3}){3}\b)
  | (?P<id>\d{6,})
  | (?P<n>\d+(?:\.\d+)?)
)""", re.VERBOSE)
_DIGIT: Final = re.compile(r"\d")
_ASCII_DIGIT: Final = re.compile(r"[0-9]")
# UTF-8 writes every other character with bytes >= 0x80, so mapping the bytes of the ASCII
# digits maps exactly the ASCII digits. To "1", not "0": no shape then holds "0x".
_DIGITS_TO_ONE: Final = bytes.maketrans(b"0123456789", b"1111111111")
MAX_CACHED_TEMPLATES: Final = 1024
"""Digit shapes (:func:`digit_shape`) a counter keeps templates for; past it the cache starts again."""
_MAX_CACHED_MESSAGE: Final = 512  # longer messages are templated each time: rare, and costly to keep
_NUMBER_MASKS: Final = {"uuid": "<id>", "hex": "<id>", "ip": "<ip>", "id": "<id>", "n": "<n>"}
# A blocked record's message (validation.issues.describe): "blocked by validation: " then
# "[severity] field: message (fix: text)" per issue, joined by "; " (a fix may hold "; " too).
_BLOCKED_TYPE: Final = "ValidationBlocked"
_BLOCKED_PREFIX: Final = "blocked by validation: "
_ISSUE_SPLIT: Final = re.compile(r"; (?=\[(?:blocked|warning)\] )")


def _url(match: re.Match[str]) -> str:
    """``scheme://host`` (a port as ``:<n>``) and ``/<path>`` for whatever follows: the user and
    password (a secret), the path and the query vary from record to record."""
    scheme, _, rest = match.group().partition("://")
    cut = len(rest)
    for stop in "/?#":
        where = rest.find(stop)
        if where != -1:
            cut = min(cut, where)
    netloc, tail = rest[:cut], rest[cut:]
    host = netloc.rpartition("@")[2]
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if colon and port.isdigit():
        host = f"{name}:<n>"
    if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}(?::<n>)?", host):
        host = "<ip>" + host[host.find(":"):] if ":" in host else "<ip>"
    return f"{scheme}://{host}" + ("/<path>" if tail.strip("/") else tail)


def _quoted(match: re.Match[str]) -> str:
    return "'<v>'" if match.group()[0] == "'" else '"<v>"'


def _number(match: re.Match[str]) -> str:
    return _NUMBER_MASKS[match.lastgroup or "n"]


def message_template(message: str) -> str:
    """``message`` with its variable parts masked, whitespace collapsed, capped in length.

    URLs keep their scheme and host (``/<path>`` for the rest, never the userinfo), emails become
    ``<email>``, quoted values ``'<v>'`` / ``"<v>"``, UUIDs, hex ids and digit runs of six or
    more ``<id>``, IPv4 addresses ``<ip>``, other numbers ``<n>``.

    >>> message_template("user 42 (alice@example.com) not found in 'orders'")
    "user <n> (<email>) not found in '<v>'"
    >>> message_template("GET https://bob:pw@api.example.com:8443/v1/items/77?x=1 -> 503")
    'GET https://api.example.com:<n>/<path> -> <n>'
    >>> message_template("row 0x7f3a9c00 id 550e8400-e29b-41d4-a716-446655440000 order 20240117")
    'row <id> id <id> order <id>'
    """
    text = message if len(message) <= _MAX_INPUT_CHARS else message[:_MAX_INPUT_CHARS]
    if "://" in text:
        text = _URLS.sub(_url, text)
    if "@" in text:
        text = _EMAILS.sub("<email>", text)
    if "'" in text or '"' in text:
        text = _QUOTED.sub(_quoted, text)
    if _DIGIT.search(text) is not None:
        text = _NUMBERS.sub(_number, text)
    text = " ".join(text.split())
    if len(text) > MAX_TEMPLATE_CHARS or len(message) > _MAX_INPUT_CHARS:
        text = text[:MAX_TEMPLATE_CHARS - 1].rstrip() + "…"
    return text


def digit_shape(message: str) -> bytes:
    """What :func:`message_template` makes of ``message`` depends on: its UTF-8 bytes with every
    ASCII digit written as ``1``, since the masking rules look at ASCII digits only as digits
    (which numbers, how many in a row, where), never at which digit they are, but one: ``0x``
    starts a hex id. A message holding ``0x`` (or ``0X``) is its own shape, its bytes as they
    are (which no other shape can be: shapes hold no ``0``).

    >>> digit_shape("user 17 not found") == digit_shape("user 42 not found")
    True
    >>> digit_shape("user 17 not found") == digit_shape("user 170 not found")
    False
    >>> digit_shape("row 0x7f") == digit_shape("row 1x7f")
    False
    """
    encoded = message.encode("utf-8", "surrogatepass")
    if b"0x" in encoded or b"0X" in encoded:
        return encoded
    return encoded.translate(_DIGITS_TO_ONE)


def blocking_issues(message: str) -> str:
    """A blocked record's message without what does not say why it was blocked: each issue's
    fix text (long, and cut at the template's length it split one cause into several patterns)
    and the warnings, so records blocked for the same reasons form one pattern.

    >>> blocking_issues("blocked by validation: [blocked] email: no @ (fix: add one; or not); "
    ...                 "[warning] amount: is 0")
    'blocked by validation: email: no @'
    """
    if not message.startswith(_BLOCKED_PREFIX):
        return message
    parts = _ISSUE_SPLIT.split(message[len(_BLOCKED_PREFIX):])
    blocking = [part[len("[blocked] "):].split(" (fix: ", 1)[0] for part in parts
                if part.startswith("[blocked] ")]
    return _BLOCKED_PREFIX + "; ".join(blocking) if blocking else message


class CountedEntry(Protocol):
    """What :meth:`PatternCounter.add_entries` reads of a DLQ entry (a ``DeadLetter``)."""

    @property
    def record_id(self) -> Any: ...
    @property
    def record_index(self) -> int: ...
    @property
    def error_type(self) -> str: ...
    @property
    def error_class(self) -> str: ...
    @property
    def http_status(self) -> int | None: ...
    @property
    def error_message(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PatternKey:
    """What makes a failure pattern: the facts a rule looks at (:class:`.rules.FailureShape`)."""

    error_type: str
    error_class: str
    http_status: int | None
    template: str


def json_safe(value: Any) -> Any:
    """``value`` as JSON can hold it (a record id in a report): None, str, bool, int and finite
    floats as they are, anything else as its ``repr``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)


@dataclass(frozen=True, slots=True)
class FailurePattern:
    """Dead-lettered records that failed the same way, with what to do about them."""

    error_type: str
    error_class: str
    http_status: int | None
    template: str
    """The error message with its variable parts masked (:func:`message_template`)."""
    count: int
    share: float
    """Of the failures counted, 0..1."""
    example_ids: tuple[Any, ...]
    """Up to :data:`MAX_EXAMPLES` record ids, the first in record order."""
    recommendation: Recommendation

    def command_line(self, *, dlq: str | None = None, store: str | None = None, job: str | None = None,
                     run_id: str | None = None, fn: str | None = None) -> str | None:
        """The recommendation's command for this pattern's error type (``rules.fill``)."""
        return self.recommendation.command_line(self.error_type, dlq=dlq, store=store, job=job, run_id=run_id,
                                                fn=fn)

    def to_json(self, *, dlq: str | None = None, store: str | None = None, job: str | None = None,
                run_id: str | None = None, fn: str | None = None) -> dict[str, Any]:
        """The pattern as JSON-safe data, its recommendation's command filled in (``rules.fill``;
        an example id JSON cannot hold is given as its ``repr``)."""
        recommendation = self.recommendation.to_json()
        recommendation["command"] = self.command_line(dlq=dlq, store=store, job=job, run_id=run_id, fn=fn)
        return {"error_type": self.error_type, "error_class": self.error_class,
                "http_status": self.http_status, "template": self.template, "count": self.count,
                "share": self.share, "example_ids": [json_safe(i) for i in self.example_ids],
                "recommendation": recommendation}


class _Tally:
    """One pattern's count and its examples: (order, record id), the smallest orders kept."""

    __slots__ = ("count", "examples", "first")

    def __init__(self, order: int) -> None:
        self.count = 0
        self.first = order
        self.examples: list[tuple[int, Any]] = []

    def add(self, order: int, record_id: Any) -> None:
        self.count += 1
        if order < self.first:
            self.first = order
        examples = self.examples
        if len(examples) < MAX_EXAMPLES:
            examples.append((order, record_id))
            examples.sort(key=_order)
        elif order < examples[-1][0]:
            examples[-1] = (order, record_id)
            examples.sort(key=_order)


def _order(example: tuple[int, Any]) -> int:
    return example[0]


class PatternCounter:
    """Counts failures by pattern in bounded memory (see :data:`MAX_PATTERNS`).

    ``add`` is O(1) amortised; templates are cached by :func:`digit_shape`, so a run that fails
    a million times with messages that differ only in their numbers masks a message once. Counts
    are exact; past the caps, records are counted in an "other messages" pattern of their error
    type, or in one "other" pattern.
    """

    __slots__ = ("_by_group", "_cache", "_max_patterns", "_max_templates", "_next", "_tallies", "total")

    def __init__(self, *, max_patterns: int = MAX_PATTERNS, max_templates: int = MAX_TEMPLATES_PER_TYPE) -> None:
        self._max_patterns = max_patterns
        self._max_templates = max_templates
        # Keyed by plain tuples, (type, class, status, template): a frozen dataclass per add
        # cost more than the rest of it.
        self._tallies: dict[tuple[str, str, int | None, str], _Tally] = {}
        self._by_group: dict[tuple[str, str, int | None], int] = {}  # templates per group
        self._cache: dict[bytes, str] = {}  # digit shape -> template
        self._next = 0
        self.total = 0
        """Failures counted."""

    def __len__(self) -> int:
        return self.total

    def template(self, message: str) -> str:
        """:func:`message_template`, cached by the message's :func:`digit_shape` for short
        messages (at most :data:`MAX_CACHED_TEMPLATES` shapes): ``"record 17 failed"`` and
        ``"record 42 failed"`` are templated once, where a cache by message missed each time."""
        if len(message) > _MAX_CACHED_MESSAGE:
            return message_template(message)
        shape = digit_shape(message)
        cached = self._cache.get(shape)
        if cached is not None:
            return cached
        template = message_template(message)
        # A template that kept an ASCII digit depends on which digit it was: the shape cannot
        # stand for the message then (no rule keeps one today; this keeps the cache right if
        # one ever does).
        if _ASCII_DIGIT.search(template) is None:
            if len(self._cache) >= MAX_CACHED_TEMPLATES:
                self._cache.clear()
            self._cache[shape] = template
        return template

    def add(self, record_id: Any, error_type: str, error_class: str, http_status: int | None, message: str,
            *, order: int | None = None) -> None:
        """Count one failure. ``order`` (the record's index) picks the examples: the first ones
        in record order, whatever order the failures arrive in; by default, arrival order."""
        if order is None:
            order = self._next
            self._next += 1
        if error_type == _BLOCKED_TYPE:
            message = blocking_issues(message)
        key = (error_type, error_class, http_status, self.template(message))
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._new_tally(key, order)
        tally.add(order, record_id)
        self.total += 1

    def add_entries(self, entries: Iterable[CountedEntry]) -> None:
        """:meth:`add` for each of ``entries``, at its record index: a durable DLQ's run counts
        every entry it sends, so the per-entry calls of :meth:`add` (template, shape, tally)
        are inlined here; a tally's examples change only while an entry is among its first."""
        cache, tallies = self._cache, self._tallies
        counted = 0
        for entry in entries:
            message, error_type, order = entry.error_message, entry.error_type, entry.record_index
            if error_type == _BLOCKED_TYPE:
                message = blocking_issues(message)
            template = None
            if len(message) <= _MAX_CACHED_MESSAGE:
                encoded = message.encode("utf-8", "surrogatepass")  # digit_shape, inlined
                shape = encoded if b"0x" in encoded or b"0X" in encoded else encoded.translate(_DIGITS_TO_ONE)
                template = cache.get(shape)
            if template is None:
                template = self.template(message)
            key = (error_type, entry.error_class, entry.http_status, template)
            tally = tallies.get(key)
            if tally is None:
                tally = self._new_tally(key, order)
            examples = tally.examples
            if len(examples) < MAX_EXAMPLES or order < examples[-1][0] or order < tally.first:
                tally.add(order, entry.record_id)
            else:
                tally.count += 1
            counted += 1
        self.total += counted

    def _new_tally(self, key: tuple[str, str, int | None, str], order: int) -> _Tally:
        group = key[:3]
        templates = self._by_group.get(group, 0)
        if templates >= self._max_templates or len(self._tallies) >= self._max_patterns:
            # Past a cap: this group's "other messages" when the group has a pattern (at most
            # one per group, and groups are capped), else the one "other" pattern.
            key = (*group, OTHER_MESSAGES) if templates else (OTHER_TYPE, OTHER_TYPE, None, OTHER_MESSAGES)
            existing = self._tallies.get(key)
            if existing is not None:
                return existing
        else:
            self._by_group[group] = templates + 1
        tally = self._tallies[key] = _Tally(order)
        return tally

    def relabelled(self, record_id: Callable[[int, Any], Any]) -> PatternCounter:
        """A copy whose example ids are ``record_id(order, id)``: a replay's run numbers its
        records by their place in the replay, and names them by the entries they replayed."""
        copy = PatternCounter(max_patterns=self._max_patterns, max_templates=self._max_templates)
        copy.total, copy._next = self.total, self._next
        copy._by_group = dict(self._by_group)
        for key, tally in self._tallies.items():
            twin = copy._tallies[key] = _Tally(tally.first)
            twin.count = tally.count
            twin.examples = [(order, record_id(order, rid)) for order, rid in tally.examples]
        return copy

    def patterns(self, rules: Sequence[RecommendationRule] | None = None) -> tuple[FailurePattern, ...]:
        """The patterns, most frequent first (then the one whose first record came first), each
        with the recommendation of the first rule in ``rules`` (default: ``DEFAULT_RULES``) that
        matches it; a rolled-back batch's undone records (``BatchRolledBack``) last, with
        ``rules.ROLLED_BACK``."""
        table = DEFAULT_RULES if rules is None else rules
        total = self.total
        # A rolled-back batch's undone records come after the failures that caused them (there
        # are batch_size - 1 of them for each, which put them first and the cause out of sight).
        ranked = sorted(self._tallies.items(),
                        key=lambda item: (item[0][0] == ROLLED_BACK_TYPE, -item[1].count, item[1].first))
        found = []
        for (error_type, error_class, status, template), tally in ranked:
            key = PatternKey(error_type, error_class, status, template)
            advice = ROLLED_BACK if error_type == ROLLED_BACK_TYPE else recommend(key, table)
            found.append(FailurePattern(error_type, error_class, status, template, tally.count,
                                        tally.count / total if total else 0.0, tuple(i for _, i in tally.examples),
                                        advice))
        return tuple(found)
