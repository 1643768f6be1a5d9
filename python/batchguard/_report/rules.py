"""The recommendation rule table: what a failure pattern most likely means, and what to do.

A :class:`RecommendationRule` pairs a test on a failure pattern (its error type name, error
class, HTTP status and message template) with a :class:`Recommendation`: what to check, what to
change, and the command to run. :func:`recommend` walks a table of rules in order and returns
the first match's recommendation; :data:`DEFAULT_RULES` ends with a rule that matches
everything, so every pattern gets one.

The default table, in order (the first rule that matches wins):

=============  ===========================================================================
rule           matches
=============  ===========================================================================
retry_budget   ``RetryBudgetExhausted``: a retry the ``retry_budget=`` refused (the dependency
               was failing too often); retry once it is healthy
timeout        a type named ``*Timeout*`` / ``*TimedOut*`` / ``*Deadline*``, HTTP 408 or
               504, or a message saying "timed out" / "timeout"
rate_limit     HTTP 429, a type or message naming throttling, rate limits or "too many
               requests"
server_error   HTTP 5xx (but 504, a timeout), a type named ``*ServerError*`` /
               ``*ServiceUnavailable*``
connection     a type naming a connection, a refused/reset/aborted connection, an
               unresolvable host (``gaierror``), a closed or dropped connection
integrity      a type named ``*Integrity*`` / ``*Violation*`` (psycopg's ``UniqueViolation``),
               "duplicate key", "constraint failed", "violates", HTTP 409
blocked        the records a ``validate=`` check blocked (``ValidationBlocked``): fix the
               input and re-run with ``--validate`` (a retry would replay the same payload)
validation     ``ValueError``, ``TypeError``, ``KeyError``, a type named ``*Validation*`` /
               ``*Invalid*`` / ``*Parse*`` / ``*Decode*`` / ``*Schema*``, HTTP 400 or 422
unknown        everything else
=============  ===========================================================================

A recommendation's command is a template. :func:`fill` replaces its placeholders with the
run's actual options, shell-quoted (and URLs redacted), so a person can paste it as is:

* ``{error_type}``: the pattern's exception type name;
* ``{dlq}``: `` --dlq URL``, or nothing when the run used the default DLQ;
* ``{store}``: `` --store URL``, or nothing;
* ``{job}``: `` --job NAME``, or nothing when the run was not a job;
* ``{scope}``: the entries of this run: `` --job NAME`` for a job, else `` --run-id RUN_ID``
  (nothing when neither is known);
* ``{fn}``: `` --fn MODULE:CALLABLE``, the run's own ``--fn`` when known.

Any other text, braces included, is left as it is.

Extending the table: put your rules in front of the defaults (first match wins) and pass the
tuple as ``rules=`` wherever patterns are built (``report.patterns(rules=...)``,
``build(report, rules=...)``, ``dlq.patterns(rules=...)``)::

    from batchguard.triage import DEFAULT_RULES, Recommendation, RecommendationRule, when

    QUOTA = RecommendationRule(
        "billing_quota",
        when(message=r"quota exceeded"),
        Recommendation("quota", check="the account's monthly quota in the billing console",
                       change="raise the quota, or run the rest next month",
                       command="batchguard dlq retry --error-type {error_type}{fn}{dlq}"),
    )
    rules = (QUOTA, *DEFAULT_RULES)

>>> from batchguard._report.patterns import PatternKey
>>> recommend(PatternKey("ReadTimeout", "recoverable", None, "read timed out")).kind
'timeout'
>>> recommend(PatternKey("HTTPError", "recoverable", 503, "<n> Server Error")).kind
'server_error'
>>> recommend(PatternKey("Weird", "permanent", None, "something odd")).kind
'unknown'
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .._urls import redact

__all__ = ["DEFAULT_RULES", "ROLLED_BACK", "ROLLED_BACK_TYPE", "FailureShape", "Recommendation", "RecommendationRule",
           "fill", "recommend", "when"]

PLACEHOLDER_FN: Final = "MODULE:CALLABLE"
"""What ``{fn}`` names when the command that made the report does not know the function."""


class FailureShape(Protocol):
    """What a rule looks at: one failure pattern's facts (a FailurePattern or a PatternKey)."""

    @property
    def error_type(self) -> str:
        """The exception's type name (``type(exc).__name__``, as the DLQ stores it)."""

    @property
    def error_class(self) -> str:
        """"transient", "recoverable", "permanent" or "fatal"."""

    @property
    def http_status(self) -> int | None:
        """The HTTP status the final exception carried, if any."""

    @property
    def template(self) -> str:
        """The message with its variable parts masked (``patterns.message_template``)."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What to do about a failure pattern."""

    kind: str
    """The rule's kind ("timeout", "rate_limit", ...): stable, for scripts."""
    check: str
    """What to look at first."""
    change: str
    """What to change, once checked."""
    command: str | None = None
    """The command to run, a template (see :func:`fill`); None when there is none."""

    def command_line(self, error_type: str, *, dlq: str | None = None, store: str | None = None,
                     job: str | None = None, run_id: str | None = None, fn: str | None = None) -> str | None:
        """:attr:`command` with its placeholders filled (see :func:`fill`), or None."""
        if self.command is None:
            return None
        return fill(self.command, error_type=error_type, dlq=dlq, store=store, job=job, run_id=run_id, fn=fn)

    def to_json(self) -> dict[str, str | None]:
        """The recommendation as JSON-safe data (the command still a template)."""
        return {"kind": self.kind, "check": self.check, "change": self.change, "command": self.command}


