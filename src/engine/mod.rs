//! The run loop's brain: which record runs next, what a failure leads to, when a batch is done.
//!
//! [`Scheduler`] is a state machine with no I/O and no threads. A driver (the Python bindings,
//! or a test) asks it for work, runs the callback, and reports the outcome. It never drops a
//! record or an error itself: everything it lets go of is handed back (in events, or through
//! [`Scheduler::take_released`]), so a driver can decide where Python objects die — never
//! while it holds a lock another thread may wait for with the GIL.
//!
//! It mirrors `batchguard.reference.Scheduler` decision for decision, part for part (each part
//! below has a Python twin of the same name in `python/batchguard/reference/`); the
//! differential tests hold the two engines to the same outcomes. Each part owns its state and
//! lives in its own module, so a feature changes the part it is about:
//!
//! - `fresh`: the input read so far and the records not started yet, in input order;
//! - `keys`: keyed ordering (`key_of`), one record per key at a time;
//! - `retries`: failed records waiting for their next try, due or parked on a timer;
//! - `batches`: the open batches, their accounting, and the event when one ends;
//! - `gates`: what may hold a start back (breaker, rate limit, delay between batches) and the
//!   error budget that stops the run.
//!
//! Priorities, in order: nothing starts once the run is stopping; nothing starts while the
//! breaker is open; retries that are due run before new records; new records run in input
//! order; more input is wanted when fewer than `concurrency` new records are queued.

mod adaptive;
mod batches;
mod budget;
mod config;
mod fresh;
mod gates;
mod keys;
mod observed;
mod reading;
mod retries;

pub use adaptive::{Adaptive, AdaptivePolicy};
use batches::Batches;
pub use batches::{BatchCounts, BatchDone, Dead};
pub use budget::{BudgetPolicy, OverBudget, RetryBudget};
pub use config::{Budget, Config, StopReason};
use fresh::Fresh;
use gates::Gates;
pub use gates::{Steering, MIN_RATE_SAMPLE};
use keys::Keys;
use observed::RetryEvents;
pub use observed::{Retried, Share};
pub use retries::Attempt;
use retries::{Retries, RetryState};

use crate::breaker::State as BreakerState;
use crate::classify::{ErrorClass, Verdict};

/// A record's ordering key as the driver computed it (`key_of`).
#[derive(Debug)]
pub enum Key<E> {
    /// No ordering constraint.
    Free,
    /// Runs after every earlier record with the same key is final.
    Is(u64),
    /// Computing the key raised this: the record is dead-lettered with it, never run.
    Failed(E),
}

/// Monotonic seconds. Read only when a decision needs the time.
pub trait Clock {
    fn now(&self) -> f64;

    /// Wall-clock seconds since the Unix epoch, for the record of when something failed.
    fn wall(&self) -> f64 {
        0.0
    }
}

/// One attempt of one record, handed to a worker and handed back with its outcome.
#[derive(Debug)]
pub struct Work<T, E> {
    pub index: u64,
    pub batch: u64,
    pub attempt: u32,
    generation: u64,
    /// Its number among the calls started, when concurrency adapts (0 otherwise).
    call: u64,
    pub record: T,
    /// Records with the same key run one at a time, in input order (`key_of`).
    key: Option<u64>,
    /// Present once the record has failed: its history and its backoff stream.
    retry: Option<Box<RetryState<E>>>,
}

impl<T, E> Work<T, E> {
    /// Calls `record` on the record and `error` on each error of its history.
    pub fn visit<X>(
        &self,
        mut record: impl FnMut(&T) -> Result<(), X>,
        mut error: impl FnMut(&E) -> Result<(), X>,
    ) -> Result<(), X> {
        record(&self.record)?;
        if let Some(retry) = &self.retry {
            retry.history.iter().try_for_each(|a| error(&a.error))?;
        }
        Ok(())
    }
}

/// Why [`Scheduler::stream`] handed control back.
#[derive(Debug)]
pub enum Streamed<T, E> {
    /// It ran this many records (all succeeded); ask [`Scheduler::next_work`] what comes next.
    Paused(usize),
    /// A record failed: report it with [`Scheduler::fail`] (or `abandon`), as for any work.
    Failed(Work<T, E>, Failure<E>),
}

/// A failed call, as the driver's callback reports it to [`Scheduler::stream`].
#[derive(Debug)]
pub struct Failure<E> {
    /// The error class and the retry policy it is under.
    pub class: Verdict,
    pub error: E,
    pub retry_after: Option<f64>,
    pub wall: f64,
    /// The callback did not fail but was interrupted: the record is abandoned, not failed.
    pub interrupted: bool,
}

