"""Where a job's batches and records stand (seed 004's per-batch and per-record status), read
from the store's checkpoints and the job's DLQ: no write per record, ever.

A batch is *done* once its checkpoint is committed (every record final), *stopped* when a run
stopped inside it (its records still pending; it reruns on resume; the counts are as they were
at that stop), else *pending*. A record of a done batch succeeded unless the DLQ holds its
entry (ids are derived from the job, stage and record index, so one ``get`` finds it); a record
of any other batch is pending.

>>> import os, tempfile
>>> from batchguard import RetryPolicy, run_batches
>>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "jobs.db")
>>> def fn(x):
...     if x == 3:
...         raise ValueError("three")
...     return x
>>> _ = run_batches(range(10), fn, batch_size=4, job="doc", store=url, retry=RetryPolicy(max_attempts=1))
>>> [(s.first, s.last, s.state, s.succeeded, s.failed) for s in job_batches("doc", store=url).spans]
[(0, 2, 'done', 9, 1)]
>>> where = record_status("doc", index=3, store=url)
>>> where.state, where.batch_index, where.entry.error_type
('dead_lettered', 0, 'ValueError')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

from .._run.entries import default_id_of, entry_id
from ..dlq.base import DeadLetter, DeadLetterQueue
from ..dlq.codec import encode_record_id
from ..errors import ConfigError, JobNotFoundError
from .status import FINISHED, DoneBatch, DoneSpan, JobStatus, StoppedBatch
from .store import JobStore, opened_store

__all__ = ["BatchLedger", "BatchRow", "BatchSpan", "BatchTable", "RecordStatus", "batch_rows", "find_record",
           "job_batches", "record_status"]

BatchState = Literal["done", "stopped", "pending"]
RecordState = Literal["succeeded", "dead_lettered", "pending", "unknown"]
_PAGE: Final = 1000


@runtime_checkable
class BatchLedger(Protocol):
    """What a job store answers about its batches (both built-in stores do)."""

    def done_spans(self, job: str) -> tuple[DoneSpan, ...]: ...

    def done_batches(self, job: str, first: int, last: int) -> tuple[DoneBatch, ...]: ...

    def stopped_batches(self, job: str) -> tuple[StoppedBatch, ...]: ...


@dataclass(frozen=True, slots=True)
class BatchSpan:
    """Consecutive batches in one state, their counts summed: a row of ``jobs status``."""

    first: int
    last: int
    state: BatchState
    records: int | None
    """Records in these batches; None when the job's total is not known yet."""
    succeeded: int = 0
    failed: int = 0
    """Dead-lettered (done batches), or failed so far (a stopped batch: its entries are
    replaced when it reruns)."""
    pending: int | None = None
    retries: int = 0
    run_id: str | None = None
    """A stopped batch: the run that stopped inside it."""
    at: str | None = None
    """A stopped batch: when that run stopped."""

    @property
    def count(self) -> int:
        """How many batches the span holds."""
        return self.last - self.first + 1

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "batches": self.count, "state": self.state,
                "records": self.records, "succeeded": self.succeeded, "failed": self.failed,
                "pending": self.pending, "retries": self.retries, "run_id": self.run_id, "at": self.at}


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One batch, for the page-by-page view (``jobs status NAME --batches``)."""

    index: int
    state: BatchState
    size: int | None
    succeeded: int = 0
    failed: int = 0
    pending: int | None = None
    retries: int = 0
    duration_s: float | None = None
    run_id: str | None = None
    at: str | None = None
    """Done: when it was checkpointed; stopped: when its run stopped."""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "state": self.state, "size": self.size, "succeeded": self.succeeded,
                "failed": self.failed, "pending": self.pending, "retries": self.retries,
                "duration_s": self.duration_s, "run_id": self.run_id, "at": self.at}


@dataclass(frozen=True, slots=True)
class BatchTable:
    """A job's batches, consecutive ones in the same state folded into spans (a job of 10,000
    batches that ran in order is a span or two)."""

    job: str
    batch_size: int
    batches_total: int | None
    done: int
    stopped: int
    spans: tuple[BatchSpan, ...]

    @property
    def pending(self) -> int | None:
        """Batches neither done nor stopped; None while the job's total is unknown."""
        return None if self.batches_total is None else self.batches_total - self.done - self.stopped

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "batches_total": self.batches_total, "done": self.done,
                "stopped": self.stopped, "pending": self.pending,
                "spans": [span.to_dict() for span in self.spans]}


