"""``batchguard.iter_batches``: a run's finished batches as a generator, in input order.

The run goes on a background thread with a results sink (``results=``) that puts each finished
batch on a bounded queue; the consumer takes them off. Batches finish out of order at
concurrency > 1, so the sink holds a finished batch back until every earlier one has finished
(at most the engine's open batches), and the queue holds at most ``read_ahead`` batches ready
for the consumer. Once it is full the sink waits, so the run's batch ends wait, and the engine
reads no further input than its open batches need: a slow consumer holds the producer back.

Closing the generator (``close()``, leaving a ``for`` loop early, ``with``, garbage collection)
stops the run as Ctrl-C would: no new record starts, calls in flight finish, what was
dead-lettered reaches the DLQ, and a warning says how many records were left pending.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, Unpack

from .._checks import check_count
from .._native import BatchEvent, DeadRecord
from ..dlq.base import DeadLetter
from ..errors import ConfigError
from ..results import BatchReport, RecordError
from ..validation.full import finish_full, guard_full
from .execute import execute
from .options import DEFAULT_MODE, DEFAULTS, RunOptions
from .plan import Plan, close_opened_dlq, make_plan

__all__ = ["BatchResult", "BatchStream", "iter_batches"]

logger = logging.getLogger("batchguard")

R = TypeVar("R")

_DONE: Final = object()
"""Put on the queue after the last batch, when the run has returned."""


class IterationClosed(BaseException):
    """Raised in the run when its consumer closed the generator: a BaseException, so the
    engines stop the run as an interrupt does (the calls in flight finish, dead letters are
    flushed)."""


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[R]):
    """One finished batch of :func:`iter_batches`, yielded in input order."""

    batch_index: int
    indices: list[int]
    """The input positions of the batch's successes, in order."""
    values: list[R]
    """What ``fn`` returned for each: ``values[i]`` is record ``indices[i]``'s."""
    errors: list[RecordError]
    """The batch's dead-lettered records, in input order."""
    size: int
    """Records in the batch."""
    pending: int = 0
    """Records left unfinished because the run stopped (only in the run's last batches)."""

    @property
    def results(self) -> list[tuple[int, R]]:
        """``(index, value)`` for each success, in input order."""
        return list(zip(self.indices, self.values, strict=True))


def _record_error(entry: DeadLetter) -> RecordError:
    return RecordError(entry.record_index, entry.record_id, entry.error_type, entry.error_message,
                       entry.error_class, entry.stage, len(entry.attempts), entry.batch_index)


class _InOrder:
    """The run's results sink: finished batches, put on ``ready`` in input order."""

    def __init__(self, ready: queue.Queue[Any], closed: threading.Event) -> None:
        self._ready = ready
        self._closed = closed
        self._held: dict[int, BatchResult[Any]] = {}
        self._next = 0
        self._raised = False
        self.read = 0
        """Records of the batches handed over (their sizes): what the run read."""
        self.pending = 0
        self.unyielded = 0
        """Records that finished once the consumer had closed, or whose batch it never took."""

    # The ResultWriter protocol: the run opens and closes it; write_batch takes whole events.
    def open(self, *, append: bool) -> None:
        pass

    def write(self, indices: Any, values: Any) -> None:
        raise AssertionError("iter_batches takes whole batches (write_batch)")

    def close(self) -> None:
        if not self._closed.is_set():
            self._release(final=True)

    def write_batch(self, event: BatchEvent, dead_letter: Callable[[DeadRecord], DeadLetter]) -> None:
        self.read += event.size
        self.pending += event.pending
        if self._closed.is_set():
            self.unyielded += event.size - event.pending
            if not self._raised:
                self._raised = True  # once: the batches the stop closes still get through
                raise IterationClosed("the iter_batches generator was closed: the run stops")
            return
        errors = [_record_error(dead_letter(dead)) for dead in event.dead or ()]
        self._held[event.index] = BatchResult(event.index, list(event.indices or ()), list(event.values or ()),
                                              errors, event.size, event.pending)
        self._release(final=False)

    def held(self) -> list[BatchResult[Any]]:
        """The finished batches held back for an earlier one, taken out."""
        held, self._held = list(self._held.values()), {}
        return held

    def _release(self, *, final: bool) -> None:
        """Put what is in order on the queue (at the run's end, whatever is held)."""
        while self._held:
            if self._next in self._held:
                batch = self._held.pop(self._next)
            elif final:
                batch = self._held.pop(min(self._held))
            else:
                return
            self._next = batch.batch_index + 1
            self.put(batch)

    def put(self, item: Any) -> None:
        # In slices, so a consumer that closes while the run waits here is noticed.
        while not self._closed.is_set():
            try:
                self._ready.put(item, timeout=0.05)
                return
            except queue.Full:
                continue


class _Outcome:
    """How the run on the thread ended: its report, or the error to raise to the consumer."""

    def __init__(self) -> None:
        self.report: BatchReport[Any] | None = None
        self.error: BaseException | None = None


def _drive(plan: Plan, sink: _InOrder, outcome: _Outcome) -> None:
    """The run, on its thread: a full run of ``plan``, whose results sink is ``sink``."""
    try:
        guarded, tally = guard_full(plan)
        outcome.report = finish_full(execute(guarded), tally)
    except IterationClosed:
        pass
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
        outcome.error = exc
    finally:
        close_opened_dlq(plan)
        sink.put(_DONE)


