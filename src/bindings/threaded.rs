//! The driver at concurrency N: N worker loops on the Tokio runtime's blocking pool. A worker
//! holds the GIL from one call to the next (one GIL hand-off per record, taken inside the
//! callback when it blocks), and the calling thread (the coordinator) reads input and handles
//! every event, so the input iterator, the DLQ and the user's progress callback only ever see
//! one thread.
//!
//! When to read: at concurrency N the coordinator reads a batch whenever the scheduler wants
//! input (fewer fresh records queued than workers), so a worker rarely waits for a read. With
//! one worker (concurrency 1: a bulk run, since a per-record fn at 1 runs inline) it reads only
//! when the worker asks for input (`Next::Feed`), as the reference engine's inline driver does:
//! reading ahead while a group runs would read a batch that a stop in that group (fatal, the
//! failure budget, a breaker) leaves unrun, and the engines' reports would differ by it (an
//! extra batch, all pending; for a generator, records read and `total`).
//!
//! Lock discipline (the reason this cannot deadlock): the scheduler's mutex is never held
//! while running Python code or while waiting for the GIL, and no Python object is dropped
//! while it is held — the scheduler hands back everything it lets go of.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::bulk;
use super::classify::{failure_of, NativeClassifier};
use super::config::RunOptions;
use super::events::{deliver, open_batches, progress, summary, RunSummary};
use super::ffi::{list_of, strip_traceback, FastCall, Source};
use super::run::{call_timed, finish};
use super::testing::panic_if_armed;
use super::wait::{detached, slice_until, MonoClock, MAX_WAIT};
use super::{Obj, PyScheduler, PyWork};
use crate::engine::{Clock, Config, Event, Failure, Next, Scheduler};

/// Largest `concurrency` of a sync run: each worker is a thread, and past this many threads
/// cost more memory and switching than they give. Exported as `_native.MAX_CONCURRENCY`.
pub(super) const MAX_CONCURRENCY: usize = 1024;

/// The process-wide Tokio runtime whose blocking pool hosts the workers, built on first use.
///
/// Fork safety (what tokenizers' at-fork hook is for): a forked child inherits the runtime's
/// memory but none of its threads, so its blocking pool would queue work for threads that do
/// not exist, and a threaded run would hang. The runtime is therefore the *process's*: keyed
/// by pid, a forked child builds its own on first use. The parent's copy is leaked in the
/// child, never dropped (dropping it would wait for those threads). The lock cannot be held
/// across a fork: it is only taken with the GIL held, and `os.fork` holds the GIL.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut slot = RUNTIME.lock();
    if let Some((owner, runtime)) = *slot {
        if owner == pid {
            return Ok(runtime);
        }
    }
    // Only the blocking pool is used (no futures run on it): a current-thread runtime starts
    // no async worker threads, and its pool threads outlive a run (idle ones retire after
    // 10 s), so back-to-back runs reuse them instead of starting threads each time.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_CONCURRENCY)
        .thread_name("batchguard")
        .build()
        .map_err(|err| PyRuntimeError::new_err(format!("batchguard could not start its worker threads: {err}")))?;
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
    *slot = Some((pid, runtime));
    Ok(runtime)
}

/// What one call of the user's callable came to (threaded workers).
enum Outcome {
    Value(Obj),
    Failed(Failure<Obj>),
}

pub(super) fn store(results: &mut [Option<Obj>], index: u64, value: Obj) {
    results[index as usize] = Some(value);
}

pub(super) struct State {
    pub(super) sched: PyScheduler,
    pub(super) results: Vec<Option<Obj>>,
    live_workers: usize,
    idle_workers: usize,
    /// Bumped whenever a waiting thread may have something new to do.
    pub(super) version: u64,
    pub(super) error: Option<PyErr>,
    /// One worker: read a batch only when it asks for one (see the module doc).
    reads_on_demand: bool,
    /// A worker found nothing to run and asked for input (`Next::Feed`); taking work clears it.
    pub(super) input_asked: bool,
}