@dataclass(frozen=True, slots=True)
class RecordStatus:
    """Where one record of a job stands (``jobs status NAME --record ID``)."""

    job: str
    state: RecordState
    """succeeded; dead_lettered (``entry`` says its status: open, resolved; an entry replayed
    successfully makes the record succeeded); pending (its batch is not done); unknown (its
    position could not be found: see ``detail``)."""
    record_id: Any
    record_index: int | None
    batch_index: int | None
    batch_state: BatchState | None
    entry: DeadLetter | None
    detail: str
    """How the state was found, in a sentence."""

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "state": self.state, "record_id": self.record_id,
                "record_index": self.record_index, "batch_index": self.batch_index,
                "batch_state": self.batch_state,
                "entry": None if self.entry is None else self.entry.to_dict(), "detail": self.detail}


def _ledger(store: JobStore) -> BatchLedger:
    if not isinstance(store, BatchLedger):
        raise ConfigError(f"the job store {type(store).__name__} cannot list its batches "
                          "(done_spans, done_batches, stopped_batches)")
    return store


def _state(store: JobStore, job: str) -> JobStatus:
    state = store.get(job)
    if state is None:
        raise JobNotFoundError(f"no job named {job!r} in {store.url}")
    return state


def _records_in(state: JobStatus, first: int, last: int) -> int | None:
    if state.total is None:
        return None
    size = state.batch_size
    return max(0, min(state.total, (last + 1) * size) - first * size)


def _table(store: JobStore, state: JobStatus) -> BatchTable:
    ledger = _ledger(store)
    job = state.name
    done = [BatchSpan(a, b, "done", n, s, f, 0, r) for a, b, n, s, f, r in ledger.done_spans(job)]
    done_set = [(s.first, s.last) for s in done]
    stopped = [BatchSpan(i, i, "stopped", n, s, f, p, 0, run, at)
               for i, n, s, f, p, run, at in ledger.stopped_batches(job)
               if not any(a <= i <= b for a, b in done_set)]
    spans: list[BatchSpan] = []
    cursor = 0
    for span in sorted(done + stopped, key=lambda s: s.first):
        if span.first > cursor:
            records = _records_in(state, cursor, span.first - 1)
            spans.append(BatchSpan(cursor, span.first - 1, "pending", records, pending=records))
        spans.append(span)
        cursor = span.last + 1
    total = state.batches_total
    if total is not None and cursor < total:
        records = _records_in(state, cursor, total - 1)
        spans.append(BatchSpan(cursor, total - 1, "pending", records, pending=records))
    return BatchTable(job, state.batch_size, total, sum(s.count for s in done), len(stopped), tuple(spans))


def job_batches(job: str, *, store: JobStore | str | None = None) -> BatchTable:
    """The batch table of ``job``: done, stopped (in flight when a run stopped) and pending
    batches, consecutive ones in the same state folded into one :class:`BatchSpan`."""
    with opened_store(store) as opened:
        return _table(opened, _state(opened, job))


