"""Failure patterns and the recommendation rule table (issue 9 item 3): batchguard.triage.

Templates mask what varies from record to record and nothing else; the counter is exact and
bounded; every default rule fires on a real exception of the library it names.
"""

from __future__ import annotations

import doctest
import shlex
import tracemalloc

import pytest

from batchguard import triage
from batchguard._report import patterns as patterns_module
from batchguard._report import rules as rules_module
from batchguard.triage import (
    DEFAULT_RULES,
    PatternCounter,
    PatternKey,
    Recommendation,
    RecommendationRule,
    fill,
    message_template,
    recommend,
    when,
)


@pytest.mark.parametrize("module", [patterns_module, rules_module, triage])
def test_the_docstring_examples_hold(module: object) -> None:
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert failed == 0


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize(("message", "template"), [
    ("user 42 not found", "user <n> not found"),
    ("price 19.99 is below 20", "price <n> is below <n>"),
    ("order 20240117 failed", "order <id> failed"),
    ("entity 550e8400-e29b-41d4-a716-446655440000 is locked", "entity <id> is locked"),
    ("<Obj object at 0x7f3a9c00b2d0> broke", "<Obj object at <id>> broke"),
    ("commit 9f86d081884c7d65 missing", "commit <id> missing"),
    ("cannot mail alice.smith+x@mail.example.co.uk", "cannot mail <email>"),
    ("KeyError 'email'", "KeyError '<v>'"),
    ('field "name" is required', 'field "<v>" is required'),
    ("can't parse 'x'", "can't parse '<v>'"),
    ("Error 111 connecting to 127.0.0.1:6379. Connection refused.",
     "Error <n> connecting to <ip>:<n>. Connection refused."),
    ("503 Server Error: Service Unavailable for url: http://127.0.0.1:8080/status/503/rq",
     "<n> Server Error: Service Unavailable for url: http://<ip>:<n>/<path>"),
    ("  many\n\tspaces   here ", "many spaces here"),
    ("plain words stay", "plain words stay"),
    ("", ""),
])
def test_a_template_masks_what_varies(message: str, template: str) -> None:
    assert message_template(message) == template


def test_records_of_one_shape_share_a_template() -> None:
    messages = [f"record {n} of user '{name}' <{name}@x.io> at https://api.x.io/u/{n}?t={n * 7} failed after {n}.5 s"
                for n, name in ((1, "ann"), (22, "bob"), (333333, "carol-c"))]
    assert len({message_template(m) for m in messages}) == 2  # 333333 is an id, not a number
    assert message_template(messages[0]) == message_template(messages[1])


def test_a_url_in_a_message_never_shows_its_password() -> None:
    template = message_template("cannot reach postgresql://app:s3cret@db.internal:5432/jobs?sslmode=require")
    assert "s3cret" not in template and "app" not in template
    assert template == "cannot reach postgresql://db.internal:<n>/<path>"


def test_a_template_is_capped_however_long_the_message() -> None:
    template = message_template("word " * 100_000)
    assert len(template) <= patterns_module.MAX_TEMPLATE_CHARS
    assert template.endswith("…")


# --------------------------------------------------------------------------- the counter


def test_the_counter_is_exact_and_orders_by_count_then_first_record() -> None:
    counter = PatternCounter()
    for n in range(10):
        counter.add(n, "ValueError", "permanent", None, f"bad value {n}", order=n)
    for n in range(10, 20):
        counter.add(n, "ReadTimeout", "recoverable", None, "timed out", order=n)
    counter.add(99, "HTTPError", "recoverable", 503, "503 Server Error", order=99)
    found = counter.patterns()
    assert [(p.error_type, p.count) for p in found] == [("ValueError", 10), ("ReadTimeout", 10), ("HTTPError", 1)]
    assert [p.share for p in found] == [10 / 21, 10 / 21, 1 / 21]
    assert found[2].http_status == 503 and found[2].recommendation.kind == "server_error"
    assert len(counter) == 21


def test_examples_are_the_first_records_whatever_order_they_arrive_in() -> None:
    counter = PatternCounter()
    for n in (9, 3, 7, 1, 8, 2):
        counter.add(f"r{n}", "KeyError", "permanent", None, "'id'", order=n)
    [pattern] = counter.patterns()
    assert pattern.example_ids == ("r1", "r2", "r3")


