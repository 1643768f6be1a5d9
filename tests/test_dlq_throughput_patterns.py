"""The failure-pattern counter templates a message once per digit shape (issue 11 item 5): the
cache never hands a message another message's template, and stays bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchguard._report.patterns as patterns
from batchguard._report.patterns import MAX_CACHED_TEMPLATES, PatternCounter, digit_shape, message_template

# Pieces that exercise every masking rule, with digits where the rules look at them.
_PIECES = st.sampled_from([
    "user ", "record ", " not found", " in ", "'", '"', " ", "\t", "://", "http", "s3", "@", ".", ":",
    "/", "?", "#", "-", "x", "X", "0x", "0X", "deadbeef", "abc", "F", "example.com", "[", "]", "é", "\u0663",
])
_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=14)
_MESSAGES = st.lists(st.one_of(_PIECES, _DIGITS), max_size=30).map("".join)


def _with_other_digits(message: str, digits: str) -> str:
    """``message`` with each ASCII digit replaced by one of ``digits``, in turn: same shape."""
    out, k = [], 0
    for char in message:
        if "0" <= char <= "9":
            out.append(digits[k % len(digits)])
            k += 1
        else:
            out.append(char)
    return "".join(out)


@settings(max_examples=400, deadline=None)
@given(_MESSAGES, st.text(alphabet="0123456789", min_size=1, max_size=5))
def test_messages_of_one_digit_shape_have_one_template(message: str, digits: str) -> None:
    # The property the cache rests on: message_template sees digits only as digits, but "0x".
    other = _with_other_digits(message, digits)
    if "0x" not in message.lower() and "0x" not in other.lower():
        assert digit_shape(other) == digit_shape(message)
    if digit_shape(other) == digit_shape(message):
        assert message_template(other) == message_template(message)


def test_a_hex_prefix_is_not_any_digit_before_an_x() -> None:
    # "0x0" is a hex id, "1x1" two numbers: hypothesis found the shape that mapped every digit
    # to 0 gave both one template.
    counter = PatternCounter()
    assert counter.template("0x0") == "<id>"
    assert counter.template("1x1") == "<n>x<n>"
    assert counter.template("2x2") == "<n>x<n>"
    assert counter.template("0X9") == "<id>"


@settings(max_examples=200, deadline=None)
@given(st.lists(_MESSAGES, min_size=1, max_size=20))
def test_the_cached_template_is_the_messages_own(messages: list[str]) -> None:
    counter = PatternCounter()
    for message in messages * 2:  # the second round is served from the cache
        assert counter.template(message) == message_template(message)


def test_a_message_with_more_digits_is_not_given_the_shorter_ones_template() -> None:
    counter = PatternCounter()
    assert counter.template("order 12345 failed") == "order <n> failed"
    # Six digits are an id, not a number: a cache keyed by "digits masked" would say <n>.
    assert counter.template("order 123456 failed") == "order <id> failed"
    assert counter.template("order 99999 failed") == "order <n> failed"
    assert counter.template("host 10.0.0.1 down") == "host <ip> down"
    assert counter.template("host 10.0.0 down") == "host <n>.<n> down"


def test_a_rule_that_keeps_a_digit_is_not_cached_by_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    # Should a masking rule ever keep a digit, messages of one shape would differ in their
    # templates: the counter must template each such message itself.
    monkeypatch.setattr(patterns, "message_template", lambda message: message)
    counter = PatternCounter()
    assert counter.template("error 1") == "error 1"
    assert counter.template("error 2") == "error 2"


def test_the_template_cache_is_bounded_and_still_right_past_its_bound() -> None:
    counter = PatternCounter()
    # Distinct shapes: a run of k digits for each k, each in a word of its own.
    shapes = [f"field{'x' * k} is 7" for k in range(MAX_CACHED_TEMPLATES * 2 + 5)]
    for message in shapes:
        assert counter.template(message) == message_template(message)
        assert len(counter._cache) <= MAX_CACHED_TEMPLATES
    assert counter.template(shapes[0]) == message_template(shapes[0])


def test_a_long_message_is_templated_each_time_and_not_kept() -> None:
    counter = PatternCounter()
    long = "bad value " + "7" * 600
    assert counter.template(long) == message_template(long)
    assert counter._cache == {}


def test_a_run_whose_messages_differ_in_their_numbers_counts_one_pattern() -> None:
    counter = PatternCounter()
    for n in range(5000):
        counter.add(n, "ValueError", "permanent", None, f"invalid amount for record {n}")
    (pattern,) = counter.patterns()
    assert (pattern.template, pattern.count, pattern.example_ids) == ("invalid amount for record <n>", 5000,
                                                                      (0, 1, 2))
    assert len(counter._cache) == 4  # one shape per digit count: 1, 2, 3 and 4 digits


class _Entry:
    """What PatternCounter.add_entries reads of a DLQ entry."""

    def __init__(self, record_id: object, record_index: int, error_type: str, error_class: str,
                 http_status: int | None, error_message: str) -> None:
        self.record_id, self.record_index, self.error_type = record_id, record_index, error_type
        self.error_class, self.http_status, self.error_message = error_class, http_status, error_message


_ENTRIES = st.lists(st.builds(
    _Entry, st.integers(0, 5), st.integers(0, 50), st.sampled_from(["ValueError", "KeyError", "ValidationBlocked"]),
    st.sampled_from(["permanent", "transient"]), st.sampled_from([None, 503]),
    st.one_of(_MESSAGES, _MESSAGES.map(lambda m: m * 40),
              st.just("blocked by validation: [blocked] email: no @ (fix: add one)"))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_ENTRIES, st.integers(1, 4), st.integers(1, 3))
def test_add_entries_counts_as_add_does_one_by_one(entries: list[_Entry], max_patterns: int,
                                                   max_templates: int) -> None:
    # add_entries inlines add (a durable DLQ's run counts every entry it sends with it); the
    # counts, examples and caps must be the same.
    inlined = PatternCounter(max_patterns=max_patterns, max_templates=max_templates)
    one_by_one = PatternCounter(max_patterns=max_patterns, max_templates=max_templates)
    inlined.add_entries(entries[:len(entries) // 2])
    inlined.add_entries(entries[len(entries) // 2:])
    for e in entries:
        one_by_one.add(e.record_id, e.error_type, e.error_class, e.http_status, e.error_message, order=e.record_index)
    assert inlined.total == one_by_one.total == len(entries)
    assert inlined.patterns() == one_by_one.patterns()