impl State {
    /// Should the coordinator read the next batch now? (See the module doc.)
    fn wants_input(&self) -> bool {
        self.sched.wants_input() && (self.input_asked || !self.reads_on_demand)
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    work_ready: Condvar,
    coordinator: Condvar,
}

pub(super) struct WorkerContext {
    pub(super) shared: Arc<Shared>,
    pub(super) func: Obj,
    pub(super) sink: Obj,
    pub(super) classifier: Arc<NativeClassifier>,
    pub(super) clock: MonoClock,
    pub(super) timeout: Option<Duration>,
    /// Attempts the worker took from the scheduler and has not handed back yet: if it dies
    /// now, the scheduler must stop counting them in flight, or the run would wait for them
    /// forever.
    pub(super) holding: Cell<usize>,
    /// Bulk mode: the fn takes a list of records, up to this many (the batch size).
    group_limit: Option<usize>,
}

pub(super) fn run_threaded<'py>(
    py: Python<'py>,
    source: &mut Source<'py>,
    func: &Bound<'_, PyAny>,
    config: Config,
    classifier: NativeClassifier,
    sink: &Bound<'_, PyAny>,
    options: &RunOptions<'py>,
) -> PyResult<Bound<'py, RunSummary>> {
    let workers = config.concurrency;
    // Workers finish out of order: each success goes to its record's slot.
    let results: Vec<Option<Obj>> = Vec::with_capacity(options.size_hint.unwrap_or(0).min(1 << 28));
    let clock = MonoClock(Instant::now());
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            sched: Scheduler::new(config, clock),
            results,
            live_workers: workers,
            idle_workers: 0,
            version: 0,
            error: None,
            reads_on_demand: workers == 1,
            input_asked: false,
        }),
        work_ready: Condvar::new(),
        coordinator: Condvar::new(),
    });
    let classifier = Arc::new(classifier);
    let runtime = runtime()?;
    for _ in 0..workers {
        let ctx = WorkerContext {
            shared: Arc::clone(&shared),
            func: func.clone().unbind(),
            sink: sink.clone().unbind(),
            classifier: Arc::clone(&classifier),
            clock,
            timeout: options.timeout,
            holding: Cell::new(0),
            group_limit: options.bulk.then_some(options.batch_size),
        };
        runtime.spawn_blocking(move || worker(ctx));
    }
    let mut undelivered = Vec::new();
    let outcome = coordinate(py, source, sink, &shared, clock, options, &mut undelivered);
    // The workers are gone (coordinate waits for them); the state is ours alone now.
    let mut state = shared.state.lock();
    let error = state.error.take();
    let results = std::mem::take(&mut state.results);
    let outcome = match (outcome, error) {
        (Err(err), _) | (Ok(()), Some(err)) => Err(err),
        (Ok(()), None) => Ok(()),
    };
    finish(py, &mut state.sched, sink, outcome, undelivered)?;
    let count = state.sched.succeeded() as usize;
    summary(py, &state.sched, list_of(py, results.into_iter().flatten(), count)?)
}

