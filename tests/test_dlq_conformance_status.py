"""The conformance suite, triage part (issue 9 item 4): every backend stores an entry's status,
filters on it, resolves (skips) entries atomically, and replay marks what succeeded "replayed"
-- by id and by error type -- with the counts and statuses right on memory, SQLite, JSONL,
Redis and PostgreSQL. The pre-migration queues and the concurrent migration are in
test_dlq_migration.py.
"""

from __future__ import annotations

import dataclasses
import getpass
import io
import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchguard import RetryPolicy
from batchguard.dlq import DeadLetterQueue, MemoryDLQ, StatusChange
from batchguard.errors import ConfigError, ConfigTypeError, DeadLetterNotFoundError
from batchguard.replay import replay
from test_dlq_conformance import MIXED, Opener, durable, entry, ids, opener  # noqa: F401 - fixtures

ONCE = RetryPolicy(max_attempts=1)


def _fill(dlq: DeadLetterQueue, n: int = 6) -> list[str]:
    sent = [entry(i, error_type="ValueError" if i % 2 else "TimeoutError") for i in range(n)]
    dlq.send(sent)
    return ids(sent)


def _counts(dlq: DeadLetterQueue, **filters: Any) -> dict[str, int]:
    return {status: dlq.count(status=status, **filters) for status in ("open", "resolved", "replayed", "all")}


@pytest.fixture
def dlq(opener: Opener) -> DeadLetterQueue:  # noqa: F811 - the conformance suite's opener
    return opener.new()


def test_new_entries_are_open_and_every_reader_defaults_to_open(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq)
    assert _counts(dlq) == {"open": 6, "resolved": 0, "replayed": 0, "all": 6}
    assert ids(dlq.list()) == every and [e.status for e in dlq.list()] == ["open"] * 6
    assert len(dlq) == 6  # type: ignore[arg-type]


def test_resolve_moves_entries_out_of_the_open_view_and_records_who_why_and_when(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq)
    before = datetime.now().astimezone()
    assert dlq.resolve([every[1], every[4]], "duplicate of a record already loaded") == 2
    assert _counts(dlq) == {"open": 4, "resolved": 2, "replayed": 0, "all": 6}
    assert ids(dlq.list()) == [every[0], every[2], every[3], every[5]]
    assert ids(dlq.list(status="resolved")) == [every[1], every[4]]
    assert ids(dlq.list(status="all")) == every  # first-send order, whatever the status
    assert ids(list(dlq.iter(status="resolved"))) == [every[1], every[4]]
    resolved = dlq.get(every[1])
    assert resolved is not None
    assert (resolved.status, resolved.status_reason) == ("resolved", "duplicate of a record already loaded")
    assert resolved.status_by == getpass.getuser()
    at = resolved.status_at
    assert at is not None and datetime.fromisoformat(at) >= before.replace(microsecond=0) and at.endswith("+00:00")
    assert resolved.history == (StatusChange("resolved", at, resolved.status_by, resolved.status_reason),)
    # Nothing else about the entry changed: payload and attempts are kept for the audit trail.
    assert dataclasses.replace(resolved, status="open", status_reason=None, status_by=None, status_at=None,
                               history=()) == entry(1, error_type="ValueError")


def test_resolve_with_by_and_a_second_change_keeps_the_whole_history(opener: Opener) -> None:  # noqa: F811
    dlq = opener.new()
    every = _fill(dlq, 2)
    dlq.resolve([every[0]], "vendor fixed it by hand", by="alice")
    assert dlq.set_status([every[0]], "open", reason="vendor says it is not fixed", by="bob") == 1
    again = opener.reopen(dlq).get(every[0]) if opener.backend != "memory" else dlq.get(every[0])
    assert again is not None
    assert again.status == "open" and again.status_by == "bob"
    assert [(c.status, c.by, c.reason) for c in again.history] == [
        ("resolved", "alice", "vendor fixed it by hand"), ("open", "bob", "vendor says it is not fixed")]
    assert _counts(dlq) == {"open": 2, "resolved": 0, "replayed": 0, "all": 2}


def test_resolve_with_an_unknown_id_names_it_and_changes_nothing(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 3)
    with pytest.raises(DeadLetterNotFoundError, match="'run-1:99'") as raised:
        dlq.resolve([every[0], "run-1:99", every[2]], "skip")
    assert raised.value.ids == ("run-1:99",)
    assert _counts(dlq) == {"open": 3, "resolved": 0, "replayed": 0, "all": 3}
    with pytest.raises(DeadLetterNotFoundError, match="2 ids name no dead letter") as raised:
        dlq.resolve(["nope-1", every[1], "nope-2"], "skip")
    assert raised.value.ids == ("nope-1", "nope-2")
    assert dlq.count() == 3


