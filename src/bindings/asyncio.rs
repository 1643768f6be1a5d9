//! The engine as seen by an asyncio event loop (`async def` callbacks).
//!
//! The event loop thread owns the run: N worker coroutines (`batchguard._async`) pull work from
//! [`AsyncRun`] and await the user's coroutine inline — no Task per record — and report the
//! outcome back. Every decision (order, retries, backoff, breaker, budget, batches) is the same
//! scheduler's as for sync callbacks; only the waiting happens on the loop.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::{intern, IntoPyObjectExt};
use pyo3::{PyTraverseError, PyVisit};

use super::classify::NativeClassifier;
use super::config::Settings;
use super::events::{deliver, open_batches, progress, progress_every_batch, summary, wants_progress, RunSummary};
use super::ffi::strip_traceback;
use super::run::Prepared;
use super::steer::is_overload;
use super::values::Values;
use super::wait::{wall_now, MonoClock};
use super::{Obj, PyScheduler, PyWork};
use crate::engine::{Clock, Next, NextGroup, Scheduler};

/// One run of an async callback, driven from the event loop's thread. (It is only used from
/// that thread, but may be garbage-collected on another: so it is Send, not `unsendable`.)
#[pyclass(module = "batchguard._native")]
pub struct AsyncRun {
    sched: PyScheduler,
    classifier: NativeClassifier,
    sink: Obj,
    in_flight: HashMap<u64, PyWork>,
    /// When each call in flight started, for a breaker that counts slow calls (None otherwise).
    call_started: Option<HashMap<u64, f64>>,
    results: Values,
    skip: HashSet<u64>,
    key_of: Option<Obj>,
    batch_size: usize,
    interval: f64,
    next_progress: f64,
    /// The recorder has an `on_progress` callback: only then is the clock read per outcome.
    wants_progress: bool,
    /// A snapshot at every batch end, or only once one is due (`progress_every_batch`).
    every_batch: bool,
}

impl AsyncRun {
    /// The work of the call `index`, and whether that call was slow (`slow_call_s`).
    fn take(&mut self, index: u64) -> PyResult<(PyWork, bool)> {
        let work = self
            .in_flight
            .remove(&index)
            .ok_or_else(|| PyRuntimeError::new_err(format!("record {index} is not in flight")))?;
        let slow = match (self.call_started.as_mut(), self.sched.slow_call_s()) {
            (Some(started), Some(limit)) => {
                started.remove(&index).is_some_and(|at| self.sched.clock().now() - at > limit)
            }
            _ => false,
        };
        Ok((work, slow))
    }

    /// A call starts now: note when, if calls are timed.
    fn started(&mut self, index: u64) {
        if let Some(started) = self.call_started.as_mut() {
            started.insert(index, self.sched.clock().now());
        }
    }

    /// Deliver batch events (and throttled progress) to the recorder.
    fn report(&mut self, py: Python<'_>) -> PyResult<()> {
        let sink = self.sink.bind(py);
        if self.sched.has_events() {
            let mut events = self.sched.take_events();
            self.results.attach(&mut events);
            let now = self.sched.clock().now();
            let due = self.wants_progress && (self.every_batch || now >= self.next_progress);
            let batches = open_batches(&self.sched, due);
            deliver(py, sink, events, &self.sched.counters(), batches.as_deref())?;
            if due || self.every_batch {
                self.next_progress = self.sched.clock().now() + self.interval;
            }
        } else if self.wants_progress && self.sched.clock().now() >= self.next_progress {
            let batches = open_batches(&self.sched, true);
            progress(py, sink, &self.sched.counters(), batches.as_deref())?;
            self.next_progress = self.sched.clock().now() + self.interval;
        }
        if self.sched.has_released() {
            drop(self.sched.take_released());
        }
        Ok(())
    }
}

