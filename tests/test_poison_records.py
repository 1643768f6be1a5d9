"""A record the DLQ finds hard to encode is still dead-lettered, and never stops the run (issue 7, 1).

Each backend, both engines, concurrency 1 and 4: 300 records, every third fails PERMANENT, and
the failing ones hold what once killed a run: a lone surrogate, 1000-deep lists and dicts, an
object whose __repr__ raises, ids that are UUID / Decimal / datetime / bytes, an ``id_of``
returning an arbitrary object or a >64-bit int, and an error message with a surrogate.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchguard import RetryPolicy, job_status, run_batches
from batchguard.dlq import DeadLetter, DeadLetterQueue, SqliteDLQ
from batchguard.dlq.codec import MAX_DEPTH, dumps, encode_payload, encode_record_id
from batchguard.errors import BatchguardWarning, ConfigError
from helpers_contract import CONCURRENCIES, ENGINES
from test_dlq_conformance import BACKENDS, Opener

N = 300
WHEN = datetime.datetime(2024, 6, 1, 12, 30, tzinfo=datetime.UTC)


class BadRepr:
    """A record (or a part of one, or an id) whose __repr__ and __str__ raise."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Only for hypothesis's report of a failing example: batchguard sees the raising repr.
        printer.text(f"BadRepr({self.n})")


class OddId:
    """An id that is no JSON scalar."""

    def __str__(self) -> str:
        return "odd-id"


def nested(depth: int, kind: str) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


KINDS = ("surrogate", "deep_list", "deep_dict", "bad_repr", "uuid_id", "decimal_id", "datetime_id",
         "bytes_id", "object_id", "big_id", "plain", "surrogate_message")


