"""What both engines report to: the failure log, DLQ sends, progress, the batch log line.

An engine produces events (a batch is final, the breaker moved) and counter snapshots; the
:class:`RunRecorder` turns them into DLQ entries, ``batch_complete`` log lines, progress
callbacks and, at the end, the :class:`BatchReport`. Because both engines feed the same
recorder, they cannot differ in how results are presented, only in the outcomes themselves.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import logging
import time
import traceback as tb
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ._native import BatchEvent, BreakerEvent, Counters, DeadRecord
from ._stored import REPORT_SAMPLE, SentBatch, StoredDeadLetters, StoredSequence
from .dlq.base import Attempt, DeadLetter, DeadLetterQueue, MemoryDLQ
from .dlq.codec import Fallbacks, clean_text, encode_payload, encode_record_id, type_name
from .results import BatchProgress, BatchReport, BatchStats, RecordError

__all__ = ["Counters", "Failures", "RunRecorder", "deliver", "new_run_id"]

logger = logging.getLogger("batchguard")

_ID_NAMESPACE = uuid.UUID("6f1d7c1e-5b7a-4f0e-9a57-1b2c3d4e5f60")

# A batch as the report keeps it: (index, size, succeeded, failed, retries, duration_s, pending)
# — BatchStats' fields, built only when the report's ``batches`` is read.
_BatchTally = tuple[int, int, int, int, int, float, int]


_monotonic = time.monotonic

# Interrupts in a row that may cut a delivery of events short before it is given up: the
# first Ctrl-C still flushes what was dead-lettered; a user who keeps pressing it (a DLQ
# that hangs) gets out. The native engine has the same bound (DELIVERY_ATTEMPTS).
DELIVERY_ATTEMPTS = 4


def _stats(event: BatchEvent) -> BatchStats:
    """A batch event as the report shows it."""
    return BatchStats(event.index, event.size, event.succeeded, event.failed, event.retries,
                      event.duration, event.pending)


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"run-{stamp}-{uuid.uuid4().hex[:6]}"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=64)
def _scope_key(scope: str, stage: str) -> str:
    return uuid.uuid5(_ID_NAMESPACE, f"{scope}\x1f{stage}").hex[:12]


def entry_id(scope: str, stage: str, record_index: int) -> str:
    """Deterministic per (run or job, stage, record), so a resent entry replaces itself, and
    increasing with the record index, so a DLQ's id index grows at its end."""
    return f"{_scope_key(scope, stage)}-{record_index:012d}"


def default_id_of(record: Any, index: int) -> Any:
    """The record's ``entity_id`` or ``id`` when it is a mapping that has one, else its index."""
    if isinstance(record, Mapping):
        for key in ("entity_id", "id"):
            value = record.get(key)
            if value is not None:
                return value
    return index