def batch_rows(job: str, *, first: int = 0, limit: int = 50,
               store: JobStore | str | None = None) -> list[BatchRow]:
    """``limit`` batches of ``job`` from index ``first``, one :class:`BatchRow` each (a page)."""
    if first < 0 or limit < 1:
        raise ConfigError(f"first must be >= 0 and limit >= 1, got first={first}, limit={limit}")
    with opened_store(store) as opened:
        state = _state(opened, job)
        ledger = _ledger(opened)
        last = first + limit - 1
        if state.batches_total is not None:
            last = min(last, state.batches_total - 1)
        done = {row[0]: row for row in ledger.done_batches(job, first, last)}
        stopped = {row[0]: row for row in ledger.stopped_batches(job) if first <= row[0] <= last}
        if state.batches_total is None:  # no pending batch past what was read is known
            last = max([first - 1, *done, *stopped])
    rows: list[BatchRow] = []
    for index in range(first, last + 1):
        if index in done:
            _, n, s, f, r, d, run, at = done[index]
            rows.append(BatchRow(index, "done", n, s, f, 0, r, d, run, at))
        elif index in stopped:
            _, n, s, f, p, run, at = stopped[index]
            rows.append(BatchRow(index, "stopped", n, s, f, p, run_id=run, at=at))
        else:
            size = _records_in(state, index, index)
            rows.append(BatchRow(index, "pending", size, pending=size))
    return rows


def _same_id(stored: Any, wanted: Any) -> bool:
    """A stored record id (as the DLQ keeps it) and an id a person typed or passed."""
    if stored == wanted:
        return True
    return str(stored) == str(wanted)


def find_record(records: Iterable[Any], record_id: Any, *,
                id_of: Callable[[Any], Any] | None = None, limit: int = 10) -> list[int]:
    """The indices (at most ``limit``) of the records of ``records`` whose id is ``record_id``,
    by the rule a run names records with: ``id_of(record)``, else the record's ``entity_id`` or
    ``id`` when it has one, else its index; an ``id_of`` that raises names the record by its
    index, as in a run. Reads ``records`` once, to the end unless ``limit`` matches are found.

    >>> find_record([{"id": "a"}, {"id": "b"}, 7], "b"), find_record([{"id": "a"}, 7], 1)
    ([1], [1])
    """
    wanted = encode_record_id(record_id)
    found: list[int] = []
    for index, record in enumerate(records):
        try:
            value = default_id_of(record, index) if id_of is None else id_of(record)
        except Exception:  # noqa: BLE001 - as a run does: the record is named by its index
            value = index
        if _same_id(encode_record_id(value), wanted):
            found.append(index)
            if len(found) >= limit:
                break
    return found


def _entries_of(dlq: DeadLetterQueue, job: str, stage: str, record_id: Any) -> Iterator[DeadLetter]:
    """The job's entries whose record id is ``record_id`` (a scan of the job's entries, every
    status, a page at a time)."""
    wanted = encode_record_id(record_id)
    offset = 0
    while True:
        page = dlq.list(job_id=job, stage=stage, limit=_PAGE, offset=offset, status="all")
        for entry in page:
            if _same_id(entry.record_id, wanted):
                yield entry
        if len(page) < _PAGE:
            return
        offset += len(page)


