//! The entry point of a sync run (`_native.run`), and what both sync drivers share: reading
//! a batch of input, calling the user's callable, handing a failure to the scheduler, and
//! closing the run. The drivers themselves are in `inline.rs` (concurrency 1) and
//! `threaded.rs` (concurrency N).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;

use super::classify::NativeClassifier;
use super::config::{RunOptions, Settings};
use super::events::{deliver, RunSummary};
use super::exceptions::ConfigError;
use super::ffi::{strip_traceback, FastCall, Source};
use super::inline::run_inline;
use super::threaded::{run_threaded, MAX_CONCURRENCY};
use super::values::Values;
use super::{Obj, PyScheduler, PyWork};
use crate::engine::{Event, Failure, Key};

/// Run `func` over `records`; report to `sink` (a `batchguard._outcome.RunRecorder`). With
/// `bulk`, `func` takes a list of records and returns their results (see `bulk.rs`).
///
/// Returns a `RunSummary`.
#[pyfunction]
#[pyo3(signature = (records, func, config, classifier, sink, size_hint=None, bulk=false))]
#[allow(clippy::too_many_arguments)] // Python's signature
pub fn run<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    func: &Bound<'py, PyAny>,
    config: &Bound<'py, PyAny>,
    classifier: &Bound<'py, PyAny>,
    sink: &Bound<'py, PyAny>,
    size_hint: Option<usize>,
    bulk: bool,
) -> PyResult<Bound<'py, RunSummary>> {
    let (config, options) = RunOptions::new(Settings::from_py(config)?, sink, size_hint, bulk)?;
    if config.concurrency > MAX_CONCURRENCY {
        return Err(ConfigError::new_err(format!(
            "concurrency must be <= {} for sync callbacks (one thread each), got {}",
            MAX_CONCURRENCY, config.concurrency
        )));
    }
    let classifier = NativeClassifier::from_py(classifier)?;
    let mut source = Source::new(records)?;
    // A bulk fn always runs on the threaded driver (one worker at concurrency 1): the inline
    // driver streams single records.
    let run = if config.concurrency == 1 && !bulk {
        run_inline(py, &mut source, func, config, &classifier, sink, &options)?
    } else {
        run_threaded(py, &mut source, func, config, classifier, sink, &options)?
    };
    Ok(run)
}

/// Each record's ordering key: `hash(key_of(record))`; a key that raises an Exception makes
/// the record fail (dead-lettered, unrun) rather than the run.
fn keys_of(key_of: &Bound<'_, PyAny>, batch: Vec<Obj>) -> PyResult<Vec<(Obj, Key<Obj>)>> {
    let py = key_of.py();
    let mut keyed = Vec::with_capacity(batch.len());
    for record in batch {
        let key = match key_of.call1((record.bind(py),)).and_then(|k| k.hash()) {
            Ok(hash) => Key::Is(hash as u64),
            Err(err) if err.is_instance_of::<PyException>(py) => Key::Failed(err.into_value(py).into_any()),
            Err(err) => return Err(err),
        };
        keyed.push((record, key));
    }
    Ok(keyed)
}

/// One batch of input, ready for the scheduler: keys computed (that runs Python, so it happens
/// before any lock is taken), or marked as finished by an earlier run of the job.
pub(super) enum Prepared {
    Skipped(Vec<Obj>),
    Plain(Vec<Obj>),
    Keyed(Vec<(Obj, Key<Obj>)>),
}

impl Prepared {
    /// `batch_index` is the index the batch will get: the scheduler's `next_batch_index()`.
    pub(super) fn new(
        batch: Vec<Obj>,
        batch_index: u64,
        skip: &HashSet<u64>,
        key_of: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(match key_of {
            _ if skip.contains(&batch_index) => Self::Skipped(batch),
            Some(key_of) => Self::Keyed(keys_of(key_of, batch)?),
            None => Self::Plain(batch),
        })
    }