def test_resolve_needs_a_reason_and_a_list_of_ids(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 1)
    for reason in ("", "   ", None):
        with pytest.raises(ConfigError, match="needs a reason"):
            dlq.resolve(every, reason)  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="list of ids"):
        dlq.resolve(every[0], "one id as a str")
    with pytest.raises(ConfigError, match="did you mean 'resolved'"):
        dlq.count(status="resovled")
    with pytest.raises(ConfigError, match="must be one of"):
        dlq.set_status(every, "skipped")
    assert dlq.count() == 1


def test_repeated_ids_count_once_and_resolving_again_adds_to_the_history(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 2)
    assert dlq.resolve([every[0], every[0]], "first") == 1
    assert dlq.resolve([every[0]], "second") == 1
    got = dlq.get(every[0])
    assert got is not None and [c.reason for c in got.history] == ["first", "second"]
    assert got.status_reason == "second"
    assert _counts(dlq) == {"open": 1, "resolved": 1, "replayed": 0, "all": 2}


def test_status_combines_with_every_filter(dlq: DeadLetterQueue) -> None:
    dlq.send(MIXED)
    closed = [e.id for e in MIXED if e.record_index % 3 == 0]
    dlq.resolve(closed, "triaged")
    model = MemoryDLQ()
    model.send(MIXED)
    model.resolve(closed, "triaged")
    for filters in ({}, {"run_id": "run-a"}, {"job_id": "job-x", "stage": "load"},
                    {"error_class": "fatal", "error_type": "KeyError"}):
        for status in ("open", "resolved", "replayed", "all", None):
            assert dlq.count(status=status, **filters) == model.count(status=status, **filters), (filters, status)
            assert ids(dlq.list(status=status, **filters)) == ids(model.list(status=status, **filters))
            assert ids(dlq.list(status=status, limit=3, offset=2, **filters)) == ids(
                model.list(status=status, limit=3, offset=2, **filters))
            assert ids(list(dlq.iter(status=status, **filters))) == ids(model.list(status=status, **filters))


def test_export_takes_the_status_too(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 3)
    dlq.resolve([every[1]], "not needed")
    out = io.StringIO()
    assert dlq.export(out) == 2
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == [every[0], every[2]]
    out = io.StringIO()
    assert dlq.export(out, status="all") == 3
    assert json.loads(out.getvalue().splitlines()[1])["status"] == "resolved"


def test_sending_an_entry_again_replaces_its_status(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 2)
    dlq.resolve([every[0]], "skip")
    dlq.send([entry(0, error_type="TimeoutError")])  # the record failed again in a rerun
    assert _counts(dlq) == {"open": 2, "resolved": 0, "replayed": 0, "all": 2}
    assert ids(dlq.list()) == every  # still in its first place


def test_removing_a_closed_entry_leaves_every_count_right(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 4)
    dlq.resolve(every[:2], "skip")
    assert dlq.remove([every[0], every[2]]) == 2
    assert _counts(dlq) == {"open": 1, "resolved": 1, "replayed": 0, "all": 2}
    assert ids(dlq.list(status="resolved")) == [every[1]]


def _fixed(record: dict[str, Any]) -> int:
    return int(record["id"])


def _fails_on_odd(record: dict[str, Any]) -> int:
    if record["id"] % 2:
        raise ValueError(f"still bad {record['id']}")
    return int(record["id"])


def test_retry_by_id_marks_what_succeeded_replayed_and_leaves_the_rest(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 6)
    report = replay(dlq, _fixed, ids=[every[2], every[3]], retry=ONCE, by="carol")
    assert (report.replayed, report.kept, report.total) == (2, 0, 2)
    assert _counts(dlq) == {"open": 4, "resolved": 0, "replayed": 2, "all": 6}
    done = dlq.get(every[2])
    assert done is not None and done.status == "replayed" and done.status_by == "carol"
    assert done.status_reason is not None and report.run_id in done.status_reason
    assert ids(dlq.list(status="replayed")) == [every[2], every[3]]


def test_retry_by_error_type_replays_only_that_type(dlq: DeadLetterQueue) -> None:
    _fill(dlq, 6)  # odd ids: ValueError; even: TimeoutError
    report = replay(dlq, _fixed, error_type="TimeoutError", retry=ONCE)
    assert (report.replayed, report.kept) == (3, 0)
    assert _counts(dlq) == {"open": 3, "resolved": 0, "replayed": 3, "all": 6}
    assert _counts(dlq, error_type="ValueError") == {"open": 3, "resolved": 0, "replayed": 0, "all": 3}
    # A second replay of the same type finds nothing open.
    assert replay(dlq, _fixed, error_type="TimeoutError", retry=ONCE).total == 0


def test_a_replay_that_fails_again_keeps_the_entry_open_with_its_history(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 4)
    report = replay(dlq, _fails_on_odd, retry=ONCE)
    assert (report.replayed, report.kept) == (2, 2)
    assert _counts(dlq) == {"open": 2, "resolved": 0, "replayed": 2, "all": 4}
    again = dlq.get(every[1])
    assert again is not None and again.status == "open" and len(again.attempts) == 2
    assert again.error_message == "still bad 1"