def message_of(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when its ``__str__`` raises; may hold unstorable characters."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<unprintable {type_name(exc)}>"
    return text if isinstance(text, str) else f"<unprintable {type_name(exc)}>"


def _traceback_of(exc: BaseException) -> str | None:
    if exc.__traceback__ is None:
        return None
    try:
        return "".join(tb.format_exception(exc))
    except Exception:  # noqa: BLE001 - a traceback that cannot be formatted must not lose the record
        return f"<traceback of {type_name(exc)} could not be formatted>"


def deliver(sink: Any, events: list[BatchEvent | BreakerEvent], counters: Counters) -> None:
    """``sink.events(events, counters)``, where the sink removes each event it has handled.

    DESIGN §4: an interrupt flushes what was dead-lettered. A KeyboardInterrupt (any
    BaseException that is not an Exception) raised while the sink persists a batch leaves that
    batch and the later ones in ``events``: they are handed over again, then the interrupt is
    re-raised. An Exception (a broken DLQ) propagates at once, and the events it left are
    dropped, as the native engine drops them: an entry counts as stored only once ``send``
    returned, and the run fails with that error.
    """
    interrupted: BaseException | None = None
    for _ in range(DELIVERY_ATTEMPTS):
        try:
            sink.events(events, counters)
        except Exception:
            events.clear()
            if interrupted is not None:
                raise interrupted from None
            raise
        except BaseException as exc:
            if not events:
                raise
            if interrupted is None:
                interrupted = exc
            continue
        break
    if interrupted is not None:
        raise interrupted


def _record_error(entry: DeadLetter) -> RecordError:
    return RecordError(entry.record_index, entry.record_id, entry.error_type, entry.error_message,
                       entry.error_class, entry.stage, len(entry.attempts), entry.batch_index)


def _stored_record(entry: DeadLetter) -> Any:
    # A repr payload cannot become the record again: the report shows the repr itself. A pickle
    # one was written by this run (the report reads its own run_id) because its caller passed
    # pickle_payloads=True: that is the opt-in to load it back.
    return entry.payload if entry.payload_encoding == "repr" else entry.record(allow_pickle=True)


def _same_entry(entry: DeadLetter) -> DeadLetter:
    return entry


class Failures:
    """The compact log of dead-lettered records; details are materialized on demand."""

    def __init__(self, *, run_id: str, job_id: str | None, stage: str,
                 id_of: Callable[[Any], Any] | None, pickle_payloads: bool,
                 durable: DeadLetterQueue | None = None,
                 reopen: Callable[[], DeadLetterQueue] | None = None,
                 elsewhere: str | None = None) -> None:
        self.run_id = run_id
        self.job_id = job_id
        self.stage = stage
        self._id_of = id_of
        self._pickle = pickle_payloads
        self._chunks: list[Any] = []
        self._count = 0
        self._flat: list[DeadRecord] | None = []
        self._fallbacks = Fallbacks()  # which storage fallbacks this run used (one warning each)
        self._id_of_raised: set[str] = set()  # exception types id_of raised (logged once each)
        # With a durable DLQ the entries live there: this log keeps counts, where each batch's
        # entries went and the first REPORT_SAMPLE entries (in record order), so a run that
        # dead-letters millions of records keeps its memory flat; the rest is read back.
        self._durable = durable
        self._reopen = reopen
        self._elsewhere = elsewhere
        self._type_counts: collections.Counter[str] = collections.Counter()
        # A max-heap on the record index (negated), with a tie-breaker so entries never compare.
        self._sample: list[tuple[int, int, DeadLetter]] = []
        self._sample_order = itertools.count()
        self._sent: list[SentBatch] = []
        self._sent_count = 0
        self._reader: StoredDeadLetters | None = None

    def count_entries(self, entries: Sequence[DeadLetter]) -> None:
        """Durable mode: note one batch's entries, sent to the DLQ; only the first
        ``REPORT_SAMPLE`` of the run (in record order) stay in memory."""
        if not entries:
            return
        indexes = [entry.record_index for entry in entries]
        first, last = min(indexes), max(indexes)
        self._sent.append(SentBatch(entries[0].batch_index, first, last, len(entries), self._sent_count))
        self._sent_count += len(entries)
        self._count += len(entries)
        self._type_counts.update(entry.error_type for entry in entries)
        sample = self._sample
        if len(sample) >= REPORT_SAMPLE and first > -sample[0][0]:
            return  # the usual case once the sample is full: the whole batch comes later
        for entry in entries:
            item = (-entry.record_index, next(self._sample_order), entry)
            if len(sample) < REPORT_SAMPLE:
                heapq.heappush(sample, item)
            elif entry.record_index < -sample[0][0]:
                heapq.heapreplace(sample, item)

    def _stored(self) -> StoredDeadLetters:
        assert self._durable is not None
        if self._reader is None:
            sample = sorted((item[2] for item in self._sample), key=lambda entry: entry.record_index)
            self._reader = StoredDeadLetters(
                run_id=self.run_id, count=self._count, sample=sample, sent=self._sent,
                dlq=self._durable, reopen=self._reopen,
                entry_id=functools.partial(entry_id, self.job_id or self.run_id, self.stage),
                elsewhere=self._elsewhere)
        return self._reader

    def __len__(self) -> int:
        return self._count

    @property
    def durable(self) -> bool:
        return self._durable is not None

    def extend(self, raw: Any) -> None:
        """Add one batch's raw failures (a list, or the native engine's DeadRecords, which
        converts each record only when it is read)."""
        if len(raw):
            self._chunks.append(raw)
            self._count += len(raw)
            self._flat = None

    def _in_order(self) -> list[DeadRecord]:
        if self._flat is None:
            flat = [record for chunk in self._chunks for record in chunk]
            flat.sort(key=lambda r: r.record_index)
            self._chunks = [flat]
            self._flat = flat
        return self._flat

    def records(self) -> Sequence[Any]:
        """The failed records in input order (lazy past the sample with a durable DLQ)."""
        if self._durable is not None:
            return StoredSequence(self._stored(), _stored_record, "failed records")
        return [r.record for r in self._in_order()]

    def type_counts(self) -> collections.Counter[str]:
        """Exception type name -> how many records were dead-lettered with it."""
        if self._durable is not None:
            return collections.Counter(self._type_counts)
        return collections.Counter(type(r.attempts[-1].error).__name__ for r in self._in_order())

    def record_id(self, record: Any, index: int) -> Any:
        """The record's id as every backend stores it (dlq.codec.encode_record_id's rule)."""
        try:
            value = default_id_of(record, index) if self._id_of is None else self._id_of(record)
        except Exception as exc:  # noqa: BLE001 - id_of (or a mapping's get) raised
            name = type_name(exc)
            if name not in self._id_of_raised:  # once per type and run, not once per record
                self._id_of_raised.add(name)
                logger.warning("id_of raised %s for record %d; using its index (for every record "
                               "whose id_of raises %s in this run)", name, index, name)
            return index
        return encode_record_id(value, self._fallbacks)

    def record_errors(self) -> Sequence[RecordError]:
        """One RecordError per failed record, in input order (lazy past the sample with a
        durable DLQ)."""
        if self._durable is not None:
            return StoredSequence(self._stored(), _record_error, "errors")
        out = []
        for dead in self._in_order():
            exc = dead.attempts[-1].error
            out.append(RecordError(dead.record_index, self.record_id(dead.record, dead.record_index),
                                   type(exc).__name__, message_of(exc), dead.error_class, self.stage,
                                   len(dead.attempts), dead.batch_index))
        return out

    def dead_letters(self) -> Sequence[DeadLetter]:
        """The run's DLQ entries, in input order (lazy past the sample with a durable DLQ)."""
        if self._durable is not None:
            return StoredSequence(self._stored(), _same_entry, "dead letters")
        return [self.dead_letter(raw) for raw in self._in_order()]

    def payload(self, record: Any) -> tuple[Any, str]:
        """The stored payload and its encoding (dlq.codec: JSON, pickle if opted in, repr, placeholder)."""
        return encode_payload(record, pickle_payloads=self._pickle, fallbacks=self._fallbacks)

    def dead_letter(self, dead: DeadRecord) -> DeadLetter:
        """The DLQ entry of one failed record: always storable, whatever the record holds."""
        index, record = dead.record_index, dead.record
        exc = dead.attempts[-1].error
        fallbacks = self._fallbacks
        trace = _traceback_of(exc)
        payload, encoding = self.payload(record)
        attempts = tuple(Attempt(a.attempt, iso(a.at), type_name(a.error),
                                 clean_text(message_of(a.error), fallbacks), a.delay)
                         for a in dead.attempts)
        return DeadLetter(
            id=entry_id(self.job_id or self.run_id, self.stage, index),
            run_id=self.run_id,
            job_id=self.job_id,
            record_id=self.record_id(record, index),
            record_index=index,
            batch_index=dead.batch_index,
            stage=self.stage,
            payload=payload,
            payload_encoding=encoding,
            error_class=dead.error_class,
            error_type=attempts[-1].error_type,
            error_message=attempts[-1].error_message,
            traceback=None if trace is None else clean_text(trace, fallbacks),
            attempts=attempts,
            first_failed_at=attempts[0].at,
            last_failed_at=attempts[-1].at,
        )


class RunRecorder:
    """Receives an engine's events, persists dead letters, reports progress, builds the report.

    It is only ever called from the thread that called ``run_batches``.
    """

    def __init__(self, *, run_id: str, job_id: str | None, stage: str,
                 dlq: DeadLetterQueue | None, on_progress: Callable[[BatchProgress], Any] | None,
                 total: int | None, batch_size: int, id_of: Callable[[Any], Any] | None,
                 pickle_payloads: bool, checkpoint: Any = None,
                 reopen_dlq: Callable[[], DeadLetterQueue] | None = None) -> None:
        """``reopen_dlq`` opens ``dlq`` again after the run closed it (see ``Plan.reopen_dlq``):
        the report reads entries past its in-memory sample through it."""
        self.run_id = run_id
        self.job_id = job_id
        self.stage = stage
        self.dlq = dlq
        self.on_progress = on_progress
        self.total = total
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        durable = None if dlq is None or isinstance(dlq, MemoryDLQ) else dlq
        self.failures = Failures(run_id=run_id, job_id=job_id, stage=stage, id_of=id_of,
                                 pickle_payloads=pickle_payloads, durable=durable,
                                 reopen=reopen_dlq,
                                 # a checkpoint that rewrites the entries it is given says so
                                 elsewhere=getattr(checkpoint, "entries_stored_elsewhere", None))
        self._stats: list[_BatchTally] = []
        self._batches_total = None if total is None else -(-total // batch_size)
        self.breaker_events: list[tuple[float, str, str]] = []
        self.breaker_state = "closed"
        self._classifier_raised: set[tuple[str, str]] = set()  # (its error, what it classified)
        self._persist_failed: Exception | None = None  # what the DLQ or job store raised, if it did
        self.dlq_count = 0
        self.started = time.monotonic()
        self._log_batches = logger.isEnabledFor(logging.INFO)

    # ------------------------------------------------------------------ engine callbacks

    def events(self, events: list[BatchEvent | BreakerEvent], counters: Counters) -> None:
        """Handle an engine's events, removing each from ``events`` once it is handled: when
        an interrupt cuts this short, what is left is still in the list, and the engine hands
        it back (:func:`deliver`)."""
        # Runs at every batch end: kept lean, details are built only when someone reads them.
        # The handled events are removed at the end (however it ends) in one slice: removing
        # them one by one from the front would cost quadratic time when many have piled up.
        handled = 0
        try:
            for event in events:
                if isinstance(event, BatchEvent):
                    if event.dead or self.checkpoint is not None:
                        self._persist(event)
                    # not the dead records: they are persisted
                    self._stats.append((event.index, event.size, event.succeeded, event.failed,
                                        event.retries, event.duration, event.pending))
                    if self._log_batches:
                        self._log_batch(event, counters)
                else:
                    at, old, new = event.at, event.from_state, event.to_state
                    self.breaker_events.append((at, old, new))
                    self.breaker_state = new
                    logger.warning("circuit breaker %s -> %s", old, new,
                                   extra={"run_id": self.run_id, "breaker_from": old, "breaker_to": new,
                                          "at_s": at})
                handled += 1
        finally:
            del events[:handled]
        if self.on_progress is not None:
            self.progress(counters)

    def _persist(self, event: BatchEvent) -> None:
        if self._persist_failed is not None:
            # The DLQ (or job store) failed once: the run is failing with that error. Trying it
            # again for every batch a worker still finishes would only add its timeout each
            # time (40 s for a Redis server that hangs, times the workers of an async run).
            raise self._persist_failed
        try:
            self._persist_batch(event)
        except Exception as exc:
            self._persist_failed = exc
            raise

    def _persist_batch(self, event: BatchEvent) -> None:
        dead = event.dead or ()
        entries: list[DeadLetter] = []
        if dead and self.dlq is not None:
            entries = [self.failures.dead_letter(raw) for raw in dead]
            if self.checkpoint is None:
                self.dlq.send(entries)
            self.dlq_count += len(entries)
        if self.failures.durable:
            self.failures.count_entries(entries)
        else:
            self.failures.extend(dead)
        if self.checkpoint is not None:
            # The job store commits the entries and the batch together, in a crash-safe order.
            self.checkpoint.batch_done(_stats(event), entries, self.dlq)

    def _log_batch(self, event: BatchEvent, counters: Counters) -> None:
        logger.info("batch_complete", extra={
            "run_id": self.run_id, "job_id": self.job_id, "stage": self.stage,
            "batch_index": event.index, "batch_size": event.size, "batch_success": event.succeeded,
            "batch_failure": event.failed, "batch_retries": event.retries,
            "batch_pending": event.pending, "duration_s": round(event.duration, 6),
            "total_processed": counters.succeeded + counters.failed,
            "total_records": self.total,
        })

    @property
    def batches(self) -> list[BatchStats]:
        return sorted((BatchStats(*tally) for tally in self._stats), key=lambda b: b.batch_index)

    def progress(self, counters: Counters) -> None:
        if self.on_progress is None:
            return
        c = counters
        self.on_progress(BatchProgress(c.batches_completed, self._batches_total, c.current_batch,
                                       c.succeeded + c.failed, c.succeeded, c.failed, c.retrying,
                                       c.in_flight, c.queued, _monotonic() - self.started,
                                       self.total, c.breaker_state))

    def classifier_error(self, exc: BaseException, error: BaseException) -> None:
        kind = (type(error).__name__, type(exc).__name__)
        if kind in self._classifier_raised:  # once per kind and run, not once per failure
            return
        self._classifier_raised.add(kind)
        logger.error("classifier raised %s while classifying %s; the record is PERMANENT (and "
                     "so is every %s it raises %s for in this run)", *kind, kind[1], kind[0],
                     extra={"run_id": self.run_id})

    # ------------------------------------------------------------------ the report

    def report(self, *, succeeded: int, failed: int, read: int, exhausted: bool,
               retries: int, successful: list[Any], stop_reason: str | None, breaker_trips: int,
               success_threshold: float | None, skipped_batches: int = 0,
               skipped_records: int = 0) -> BatchReport:
        """``read`` counts the records this run took on (skipped batches excluded)."""
        if exhausted or self.total is None:
            total = read
        else:
            total = max(self.total, read)
        pending = total - succeeded - failed
        if stop_reason is not None:
            status = "aborted"
        elif succeeded == total:
            status = "complete"
        elif success_threshold is None or succeeded / total >= success_threshold:
            status = "partial_success"
        else:
            status = "failed"
        return BatchReport(
            run_id=self.run_id,
            status=status,
            total=total,
            success_count=succeeded,
            failure_count=failed,
            pending_count=pending,
            retry_count=retries,
            successful=successful,
            duration_s=time.monotonic() - self.started,
            breaker_trips=breaker_trips,
            dlq_count=self.dlq_count if self.dlq is not None else failed,
            stage=self.stage,
            job_id=self.job_id,
            stopped_reason=stop_reason,
            skipped_batches=skipped_batches,
            breaker_events=self.breaker_events,
            _failures=self.failures,
            _batch_events=self._stats,
        )
