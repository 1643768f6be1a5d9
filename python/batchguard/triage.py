"""Failure triage: failure patterns and the recommendation rule table, for users to read and extend.

A run's report (``report.patterns()``) and a dead-letter queue (``dlq.patterns()``) group their
failures into :class:`FailurePattern` objects: error type, class, HTTP status and a message
template (:func:`message_template`: numbers, ids and quoted values masked), with a count, a
share, example record ids and a :class:`Recommendation` from a rule table.

The table (:data:`DEFAULT_RULES`: timeouts, rate limiting, 5xx, connection, integrity,
validation, unknown) is ordered, first match wins. To extend it, put your rules in front and
pass ``rules=``::

    from batchguard.triage import DEFAULT_RULES, Recommendation, RecommendationRule, when

    QUOTA = RecommendationRule(
        "billing_quota",
        when(message=r"quota exceeded"),   # or any callable taking a pattern, returning a bool
        Recommendation("quota", check="the account's quota in the billing console",
                       change="raise the quota, or run the rest next month",
                       command="batchguard dlq retry --error-type {error_type}{fn}{dlq}"),
    )
    report.patterns(rules=(QUOTA, *DEFAULT_RULES))

A command's placeholders (``{error_type}``, ``{dlq}``, ``{store}``, ``{job}``, ``{fn}``) are
filled with the run's own options, shell-quoted, by :func:`fill`.
"""

from __future__ import annotations

from ._report.patterns import FailurePattern, PatternCounter, PatternKey, message_template
from ._report.rules import DEFAULT_RULES, FailureShape, Recommendation, RecommendationRule, fill, recommend, when

__all__ = ["DEFAULT_RULES", "FailurePattern", "FailureShape", "PatternCounter", "PatternKey", "Recommendation",
           "RecommendationRule", "fill", "message_template", "recommend", "when"]