    fn len(&self) -> usize {
        match self {
            Self::Skipped(batch) | Self::Plain(batch) => batch.len(),
            Self::Keyed(keyed) => keyed.len(),
        }
    }

    /// Hand the batch to the scheduler (a short one ends the input). Pure Rust: safe under the
    /// scheduler's lock. Returns a skipped batch's records, to be released outside it.
    pub(super) fn add_to(self, sched: &mut PyScheduler, batch_size: usize) -> Vec<Obj> {
        let len = self.len();
        let mut skipped = Vec::new();
        if len > 0 {
            match self {
                Self::Skipped(batch) => {
                    sched.skip_batch(batch.len());
                    skipped = batch;
                }
                Self::Plain(batch) => sched.add_batch(batch.into_iter()),
                Self::Keyed(keyed) => sched.add_batch_keyed(keyed.into_iter()),
            }
        }
        if len < batch_size {
            sched.end_of_input();
        }
        skipped
    }
}

/// Call `func(record)`; with a timeout, an attempt that returns late counts as a TimeoutError
/// (a sync call cannot be interrupted, so its value is discarded instead).
#[inline]
pub(super) fn call_timed<'py>(
    func: &FastCall<'py>,
    record: &Bound<'py, PyAny>,
    timeout: Option<Duration>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(limit) = timeout else { return func.call(record) };
    let started = Instant::now();
    let value = func.call(record)?;
    let took = started.elapsed();
    if took > limit {
        return Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
            "the attempt took {:.3} s, over the {:.3} s timeout; its result was discarded",
            took.as_secs_f64(),
            limit.as_secs_f64()
        )));
    }
    Ok(value)
}

/// Report a failure to the scheduler, or stop the run if it was an interrupt.
pub(super) fn report_failure(
    py: Python<'_>,
    sched: &mut PyScheduler,
    work: PyWork,
    failure: Failure<Obj>,
) -> PyResult<()> {
    if failure.interrupted {
        sched.abandon(work);
        return Err(PyErr::from_value(failure.error.into_bound(py)));
    }
    if !sched.keep_tracebacks() {
        strip_traceback(failure.error.bind(py));
    }
    sched.fail(work, failure.class, failure.error, failure.retry_after, failure.wall);
    Ok(())
}

/// However the run ended, report the unfinished batches (what was dead-lettered reaches the
/// DLQ) and release what is left. An error stops the run and is returned, unless the flush
/// fails too (see below). `undelivered`: events the driver took from the scheduler but could
/// not hand over before the run stopped; `values`: the run's successful values, which the
/// closing batches take theirs from when they go out per batch.
pub(super) fn finish(
    py: Python<'_>,
    sched: &mut PyScheduler,
    sink: &Bound<'_, PyAny>,
    outcome: PyResult<()>,
    mut undelivered: Vec<Event<Obj, Obj>>,
    values: &mut Values,
) -> PyResult<()> {
    if outcome.is_err() {
        sched.interrupt();
    }
    sched.close();
    undelivered.extend(sched.take_events());
    values.attach(&mut undelivered);
    // Closed: no batch is open any more.
    let flushed = deliver(py, sink, undelivered, &sched.counters(), None);
    drop(sched.take_released());
    match (outcome, flushed) {
        // The flush failed too (the DLQ could not store what was dead-lettered): that error
        // is raised, with the one that stopped the run as its context, as a Python `finally`
        // would (and as the reference engine does) — losing dead letters must not be silent.
        (Err(stopped), Err(flush)) => {
            // The recorder raises its first DLQ error again for every later batch: that one
            // is no new error, and must not become its own context.
            if !flush.value(py).is(stopped.value(py)) {
                flush.value(py).setattr(intern!(py, "__context__"), stopped.into_value(py))?;
            }
            Err(flush)
        }
        (outcome, flushed) => outcome.and(flushed),
    }
}