class BatchStream(Generic[R], Iterator[BatchResult[R]]):
    """What :func:`iter_batches` returns: an iterator of :class:`BatchResult` (a generator:
    ``close()``, or a ``with`` block, stops the run) whose :attr:`report` is the run's report
    once the iteration has ended."""

    def __init__(self, read_ahead: int) -> None:
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=read_ahead)
        self._closed = threading.Event()
        self._sink = _InOrder(self._ready, self._closed)
        self._thread: threading.Thread | None = None
        self._outcome = _Outcome()
        self.pending: int | None = None
        """After :meth:`close` stopped the run: the records it read and left unfinished."""
        self._finished = False

    @property
    def report(self) -> BatchReport[R] | None:
        """The run's report, once every batch was yielded (None until then, and after close())."""
        return self._outcome.report

    @property
    def sink(self) -> Any:
        """The run's results sink (``results=``)."""
        return self._sink

    def start(self, plan: Plan) -> None:
        """Run ``plan`` (whose ``results`` is :attr:`sink`) on a thread of its own."""
        # The thread holds no reference to this stream, so a stream the consumer drops (a
        # `for` loop left early over `iter_batches(...)`) is collected, and __del__ stops the run.
        self._thread = threading.Thread(target=_drive, args=(plan, self._sink, self._outcome),
                                        name="batchguard-iter_batches", daemon=True)
        self._thread.start()

    def __iter__(self) -> BatchStream[R]:
        return self

    def __next__(self) -> BatchResult[R]:
        if self._finished:
            raise StopIteration
        try:
            item = self._ready.get()
        except BaseException:
            self.close()  # Ctrl-C while waiting for a batch: the run stops too
            raise
        if item is _DONE:
            self._wake_next()
            if self._finished:  # closed, or ended on another consumer thread, while we waited
                raise StopIteration
            self._finished = True
            assert self._thread is not None
            self._thread.join()
            if self._outcome.error is not None:
                error, self._outcome.error = self._outcome.error, None
                raise error
            raise StopIteration
        if self._finished:  # closed by another thread as this batch was taken
            self._take_back(item)
            raise StopIteration
        result: BatchResult[R] = item
        return result

    def _wake_next(self) -> None:
        """Put the end back for the next consumer thread waiting in :meth:`__next__` (there is
        room: nothing is put after the end)."""
        with contextlib.suppress(queue.Full):
            self._ready.put_nowait(_DONE)

    def close(self) -> None:
        """Stop the run if it is still going (see the module doc) and wait for it to end."""
        if self._finished:
            return
        self._finished = True
        self._closed.set()
        while self._thread is not None and self._thread.is_alive():  # let a run waiting to put a batch see the close
            try:
                self._take_back(self._ready.get(timeout=0.05))
            except queue.Empty:
                pass
        while not self._ready.empty():
            self._take_back(self._ready.get_nowait())
        for held in self._sink.held():
            self._take_back(held)
        self._wake_next()  # a consumer on another thread waiting for a batch: there is none
        if self.report is None:
            self.pending = self._sink.pending
            unyielded = self._sink.unyielded
            logger.warning("iter_batches closed before its run ended: the run stopped; %d record%s "
                           "read were left pending (neither succeeded nor dead-lettered), and %d "
                           "finished record%s were never yielded",
                           self.pending, "" if self.pending == 1 else "s", unyielded,
                           "" if unyielded == 1 else "s",
                           extra={"pending_count": self.pending, "records_read": self._sink.read,
                                  "unyielded_count": unyielded})

    def _take_back(self, item: Any) -> None:
        """A finished batch the consumer will not take now: counted as never yielded."""
        if isinstance(item, BatchResult):
            self._sink.unyielded += item.size - item.pending

    def __enter__(self) -> BatchStream[R]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._finished and self._thread is not None and self._thread.is_alive():
            self.close()


DEFAULT_READ_AHEAD: Final = 4


def iter_batches(records: Iterable[Any], fn: Callable[[Any], Any], *, bulk: bool = False,
                 read_ahead: int = DEFAULT_READ_AHEAD, **options: Unpack[RunOptions[Any]]) -> BatchStream[Any]:
    """Run ``fn`` over ``records`` as :func:`batchguard.run_batches` does, yielding each
    finished batch's results and errors (a :class:`BatchResult`) in input order.

    At most ``read_ahead`` finished batches wait for the consumer; past that the run waits
    too, so the input is read no faster than the consumer takes batches. The run keeps no
    values (``report.successful`` is empty): each batch's go to the consumer. It runs on a
    thread of its own (``on_progress`` and hooks are called there); its errors (a DLQ that
    fails) are raised from the iteration. Every keyword of ``run_batches`` is taken, but
    ``results`` (the batches are the results) and ``job`` (a resumed job skips the batches it
    finished, which an in-order iteration cannot do without).

    >>> from batchguard import iter_batches
    >>> for batch in iter_batches(range(5), lambda x: x * 10, batch_size=2):
    ...     print(batch.batch_index, batch.results)
    0 [(0, 0), (1, 10)]
    1 [(2, 20), (3, 30)]
    2 [(4, 40)]
    """
    check_count("read_ahead", read_ahead, minimum=1, maximum=1 << 20)
    for name, why in (("results", "its batches are the results"),
                      ("job", "a resumed job skips the batches it finished; use run_batches(..., "
                              "job=..., results=sink)")):
        if options.get(name, DEFAULTS[name]) != DEFAULTS[name]:  # type: ignore[literal-required]
            raise ConfigError(f"iter_batches takes no {name}=: {why}")
    stream: BatchStream[Any] = BatchStream(read_ahead)
    # Checked here, in the caller's thread: a bad argument raises now, not at the first next().
    plan = make_plan(records, fn, bulk=bulk, mode=DEFAULT_MODE, **{**options, "results": stream.sink})
    stream.start(plan)
    return stream