def test_the_same_type_with_another_status_or_class_is_another_pattern() -> None:
    counter = PatternCounter()
    counter.add(1, "HTTPError", "recoverable", 503, "server error")
    counter.add(2, "HTTPError", "recoverable", 502, "server error")
    counter.add(3, "HTTPError", "permanent", 404, "server error")
    assert len(counter.patterns()) == 3


def test_memory_stays_bounded_with_100k_distinct_messages() -> None:
    counter = PatternCounter()
    tracemalloc.start()
    try:
        for n in range(1_000):  # warm up: the caches and the first patterns
            counter.add(n, f"Error{n % 7}", "permanent", None, f"unmaskable {chr(65 + n % 26) * (n % 50 + 1)}")
        before, _ = tracemalloc.get_traced_memory()
        for n in range(1_000, 100_000):
            # letters the template cannot mask: every message its own template
            word = "".join(chr(97 + int(d)) for d in str(n))
            counter.add(n, f"Error{n % 300}", "permanent", None, f"unmaskable {word} in row {n}")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    found = counter.patterns()
    assert sum(p.count for p in found) == 100_000  # exact, however many were folded
    assert len(found) <= 2 * patterns_module.MAX_PATTERNS + 1
    assert all(len(p.example_ids) <= patterns_module.MAX_EXAMPLES for p in found)
    assert after - before < 1_000_000, f"grew by {after - before} bytes"
    other = [p for p in found if p.error_type == patterns_module.OTHER_TYPE]
    assert other and other[0].count > 0


def test_an_error_type_past_its_template_cap_folds_into_its_other_messages() -> None:
    counter = PatternCounter(max_templates=3)
    for word in ("alpha", "beta", "gamma", "delta", "epsilon"):
        counter.add(word, "ValueError", "permanent", None, f"unknown name {word}")
    templates = {p.template: p.count for p in counter.patterns()}
    assert templates == {"unknown name alpha": 1, "unknown name beta": 1, "unknown name gamma": 1,
                         patterns_module.OTHER_MESSAGES: 2}


# --------------------------------------------------------------------------- rules


def test_fill_quotes_every_value_and_redacts_urls() -> None:
    command = fill("batchguard dlq review --error-type {error_type}{job}{dlq}{store}{fn} {unknown} {{x}}",
                   error_type="Odd Error", dlq="redis://:pw@cache:6379/0", store="sqlite:///my jobs.db",
                   job="nightly; rm -rf /", fn=None)
    assert "pw" not in command
    words = shlex.split(command)
    assert words[:5] == ["batchguard", "dlq", "review", "--error-type", "Odd Error"]
    assert words[5:] == ["--job", "nightly; rm -rf /", "--dlq", "redis://:***@cache:6379/0", "--store",
                         "sqlite:///my jobs.db", "--fn", "MODULE:CALLABLE", "{unknown}", "{{x}}"]


def test_user_rules_go_first_and_a_broken_rule_is_skipped() -> None:
    def broken(pattern: object) -> bool:
        raise RuntimeError("bug in a user's rule")

    quota = RecommendationRule("quota", when(message="quota exceeded"),
                               Recommendation("quota", "the billing console", "raise the quota"))
    rules = (RecommendationRule("broken", broken, quota.recommendation), quota, *DEFAULT_RULES)
    assert recommend(PatternKey("HTTPError", "recoverable", 429, "daily quota exceeded"), rules).kind == "quota"
    assert recommend(PatternKey("HTTPError", "recoverable", 429, "slow down"), rules).kind == "rate_limit"
    counter = PatternCounter()
    counter.add(1, "HTTPError", "recoverable", 429, "daily quota exceeded")
    assert counter.patterns(rules=rules)[0].recommendation.kind == "quota"
    assert counter.patterns()[0].recommendation.kind == "rate_limit"


def test_a_table_without_a_catch_all_still_recommends() -> None:
    assert recommend(PatternKey("Odd", "permanent", None, "odd"), ()).kind == "unknown"


def test_every_default_rule_says_what_to_check_change_and_run() -> None:
    names = [rule.name for rule in DEFAULT_RULES]
    assert names == ["timeout", "rate_limit", "server_error", "connection", "integrity", "validation", "unknown"]
    for rule in DEFAULT_RULES:
        r = rule.recommendation
        assert r.check and r.change and r.command and r.command.startswith("batchguard dlq ")
        assert "{error_type}" in r.command and "{dlq}" in r.command