def kind_of(n: int) -> str:
    return KINDS[(n // 3) % len(KINDS)]


def record(n: int) -> Any:
    """Record ``n``; the failing ones (n % 3 == 0) carry the poisons in turn."""
    if n % 3:
        return {"n": n}
    kind = kind_of(n)
    if kind == "bad_repr":
        return BadRepr(n)
    value: dict[str, Any] = {"n": n, "kind": kind}
    if kind == "surrogate":
        value["text"] = "caf\ud800e"
    elif kind in ("deep_list", "deep_dict"):
        value["deep"] = nested(1000, kind[5:])
    elif kind == "uuid_id":
        value["id"] = uuid.UUID(int=n)
    elif kind == "decimal_id":
        value["id"] = decimal.Decimal(n) / 8
    elif kind == "datetime_id":
        value["id"] = WHEN
    elif kind == "bytes_id":
        value["id"] = b"\x00\xff" + bytes([n % 256])
    return value


def id_of(rec: Any) -> Any:
    if isinstance(rec, BadRepr):
        return rec.n
    kind = rec.get("kind")
    if kind == "object_id":
        return OddId()
    if kind == "big_id":
        return 2**70 + rec["n"]
    return rec.get("id", rec["n"])


def fn(rec: Any) -> int:
    n = rec.n if isinstance(rec, BadRepr) else rec["n"]
    if n % 3 == 0:
        if kind_of(n) == "surrogate_message":
            raise ValueError(f"bad byte \udcff in record {n}")
        raise ValueError(f"record {n} is bad")
    return n


def expected_record_id(n: int) -> Any:
    kind = kind_of(n)
    return {
        "uuid_id": str(uuid.UUID(int=n)),
        "decimal_id": str(decimal.Decimal(n) / 8),
        "datetime_id": WHEN.isoformat(),
        "bytes_id": (b"\x00\xff" + bytes([n % 256])).hex(),
        "object_id": "odd-id",
        "big_id": str(2**70 + n),
    }.get(kind, n)


def check_entries(entries: list[DeadLetter]) -> None:
    """One entry per failed record, each with the documented stored form of its poison."""
    assert sorted(e.record_index for e in entries) == list(range(0, N, 3))
    for e in entries:
        n = e.record_index
        kind = kind_of(n)
        assert e.record_id == expected_record_id(n), (kind, e.record_id)
        if kind == "bad_repr":
            assert (e.payload, e.payload_encoding) == ("<unrepresentable BadRepr>", "repr")
        elif kind in ("surrogate", "deep_list", "deep_dict", "uuid_id", "decimal_id", "datetime_id",
                      "bytes_id"):
            assert e.payload_encoding == "repr" and isinstance(e.payload, str), kind
            assert "\ud800" not in e.payload
        else:
            assert (e.payload_encoding, e.payload["n"]) == ("json", n)
        if kind == "surrogate_message":
            assert e.error_message == f"bad byte \ufffd in record {n}"
            assert "\udcff" not in (e.traceback or "")
        else:
            assert e.error_message == f"record {n} is bad"
        assert e.error_type == "ValueError" and len(e.attempts) == 1


@pytest.fixture(params=BACKENDS)
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterQueue]:
    opener = Opener(request.param, request, tmp_path)
    try:
        yield opener.new()
    finally:
        opener.close()


@pytest.mark.parametrize("concurrency", CONCURRENCIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_poison_records_are_dead_lettered_and_the_run_completes(
        queue: DeadLetterQueue, engine: str, concurrency: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_batches([record(n) for n in range(N)], fn, dlq=queue, id_of=id_of,
                             engine=engine, concurrency=concurrency, batch_size=20,  # type: ignore[arg-type]
                             retry=RetryPolicy(max_attempts=1))
    assert (report.status, report.total, report.success_count, report.failure_count,
            report.pending_count) == ("partial_success", N, 200, 100, 0)
    assert queue.count(run_id=report.run_id) == 100
    check_entries(queue.list(run_id=report.run_id))
    # Each fallback is reported once per run, however many records used it.
    messages = [str(w.message) for w in caught if issubclass(w.category, BatchguardWarning)]
    kinds = ["cannot be stored as JSON", "has no usable repr", "the id rule names", "surrogates or NUL"]
    assert [sum(kind in m for m in messages) for kind in kinds] == [1, 1, 1, 1], messages


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_with_poison_records_completes_and_resumes(engine: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    calls = {"n": 0}

    def stop_midway(rec: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 150:
            raise KeyboardInterrupt  # the run stops; finished batches are checkpointed
        return fn(rec)

    records = [record(n) for n in range(N)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchguardWarning)
        with pytest.raises(KeyboardInterrupt):
            run_batches(records, stop_midway, job="poison", store=store, id_of=id_of, engine=engine,  # type: ignore[arg-type]
                        batch_size=20, retry=RetryPolicy(max_attempts=1))
        assert job_status("poison", store=store).status == "aborted"
        resumed = run_batches(records, fn, job="poison", store=store, id_of=id_of, engine=engine,  # type: ignore[arg-type]
                              batch_size=20, retry=RetryPolicy(max_attempts=1))
    assert resumed.pending_count == 0 and resumed.skipped_batches > 0
    done = job_status("poison", store=store)
    assert (done.status, done.succeeded, done.failed) == ("completed", 200, 100)
    with SqliteDLQ(tmp_path / "jobs.db") as dlq:
        check_entries(dlq.list(job_id="poison"))


# -- the encoder itself: every backend stores what it makes, and reads the same entry back

ODD_IDS = [uuid.UUID(int=5), decimal.Decimal("2.50"), WHEN, WHEN.date(), b"\x00\xff", bytearray(b"ab"),
           2**70, -(2**63) - 1, 2**63 - 1, float("nan"), float("inf"), -8.9e22, OddId(), BadRepr(1),
           "caf\ud800", "nul\x00", True, None, 1.5, "plain"]


def cyclic() -> list[Any]:
    """A record that holds itself, twice."""
    value: list[Any] = []
    value += [value, value]
    return value


def odd_entry(i: int, record_id: Any, payload: Any, encoding: str = "json", message: str = "m") -> DeadLetter:
    return DeadLetter(
        id=f"odd-{i:04d}", run_id="odd", job_id=None, record_id=record_id, record_index=i,
        batch_index=0, stage="process", payload=payload, payload_encoding=encoding,
        error_class="permanent", error_type="ValueError", error_message=message,
        traceback=f"Traceback\n  {message}", attempts=(), first_failed_at="t", last_failed_at="t")


ODD_PAYLOADS = [{"text": "a\ud800"}, {"nul": "a\x00b"}, nested(MAX_DEPTH + 1, "list"),
                nested(MAX_DEPTH - 1, "dict"), {"big": 2**80}, {1: "int key"}, BadRepr(2),
                {"ok": [1, 2.5, None, True]}]


def test_every_backend_reads_back_the_same_entry_for_odd_ids_and_payloads(
        queue: DeadLetterQueue) -> None:
    entries = [odd_entry(i, rid, {"i": i}) for i, rid in enumerate(ODD_IDS)]
    entries += [odd_entry(100 + i, i, p) for i, p in enumerate(ODD_PAYLOADS)]
    entries.append(odd_entry(200, 1, {"x": 1}, message="bad \udcff and \x00 here"))
    queue.send(entries)
    got = {e.id: e for e in queue.list(run_id="odd")}
    assert len(got) == len(entries)
    for sent in entries:
        # The stored form is what every durable backend keeps: decoding it is the reference.
        assert got[sent.id] == DeadLetter.from_json(dumps(sent)) or type(queue).__name__ == "MemoryDLQ"
    stored = {e.id: DeadLetter.from_json(dumps(e)) for e in entries}
    assert [stored[f"odd-{i:04d}"].record_id for i in range(len(ODD_IDS))] == [
        "00000000-0000-0000-0000-000000000005", "2.50", WHEN.isoformat(), "2024-06-01", "00ff", "6162",
        str(2**70), str(-(2**63) - 1), 2**63 - 1, "nan", "inf", "-8.9e+22", "odd-id", "<unrepresentable BadRepr>",
        "caf\ufffd", "nul\ufffd", True, None, 1.5, "plain"]
    encodings = [stored[f"odd-{100 + i:04d}"].payload_encoding for i in range(len(ODD_PAYLOADS))]
    assert encodings == ["repr", "repr", "repr", "json", "json", "repr", "repr", "json"]
    assert stored["odd-0200"].error_message == "bad \ufffd and \ufffd here"


REPR = object()  # expected: kept as repr

RUN_PAYLOADS = [
    ({"ok": [1, 2.5, None, True]}, {"ok": [1, 2.5, None, True]}),
    (("a", (1,)), ["a", [1]]),
    ({"shared": ((), ())}, {"shared": [[], []]}),
    ({"big": 2**80}, {"big": 2**80}),
    ({"small": [1e-7, 9e15, "1e+22"]}, {"small": [1e-7, 9e15, "1e+22"]}),
    (nested(MAX_DEPTH - 1, "dict"), nested(MAX_DEPTH - 1, "dict")),
    (nested(MAX_DEPTH + 1, "list"), REPR),
    (nested(1000, "dict"), REPR),
    ({"text": "a\ud800"}, REPR),
    ({"nul": "a\x00b"}, REPR),
    ({"nan": float("nan")}, REPR),
    ({"huge": 1e22}, REPR),
    ({1: "int key"}, REPR),
    ([uuid.UUID(int=1)], REPR),
    ({"when": WHEN}, REPR),
    ({"d": decimal.Decimal(1)}, REPR),
    (cyclic(), REPR),
    (BadRepr(2), REPR),
]


@pytest.mark.parametrize(("payload", "expected"), RUN_PAYLOADS,
                         ids=lambda value: type(value).__name__)
def test_a_run_keeps_as_json_only_what_comes_back_equal(payload: Any, expected: Any) -> None:
    stored, encoding = encode_payload(payload, pickle_payloads=False)
    if expected is REPR:
        assert encoding == "repr" and isinstance(stored, str)
        assert "\ud800" not in stored and "\x00" not in stored
    else:
        decoded = DeadLetter.from_json(dumps(odd_entry(0, 0, stored))).payload
        assert (encoding, stored, decoded) == ("json", expected, expected)


def test_encode_record_id_rule_matches_the_docstring_examples() -> None:
    assert encode_record_id(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert encode_record_id(7) == 7 and encode_record_id(2**63) == str(2**63)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("argument", "value"), [("stage", "load\ud800"), ("stage", "a\x00b"),
                                                 ("job", "nightly\udcff")])
def test_a_stage_or_job_no_backend_can_store_is_refused_before_any_record_runs(
        argument: str, value: str, engine: str, tmp_path: Path) -> None:
    # A stage or job name is in every entry's id and filter columns: it cannot be replaced the
    # way a record's text is, so it is refused up front instead of killing the run at its first
    # dead letter.
    calls: list[Any] = []

    def fail(record: Any) -> None:
        calls.append(record)
        raise ValueError("bad")

    where = {"store": f"sqlite:///{tmp_path / 'jobs.db'}"} if argument == "job" else {
        "dlq": f"sqlite:///{tmp_path / 'dlq.db'}"}
    with pytest.raises(ConfigError, match=rf"{argument} .* lone surrogate or NUL"):
        run_batches([1, 2, 3], fail, engine=engine, retry=RetryPolicy(max_attempts=1),  # type: ignore[arg-type]
                    **{argument: value}, **where)
    assert calls == []