def test_skip_then_retry_leaves_skipped_entries_alone(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 4)
    dlq.resolve([every[0], every[1]], "bad source data, reported to the vendor")
    report = replay(dlq, _fixed, retry=ONCE)
    assert report.total == 2
    assert _counts(dlq) == {"open": 0, "resolved": 2, "replayed": 2, "all": 4}
    with pytest.raises(ConfigError, match=r"not open: run-1:0 \(resolved: bad source data"):
        replay(dlq, _fixed, ids=[every[0]], retry=ONCE)
    # Asked for explicitly, a resolved entry is replayed, and its history says so.
    assert replay(dlq, _fixed, ids=[every[0]], status="all", retry=ONCE).replayed == 1
    got = dlq.get(every[0])
    assert got is not None and [c.status for c in got.history] == ["resolved", "replayed"]


def test_retry_by_id_refuses_unknown_ids_and_ids_with_filters(dlq: DeadLetterQueue) -> None:
    every = _fill(dlq, 2)
    calls: list[Any] = []
    with pytest.raises(DeadLetterNotFoundError, match="replay: no dead letter has the id 'gone'"):
        replay(dlq, calls.append, ids=[every[0], "gone"], retry=ONCE)
    with pytest.raises(ConfigError, match="ids or filters, not both"):
        replay(dlq, calls.append, ids=[every[0]], error_type="ValueError", retry=ONCE)
    assert calls == [] and dlq.count() == 2


def test_patterns_group_the_open_entries_with_a_recommendation_each(dlq: DeadLetterQueue) -> None:
    sent = [entry(i, error_type="HTTPError", error_class="recoverable", http_status=503,
                  error_message=f"503 Service Unavailable for order {1000 + i}") if i % 3 else
            entry(i, error_message=f"amount '{i}.5x' is not a number") for i in range(12)]
    dlq.send(sent)
    dlq.resolve([sent[1].id, sent[2].id], "outage, already re-sent by hand")
    model = MemoryDLQ()
    model.send(sent)
    model.resolve([sent[1].id, sent[2].id], "outage, already re-sent by hand")
    found = dlq.patterns()
    assert found == model.patterns()
    unavailable, invalid = found
    assert (unavailable.error_type, unavailable.http_status, unavailable.count) == ("HTTPError", 503, 6)
    assert unavailable.template == "<n> Service Unavailable for order <n>"
    assert unavailable.example_ids == (sent[4].id, sent[5].id, sent[7].id)  # entry ids, list order
    assert unavailable.recommendation.kind == "server_error"
    assert (invalid.count, invalid.template, invalid.share) == (4, "amount '<v>' is not a number", 0.4)
    assert sum(p.count for p in dlq.patterns(status="all")) == 12
    assert [p.count for p in dlq.patterns(status="resolved")] == [2]
    assert [p.count for p in dlq.patterns(error_type="ValueError")] == [4]


STATUS_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.lists(
            st.tuples(st.integers(0, 7), st.sampled_from(["parse", "load"])), max_size=5)),
        st.tuples(st.just("remove"), st.lists(st.integers(0, 9), max_size=3)),
        st.tuples(st.just("status"), st.tuples(st.lists(st.integers(0, 9), min_size=1, max_size=3),
                                               st.sampled_from(["open", "resolved", "replayed"]))),
    ),
    max_size=10,
)


def _seen(queue: DeadLetterQueue, **filters: Any) -> list[tuple[Any, ...]]:
    return [(e.id, e.stage, e.status, e.status_reason, e.status_by, [c.status for c in e.history])
            for e in queue.list(**filters)]


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=STATUS_OPS)
def test_any_sequence_of_sends_removes_and_status_changes_matches_the_memory_model(
        opener: Opener, ops: list[tuple[str, Any]]) -> None:  # noqa: F811
    queue, model = opener.new(), MemoryDLQ()
    for step, (op, args) in enumerate(ops):
        if op == "send":
            batch = [entry(i, stage=stage) for i, stage in args]
            queue.send(batch)
            model.send(batch)
        elif op == "remove":
            gone = [f"run-1:{i}" for i in args]
            assert queue.remove(gone) == model.remove(gone)
        else:
            named, status = [f"run-1:{i}" for i in args[0]], args[1]
            outcomes = []
            for target in (queue, model):
                try:
                    outcomes.append(target.set_status(named, status, reason=f"step {step}", by="hypothesis"))
                except DeadLetterNotFoundError as exc:
                    outcomes.append(exc.ids)
            assert outcomes[0] == outcomes[1]
    for status in ("open", "resolved", "replayed", "all"):
        assert _seen(queue, status=status) == _seen(model, status=status)
        for stage in ("parse", "load"):
            assert queue.count(status=status, stage=stage) == model.count(status=status, stage=stage)
            assert _seen(queue, status=status, stage=stage, offset=1, limit=2) == _seen(
                model, status=status, stage=stage, offset=1, limit=2)