#[derive(Debug)]
pub enum Event<T, E> {
    Batch(BatchDone<T, E>),
    Breaker { at: f64, from: BreakerState, to: BreakerState },
    Retry(Retried<T, E>),
}

#[derive(Clone, Copy)]
enum Queue {
    Ready,
    Unblocked,
    Fresh,
}

/// What [`Scheduler::next_group`] hands out.
#[derive(Debug)]
pub enum NextGroup<T, E> {
    Run(Vec<Work<T, E>>),
    Other(Next<T, E>),
}

#[derive(Debug)]
pub enum Next<T, E> {
    Run(Work<T, E>),
    /// Read the next batch of input and pass it to [`Scheduler::add_batch`].
    Feed,
    /// Nothing can start: wait until this time, or (None) until an outcome arrives.
    Wait(Option<f64>),
    Done,
}

/// Progress counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counters {
    pub succeeded: u64,
    pub failed: u64,
    pub retrying: usize,
    pub in_flight: usize,
    pub queued: usize,
    pub batches_completed: u64,
    pub current_batch: u64,
    pub breaker_state: BreakerState,
    pub records_read: u64,
    /// The adaptive concurrency limit now (None: a fixed concurrency).
    pub concurrency_limit: Option<usize>,
}

/// The scheduler: a composition of its parts, each of which owns its state —
/// `Fresh` (the input and its unstarted records), `Keys` (keyed ordering), `Retries`
/// (the retry queue and its timers), `Batches` (the open batches and their accounting) and
/// `Gates` (breaker, rate limit, delay between batches, error budget). What is left here is
/// the run's own state: how it stops, what is in flight, the totals, and what the driver is
/// handed back.
pub struct Scheduler<T, E, C> {
    config: Config,
    clock: C,
    started_at: f64,
    fresh: Fresh<T>,
    keys: Keys<T, E>,
    retries: Retries<T, E>,
    batches: Batches<T, E>,
    gates: Gates,
    /// Batch ends and breaker transitions, for the driver ([`take_events`](Self::take_events)).
    events: Vec<Event<T, E>>,
    /// Retries not handed over yet: they join `events` before the next batch end or transition.
    retried: RetryEvents<T, E>,
    /// Pending records let go of, for the driver to drop ([`take_released`](Self::take_released)).
    released: Vec<Work<T, E>>,
    stop: Option<StopReason>,
    in_flight: usize,
    succeeded: u64,
    failed: u64,
    current_batch: u64,
    /// Dead-lettered records that may still keep their traceback.
    traceback_budget: u64,
}

