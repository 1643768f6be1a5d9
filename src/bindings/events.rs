//! What crosses to Python: typed, frozen records instead of positional tuples, so the stub
//! (`_native.pyi`, checked by stubtest) names every field. The reference engine builds the same
//! classes through their keyword constructors, so the recorder reads one shape.
//!
//! Each is built once per batch, per progress report or per run — never per successful record.
//! A dead record and its attempts are built only when the recorder reads them (`DeadRecords`).

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::classify::optional_attr;
use super::ffi::list_of;
use super::{Obj, PyScheduler};
use crate::breaker::State as BreakerState;
use crate::engine::{Attempt, BatchCounts, Counters as EngineCounters, Dead, Event, Retried, Share};

/// Times an interrupt may cut one delivery of events short before it is given up: the first
/// Ctrl-C still flushes what was dead-lettered, a user who keeps pressing it (a DLQ that
/// hangs) gets out. Exported as `_native.DELIVERY_ATTEMPTS`, the reference engine's bound too.
pub(super) const DELIVERY_ATTEMPTS: usize = 4;

/// What a run returns: its counts, the successful values in input order, and why it stopped.
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct RunSummary {
    succeeded: u64,
    failed: u64,
    records_read: u64,
    exhausted: bool,
    retries: u64,
    successful: Py<PyList>,
    stop_reason: Option<Py<PyString>>,
    breaker_trips: u64,
    skipped_records: u64,
    /// With `concurrency=Adaptive(...)`: the limit at the end, its highest and its lowest.
    concurrency_limits: Option<(usize, usize, usize)>,
    /// With `retry_budget=`: retries that waited for it, and records it dead-lettered.
    retries_over_budget: (u64, u64),
}

#[pymethods]
impl RunSummary {
    #[new]
    #[pyo3(signature = (*, succeeded, failed, records_read, exhausted, retries, successful, stop_reason,
                        breaker_trips, skipped_records, concurrency_limits=None, retries_over_budget=(0, 0)))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        succeeded: u64,
        failed: u64,
        records_read: u64,
        exhausted: bool,
        retries: u64,
        successful: Py<PyList>,
        stop_reason: Option<Py<PyString>>,
        breaker_trips: u64,
        skipped_records: u64,
        concurrency_limits: Option<(usize, usize, usize)>,
        retries_over_budget: (u64, u64),
    ) -> Self {
        Self {
            succeeded,
            failed,
            records_read,
            exhausted,
            retries,
            successful,
            stop_reason,
            breaker_trips,
            skipped_records,
            concurrency_limits,
            retries_over_budget,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.successful)
    }
}

/// A snapshot of the run's counters, handed with every delivery of events and progress report.
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct Counters {
    succeeded: u64,
    failed: u64,
    retrying: usize,
    in_flight: usize,
    queued: usize,
    batches_completed: u64,
    current_batch: u64,
    breaker_state: Py<PyString>,
    records_read: u64,
    /// The open batches (`ActiveBatch`, in batch order) when someone reads progress; None
    /// otherwise, so a run without `on_progress` never builds them.
    batches: Option<Py<PyTuple>>,
    /// The adaptive concurrency limit now (None: a fixed concurrency).
    concurrency_limit: Option<usize>,
}

#[pymethods]
impl Counters {
    #[new]
    #[pyo3(signature = (*, succeeded, failed, retrying, in_flight, queued, batches_completed, current_batch,
                        breaker_state, records_read, batches=None, concurrency_limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        succeeded: u64,
        failed: u64,
        retrying: usize,
        in_flight: usize,
        queued: usize,
        batches_completed: u64,
        current_batch: u64,
        breaker_state: Py<PyString>,
        records_read: u64,
        batches: Option<Py<PyTuple>>,
        concurrency_limit: Option<usize>,
    ) -> Self {
        Self {
            succeeded,
            failed,
            retrying,
            in_flight,
            queued,
            batches_completed,
            current_batch,
            breaker_state,
            records_read,
            batches,
            concurrency_limit,
        }
    }
}

/// One open batch at a progress snapshot: its counts so far (a dashboard's row).
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct ActiveBatch {
    index: u64,
    size: usize,
    succeeded: usize,
    failed: usize,
    /// Records waiting for a retry.
    retrying: usize,
    /// Records started and not yet final nor waiting for a retry.
    in_flight: usize,
    /// Records not started yet.
    queued: usize,
    /// Retries started so far.
    retries: usize,
    /// When the batch was read, in seconds since the run started.
    started: f64,
    /// Seconds since the batch was read.
    elapsed: f64,
}