def _located(store: JobStore, dlq: DeadLetterQueue | None, state: JobStatus, index: int,
             record_id: Any, how: str) -> RecordStatus:
    batch = index // state.batch_size
    if state.total is not None and index >= state.total:
        return RecordStatus(state.name, "unknown", record_id, index, None, None, None,
                            f"{how}; the job has {state.total} records, no record #{index}")
    ledger = _ledger(store)
    done = bool(ledger.done_batches(state.name, batch, batch))
    stopped = not done and any(row[0] == batch for row in ledger.stopped_batches(state.name))
    batch_state: BatchState = "done" if done else "stopped" if stopped else "pending"
    entry = None if dlq is None else dlq.get(entry_id(state.name, state.stage, index))
    if entry is not None:
        record_id = entry.record_id  # as the run named it (an id typed as text may be a number)
    if not done:
        why = ("a run stopped inside it" if stopped else "it has not run to the end")
        failed = "" if entry is None else f" (it failed in a stopped run: entry {entry.id}; the batch reruns)"
        return RecordStatus(state.name, "pending", record_id, index, batch, batch_state, entry,
                            f"{how}; batch {batch} is not done ({why}): the record runs when the job "
                            f"resumes{failed}")
    if dlq is None:
        return RecordStatus(state.name, "unknown", record_id, index, batch, batch_state, None,
                            f"{how}; batch {batch} is done, but the job's DLQ is not known: it "
                            "succeeded unless the DLQ holds its entry")
    if entry is None:
        return RecordStatus(state.name, "succeeded", record_id, index, batch, batch_state, None,
                            f"{how}; batch {batch} is done and the DLQ holds no entry for it")
    status = entry.status
    if status == "replayed":
        return RecordStatus(state.name, "succeeded", record_id, index, batch, batch_state, entry,
                            f"{how}; it was dead-lettered, then succeeded on a replay (entry {entry.id})")
    why = "" if status != "resolved" else f": skipped on purpose ({entry.status_reason or 'no reason given'})"
    return RecordStatus(state.name, "dead_lettered", record_id, index, batch, batch_state, entry,
                        f"{how}; batch {batch} is done and entry {entry.id} holds it ({status}{why})")


def record_status(job: str, *, index: int | None = None, record_id: Any = None,
                  records: Iterable[Any] | None = None, id_of: Callable[[Any], Any] | None = None,
                  store: JobStore | str | None = None, dlq: DeadLetterQueue | None = None) -> RecordStatus:
    """Where one record of ``job`` stands: succeeded, dead-lettered (with its entry) or pending.

    Name it by ``index`` (its position in the input), or by ``record_id``: with ``records``
    (the job's input, read once; ``id_of`` as the run had it) the id is looked up there; without
    them, among the job's dead letters, which finds a dead-lettered record but cannot place a
    record that has none (``state="unknown"``, unless every batch is done: then it succeeded).
    ``dlq`` is the job's DLQ; None: the store's own database (a job given no ``dlq``).
    """
    if (index is None) == (record_id is None):
        raise ConfigError("name the record by index= or by record_id=, one of the two")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise ConfigError(f"index must be an int >= 0, got {index!r}")
    with opened_store(store) as opened:
        state = _state(opened, job)
        queue = opened.open_default_dlq() if dlq is None else dlq
        try:
            return _record_status(opened, queue, state, index, record_id, records, id_of)
        finally:
            if dlq is None:
                queue.close()


def _record_status(store: JobStore, dlq: DeadLetterQueue, state: JobStatus, index: int | None,
                   record_id: Any, records: Iterable[Any] | None,
                   id_of: Callable[[Any], Any] | None) -> RecordStatus:
    if index is not None:
        return _located(store, dlq, state, index, None, f"record #{index}")
    if records is not None:
        found = find_record(records, record_id, id_of=id_of)
        if not found:
            return RecordStatus(state.name, "unknown", record_id, None, None, None, None,
                                f"no record of the input has the id {record_id!r}")
        more = f" (the id is not unique: records {', '.join(f'#{i}' for i in found)} have it)" \
            if len(found) > 1 else ""
        return _located(store, dlq, state, found[0], record_id, f"record #{found[0]} in the input{more}")
    for entry in _entries_of(dlq, state.name, state.stage, record_id):
        return _located(store, dlq, state, entry.record_index, record_id,
                        f"record #{entry.record_index} (found among the job's dead letters)")
    if state.status in FINISHED:
        return RecordStatus(state.name, "succeeded", record_id, None, None, None, None,
                            "the job finished and its DLQ holds no entry with this id: if it is a "
                            "record of the job, it succeeded")
    return RecordStatus(state.name, "unknown", record_id, None, None, None, None,
                        "the DLQ holds no entry with this id and the job's input is not known, so its "
                        "batch cannot be found: it succeeded or is pending; name it by its position "
                        "(index=, --index N)")
