"""The shortcuts a dead letter's entry is built with give what the long way gives (issue 11 item 5):
failure times written once per second, HTTP statuses of plain exceptions, type names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchguard import run_batches
from batchguard._run.entries import IsoTimes, http_status, iso
from batchguard.dlq import DeadLetter, MemoryDLQ, codec
from batchguard.dlq.codec import MAX_DEPTH, type_name

# Fractions where the rounding to microseconds carries into the next millisecond or second.
_EDGES = [0.0, 0.0005, 0.0009995, 0.4999995, 0.5, 0.9995, 0.9999994, 0.9999995, 0.9999996, 1 - 1e-12,
          0.123456789]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(
    st.floats(min_value=-2e9, max_value=4e9, allow_nan=False, allow_infinity=False),
    st.tuples(st.integers(min_value=-10**9, max_value=4 * 10**9), st.sampled_from(_EDGES)).map(
        lambda pair: pair[0] + pair[1])), min_size=1, max_size=30))
def test_iso_times_writes_what_iso_writes(epochs: list[float]) -> None:
    times = IsoTimes()
    for epoch in epochs + sorted(epochs) + epochs[::-1]:  # back and forth across seconds
        assert times(epoch) == iso(epoch), epoch


def test_iso_times_changes_its_second_when_time_goes_back_or_crosses_one() -> None:
    times = IsoTimes()
    assert times(1717243200.25) == "2024-06-01T12:00:00.250+00:00"
    assert times(1717243199.75) == "2024-06-01T11:59:59.750+00:00"
    assert times(1717243200.9999996) == "2024-06-01T12:00:01.000+00:00"  # rounds into the next second
    assert times(1717243200.5) == "2024-06-01T12:00:00.500+00:00"
    assert times(-0.5) == "1969-12-31T23:59:59.500+00:00"


class Status(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ClassStatus(Exception):
    status = 503


class MadeUp(Exception):
    def __getattr__(self, name: str) -> object:
        if name == "status":
            return 429
        raise AttributeError(name)


class Response:
    status_code = 502


class Raising(Exception):
    @property
    def response(self) -> object:
        raise RuntimeError("no response")


def test_http_status_of_every_kind_of_exception() -> None:
    plain = ValueError("bad")
    assert http_status(plain) is None
    assert http_status(Status("gone", 404)) == 404
    assert http_status(ClassStatus()) == 503
    assert http_status(MadeUp()) == 429
    assert http_status(Raising()) is None
    # A type seen without a status, then an instance that was given one.
    later = ValueError("with a response")
    later.response = Response()  # type: ignore[attr-defined]
    assert http_status(ValueError("again")) is None
    assert http_status(later) == 502


def test_a_runs_entries_carry_the_status_and_time_of_their_failures() -> None:
    def fn(record: int) -> None:
        if record % 2:
            raise Status(f"status for {record}", 400 + record)
        raise ValueError(f"plain {record}")

    dlq = MemoryDLQ()
    run_batches(range(6), fn, dlq=dlq, batch_size=3)
    entries = dlq.list(limit=None)
    assert [e.http_status for e in entries] == [None, 401, None, 403, None, 405]
    for entry in entries:
        assert entry.first_failed_at == entry.last_failed_at == entry.attempts[0].at
        assert entry.attempts[0].at.endswith("+00:00") and len(entry.attempts[0].at) == 29
    dlq.close()


def test_type_names_that_no_backend_stores_are_still_replaced() -> None:
    odd = type("Odd", (Exception,), {})
    odd.__name__ = "bad name\ufffe"
    assert type_name(odd()) == "bad name\ufffe"  # storable: kept, though not an identifier
    assert type_name(ValueError()) == "ValueError"


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"d": value}
    return value


@pytest.mark.parametrize("payload", [
    {"id": 1, "email": "a@b.c", "amount": 0.5, "ok": True, "none": None},  # flat: no bracket count
    list(range(17)),  # more items than the flat test looks at: counted
    {"a": [1, 2], "b": {"c": None}},  # nested, shallow
    "[[[[{{{{" * 40,  # brackets in a string: a scalar, however many
], ids=["flat", "long", "nested", "brackets-in-text"])
def test_an_entry_stores_its_payload_as_it_is_when_it_can(payload: object) -> None:
    entry = _hand_built(payload)
    assert codec.encode(entry) == (codec.dumps(entry), entry)
    assert DeadLetter.from_json(codec.dumps(entry, full=True)).payload == payload


@pytest.mark.parametrize("payload", [_nested(MAX_DEPTH + 2), [_nested(MAX_DEPTH + 2)]], ids=["deep", "deep-in-list"])
def test_an_entry_with_a_payload_too_deep_is_stored_as_its_repr(payload: object) -> None:
    # Built by hand (a run's builder would have kept the repr already): the encoder catches it.
    stored = DeadLetter.from_json(codec.dumps(_hand_built(payload), full=True))
    assert stored.payload_encoding == "repr" and stored.payload.startswith(("{'d'", "[{'d'"))


def _hand_built(payload: object) -> DeadLetter:
    return DeadLetter(id="e", run_id="r", job_id=None, record_id=1, record_index=1, batch_index=0, stage="process",
                      payload=payload, payload_encoding="json", error_class="permanent", error_type="ValueError",
                      error_message="bad", traceback=None)