impl<T, E, C: Clock> Scheduler<T, E, C> {
    pub fn new(config: Config, clock: C) -> Self {
        let started_at = clock.now();
        Self {
            gates: Gates::new(&config, started_at),
            traceback_budget: config.traceback_limit,
            retried: RetryEvents::new(config.collect_retries),
            retries: Retries::new(&config),
            config,
            clock,
            started_at,
            fresh: Fresh::new(),
            keys: Keys::new(),
            batches: Batches::new(),
            events: Vec::new(),
            released: Vec::new(),
            stop: None,
            in_flight: 0,
            succeeded: 0,
            failed: 0,
            current_batch: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    // ------------------------------------------------------------------ input

    pub fn wants_input(&self) -> bool {
        self.stop.is_none() && self.fresh.wants_input(self.config.concurrency)
    }

    /// Queue one batch of new records, in input order.
    pub fn add_batch(&mut self, records: impl ExactSizeIterator<Item = T>) {
        let (size, first) = (records.len(), self.fresh.records_read());
        let batch = self.fresh.push(records);
        self.batches.open(batch, first, size, self.clock.now());
    }

    /// Queue one batch whose records carry ordering keys (`key_of`).
    pub fn add_batch_keyed(&mut self, records: impl ExactSizeIterator<Item = (T, Key<E>)>) {
        let first = self.fresh.records_read();
        let size = records.len();
        let mut plain = Vec::with_capacity(size);
        let mut keys = Vec::with_capacity(size);
        for (offset, (record, key)) in records.enumerate() {
            keys.push(match key {
                Key::Free => None,
                Key::Is(key) => Some(key),
                Key::Failed(error) => {
                    self.keys.key_failed(first + offset as u64, error);
                    None
                }
            });
            plain.push(record);
        }
        self.fresh.push_keys(keys);
        self.add_batch(plain.into_iter());
    }

    /// The next batch of input was finished by an earlier run (a resumed job): account for
    /// its `size` records' indices without running them.
    pub fn skip_batch(&mut self, size: usize) {
        self.fresh.skip(size);
    }

    /// The index the next batch of input will get.
    pub fn next_batch_index(&self) -> u64 {
        self.fresh.next_batch_index()
    }

    /// Records that belonged to skipped batches.
    pub fn skipped_records(&self) -> u64 {
        self.fresh.skipped_records()
    }

    pub fn end_of_input(&mut self) {
        self.fresh.end_of_input();
    }

    // ------------------------------------------------------------------ scheduling

    pub fn next_work(&mut self) -> Next<T, E> {
        if self.stop.is_some() {
            return if self.in_flight == 0 { Next::Done } else { Next::Wait(None) };
        }
        if self.gates.has_breaker() {
            let gate = self.gates.pass_breaker(&self.clock);
            self.take_breaker_transitions();
            if let Err(until) = gate {
                return Next::Wait(until);
            }
        }
        if self.gates.steers() && self.in_flight >= self.gates.concurrency_limit() {
            return Next::Wait(None);
        }
        self.retries.release_due(&self.clock);
        let source = loop {
            if self.retries.has_ready() && self.gates.pass_budget(&self.clock) {
                break Queue::Ready;
            }
            if self.keys.has_unblocked() {
                break Queue::Unblocked;
            }
            if self.fresh.is_empty() {
                return self.idle(self.retries.has_ready());
            }
            if let Some(error) = self.keys.take_error(self.fresh.head_index()) {
                let work = self.fresh.pop().expect("not empty");
                self.key_failed(work, error);
                continue;
            }
            if let Some(key) = self.fresh.head_key() {
                if self.keys.is_active(key) {
                    self.keys.wait(self.fresh.pop().expect("not empty"));
                    continue;
                }
            }
            if let Some(until) = self.gates.batch_delay(self.fresh.head_batch(), &self.clock) {
                return Next::Wait(Some(until));
            }
            break Queue::Fresh;
        };
        if let Some(until) = self.gates.pass_rate(&self.clock) {
            return Next::Wait(Some(until));
        }
        let mut work = match source {
            Queue::Ready => {
                let work = self.retries.pop_ready().expect("not empty");
                self.gates.retry_started(self.retries.has_ready(), &self.clock);
                self.batches.retried(work.batch);
                work
            }
            Queue::Unblocked => self.keys.pop_unblocked().expect("not empty"),
            Queue::Fresh => {
                let work = self.fresh.pop().expect("not empty");
                if let Some(key) = work.key {
                    self.keys.activate(key);
                }
                self.gates.fresh_started(work.batch, &self.clock);
                work
            }
        };
        self.launch(&mut work);
        self.current_batch = work.batch;
        Next::Run(work)
    }

    /// Nothing is queued but retries the budget holds back (`held`): read more input, wait
    /// for a parked retry, the budget or an outcome, or finish.
    fn idle(&self, held: bool) -> Next<T, E> {
        if !self.fresh.exhausted() {
            Next::Feed
        } else if held {
            let freed = self.gates.budget_frees_at();
            Next::Wait(Some(self.retries.next_due().map_or(freed, |due| due.min(freed))))
        } else if let Some(due) = self.retries.next_due() {
            Next::Wait(Some(due))
        } else if self.in_flight > 0 {
            Next::Wait(None)
        } else {
            Next::Done
        }
    }

    /// `work` starts: it belongs to the breaker's current generation, and is in flight.
    #[inline]
    fn launch(&mut self, work: &mut Work<T, E>) {
        if let Some(generation) = self.gates.started() {
            work.generation = generation;
        }
        if self.gates.steers() {
            work.call = self.gates.call_started(work.attempt, &self.clock);
        }
        self.in_flight += 1;
    }

    /// Bulk mode: like [`next_work`](Self::next_work), but a new record comes with the rest
    /// of its batch's new records (up to `limit`), to run in one call. Retries come alone.
    pub fn next_group(&mut self, limit: usize) -> NextGroup<T, E> {
        let first = match self.next_work() {
            Next::Run(work) => work,
            other => return NextGroup::Other(other),
        };
        if first.attempt != 1 {
            return NextGroup::Run(vec![first]);
        }
        let batch = first.batch;
        let mut group = vec![first];
        while group.len() < limit && self.fresh.head_batch() == Some(batch) {
            let mut work = self.fresh.pop().expect("a batch with fresh records");
            self.launch(&mut work);
            group.push(work);
        }
        NextGroup::Run(group)
    }

    /// The fast path: run fresh records through `call` for as long as nothing else has
    /// priority — the run is not stopping, no gate could hold a record back, no retry or keyed
    /// record is waiting — up to the end of the current batch or `limit` records. Outcomes and
    /// accounting are exactly those of [`next_work`](Self::next_work) followed by
    /// [`succeed`](Self::succeed) for each record, done in bulk.
    ///
    /// `call(index, record)` returns `Ok(more)` once it has taken care of a success (the record
    /// is then dropped by it; `more == false` pauses the stream after it, so a driver can
    /// report progress on time), or the record back with its failure.
    pub fn stream<F>(&mut self, limit: usize, call: F) -> Streamed<T, E>
    where
        F: FnMut(u64, &T) -> Result<bool, Failure<E>>,
    {
        if self.stop.is_some()
            || !self.retries.is_empty()
            || self.keys.has_unblocked()
            || self.fresh.has_keys()
            || !self.gates.open_for_streams()
        {
            return Streamed::Paused(0);
        }
        let Some(batch) = self.fresh.head_batch() else { return Streamed::Paused(0) };
        let generation = self.gates.started().unwrap_or(0);
        self.current_batch = batch;
        let (done, failure) = self.fresh.stream(limit, call);
        if done > 0 {
            self.succeeded += done as u64;
            self.gates.record_successes(generation, done);
            if self.batches.succeeded(batch, done) {
                self.close_batch(batch);
            }
        }
        match failure {
            None => Streamed::Paused(done),
            Some(failure) => {
                let mut work = self.fresh.pop().expect("the failed record is still queued");
                self.launch(&mut work);
                Streamed::Failed(work, failure)
            }
        }
    }

    // ------------------------------------------------------------------ outcomes

    /// The attempt succeeded. Returns the record, for the driver to release.
    #[inline]
    pub fn succeed(&mut self, work: Work<T, E>) -> Work<T, E> {
        self.in_flight -= 1;
        if self.gates.has_breaker() {
            self.record_breaker(work.generation, false);
        }
        if self.gates.steers() {
            self.gates.call_succeeded(self.in_flight + 1);
        }
        self.succeeded += 1;
        if let Some(key) = work.key {
            self.keys.release(key);
        }
        if self.batches.succeeded(work.batch, 1) {
            self.close_batch(work.batch);
        }
        work
    }

    /// Should the driver keep the traceback of the failure it is about to report?
    pub fn keep_tracebacks(&self) -> bool {
        self.traceback_budget > 0
    }

    /// The attempt failed with an error of `class` (an [`ErrorClass`], under the default
    /// retry policy, or a [`Verdict`] naming its policy).
    pub fn fail(
        &mut self,
        mut work: Work<T, E>,
        class: impl Into<Verdict>,
        error: E,
        retry_after: Option<f64>,
        wall: f64,
    ) where
        T: Share,
        E: Share,
    {
        let Verdict { class, policy } = class.into();
        self.in_flight -= 1;
        if let Some(counted) = self.gates.breaker_counts(class) {
            self.record_breaker(work.generation, counted);
        }
        work.push_failure(error, wall);
        if class == ErrorClass::Fatal {
            self.halt(StopReason::Fatal);
            self.dead_letter(work, class);
        } else if class == ErrorClass::Permanent || work.attempt >= retries::max_attempts(&self.config, policy) {
            self.dead_letter(work, class);
        } else if self.stop.is_some() {
            self.pending(work);
        } else {
            // Before the delay: a refused retry keeps no delay on its last attempt (that marks
            // a max_elapsed cut), and the budget is asked first, as in the reference engine.
            if !self.gates.retry_within_budget(&self.clock) {
                return self.dead_letter_as(work, class, true);
            }
            let Ok(delay) = self.retries.delay_for(&mut work, class, policy, retry_after, &self.config, &self.clock)
            else {
                return self.dead_letter(work, class); // past the policy's max_elapsed
            };
            self.batches.retry_scheduled(work.batch);
            let shared = self.retried.enabled.then(|| (work.record.share(), work.last_error().share()));
            let (index, batch, attempt) = (work.index, work.batch, work.attempt);
            self.retries.schedule(work, delay, &self.clock);
            if let Some((record, error)) = shared {
                self.retried.push(Retried { index, batch, attempt, class, delay, record, error });
            }
        }
    }

    /// An attempt in flight was lost with its work (the worker running it died): the run
    /// stops, and its record stays unfinished in its batch, so `close` counts it pending.
    pub fn lose_in_flight(&mut self) {
        self.in_flight -= 1;
        self.halt(StopReason::Interrupt);
    }

    /// The attempt never finished (the run was interrupted): the record is pending.
    pub fn abandon(&mut self, work: Work<T, E>) {
        self.in_flight -= 1;
        self.pending(work);
    }

    fn pending(&mut self, work: Work<T, E>) {
        if let Some(key) = work.key {
            self.keys.release(key);
        }
        self.released.push(work);
    }

    /// Stop the run: nothing new starts; what is in flight finishes.
    pub fn interrupt(&mut self) {
        self.halt(StopReason::Interrupt);
    }

    fn halt(&mut self, reason: StopReason) {
        if self.stop.is_none() {
            self.stop = Some(reason);
        }
    }

    fn record_breaker(&mut self, generation: u64, failed: bool) {
        let abort = self.gates.record(generation, failed, &self.clock);
        self.take_breaker_transitions();
        if abort {
            self.halt(StopReason::BreakerAbort);
        }
    }

    fn take_breaker_transitions(&mut self) {
        let at = self.events.len();
        self.gates.take_transitions(self.started_at, &mut self.events);
        if self.events.len() > at {
            self.retried.flush_into(&mut self.events, at);
        }
    }

    /// Computing the record's key raised `error`: it is dead-lettered with it, never run.
    fn key_failed(&mut self, mut work: Work<T, E>, error: E) {
        let wall = self.clock.wall();
        work.push_failure(error, wall);
        self.dead_letter(work, ErrorClass::Permanent);
    }

    fn dead_letter(&mut self, work: Work<T, E>, class: ErrorClass) {
        self.dead_letter_as(work, class, false);
    }

    /// `over_budget`: the retry budget refused the record's retry.
    fn dead_letter_as(&mut self, work: Work<T, E>, class: ErrorClass, over_budget: bool) {
        if let Some(key) = work.key {
            self.keys.release(key);
        }
        self.traceback_budget = self.traceback_budget.saturating_sub(1);
        self.failed += 1;
        let Work { index, batch, record, retry, .. } = work;
        let attempts = retry.map_or_else(Vec::new, |r| r.history);
        if self.batches.dead_lettered(Dead { index, batch, record, class, attempts, over_budget }) {
            self.close_batch(batch);
        }
        if self.stop.is_none() && self.gates.over_budget(self.succeeded, self.failed) {
            self.halt(StopReason::MaxFailures);
        }
    }

    fn close_batch(&mut self, batch: u64) {
        let done = self.batches.close(batch, self.clock.now());
        let at = self.events.len();
        self.retried.flush_into(&mut self.events, at);
        self.events.push(Event::Batch(done));
    }

    /// End of run: report every unfinished batch with its pending count, release every queued
    /// record, and return how many records that were read are pending.
    pub fn close(&mut self) -> u64 {
        let mut unfinished = 0;
        let at = self.events.len();
        self.retried.flush_into(&mut self.events, at);
        for done in self.batches.close_all(self.clock.now()) {
            unfinished += done.pending as u64;
            self.events.push(Event::Batch(done));
        }
        self.fresh.drain_into(&mut self.released);
        self.retries.drain_into(&mut self.released);
        self.keys.drain_into(&mut self.released);
        unfinished
    }

    /// Calls `record` and `error` on every record and error the scheduler holds (queued,
    /// parked, dead-lettered in open batches, released, in undelivered events): what a
    /// garbage collector must see of a driver that keeps a scheduler.
    pub fn visit<X>(
        &self,
        mut record: impl FnMut(&T) -> Result<(), X>,
        mut error: impl FnMut(&E) -> Result<(), X>,
    ) -> Result<(), X> {
        self.fresh.records().try_for_each(&mut record)?;
        for work in self.retries.works().chain(self.keys.works()).chain(&self.released) {
            work.visit(&mut record, &mut error)?;
        }
        self.keys.errors().try_for_each(&mut error)?;
        let dead_in_events = self.events.iter().flat_map(|event| match event {
            Event::Batch(b) => b.dead.as_slice(),
            Event::Breaker { .. } | Event::Retry(_) => &[],
        });
        let retried = self.events.iter().filter_map(|event| match event {
            Event::Retry(r) => Some(r),
            _ => None,
        });
        for r in retried.chain(self.retried.iter()) {
            record(&r.record)?;
            error(&r.error)?;
        }
        for dead in self.batches.dead().chain(dead_in_events) {
            record(&dead.record)?;
            dead.attempts.iter().try_for_each(|a| error(&a.error))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