/// The calling thread: feeds input, delivers events and progress, waits for the workers.
///
/// Events taken from the scheduler stay in `undelivered` until the recorder has them: when
/// reading the input fails first, they go out on the next turn (or in `finish`).
fn coordinate<'py>(
    py: Python<'py>,
    source: &mut Source<'py>,
    sink: &Bound<'_, PyAny>,
    shared: &Shared,
    clock: MonoClock,
    options: &RunOptions<'py>,
    undelivered: &mut Vec<Event<Obj, Obj>>,
) -> PyResult<()> {
    let interval = options.interval;
    let mut next_progress = interval;
    let mut failure: Option<PyErr> = None;
    loop {
        let (wants, counters, batches, due, finished, released, seen) = {
            let mut st = shared.state.lock();
            let wants = failure.is_none() && st.wants_input();
            if st.sched.has_events() {
                undelivered.append(&mut st.sched.take_events());
            }
            let released = st.sched.take_released();
            // Decided here, once, so the open batches are counted (under the lock, with the
            // counters) only for a snapshot this turn hands over.
            let due = clock.now() >= next_progress;
            let snapshot = due || (options.every_batch && !undelivered.is_empty());
            let batches = open_batches(&st.sched, options.wants_progress && snapshot);
            (wants, st.sched.counters(), batches, due, st.live_workers == 0, released, st.version)
        };
        drop(released);
        let step = (|| -> PyResult<()> {
            if wants {
                // Only this thread feeds, so the next batch index cannot change in between.
                let next_batch = shared.state.lock().sched.next_batch_index();
                let batch = options.read(source, next_batch)?;
                let mut st = shared.state.lock();
                let State { sched, results, .. } = &mut *st;
                let skipped = batch.add_to(sched, options.batch_size);
                results.resize_with(sched.records_read() as usize, || None);
                drop(st);
                drop(skipped);
                let mut st = shared.state.lock();
                st.version += 1;
                drop(st);
                shared.work_ready.notify_all();
            }
            if !undelivered.is_empty() {
                deliver(py, sink, std::mem::take(undelivered), &counters, batches.as_deref())?;
                if due || options.every_batch {
                    next_progress = clock.now() + interval;
                }
            } else if due {
                progress(py, sink, &counters, batches.as_deref())?;
                next_progress = clock.now() + interval;
            }
            Ok(())
        })();
        if let Err(err) = step {
            stop_workers(shared);
            failure.get_or_insert(err);
        }
        if finished {
            return failure.map_or(Ok(()), Err);
        }
        if !wants {
            let waited = detached(py, MAX_WAIT, |slice| {
                let mut st = shared.state.lock();
                if st.version == seen && !st.sched.has_events() && !st.wants_input() && st.live_workers > 0 {
                    shared.coordinator.wait_for(&mut st, slice);
                }
            });
            if let Err(err) = waited {
                stop_workers(shared);
                failure.get_or_insert(err);
            }
        }
    }
}

fn stop_workers(shared: &Shared) {
    let mut st = shared.state.lock();
    st.sched.interrupt();
    st.version += 1;
    drop(st);
    shared.work_ready.notify_all();
}

fn worker(ctx: WorkerContext) {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Python::attach(|py| match ctx.group_limit {
            Some(limit) => bulk::worker_loop(py, &ctx, limit),
            None => worker_loop(py, &ctx),
        })
    }));
    let mut st = ctx.shared.state.lock();
    let mut surplus_error: Option<PyErr> = None;
    if let Ok(Err(err)) = outcome {
        // A signal seen while parked (CPython runs handlers on the main thread only, so this
        // is there for completeness): it stops the run like an interrupt.
        surplus_error = stop_with(&mut st, err);
    } else if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        for _ in 0..ctx.holding.replace(0) {
            // Its records died with it: unfinished, so the run reports them pending.
            st.sched.lose_in_flight();
        }
        st.error.get_or_insert_with(|| {
            PyRuntimeError::new_err(format!(
                "batchguard: a worker thread panicked ({message}); the run stopped, what was \
                 dead-lettered is in the DLQ and unfinished records are pending. This is a \
                 batchguard bug: please report it"
            ))
        });
        st.sched.interrupt();
    }
    st.live_workers -= 1;
    st.version += 1;
    drop(st);
    ctx.shared.work_ready.notify_all();
    ctx.shared.coordinator.notify_one();
    // The context's Python references are released by PyO3 once a thread holds the GIL.
    drop(surplus_error);
    drop(ctx);
}

