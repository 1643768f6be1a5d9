//! The driver at concurrency N: up to N worker loops on the Tokio runtime's blocking pool. A
//! run starts [`FIRST_WORKERS`] of them and adds more only while more help ([`Growth`]): past
//! what the GIL and the CPUs can serve, the records wait in the scheduler, not in threads. A worker
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
use super::ffi::{strip_traceback, FastCall, Source};
use super::run::{call_timed, finish};
use super::steer::is_overload;
use super::testing::panic_if_armed;
use super::values::Values;
use super::wait::{detached, park_for, MonoClock, MAX_WAIT};
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
    /// The failure, and whether it is an overload signal (asked only when concurrency adapts).
    Failed(Failure<Obj>, bool),
}

pub(super) fn store(results: &mut Values, index: u64, value: Obj) {
    results.store(index, value);
}

pub(super) struct State {
    pub(super) sched: PyScheduler,
    pub(super) results: Values,
    live_workers: usize,
    idle_workers: usize,
    /// Bumped whenever a waiting thread may have something new to do.
    pub(super) version: u64,
    pub(super) error: Option<PyErr>,
    /// One worker: read a batch only when it asks for one (see the module doc).
    reads_on_demand: bool,
    /// A worker found nothing to run and asked for input (`Next::Feed`); taking work clears it.
    pub(super) input_asked: bool,
    /// Whether more workers would help (see [`Growth`]).
    growth: Growth,
    /// When the coordinator may next add workers (monotonic seconds of the run's clock).
    next_growth: f64,
}

impl State {
    /// Is a record queued that a parked worker could run, or must set a timer for: read and
    /// neither finished nor running (a new record, a retry, one behind its key)? Never while
    /// the run stops: then only its end wakes the workers.
    fn has_queued(&self) -> bool {
        let sched = &self.sched;
        let settled = sched.skipped_records() + sched.succeeded() + sched.failed() + sched.in_flight() as u64;
        sched.stop_reason().is_none() && sched.records_read() > settled
    }

    /// Should the coordinator read the next batch now? (See the module doc.)
    fn wants_input(&self) -> bool {
        self.sched.wants_input() && (self.input_asked || !self.reads_on_demand)
    }

    /// How many workers to add now (counted live at once; the caller starts them): as many
    /// again as are live, up to `concurrency`, when records wait that no idle worker can take
    /// and the calls so far show no contention ([`Growth`]). At most every [`GROW_EVERY`].
    fn grow(&mut self, now: f64) -> usize {
        let room = self.sched.config().concurrency.saturating_sub(self.live_workers);
        if room == 0 || now < self.next_growth || self.idle_workers > 0 || !self.growth.open || !self.has_queued() {
            return 0;
        }
        self.next_growth = now + GROW_EVERY;
        if !self.growth.paid_off(now) {
            return 0;
        }
        let add = room.min(self.live_workers.max(1));
        self.live_workers += add;
        add
    }
}

/// Workers a run starts with (or `concurrency`, if lower); more are added while they help.
const FIRST_WORKERS: usize = 64;
/// Shortest time between two additions of workers: long enough for the calls of the last
/// ones to be sampled (a [`WINDOW`] of 1 ms calls takes well under it).
const GROW_EVERY: f64 = 0.02;
/// Calls sampled per verdict of [`Growth`].
const WINDOW: usize = 64;
/// A window whose median call takes this many times the baseline is contended: its calls
/// spend most of their time waiting for the GIL (or a CPU), so more threads would only wait too.
const CONTENDED: f64 = 2.0;
/// How much more throughput a doubling of the pool must bring to allow the next one.
const GAIN: f64 = 1.1;
/// Uncontended windows in a row that reopen growth after a contended one.
const REOPEN: u32 = 16;
/// Per window the baseline may rise by this factor (it doubles in ~350 windows), so a service
/// that really got slower is not taken for contention for good; faster, and a contended
/// window's fastest call (which waited for the GIL too) would soon pass for the baseline.
const BASE_DRIFT: f64 = 1.002;