#[pymethods]
impl ActiveBatch {
    #[new]
    #[pyo3(signature = (*, index, size, succeeded, failed, retrying, in_flight, queued, retries, started, elapsed))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: u64,
        size: usize,
        succeeded: usize,
        failed: usize,
        retrying: usize,
        in_flight: usize,
        queued: usize,
        retries: usize,
        started: f64,
        elapsed: f64,
    ) -> Self {
        Self { index, size, succeeded, failed, retrying, in_flight, queued, retries, started, elapsed }
    }

    fn __repr__(&self) -> String {
        format!(
            "ActiveBatch(index={}, size={}, succeeded={}, failed={}, retrying={}, in_flight={}, queued={}, \
             retries={}, started={:.3}, elapsed={:.3})",
            self.index,
            self.size,
            self.succeeded,
            self.failed,
            self.retrying,
            self.in_flight,
            self.queued,
            self.retries,
            self.started,
            self.elapsed
        )
    }
}

fn active_batches<'py>(py: Python<'py>, batches: &[BatchCounts]) -> PyResult<Bound<'py, PyTuple>> {
    let items = batches.iter().map(|b| {
        Bound::new(
            py,
            ActiveBatch {
                index: b.index,
                size: b.size,
                succeeded: b.succeeded,
                failed: b.failed,
                retrying: b.retrying,
                in_flight: b.in_flight,
                queued: b.queued,
                retries: b.retries,
                started: b.started,
                elapsed: b.elapsed,
            },
        )
    });
    PyTuple::new(py, items.collect::<PyResult<Vec<_>>>()?)
}

/// The Python string of a breaker state, interned: one object per state for the whole process.
fn state_str(py: Python<'_>, state: BreakerState) -> Py<PyString> {
    PyString::intern(py, state.as_str()).unbind()
}

fn py_counters<'py>(
    py: Python<'py>,
    c: &EngineCounters,
    batches: Option<&[BatchCounts]>,
) -> PyResult<Bound<'py, Counters>> {
    let batches = batches.map(|b| active_batches(py, b)).transpose()?.map(Bound::unbind);
    Bound::new(
        py,
        Counters {
            succeeded: c.succeeded,
            failed: c.failed,
            retrying: c.retrying,
            in_flight: c.in_flight,
            queued: c.queued,
            batches_completed: c.batches_completed,
            current_batch: c.current_batch,
            breaker_state: state_str(py, c.breaker_state),
            records_read: c.records_read,
            batches,
            concurrency_limit: c.concurrency_limit,
        },
    )
}

/// One batch, once every record in it is final (or the run stopped: `pending` are not).
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct BatchEvent {
    index: u64,
    size: usize,
    succeeded: usize,
    failed: usize,
    retries: usize,
    duration: f64,
    pending: usize,
    /// The batch's dead-lettered records (`DeadRecords`, or a list from the reference
    /// engine); None when there are none, the usual case, so that costs no object.
    dead: Option<Obj>,
    /// With `EngineConfig.values_per_batch`: the record indices of the batch's successes, in
    /// record order, and their values (`values`, alike); None when the run keeps its values
    /// for `RunSummary.successful`.
    indices: Option<Py<PyList>>,
    values: Option<Py<PyList>>,
}

#[pymethods]
impl BatchEvent {
    #[new]
    #[pyo3(signature = (*, index, size, succeeded, failed, retries, duration, pending, dead, indices=None,
                        values=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: u64,
        size: usize,
        succeeded: usize,
        failed: usize,
        retries: usize,
        duration: f64,
        pending: usize,
        dead: Option<Obj>,
        indices: Option<Py<PyList>>,
        values: Option<Py<PyList>>,
    ) -> Self {
        Self { index, size, succeeded, failed, retries, duration, pending, dead, indices, values }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.dead)?;
        visit.call(&self.values)
    }
}

/// The circuit breaker moved from one state to another, `at` seconds after the run started.
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct BreakerEvent {
    at: f64,
    from_state: Py<PyString>,
    to_state: Py<PyString>,
}

#[pymethods]
impl BreakerEvent {
    #[new]
    #[pyo3(signature = (*, at, from_state, to_state))]
    fn new(at: f64, from_state: Py<PyString>, to_state: Py<PyString>) -> Self {
        Self { at, from_state, to_state }
    }
}

/// A record's failed try that will be tried again after `delay` seconds (only when the run
/// has an `on_retry` hook: `EngineConfig.collect_retries`). Handed over with the next batch end
/// or breaker transition, in the order the retries were scheduled.
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct RetryEvent {
    record_index: u64,
    batch_index: u64,
    record: Obj,
    /// The try that failed (1-based).
    attempt: u32,
    error: Obj,
    error_class: Py<PyString>,
    delay: f64,
}

#[pymethods]
impl RetryEvent {
    #[new]
    #[pyo3(signature = (*, record_index, batch_index, record, attempt, error, error_class, delay))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        record_index: u64,
        batch_index: u64,
        record: Obj,
        attempt: u32,
        error: Obj,
        error_class: Py<PyString>,
        delay: f64,
    ) -> Self {
        Self { record_index, batch_index, record, attempt, error, error_class, delay }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.record)?;
        visit.call(&self.error)
    }
}

