"""Hostile: a ``sample_key`` that answers with junk (issue 9 item 1).

Every wrong answer is a ConfigTypeError/ConfigError naming sample_key and the record; an int
too large for a float escaped as a bare OverflowError ("int too large to convert to float")
that named neither.
"""

from __future__ import annotations

import pytest

from batchguard import ValidationIssue, run_batches
from batchguard.errors import ConfigError


@pytest.mark.parametrize("answer", [10**400, -(10**400), "7", None, float("nan"), True])
def test_a_wrong_sample_key_answer_names_sample_key_and_the_record(answer: object) -> None:
    with pytest.raises(ConfigError, match=r"sample_key .*record 0"):
        run_batches([{"id": n} for n in range(5)], lambda r: r, mode="sample",
                    sample_key=lambda r: answer)


def test_a_raising_sample_key_propagates_with_a_note() -> None:
    def key(record: dict[str, int]) -> int:
        if record["id"] == 3:
            raise LookupError("no size")
        return record["id"]

    with pytest.raises(LookupError) as caught:
        run_batches([{"id": n} for n in range(5)], lambda r: r, mode="sample", sample_key=key)
    assert any("sample_key raised for record 3" in note for note in caught.value.__notes__)


def test_a_sample_of_nothing_does_not_send_the_operator_after_errors() -> None:
    # "Fix what made the sample fail (errors above)" over an empty screen: there are no errors
    empty = run_batches([], lambda r: r, mode="sample")
    assert not empty.items and not empty.ok
    assert "errors above" not in empty.summary()
    assert "no records" in empty.summary()
    blocked = run_batches(range(3), lambda r: r, mode="sample",
                          validate=lambda r: ValidationIssue("id", "bad", "fix it"))
    assert blocked.blocked_skipped == 3
    assert "errors above" not in blocked.summary()
    assert "every record it tried was blocked by validation" in blocked.summary()