#[pymethods]
impl AsyncRun {
    // A failed record's exception holds a traceback whose frames hold the worker coroutines,
    // which hold this run: without these two methods such a cycle is never collected, and
    // every async run with failures would leak its recorder and records.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.sink)?;
        if let Some(key_of) = &self.key_of {
            visit.call(key_of)?;
        }
        self.classifier.traverse(&visit)?;
        self.sched.visit(|record| visit.call(record), |error| visit.call(error))?;
        for work in self.in_flight.values() {
            work.visit(|record| visit.call(record), |error| visit.call(error))?;
        }
        self.results.visit(|value| visit.call(value))
    }

    fn __clear__(&mut self) {
        // A fresh scheduler with the same configuration holds nothing; the old one's records
        // and errors are released with it.
        let config = self.sched.config().clone();
        let clock = *self.sched.clock();
        self.sched = Scheduler::new(config, clock);
        self.in_flight.clear();
        self.results.clear();
        self.key_of = None;
        self.classifier.clear();
        Python::attach(|py| self.sink = py.None());
    }

    #[new]
    fn new(config: &Bound<'_, PyAny>, classifier: &Bound<'_, PyAny>, sink: &Bound<'_, PyAny>) -> PyResult<Self> {
        // The timeout is `batchguard._async`'s to enforce: it cancels the coroutine.
        let Settings { config, skip, key_of, timeout: _, values_per_batch } = Settings::from_py(config)?;
        let key_of = key_of.map(Bound::unbind);
        let interval = config.progress_interval;
        let results = Values::indexed(values_per_batch, config.batch_size, None);
        let timed = config.breaker.as_ref().is_some_and(|b| b.slow_call_s.is_some());
        Ok(Self {
            batch_size: config.batch_size,
            sched: Scheduler::new(config, MonoClock(Instant::now())),
            classifier: NativeClassifier::from_py(classifier)?,
            sink: sink.clone().unbind(),
            in_flight: HashMap::new(),
            call_started: timed.then(HashMap::new),
            results,
            skip,
            key_of,
            interval,
            next_progress: interval,
            wants_progress: wants_progress(sink)?,
            every_batch: progress_every_batch(sink)?,
        })
    }

    /// What a worker does next: `(index, record)` to run; `"feed"` to read the next batch
    /// (pass it to `feed`); a float: nothing can start for that many seconds; `None`: nothing
    /// can start until an outcome arrives; `"done"`.
    fn next_work<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.sched.next_work() {
            Next::Run(work) => {
                let item = (work.index, work.record.bind(py)).into_bound_py_any(py)?;
                self.started(work.index);
                self.in_flight.insert(work.index, work);
                Ok(item)
            }
            Next::Feed => Ok(intern!(py, "feed").clone().into_any()),
            Next::Done => Ok(intern!(py, "done").clone().into_any()),
            Next::Wait(None) => Ok(py.None().into_bound(py)),
            Next::Wait(Some(until)) => (until - self.sched.clock().now()).max(0.0).into_bound_py_any(py),
        }
    }

    /// Bulk mode: like `next_work`, but new records come as a list of `(index, record)` with
    /// the rest of their batch (up to `limit`); a retry comes as a list of one.
    fn next_group<'py>(&mut self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyAny>> {
        match self.sched.next_group(limit) {
            NextGroup::Run(group) => {
                let items = pyo3::types::PyList::empty(py);
                for work in group {
                    items.append((work.index, work.record.bind(py)))?;
                    self.started(work.index);
                    self.in_flight.insert(work.index, work);
                }
                Ok(items.into_any())
            }
            NextGroup::Other(Next::Feed) => Ok(intern!(py, "feed").clone().into_any()),
            NextGroup::Other(Next::Done) => Ok(intern!(py, "done").clone().into_any()),
            NextGroup::Other(Next::Wait(None)) => Ok(py.None().into_bound(py)),
            NextGroup::Other(Next::Wait(Some(until))) => {
                (until - self.sched.clock().now()).max(0.0).into_bound_py_any(py)
            }
            NextGroup::Other(Next::Run(_)) => unreachable!("next_group hands work out as a group"),
        }
    }

    /// Are calls timed (a breaker that counts slow calls)? Only then does a bulk driver call
    /// `restart_timing`.
    #[getter]
    fn times_calls(&self) -> bool {
        self.call_started.is_some()
    }

    /// Bulk mode: a call of these in-flight records starts now (a bisection's half, after a
    /// failed call of the whole): each is timed from now, by the call that decides it.
    fn restart_timing(&mut self, indices: Vec<u64>) {
        for index in indices {
            self.started(index);
        }
    }

    /// The next batch of input (fewer than `batch_size` records ends the input).
    fn feed(&mut self, py: Python<'_>, batch: Vec<Obj>) -> PyResult<()> {
        let key_of = self.key_of.as_ref().map(|k| k.bind(py));
        let batch = Prepared::new(batch, self.sched.next_batch_index(), &self.skip, key_of)?;
        drop(batch.add_to(&mut self.sched, self.batch_size));
        self.results.read_to(self.sched.records_read());
        Ok(())
    }

    fn succeed(&mut self, py: Python<'_>, index: u64, value: Obj) -> PyResult<()> {
        let (work, slow) = self.take(index)?;
        self.results.store(index, value);
        if slow {
            self.sched.slow_call();
        }
        drop(self.sched.succeed(work));
        self.report(py)
    }

    /// The attempt raised `exc`. Returns True when the run must stop and re-raise it
    /// (a BaseException that is not an Exception, such as KeyboardInterrupt or CancelledError).
    fn fail(&mut self, py: Python<'_>, index: u64, exc: Bound<'_, PyAny>) -> PyResult<bool> {
        let (work, slow) = self.take(index)?;
        if !exc.is_instance_of::<PyException>() {
            self.sched.abandon(work);
            self.sched.interrupt();
            self.report(py)?;
            return Ok(true);
        }
        let classified = self.classifier.classify(py, &exc, self.sink.bind(py)).and_then(|class| {
            let retry_after = if class.retryable() { self.classifier.retry_after(py, &exc)? } else { None };
            Ok((class, retry_after))
        });
        let (class, retry_after) = match classified {
            Ok(classified) => classified,
            Err(stop) => {
                // Classifying was interrupted (KeyboardInterrupt): stop and re-raise that.
                self.sched.abandon(work);
                self.sched.interrupt();
                self.report(py)?;
                return Err(stop);
            }
        };
        if self.sched.adapts() && is_overload(py, &exc) {
            self.sched.overloaded(&work);
        }
        if !self.sched.keep_tracebacks() {
            strip_traceback(&exc);
        }
        if slow {
            self.sched.slow_call();
        }
        self.sched.fail(work, class, exc.unbind(), retry_after, wall_now());
        self.report(py)?;
        Ok(false)
    }

    /// The attempt was abandoned (the run is being torn down): its record is pending.
    fn abandon(&mut self, index: u64) -> PyResult<()> {
        let (work, _) = self.take(index)?;
        self.sched.abandon(work);
        Ok(())
    }

    fn interrupt(&mut self) {
        self.sched.interrupt();
    }

    fn stopping(&self) -> bool {
        self.sched.stop_reason().is_some()
    }

    /// Close the run: report unfinished batches, and return what `batchguard._native.run`
    /// returns.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, RunSummary>> {
        for (_, work) in self.in_flight.drain() {
            self.sched.abandon(work);
        }
        self.sched.close();
        let mut events = self.sched.take_events();
        self.results.attach(&mut events);
        // Closed: no batch is open any more.
        deliver(py, self.sink.bind(py), events, &self.sched.counters(), None)?;
        drop(self.sched.take_released());
        let count = self.sched.succeeded() as usize;
        let values = std::mem::replace(&mut self.results, Values::Indexed(Vec::new())).finish(py, count)?;
        summary(py, &self.sched, values)
    }
}