@dataclass(frozen=True, slots=True)
class RecommendationRule:
    """One row of the table: a pattern that ``matches`` gets ``recommendation``."""

    name: str
    matches: Callable[[FailureShape], bool]
    recommendation: Recommendation


_PLACEHOLDER: Final = re.compile(r"\{(error_type|dlq|store|job|scope|fn)\}")


def fill(command: str, *, error_type: str, dlq: str | None = None, store: str | None = None,
         job: str | None = None, run_id: str | None = None, fn: str | None = None) -> str:
    """``command`` with its placeholders replaced by shell-quoted options.

    ``dlq`` / ``store``: the URL to name (None: the default one, left out); shown redacted.
    ``job``: the job name (None: not a job); ``run_id``: the run's id (``{scope}`` names it
    when there is no job). ``fn``: the ``--fn`` spec (None: a placeholder the reader replaces).

    >>> fill("batchguard dlq retry --error-type {error_type}{fn}{dlq}", error_type="ReadTimeout",
    ...      dlq="postgresql://app:pw@db/x", fn="my jobs:send")
    "batchguard dlq retry --error-type ReadTimeout --fn 'my jobs:send' --dlq 'postgresql://app:***@db/x'"
    >>> fill("batchguard dlq review --error-type {error_type}{job}", error_type="KeyError", job=None)
    'batchguard dlq review --error-type KeyError'
    """
    values = {
        "error_type": shlex.quote(error_type),
        "dlq": "" if dlq is None else f" --dlq {shlex.quote(redact(dlq))}",
        "store": "" if store is None else f" --store {shlex.quote(redact(store))}",
        "job": "" if job is None else f" --job {shlex.quote(job)}",
        "scope": (f" --job {shlex.quote(job)}" if job is not None
                  else "" if run_id is None else f" --run-id {shlex.quote(run_id)}"),
        "fn": f" --fn {PLACEHOLDER_FN if fn is None else shlex.quote(fn)}",
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], command)


def when(*, type_name: str | None = None, message: str | None = None,
         status: Collection[int] = (), error_class: Collection[str] = (),
         stage_types: Collection[str] = ()) -> Callable[[FailureShape], bool]:
    """A rule's test: True when ANY of the given conditions holds for a pattern.

    ``type_name`` / ``message``: regular expressions searched (case-insensitively) in the error
    type name / the message template; ``status``: HTTP statuses; ``error_class``: classes;
    ``stage_types``: exact type names.

    >>> from batchguard._report.patterns import PatternKey
    >>> when(status=range(500, 600))(PatternKey("HTTPError", "recoverable", 502, ""))
    True
    """
    type_re = None if type_name is None else re.compile(type_name, re.IGNORECASE)
    message_re = None if message is None else re.compile(message, re.IGNORECASE)
    statuses = frozenset(status)
    classes = frozenset(error_class)
    exact = frozenset(stage_types)

    def matches(pattern: FailureShape) -> bool:
        return bool(
            (type_re is not None and type_re.search(pattern.error_type))
            or (message_re is not None and message_re.search(pattern.template))
            or (pattern.http_status is not None and pattern.http_status in statuses)
            or pattern.error_class in classes
            or pattern.error_type in exact)

    return matches


def _everything(pattern: FailureShape) -> bool:
    return True


_REVIEW: Final = "batchguard dlq review --error-type {error_type}{scope}{dlq}"
_RETRY: Final = "batchguard dlq retry --error-type {error_type}{scope}{fn}{dlq}"