/// Whether more worker threads would raise throughput: the pool's growth signal (issue 11
/// item 6). At concurrency 1024 every in-flight call holds a thread, and a thread whose call
/// returns must take the GIL back; once the GIL (or the CPUs) is the bottleneck, more threads
/// only lengthen that queue, and CPython's GIL hand-offs slow down as waiters multiply (1024
/// threads ran 10k 1 ms sleeps at a tenth of the rate of 256). So the pool starts with
/// [`FIRST_WORKERS`] and doubles while the calls are not contended, as TCP Vegas grows a
/// window: a call's wall time against the fastest recent one (the baseline). An uncontended
/// slow service (1 s calls) keeps its median near the baseline and gets every thread it asks
/// for; 1 ms sleeps stop growing once their median is [`CONTENDED`] times the baseline, and
/// the records beyond wait in the scheduler, not in threads. The median, not the mean, so a
/// service's slow tail is not taken for contention.
pub(super) struct Growth {
    samples: [f64; WINDOW],
    filled: usize,
    /// The fastest call seen, drifting up by [`BASE_DRIFT`] per window; infinite until then.
    base: f64,
    /// May the pool grow? Closed by a contended window, reopened by [`REOPEN`] uncontended
    /// windows in a row (one window alone is noisy: calls that start together, after a
    /// growth, finish in waves). Open until a window says otherwise, so slow calls, whose
    /// windows take long to fill, grow at once.
    open: bool,
    /// Uncontended windows in a row.
    calm: u32,
    /// Calls recorded, and how many of them (and when) by the last growth.
    calls: u64,
    calls_then: u64,
    grown_at: f64,
    /// Calls per second at the size before the last growth.
    rate_before: f64,
    /// The last growth did not pay off: the pool keeps its size.
    stalled: bool,
}

impl Growth {
    /// About to grow at `now`: did the last growth pay off? The calls per second since then
    /// must beat those before it by [`GAIN`], once enough calls were seen to tell (slow
    /// calls never are, and grow freely while uncontended). If not, the pool stops growing
    /// for the rest of the run; if so, this size's rate is the bar for the next growth.
    fn paid_off(&mut self, now: f64) -> bool {
        let calls = self.calls - self.calls_then;
        if calls >= WINDOW as u64 && now > self.grown_at {
            let rate = calls as f64 / (now - self.grown_at);
            if rate < GAIN * self.rate_before {
                self.stalled = true;
            }
            self.rate_before = rate;
        }
        self.calls_then = self.calls;
        self.grown_at = now;
        !self.stalled
    }

    fn new() -> Self {
        Self {
            samples: [0.0; WINDOW],
            filled: 0,
            base: f64::INFINITY,
            open: true,
            calm: 0,
            calls: 0,
            calls_then: 0,
            grown_at: 0.0,
            rate_before: 0.0,
            stalled: false,
        }
    }

    /// One call took `seconds` (wall time, the GIL's wait after it included).
    pub(super) fn record(&mut self, seconds: f64) {
        self.calls += 1;
        self.samples[self.filled] = seconds;
        self.filled += 1;
        if self.filled < WINDOW {
            return;
        }
        self.filled = 0;
        let mut window = self.samples;
        let fastest = window.iter().copied().fold(f64::INFINITY, f64::min);
        let (_, median, _) = window.select_nth_unstable_by(WINDOW / 2, f64::total_cmp);
        self.base = fastest.min(self.base * BASE_DRIFT);
        self.calm = if *median <= CONTENDED * self.base { self.calm + 1 } else { 0 };
        self.open = if self.calm == 0 { false } else { self.open || self.calm >= REOPEN };
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    work_ready: Condvar,
    coordinator: Condvar,
    /// What every worker gets: the run's fn, sink and settings.
    template: Template,
}

/// A worker's context but for the shared state (whose `Arc` holds this): workers are started
/// during the run ([`State::grow`]), each with its own references.
struct Template {
    runtime: &'static tokio::runtime::Runtime,
    func: Obj,
    sink: Obj,
    classifier: Arc<NativeClassifier>,
    clock: MonoClock,
    timeout: Option<Duration>,
    group_limit: Option<usize>,
}

/// Start `count` workers, already counted in `live_workers`.
fn start_workers(py: Python<'_>, shared: &Arc<Shared>, count: usize) {
    let t = &shared.template;
    for _ in 0..count {
        let ctx = WorkerContext {
            shared: Arc::clone(shared),
            func: t.func.clone_ref(py),
            sink: t.sink.clone_ref(py),
            classifier: Arc::clone(&t.classifier),
            clock: t.clock,
            timeout: t.timeout,
            holding: Cell::new(0),
            group_limit: t.group_limit,
        };
        t.runtime.spawn_blocking(move || worker(ctx));
    }
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
    let first = workers.min(FIRST_WORKERS);
    // Workers finish out of order: each success goes to its record's slot (or its batch's).
    let results = Values::indexed(options.values_per_batch, options.batch_size, options.size_hint);
    let clock = MonoClock(Instant::now());
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            sched: Scheduler::new(config, clock),
            results,
            live_workers: first,
            idle_workers: 0,
            version: 0,
            error: None,
            reads_on_demand: workers == 1,
            input_asked: false,
            growth: Growth::new(),
            next_growth: GROW_EVERY,
        }),
        work_ready: Condvar::new(),
        coordinator: Condvar::new(),
        template: Template {
            runtime: runtime()?,
            func: func.clone().unbind(),
            sink: sink.clone().unbind(),
            classifier: Arc::new(classifier),
            clock,
            timeout: options.timeout,
            group_limit: options.bulk.then_some(options.batch_size),
        },
    });
    start_workers(py, &shared, first);
    let mut undelivered = Vec::new();
    let outcome = coordinate(py, source, sink, &shared, clock, options, &mut undelivered);
    // The workers are gone (coordinate waits for them); the state is ours alone now.
    let mut state = shared.state.lock();
    let State { sched, results, error, .. } = &mut *state;
    let outcome = match (outcome, error.take()) {
        (Err(err), _) | (Ok(()), Some(err)) => Err(err),
        (Ok(()), None) => Ok(()),
    };
    finish(py, sched, sink, outcome, undelivered, results)?;
    let count = sched.succeeded() as usize;
    let values = std::mem::replace(results, Values::Indexed(Vec::new()));
    summary(py, sched, values.finish(py, count)?)
}