fn worker_loop(py: Python<'_>, ctx: &WorkerContext) -> PyResult<()> {
    let shared = &*ctx.shared;
    let func = &FastCall::new(ctx.func.bind(py));
    let sink = ctx.sink.bind(py);
    loop {
        let mut st = shared.state.lock();
        let work: PyWork = match st.sched.next_work() {
            Next::Run(work) => {
                ctx.holding.set(1);
                st.input_asked = false;
                work
            }
            Next::Done => return Ok(()),
            Next::Feed => {
                park_for_input(py, shared, st, &ctx.clock)?;
                continue;
            }
            Next::Wait(until) => {
                let seen = st.version;
                park(py, shared, st, seen, until, &ctx.clock)?;
                continue;
            }
        };
        // Read under the lock now, acted on outside it: stripping a traceback frees frames,
        // and a frame's objects may run `__del__`, which must never run under the lock.
        let keep_traceback = st.sched.keep_tracebacks();
        drop(st);
        let outcome = match call_timed(func, work.record.bind(py), ctx.timeout) {
            Ok(value) => Outcome::Value(value.unbind()),
            Err(err) => {
                let failure = failure_of(py, err, &ctx.classifier, sink);
                if !failure.interrupted && !keep_traceback {
                    strip_traceback(failure.error.bind(py));
                }
                Outcome::Failed(failure)
            }
        };
        panic_if_armed(work.index);
        let mut st = shared.state.lock();
        ctx.holding.set(0);
        let mut done: Option<PyWork> = None;
        let mut surplus_error: Option<PyErr> = None;
        match outcome {
            Outcome::Value(value) => {
                store(&mut st.results, work.index, value);
                done = Some(st.sched.succeed(work));
            }
            Outcome::Failed(failure) if failure.interrupted => {
                st.sched.abandon(work);
                surplus_error = stop_with(&mut st, PyErr::from_value(failure.error.into_bound(py)));
            }
            Outcome::Failed(failure) => {
                st.sched.fail(work, failure.class, failure.error, failure.retry_after, failure.wall);
            }
        }
        handed_back(shared, st);
        drop(done);
        drop(surplus_error);
    }
}

/// After outcomes were handed to the scheduler: let the lock go, wake whoever has something
/// new to do, and release what the scheduler let go of (outside the lock: `__del__` may run).
#[inline]
pub(super) fn handed_back(shared: &Shared, mut st: MutexGuard<'_, State>) {
    let wake_coordinator = st.sched.has_events() || st.wants_input() || st.sched.stop_reason().is_some();
    let wake_workers = st.idle_workers > 0;
    if wake_workers {
        st.version += 1;
    }
    let released = if st.sched.has_released() { st.sched.take_released() } else { Vec::new() };
    drop(st);
    if wake_coordinator {
        shared.coordinator.notify_one();
    }
    if wake_workers {
        shared.work_ready.notify_all();
    }
    drop(released);
}

/// Keep the first error that stops the run; a later one is handed back, to be dropped once
/// the lock is released.
pub(super) fn stop_with(st: &mut State, err: PyErr) -> Option<PyErr> {
    st.sched.interrupt();
    if st.error.is_none() {
        st.error = Some(err);
        None
    } else {
        Some(err)
    }
}

/// Nothing to run and input may come (`Next::Feed`): ask the coordinator for a batch and wait.
pub(super) fn park_for_input(
    py: Python<'_>,
    shared: &Shared,
    mut st: MutexGuard<'_, State>,
    clock: &MonoClock,
) -> PyResult<()> {
    st.input_asked = true;
    let seen = st.version;
    shared.coordinator.notify_one();
    park(py, shared, st, seen, None, clock)
}

/// Wait, without the GIL, until the state changes, `until` passes, or MAX_WAIT elapses. The
/// worker counts itself idle before it lets the lock go, so a completion in between sees it
/// and bumps `version` (no missed wakeup).
pub(super) fn park(
    py: Python<'_>,
    shared: &Shared,
    mut st: MutexGuard<'_, State>,
    seen: u64,
    until: Option<f64>,
    clock: &MonoClock,
) -> PyResult<()> {
    st.idle_workers += 1;
    drop(st);
    detached(py, slice_until(clock, until), |slice| {
        let mut st = shared.state.lock();
        if st.version == seen {
            shared.work_ready.wait_for(&mut st, slice);
        }
        st.idle_workers -= 1;
    })
}
