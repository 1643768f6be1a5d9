"""Dead-letter triage status (issue 9 item 4): the entry's status fields and their stored form."""

from __future__ import annotations

import json

from batchguard.dlq import STATUSES, DeadLetter, MemoryDLQ, StatusChange


def _entry(**changes: object) -> DeadLetter:
    base = dict(id="run:1", run_id="run", job_id=None, record_id=1, record_index=1, batch_index=0,
                stage="process", payload={"id": 1}, payload_encoding="json", error_class="permanent",
                error_type="ValueError", error_message="bad", traceback=None)
    base.update(changes)
    return DeadLetter(**base)  # type: ignore[arg-type]


def test_a_new_entry_is_open_with_no_history_and_no_http_status() -> None:
    entry = _entry()
    assert (entry.status, entry.status_reason, entry.status_by, entry.status_at) == ("open", None, None, None)
    assert entry.history == () and entry.http_status is None
    assert STATUSES == ("open", "resolved", "replayed", "replaying")


def test_an_entry_stored_before_the_status_existed_reads_as_open() -> None:
    old = {k: v for k, v in _entry().to_dict().items()
           if k not in ("http_status", "status", "status_reason", "status_by", "status_at", "history")}
    entry = DeadLetter.from_json(json.dumps(old))
    assert entry.status == "open" and entry.history == () and entry.http_status is None


def test_the_status_and_its_history_survive_the_stored_form() -> None:
    change = StatusChange("resolved", "2026-01-02T03:04:05+00:00", "alice", "duplicate of 7")
    entry = _entry(http_status=503, status="resolved", status_reason="duplicate of 7", status_by="alice",
                   status_at=change.at, history=(change,))
    again = DeadLetter.from_json(entry.to_json())
    assert again == entry
    assert json.loads(entry.to_json())["history"] == [change.to_dict()]


def test_a_reason_no_backend_can_store_is_cleaned_like_an_error_message() -> None:
    queue = MemoryDLQ()
    queue.send([_entry(status="resolved", status_reason="nul\x00 and \ud800",
                       history=(StatusChange("resolved", "t", "b\x00", "r\ud800"),))])
    (stored,) = queue.list(status="resolved")
    assert stored.status_reason == "nul\ufffd and \ufffd"
    assert stored.history[0].by == "b\ufffd" and stored.history[0].reason == "r\ufffd"


_STATUS_KEYS = ("http_status", "status", "status_reason", "status_by", "status_at", "history")


def test_an_open_entry_is_stored_as_before_statuses_existed() -> None:
    # Nearly every entry a run writes is open: its stored form keeps the old bytes (no larger
    # rows, no slower writes, readable by older versions); reading restores the defaults.
    from batchguard.dlq.codec import dumps

    entry = _entry()
    stored = json.loads(dumps(entry))
    assert not set(_STATUS_KEYS) & set(stored)
    assert DeadLetter.from_json(dumps(entry)) == entry
    with_http = _entry(http_status=429)
    assert json.loads(dumps(with_http))["http_status"] == 429 and "status" not in json.loads(dumps(with_http))
    assert DeadLetter.from_json(dumps(with_http)) == with_http
    closed = _entry(status="resolved", status_reason="r", status_by="b", status_at="t",
                    history=(StatusChange("resolved", "t", "b", "r"),))
    assert json.loads(dumps(closed))["status"] == "resolved"
    assert DeadLetter.from_json(dumps(closed)) == closed
    # to_json (exports, dlq list --json) keeps every field, defaults included.
    assert set(_STATUS_KEYS) <= set(json.loads(entry.to_json()))