/// A retry event holds a second reference to the record and its error. Every caller of
/// `Scheduler::fail` holds the GIL, so attaching is only a counter check.
impl Share for Obj {
    fn share(&self) -> Self {
        Python::attach(|py| self.clone_ref(py))
    }
}

fn retry_event<'py>(py: Python<'py>, r: Retried<Obj, Obj>) -> PyResult<Bound<'py, RetryEvent>> {
    Bound::new(
        py,
        RetryEvent {
            record_index: r.index,
            batch_index: r.batch,
            record: r.record,
            attempt: r.attempt,
            error: r.error,
            error_class: PyString::intern(py, r.class.as_str()).unbind(),
            delay: r.delay,
        },
    )
}

/// One failed try of a record: its number (1-based), its wall-clock time (seconds since the
/// epoch), the exception it raised, and the wait before the next try (None: there was none).
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct FailedAttempt {
    attempt: u32,
    at: f64,
    error: Obj,
    delay: Option<f64>,
}

#[pymethods]
impl FailedAttempt {
    #[new]
    #[pyo3(signature = (*, attempt, at, error, delay))]
    fn new(attempt: u32, at: f64, error: Obj, delay: Option<f64>) -> Self {
        Self { attempt, at, error, delay }
    }

    // An exception keeps its traceback, whose frames can lead back to whoever holds this.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.error)
    }
}

/// A dead-lettered record: where it was, what it was, how it failed (its tries, oldest first).
#[pyclass(frozen, get_all, module = "batchguard._native")]
pub struct DeadRecord {
    record_index: u64,
    batch_index: u64,
    record: Obj,
    error_class: Py<PyString>,
    attempts: Py<PyList>,
    /// Dead-lettered because the retry budget refused its retry (`over_budget="dead_letter"`).
    over_budget: bool,
}

#[pymethods]
impl DeadRecord {
    #[new]
    #[pyo3(signature = (*, record_index, batch_index, record, error_class, attempts, over_budget=false))]
    fn new(
        record_index: u64,
        batch_index: u64,
        record: Obj,
        error_class: Py<PyString>,
        attempts: Py<PyList>,
        over_budget: bool,
    ) -> Self {
        Self { record_index, batch_index, record, error_class, attempts, over_budget }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.record)?;
        visit.call(&self.attempts)
    }
}

fn attempt<'py>(py: Python<'py>, a: &Attempt<Obj>) -> PyResult<Bound<'py, FailedAttempt>> {
    Bound::new(py, FailedAttempt { attempt: a.attempt, at: a.wall, error: a.error.clone_ref(py), delay: a.delay })
}

fn dead_record<'py>(py: Python<'py>, dead: &Dead<Obj, Obj>) -> PyResult<Bound<'py, DeadRecord>> {
    let attempts = PyList::empty(py);
    for a in &dead.attempts {
        attempts.append(attempt(py, a)?)?;
    }
    Bound::new(
        py,
        DeadRecord {
            record_index: dead.index,
            batch_index: dead.batch,
            record: dead.record.clone_ref(py),
            error_class: PyString::intern(py, dead.class.as_str()).unbind(),
            attempts: attempts.unbind(),
            over_budget: dead.over_budget,
        },
    )
}

/// The dead-lettered records of one batch, handed to Python without converting each one:
/// the recorder materializes them only when it persists or shows them.
#[pyclass(module = "batchguard._native")]
pub struct DeadRecords {
    items: Vec<Dead<Obj, Obj>>,
}

#[pymethods]
impl DeadRecords {
    fn __len__(&self) -> usize {
        self.items.len()
    }

    // The exceptions held here keep their tracebacks, whose frames can lead back to whoever
    // holds this object: the garbage collector must see these references to break the cycle.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for dead in &self.items {
            visit.call(&dead.record)?;
            for attempt in &dead.attempts {
                visit.call(&attempt.error)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.items.clear();
    }

    /// The `index`-th dead record (negative counts from the end).
    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, DeadRecord>> {
        let len = self.items.len() as isize;
        let i = if index < 0 { index + len } else { index };
        if i < 0 || i >= len {
            return Err(pyo3::exceptions::PyIndexError::new_err("DeadRecords index out of range"));
        }
        dead_record(py, &self.items[i as usize])
    }

    /// Every dead record, built when the iteration starts.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let list = PyList::empty(py);
        for dead in &self.items {
            list.append(dead_record(py, dead)?)?;
        }
        list.as_any().try_iter()
    }
}