/// The calling thread: feeds input, delivers events and progress, waits for the workers.
///
/// Events taken from the scheduler stay in `undelivered` until the recorder has them: when
/// reading the input fails first, they go out on the next turn (or in `finish`).
fn coordinate<'py>(
    py: Python<'py>,
    source: &mut Source<'py>,
    sink: &Bound<'_, PyAny>,
    shared: &Arc<Shared>,
    clock: MonoClock,
    options: &RunOptions<'py>,
    undelivered: &mut Vec<Event<Obj, Obj>>,
) -> PyResult<()> {
    let interval = options.interval;
    let mut next_progress = interval;
    let mut failure: Option<PyErr> = None;
    loop {
        let (wants, counters, batches, due, finished, released, seen, added) = {
            let mut st = shared.state.lock();
            let wants = failure.is_none() && st.wants_input();
            let added = if failure.is_none() { st.grow(clock.now()) } else { 0 };
            if st.sched.has_events() {
                let mut taken = st.sched.take_events();
                st.results.attach(&mut taken);
                undelivered.append(&mut taken);
            }
            let released = st.sched.take_released();
            // Decided here, once, so the open batches are counted (under the lock, with the
            // counters) only for a snapshot this turn hands over.
            let due = clock.now() >= next_progress;
            let snapshot = due || (options.every_batch && !undelivered.is_empty());
            let batches = open_batches(&st.sched, options.wants_progress && snapshot);
            (wants, st.sched.counters(), batches, due, st.live_workers == 0, released, st.version, added)
        };
        drop(released);
        start_workers(py, shared, added);
        let step = (|| -> PyResult<()> {
            if wants {
                // Only this thread feeds, so the next batch index cannot change in between.
                let next_batch = shared.state.lock().sched.next_batch_index();
                let batch = options.read(source, next_batch)?;
                let mut st = shared.state.lock();
                let State { sched, results, .. } = &mut *st;
                let before = sched.records_read();
                let skipped = batch.add_to(sched, options.batch_size);
                let added = (sched.records_read() - before) as usize;
                results.read_to(sched.records_read());
                drop(st);
                drop(skipped);
                let mut st = shared.state.lock();
                st.version += 1;
                // As many parked workers as there are new records, not all of them.
                let wake = st.idle_workers.min(added);
                drop(st);
                for _ in 0..wake {
                    shared.work_ready.notify_one();
                }
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
    // A breaker that counts slow calls (`slow_call_s`): each call's time decides.
    let slow_call_s = shared.state.lock().sched.slow_call_s();
    loop {
        let mut st = shared.state.lock();
        let work: PyWork = match st.sched.next_work() {
            Next::Run(work) => {
                ctx.holding.set(1);
                st.input_asked = false;
                pass_on_wake(shared, &mut st);
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
        let adapts = st.sched.adapts();
        drop(st);
        let started = Instant::now();
        let outcome = match call_timed(func, work.record.bind(py), ctx.timeout) {
            Ok(value) => Outcome::Value(value.unbind()),
            Err(err) => {
                let failure = failure_of(py, err, &ctx.classifier, sink);
                if !failure.interrupted && !keep_traceback {
                    strip_traceback(failure.error.bind(py));
                }
                let overloaded = adapts && !failure.interrupted && is_overload(py, failure.error.bind(py));
                Outcome::Failed(failure, overloaded)
            }
        };
        let took = started.elapsed().as_secs_f64();
        panic_if_armed(work.index);
        let mut st = shared.state.lock();
        ctx.holding.set(0);
        st.growth.record(took);
        let slow = slow_call_s.is_some_and(|limit| took > limit);
        let mut done: Option<PyWork> = None;
        let mut surplus_error: Option<PyErr> = None;
        match outcome {
            Outcome::Value(value) => {
                store(&mut st.results, work.index, value);
                if slow {
                    st.sched.slow_call();
                }
                done = Some(st.sched.succeed(work));
            }
            Outcome::Failed(failure, _) if failure.interrupted => {
                st.sched.abandon(work);
                surplus_error = stop_with(&mut st, PyErr::from_value(failure.error.into_bound(py)));
            }
            Outcome::Failed(failure, overloaded) => {
                if overloaded {
                    st.sched.overloaded(&work);
                }
                if slow {
                    st.sched.slow_call();
                }
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
///
/// Workers are woken one at a time, and only when something is queued (see [`wake_one`]).
/// Waking every parked worker on every completion was the cliff at concurrency 1024 (issue 11
/// item 6): once the input ran dry ~1000 workers were parked, so each of the last ~1000
/// completions woke them all, and each had to take the GIL back only to park again, about a
/// million GIL hand-offs per run (5k records/s against 56k at 256). The run's end needs no
/// broadcast here: the worker that finds it done wakes the rest as it leaves (`worker`).
#[inline]
pub(super) fn handed_back(shared: &Shared, mut st: MutexGuard<'_, State>) {
    let wake_coordinator = st.sched.has_events() || st.wants_input() || st.sched.stop_reason().is_some();
    let wake_worker = wake_one(&mut st);
    let released = if st.sched.has_released() { st.sched.take_released() } else { Vec::new() };
    drop(st);
    if wake_coordinator {
        shared.coordinator.notify_one();
    }
    if wake_worker {
        shared.work_ready.notify_one();
    }
    drop(released);
}

/// Should one parked worker wake (then call `notify_one` once the lock is let go)? Only if one
/// is parked and something is queued for it to run, or to set a timer for (a retry's delay).
/// Bumping `version` also sends back any worker that counted itself idle but is not waiting
/// yet, so no wake-up is missed.
#[inline]
fn wake_one(st: &mut State) -> bool {
    let wake = st.idle_workers > 0 && st.has_queued();
    if wake {
        st.version += 1;
    }
    wake
}

/// A worker took work and more is queued: pass the wake on to one more parked worker, so a
/// change that queues many records at once (a retry wave, a breaker closing) wakes as many
/// workers as it needs, one after another, instead of all of them at once.
#[inline]
pub(super) fn pass_on_wake(shared: &Shared, st: &mut State) {
    if wake_one(st) {
        shared.work_ready.notify_one();
    }
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

/// Wait, without the GIL, until the state changes (`version`), `until` passes, or
/// [`IDLE_RECHECK`] elapses. The worker counts itself idle before it lets the lock go, so a
/// completion in between sees it and bumps `version` (no missed wakeup).
///
/// Unlike the coordinator, a worker does not take the GIL back every MAX_WAIT to look for a
/// Ctrl-C: it never runs on the main thread, where alone CPython runs signal handlers, and the
/// coordinator wakes every worker when it stops the run (`stop_workers`). At concurrency 1024,
/// 1000 idle workers polling the GIL every 50 ms cost 20k GIL hand-offs a second.
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
    let wait = park_for(clock, until);
    let deadline = Instant::now() + wait;
    let unpark = || {
        let mut st = shared.state.lock();
        while st.version == seen && !shared.work_ready.wait_until(&mut st, deadline).timed_out() {}
        st.idle_workers -= 1;
    };
    // A timer already due: nothing to wait for, so the GIL stays.
    if wait.is_zero() {
        unpark();
    } else {
        py.detach(unpark);
    }
    py.check_signals()
}

#[cfg(test)]
mod tests;