DEFAULT_RULES: Final[tuple[RecommendationRule, ...]] = (
    RecommendationRule(
        "retry_budget",
        when(type_name=r"retry.?budget"),
        Recommendation(
            "retry_budget",
            check="the dependency's health while the run was going: the retry budget held back "
                  "these retries because too many calls were failing at once (an outage, "
                  "throttling), and the record's own error is in dlq show ID",
            change="wait until the dependency is healthy, then retry these records; raise the "
                   "budget's ratio only if the dependency can take more retries",
            command=_RETRY)),
    RecommendationRule(
        "timeout",
        when(type_name=r"time[d_ ]?out|deadline", status=(408, 504),
             message=r"timed? ?out|timeout|deadline exceeded"),
        Recommendation(
            "timeout",
            check="the service's latency (p95/p99) while the run was going, and whether the "
                  "timeout is shorter than a normal slow call",
            change="raise --timeout (or the client's own timeout), or lower --concurrency so "
                   "the service is not saturated; add --rate-limit if it slows under load",
            command=_RETRY)),
    RecommendationRule(
        "rate_limit",
        when(type_name=r"rate.?limit|throttl|too.?many|quota|slowdown", status=(429,),
             message=r"rate.?limit|too many requests|throttl|slow ?down|quota"),
        Recommendation(
            "rate_limit",
            check="the service's documented rate limit and any Retry-After it sends",
            change="set --rate-limit below that limit (with --burst), lower --concurrency, "
                   "and raise --max-attempts so throttled calls wait and retry",
            command=_RETRY)),
    RecommendationRule(
        "server_error",
        when(type_name=r"server.?error|service.?unavailable|bad.?gateway|internal.?error",
             status=range(500, 600)),
        Recommendation(
            "server_error",
            check="the service's health and error logs for the time of the run (a deploy, an "
                  "outage, one bad shard)",
            change="wait until it is healthy, then retry these records; if it keeps failing "
                   "under load, add --breaker and --rate-limit",
            command=_RETRY)),
    RecommendationRule(
        "connection",
        when(type_name=r"connect|refused|unreachable|network|disconnect|gaierror|broken.?pipe|"
                       r"remote.?protocol",
             message=r"connection (refused|reset|aborted|closed)|could not connect|"
                     r"name or service not known|no route to host|network is unreachable|"
                     r"broken pipe|server closed the connection|connection to .* failed"),
        Recommendation(
            "connection",
            check="that the host resolves and accepts connections from where the run ran "
                  "(DNS, firewall, credentials, the server's connection limit)",
            change="fix the address or the network; add --breaker so a dependency that is "
                   "down stops the run instead of dead-lettering every record",
            command=_RETRY)),
    RecommendationRule(
        "integrity",
        when(type_name=r"integrity|violation|duplicate|conflict|constraint",
             status=(409,),
             message=r"duplicate key|unique constraint|constraint failed|violates|already exists"),
        Recommendation(
            "integrity",
            check="whether these records were already written (a rerun, a duplicate in the "
                  "input) or reference rows that do not exist",
            change="make the write idempotent (upsert, ON CONFLICT) or de-duplicate the input; "
                   "skip the records that are true duplicates",
            command=_REVIEW)),
    RecommendationRule(
        "blocked",
        when(stage_types=("ValidationBlocked",)),
        Recommendation(
            "validation",
            check="the issues each record was blocked for (dlq show ID lists them with their fixes)",
            change="fix the records in the input and re-run them with --validate, so they are "
                   "checked again before --fn; skip the ones that cannot be fixed, with a reason",
            command=_REVIEW)),
    RecommendationRule(
        "validation",
        when(type_name=r"validation|invalid|parse|decode|schema|malformed",
             status=(400, 422),
             stage_types=("ValueError", "TypeError", "KeyError", "IndexError", "AttributeError",
                          "UnicodeError", "AssertionError")),
        Recommendation(
            "validation",
            check="the failed records' payloads against the error (a missing field, a wrong "
                  "type, a malformed line)",
            change="fix the input (or the code reading it) and retry, or skip the records "
                   "that cannot be fixed with a reason",
            command=_REVIEW)),
    RecommendationRule(
        "unknown",
        _everything,
        Recommendation(
            "unknown",
            check="the error and traceback of a few of these records",
            change="fix the cause, then retry them; add a rule (rules=) so the next report "
                   "recognises this error",
            command=_REVIEW)),
)
"""The default table (module docstring); ``unknown`` last matches everything."""


ROLLED_BACK_TYPE: Final = "BatchRolledBack"
"""The error type of a rolled-back atomic batch's undone records (``errors.BatchRolledBack``)."""

ROLLED_BACK: Final = Recommendation(
    "rolled_back",
    check="the records that failed in these batches (their own patterns, listed first): these "
          "records succeeded and were undone because another record of their atomic batch failed",
    change="fix the cause of that failure, then replay these records (their calls did nothing wrong)",
    command=_RETRY)
"""What a rolled-back batch's undone records get, whatever the table: their message quotes the
error of the record that failed, so a rule on the message would judge them by that record
(a duplicate key made them "integrity")."""


def recommend(pattern: FailureShape, rules: Sequence[RecommendationRule] = DEFAULT_RULES) -> Recommendation:
    """The recommendation of the first rule in ``rules`` that matches ``pattern``.

    With no match (a table without a catch-all), the default table's last one (``unknown``).
    A rule whose test raises is skipped: a broken custom rule must not lose the report.
    """
    for rule in rules:
        try:
            if rule.matches(pattern):
                return rule.recommendation
        except Exception:  # noqa: BLE001 - a user's rule that raises does not match
            continue
    return DEFAULT_RULES[-1].recommendation