/// The engine's events as the list the recorder takes (and empties as it handles them).
fn events_list<'py>(py: Python<'py>, events: Vec<Event<Obj, Obj>>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for event in events {
        match event {
            Event::Batch(b) => {
                // Most batches have no failures: no object for an empty list of them.
                let dead = if b.dead.is_empty() {
                    None
                } else {
                    Some(Bound::new(py, DeadRecords { items: b.dead })?.into_any().unbind())
                };
                let (indices, values) = match b.values {
                    None => (None, None),
                    Some(pairs) => {
                        let len = pairs.len();
                        let indices = PyList::new(py, pairs.iter().map(|(index, _)| *index))?;
                        let values = list_of(py, pairs.into_iter().map(|(_, value)| value), len)?;
                        (Some(indices.unbind()), Some(values.unbind()))
                    }
                };
                let event = BatchEvent {
                    index: b.index,
                    size: b.size,
                    succeeded: b.succeeded,
                    failed: b.failed,
                    retries: b.retries,
                    duration: b.duration,
                    pending: b.pending,
                    dead,
                    indices,
                    values,
                };
                list.append(Bound::new(py, event)?)?;
            }
            Event::Breaker { at, from, to } => {
                let event = BreakerEvent { at, from_state: state_str(py, from), to_state: state_str(py, to) };
                list.append(Bound::new(py, event)?)?;
            }
            Event::Retry(r) => list.append(retry_event(py, r)?)?,
        }
    }
    Ok(list)
}

// ------------------------------------------------------------------------ to the recorder

/// Hand events to the recorder, which removes each one from the list once it is handled.
///
/// DESIGN §4: an interrupt flushes what was dead-lettered. A KeyboardInterrupt (any
/// BaseException that is not an Exception) raised while the recorder persists a batch leaves
/// that batch and the later ones in the list: they are handed over again, then the interrupt
/// is returned. An Exception (a broken DLQ) is returned at once.
pub(super) fn deliver(
    py: Python<'_>,
    sink: &Bound<'_, PyAny>,
    events: Vec<Event<Obj, Obj>>,
    counters: &EngineCounters,
    batches: Option<&[BatchCounts]>,
) -> PyResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let events = events_list(py, events)?;
    let counters = py_counters(py, counters, batches)?;
    let mut interrupted: Option<PyErr> = None;
    for _ in 0..DELIVERY_ATTEMPTS {
        match sink.call_method1(intern!(py, "events"), (&events, &counters)) {
            Ok(_) => break,
            Err(err) if !err.is_instance_of::<PyException>(py) && !events.is_empty() => {
                interrupted.get_or_insert(err);
            }
            Err(err) => return Err(interrupted.unwrap_or(err)),
        }
    }
    interrupted.map_or(Ok(()), Err)
}

/// Does the recorder pass progress on to anyone (`on_progress`)? A sink without that
/// attribute gets every report.
pub(super) fn wants_progress(sink: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(optional_attr(sink, intern!(sink.py(), "on_progress"))?.is_none_or(|callback| !callback.is_none()))
}

/// Does the recorder want a snapshot at every batch end (`progress_every_batch`, true when
/// absent)? A display that draws at its own pace says no: it then gets one at most every
/// progress interval, so a run of short batches is not slowed by a snapshot per batch.
pub(super) fn progress_every_batch(sink: &Bound<'_, PyAny>) -> PyResult<bool> {
    match optional_attr(sink, intern!(sink.py(), "progress_every_batch"))? {
        None => Ok(true),
        Some(value) => value.is_truthy(),
    }
}

/// The open batches' counts for a snapshot, when progress is read (`wants`); None otherwise.
pub(super) fn open_batches(sched: &PyScheduler, wants: bool) -> Option<Vec<BatchCounts>> {
    wants.then(|| sched.open_batches())
}

/// A throttled progress report (the recorder passes it to `on_progress`).
pub(super) fn progress(
    py: Python<'_>,
    sink: &Bound<'_, PyAny>,
    counters: &EngineCounters,
    batches: Option<&[BatchCounts]>,
) -> PyResult<()> {
    sink.call_method1(intern!(py, "progress"), (py_counters(py, counters, batches)?,))?;
    Ok(())
}

/// What `run` returns to `batchguard.api`, for a finished scheduler and its values.
pub(super) fn summary<'py>(
    py: Python<'py>,
    sched: &PyScheduler,
    successful: Bound<'py, PyList>,
) -> PyResult<Bound<'py, RunSummary>> {
    let steering = sched.steering();
    let summary = RunSummary::new(
        sched.succeeded(),
        sched.failed(),
        sched.records_read(),
        sched.exhausted(),
        sched.retries(),
        successful.unbind(),
        sched.stop_reason().map(|r| PyString::intern(py, r.as_str()).unbind()),
        sched.breaker_trips(),
        sched.skipped_records(),
        steering.limit,
        (steering.budget_waited, steering.budget_dead_lettered),
    );
    Bound::new(py, summary)
}
