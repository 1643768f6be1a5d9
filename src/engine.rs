//! The run loop's brain: which record runs next, what a failure leads to, when a batch is done.
//!
//! [`Scheduler`] is a state machine with no I/O and no threads. A driver (the Python bindings,
//! or a test) asks it for work, runs the callback, and reports the outcome. It never drops a
//! record or an error itself: everything it lets go of is handed back (in events, or through
//! [`Scheduler::take_released`]), so a driver can decide where Python objects die — never
//! while it holds a lock another thread may wait for with the GIL.
//!
//! It mirrors `batchguard.reference.Scheduler` decision for decision; the differential tests
//! hold the two engines to the same outcomes.
//!
//! Priorities, in order: nothing starts once the run is stopping; nothing starts while the
//! breaker is open; retries that are due run before new records; new records run in input
//! order; more input is wanted when fewer than `concurrency` new records are queued.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::backoff::{Backoff, RetryPolicy};
use crate::breaker::{Breaker, BreakerPolicy, State as BreakerState};
use crate::classify::ErrorClass;
use crate::ratelimit::{RateLimit, TokenBucket};

/// A rate error budget is judged only once this many records are final.
pub const MIN_RATE_SAMPLE: u64 = 10;

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

/// The error budget (`max_failures`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Stop when more than this many records are dead-lettered.
    Count(u64),
    /// Stop when more than this share of the finished records are dead-lettered.
    Rate(f64),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub batch_size: usize,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub breaker: Option<BreakerPolicy>,
    pub max_failures: Option<Budget>,
    pub seed: u64,
    /// Dead-lettered records whose exceptions keep a traceback; later ones drop it.
    pub traceback_limit: u64,
    /// Seconds between progress reports (besides the one at every batch end).
    pub progress_interval: f64,
    /// Attempts start at most this fast, shared by all workers.
    pub rate_limit: Option<RateLimit>,
    /// The first record of a batch starts at least this long after the previous batch's last
    /// new record started.
    pub delay_between_batches: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Fatal,
    MaxFailures,
    BreakerAbort,
    Interrupt,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::MaxFailures => "max_failures",
            Self::BreakerAbort => "breaker_abort",
            Self::Interrupt => "interrupt",
        }
    }
}

/// One failed try.
#[derive(Debug)]
pub struct Attempt<E> {
    pub attempt: u32,
    /// Wall-clock time of the failure (seconds since the Unix epoch).
    pub wall: f64,
    pub error: E,
    /// The wait before the next try; None when there was none.
    pub delay: Option<f64>,
}

/// One attempt of one record, handed to a worker and handed back with its outcome.
#[derive(Debug)]
pub struct Work<T, E> {
    pub index: u64,
    pub batch: u64,
    pub attempt: u32,
    generation: u64,
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

#[derive(Debug)]
struct RetryState<E> {
    history: Vec<Attempt<E>>,
    backoff: Option<Backoff>,
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
    pub class: ErrorClass,
    pub error: E,
    pub retry_after: Option<f64>,
    pub wall: f64,
    /// The callback did not fail but was interrupted: the record is abandoned, not failed.
    pub interrupted: bool,
}

/// A record that failed for good.
#[derive(Debug)]
pub struct Dead<T, E> {
    pub index: u64,
    pub batch: u64,
    pub record: T,
    pub class: ErrorClass,
    pub attempts: Vec<Attempt<E>>,
}

#[derive(Debug)]
pub struct BatchDone<T, E> {
    pub index: u64,
    pub size: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub retries: usize,
    pub duration: f64,
    /// Records of this batch left unfinished because the run stopped.
    pub pending: usize,
    pub dead: Vec<Dead<T, E>>,
}

#[derive(Debug)]
pub enum Event<T, E> {
    Batch(BatchDone<T, E>),
    Breaker { at: f64, from: BreakerState, to: BreakerState },
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
}

struct BatchState<T, E> {
    size: usize,
    remaining: usize,
    succeeded: usize,
    failed: usize,
    retries: usize,
    started: f64,
    dead: Vec<Dead<T, E>>,
}

struct Parked<T, E> {
    due: f64,
    seq: u64,
    work: Work<T, E>,
}

impl<T, E> PartialEq for Parked<T, E> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T, E> Eq for Parked<T, E> {}
impl<T, E> PartialOrd for Parked<T, E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T, E> Ord for Parked<T, E> {
    // BinaryHeap is a max-heap: reverse, so the earliest (due, seq) is on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.due.total_cmp(&self.due).then_with(|| other.seq.cmp(&self.seq))
    }
}

pub struct Scheduler<T, E, C> {
    config: Config,
    clock: C,
    breaker: Option<Breaker>,
    /// Records read but never started, in input order; the first has index `fresh_index`.
    fresh: VecDeque<T>,
    fresh_index: u64,
    /// (batch, first index, first index past it) of the batches that still have fresh
    /// records; skipped batches leave gaps between them.
    fresh_batches: VecDeque<(u64, u64, u64)>,
    /// Keys of the fresh records, parallel to `fresh` (empty when no record has a key).
    fresh_keys: VecDeque<Option<u64>>,
    ready: VecDeque<Work<T, E>>,
    /// Keyed records whose turn came (their key's previous record is final).
    unblocked: VecDeque<Work<T, E>>,
    /// key -> records of that key waiting for the one in progress; present while active.
    active_keys: HashMap<u64, VecDeque<Work<T, E>>>,
    key_errors: HashMap<u64, E>,
    rate: Option<TokenBucket>,
    last_fresh_batch: Option<u64>,
    last_fresh_at: f64,
    parked: BinaryHeap<Parked<T, E>>,
    seq: u64,
    /// Open batches, indexed by `batch - first_batch`; finished ones become None.
    batches: VecDeque<Option<BatchState<T, E>>>,
    first_batch: u64,
    released: Vec<Work<T, E>>,
    events: Vec<Event<T, E>>,
    next_index: u64,
    next_batch: u64,
    skipped_records: u64,
    exhausted: bool,
    stop: Option<StopReason>,
    in_flight: usize,
    succeeded: u64,
    failed: u64,
    retries: u64,
    batches_completed: u64,
    current_batch: u64,
    traceback_budget: u64,
    started_at: f64,
}

impl<T, E, C: Clock> Scheduler<T, E, C> {
    pub fn new(config: Config, clock: C) -> Self {
        let started_at = clock.now();
        let rate = config.rate_limit.clone().map(|limit| TokenBucket::new(limit, started_at));
        Self {
            breaker: config.breaker.clone().map(Breaker::new),
            traceback_budget: config.traceback_limit,
            config,
            clock,
            fresh: VecDeque::new(),
            fresh_index: 0,
            fresh_batches: VecDeque::new(),
            fresh_keys: VecDeque::new(),
            ready: VecDeque::new(),
            unblocked: VecDeque::new(),
            active_keys: HashMap::new(),
            key_errors: HashMap::new(),
            rate,
            last_fresh_batch: None,
            last_fresh_at: started_at,
            parked: BinaryHeap::new(),
            seq: 0,
            batches: VecDeque::new(),
            first_batch: 0,
            released: Vec::new(),
            events: Vec::new(),
            next_index: 0,
            next_batch: 0,
            skipped_records: 0,
            exhausted: false,
            stop: None,
            in_flight: 0,
            succeeded: 0,
            failed: 0,
            retries: 0,
            batches_completed: 0,
            current_batch: 0,
            started_at,
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
        !self.exhausted && self.stop.is_none() && self.fresh.len() < self.config.concurrency
    }

    /// Queue one batch of new records, in input order.
    pub fn add_batch(&mut self, records: impl ExactSizeIterator<Item = T>) {
        let batch = self.next_batch;
        self.next_batch += 1;
        let size = records.len();
        if self.batches.is_empty() {
            self.first_batch = batch;
        }
        while self.first_batch + (self.batches.len() as u64) < batch {
            self.batches.push_back(None); // a skipped batch's slot
        }
        self.batches.push_back(Some(BatchState {
            size,
            remaining: size,
            succeeded: 0,
            failed: 0,
            retries: 0,
            started: self.clock.now(),
            dead: Vec::new(),
        }));
        if self.fresh.is_empty() {
            self.fresh_index = self.next_index;
        }
        self.fresh.extend(records);
        let start = self.next_index;
        self.next_index += size as u64;
        self.fresh_batches.push_back((batch, start, self.next_index));
    }

    /// Queue one batch whose records carry ordering keys (`key_of`).
    pub fn add_batch_keyed(&mut self, records: impl ExactSizeIterator<Item = (T, Key<E>)>) {
        let first = self.next_index;
        let size = records.len();
        // Keep `fresh_keys` parallel to `fresh` (earlier unkeyed records get None).
        let missing = self.fresh.len() - self.fresh_keys.len();
        self.fresh_keys.extend(std::iter::repeat_n(None, missing));
        let mut plain = Vec::with_capacity(size);
        for (offset, (record, key)) in records.enumerate() {
            let key = match key {
                Key::Free => None,
                Key::Is(key) => Some(key),
                Key::Failed(error) => {
                    self.key_errors.insert(first + offset as u64, error);
                    None
                }
            };
            self.fresh_keys.push_back(key);
            plain.push(record);
        }
        self.add_batch(plain.into_iter());
    }

    /// The front fresh batch is used up: move the cursor to the next one (past any gap).
    fn next_fresh_batch(&mut self) {
        self.fresh_batches.pop_front();
        if let Some(&(_, start, _)) = self.fresh_batches.front() {
            self.fresh_index = start;
        }
    }

    /// Take the next fresh record as work (the caller counts it in flight).
    #[inline]
    fn pop_fresh(&mut self) -> Option<Work<T, E>> {
        let record = self.fresh.pop_front()?;
        let index = self.fresh_index;
        self.fresh_index += 1;
        let &(batch, _, end) = self.fresh_batches.front().expect("fresh records belong to a batch");
        if self.fresh_index == end {
            self.next_fresh_batch();
        }
        let key = if self.fresh_keys.is_empty() { None } else { self.fresh_keys.pop_front().flatten() };
        Some(Work { index, batch, attempt: 1, generation: 0, record, key, retry: None })
    }

    /// The next batch of input was finished by an earlier run (a resumed job): account for
    /// its `size` records' indices without running them.
    pub fn skip_batch(&mut self, size: usize) {
        self.next_batch += 1;
        self.next_index += size as u64;
        self.skipped_records += size as u64;
    }

    /// The index the next batch of input will get.
    pub fn next_batch_index(&self) -> u64 {
        self.next_batch
    }

    /// Records that belonged to skipped batches.
    pub fn skipped_records(&self) -> u64 {
        self.skipped_records
    }

    pub fn end_of_input(&mut self) {
        self.exhausted = true;
    }

    // ------------------------------------------------------------------ scheduling

    pub fn next_work(&mut self) -> Next<T, E> {
        if self.stop.is_some() {
            return if self.in_flight == 0 { Next::Done } else { Next::Wait(None) };
        }
        if let Some(breaker) = self.breaker.as_mut() {
            let clock = &self.clock;
            let gate = breaker.gate(|| clock.now());
            self.take_breaker_transitions();
            if let Err(until) = gate {
                return Next::Wait(until);
            }
        }
        if let Some(top) = self.parked.peek() {
            let now = self.clock.now();
            if top.due <= now {
                while self.parked.peek().is_some_and(|p| p.due <= now) {
                    let parked = self.parked.pop().expect("peeked");
                    self.ready.push_back(parked.work);
                }
            }
        }
        let source = loop {
            if !self.ready.is_empty() {
                break Queue::Ready;
            }
            if !self.unblocked.is_empty() {
                break Queue::Unblocked;
            }
            if !self.fresh.is_empty() {
                let head = self.fresh_index;
                if !self.key_errors.is_empty() && self.key_errors.contains_key(&head) {
                    let work = self.pop_fresh().expect("not empty");
                    self.key_failed(work);
                    continue;
                }
                if let Some(Some(key)) = self.fresh_keys.front() {
                    if self.active_keys.contains_key(key) {
                        let work = self.pop_fresh().expect("not empty");
                        let key = work.key.expect("keyed");
                        self.active_keys.get_mut(&key).expect("active").push_back(work);
                        continue;
                    }
                }
                if self.config.delay_between_batches > 0.0 {
                    if let (Some(last), Some(&(batch, _, _))) = (self.last_fresh_batch, self.fresh_batches.front()) {
                        let until = self.last_fresh_at + self.config.delay_between_batches;
                        if batch != last && self.clock.now() < until {
                            return Next::Wait(Some(until));
                        }
                    }
                }
                break Queue::Fresh;
            }
            return if !self.exhausted {
                Next::Feed
            } else if let Some(top) = self.parked.peek() {
                Next::Wait(Some(top.due))
            } else if self.in_flight > 0 {
                Next::Wait(None)
            } else {
                Next::Done
            };
        };
        if let Some(rate) = self.rate.as_mut() {
            if let Some(until) = rate.take(self.clock.now()) {
                return Next::Wait(Some(until));
            }
        }
        let mut work = match source {
            Queue::Ready => {
                let work = self.ready.pop_front().expect("not empty");
                self.retries += 1;
                self.batch_mut(work.batch).retries += 1;
                work
            }
            Queue::Unblocked => self.unblocked.pop_front().expect("not empty"),
            Queue::Fresh => {
                let work = self.pop_fresh().expect("not empty");
                if let Some(key) = work.key {
                    self.active_keys.insert(key, VecDeque::new());
                }
                if self.config.delay_between_batches > 0.0 {
                    self.last_fresh_batch = Some(work.batch);
                    self.last_fresh_at = self.clock.now();
                }
                work
            }
        };
        if let Some(breaker) = self.breaker.as_mut() {
            work.generation = breaker.started();
        }
        self.in_flight += 1;
        self.current_batch = work.batch;
        Next::Run(work)
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
        while group.len() < limit && self.fresh_batches.front().is_some_and(|&(b, _, _)| b == batch) {
            let mut work = self.pop_fresh().expect("a batch with fresh records");
            if let Some(breaker) = self.breaker.as_mut() {
                work.generation = breaker.started();
            }
            self.in_flight += 1;
            group.push(work);
        }
        NextGroup::Run(group)
    }

    fn key_failed(&mut self, mut work: Work<T, E>) {
        let error = self.key_errors.remove(&work.index).expect("a key error");
        let wall = self.clock.wall();
        work.retry = Some(Box::new(RetryState {
            history: vec![Attempt { attempt: 1, wall, error, delay: None }],
            backoff: None,
        }));
        self.dead_letter(work, ErrorClass::Permanent);
    }

    fn release_key(&mut self, key: u64) {
        let waiting = self.active_keys.get_mut(&key).expect("a final record's key is active");
        match waiting.pop_front() {
            Some(next) => self.unblocked.push_back(next),
            None => {
                self.active_keys.remove(&key);
            }
        }
    }

    /// The fast path: run fresh records through `call` for as long as nothing else has
    /// priority — the run is not stopping, the breaker is closed, no retry is waiting — up to
    /// the end of the current batch or `limit` records. Outcomes and accounting are exactly
    /// those of [`next_work`](Self::next_work) followed by [`succeed`](Self::succeed) for
    /// each record, done in bulk.
    ///
    /// `call(index, record)` returns `Ok(more)` once it has taken care of a success (the record
    /// is then dropped by it; `more == false` pauses the stream after it, so a driver can
    /// report progress on time), or the record back with its failure.
    pub fn stream<F>(&mut self, limit: usize, mut call: F) -> Streamed<T, E>
    where
        F: FnMut(u64, &T) -> Result<bool, Failure<E>>,
    {
        if self.stop.is_some()
            || !self.ready.is_empty()
            || !self.parked.is_empty()
            || !self.unblocked.is_empty()
            || !self.fresh_keys.is_empty()
            || self.rate.is_some()
            || self.config.delay_between_batches > 0.0
            // Successes can only move a breaker whose window holds a failure: then one at a
            // time, through next_work, exactly as the reference engine does.
            || self.breaker.as_ref().is_some_and(|b| b.state() != BreakerState::Closed || b.window_failures() > 0)
        {
            return Streamed::Paused(0);
        }
        let Some(&(batch, _, end)) = self.fresh_batches.front() else { return Streamed::Paused(0) };
        let run = (end - self.fresh_index).min(limit as u64) as usize;
        let generation = self.breaker.as_mut().map_or(0, Breaker::started);
        self.current_batch = batch;
        let mut done = 0;
        let mut failure = None;
        let first = self.fresh_index;
        while done < run {
            let record = self.fresh.pop_front().expect("counted above");
            match call(first + done as u64, &record) {
                Ok(true) => done += 1,
                Ok(false) => {
                    done += 1;
                    break;
                }
                Err(f) => {
                    self.fresh.push_front(record);
                    failure = Some(f);
                    break;
                }
            }
        }
        if done > 0 {
            self.fresh_index += done as u64;
            if self.fresh_index == end {
                self.next_fresh_batch();
            }
            self.succeeded += done as u64;
            if let Some(breaker) = self.breaker.as_mut() {
                breaker.record_successes(generation, done);
            }
            let state = self.batch_mut(batch);
            state.succeeded += done;
            state.remaining -= done;
            if state.remaining == 0 {
                self.close_batch(batch);
            }
        }
        match failure {
            None => Streamed::Paused(done),
            Some(failure) => {
                let mut work = self.pop_fresh().expect("the failed record is still queued");
                if let Some(breaker) = self.breaker.as_mut() {
                    work.generation = breaker.started();
                }
                self.in_flight += 1;
                Streamed::Failed(work, failure)
            }
        }
    }

    // ------------------------------------------------------------------ outcomes

    /// The attempt succeeded. Returns the record, for the driver to release.
    #[inline]
    pub fn succeed(&mut self, work: Work<T, E>) -> Work<T, E> {
        self.in_flight -= 1;
        if self.breaker.is_some() {
            self.record_breaker(work.generation, false);
        }
        self.succeeded += 1;
        if let Some(key) = work.key {
            self.release_key(key);
        }
        let batch = work.batch;
        self.batch_mut(batch).succeeded += 1;
        self.finish(batch);
        work
    }

    /// Should the driver keep the traceback of the failure it is about to report?
    pub fn keep_tracebacks(&self) -> bool {
        self.traceback_budget > 0
    }

    /// The attempt failed with an error of `class`.
    pub fn fail(&mut self, mut work: Work<T, E>, class: ErrorClass, error: E, retry_after: Option<f64>, wall: f64) {
        self.in_flight -= 1;
        if let Some(breaker) = self.breaker.as_ref() {
            let counted = breaker.counts(class);
            self.record_breaker(work.generation, counted);
        }
        let retry = work.retry.get_or_insert_with(|| Box::new(RetryState { history: Vec::new(), backoff: None }));
        retry.history.push(Attempt { attempt: work.attempt, wall, error, delay: None });
        if class == ErrorClass::Fatal {
            self.halt(StopReason::Fatal);
            self.dead_letter(work, class);
            return;
        }
        if class == ErrorClass::Permanent || work.attempt >= self.config.retry.max_attempts() {
            self.dead_letter(work, class);
            return;
        }
        if self.stop.is_some() {
            self.pending(work);
            return;
        }
        let retry = work.retry.as_mut().expect("recorded above");
        let mut delay = if class == ErrorClass::Transient {
            0.0
        } else {
            let policy = &self.config.retry;
            let (seed, index) = (self.config.seed, work.index);
            retry.backoff.get_or_insert_with(|| Backoff::new(policy, seed, index)).next_delay(policy)
        };
        if let Some(after) = retry_after {
            let after = self.config.retry.capped_retry_after(after);
            if after > delay {
                delay = after;
            }
        }
        if let Some(last) = retry.history.last_mut() {
            last.delay = Some(delay);
        }
        work.attempt += 1;
        if delay <= 0.0 {
            self.ready.push_back(work);
        } else {
            let due = self.clock.now() + delay;
            self.seq += 1;
            self.parked.push(Parked { due, seq: self.seq, work });
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
            self.release_key(key);
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
        let Some(breaker) = self.breaker.as_mut() else { return };
        let clock = &self.clock;
        let abort = breaker.record(generation, failed, || clock.now());
        self.take_breaker_transitions();
        if abort {
            self.halt(StopReason::BreakerAbort);
        }
    }

    fn take_breaker_transitions(&mut self) {
        if let Some(breaker) = self.breaker.as_mut() {
            if breaker.has_transitions() {
                let started = self.started_at;
                for t in breaker.take_transitions() {
                    self.events.push(Event::Breaker { at: t.at - started, from: t.from, to: t.to });
                }
            }
        }
    }

    fn dead_letter(&mut self, work: Work<T, E>, class: ErrorClass) {
        if let Some(key) = work.key {
            self.release_key(key);
        }
        if self.traceback_budget > 0 {
            self.traceback_budget -= 1;
        }
        self.failed += 1;
        let Work { index, batch, record, retry, .. } = work;
        let attempts = retry.map_or_else(Vec::new, |r| r.history);
        let state = self.batch_mut(batch);
        state.failed += 1;
        state.dead.push(Dead { index, batch, record, class, attempts });
        self.finish(batch);
        self.check_budget();
    }

    fn check_budget(&mut self) {
        if self.stop.is_some() {
            return;
        }
        let exceeded = match self.config.max_failures {
            None => false,
            Some(Budget::Count(limit)) => self.failed > limit,
            Some(Budget::Rate(rate)) => {
                let finished = self.succeeded + self.failed;
                finished >= MIN_RATE_SAMPLE && self.failed as f64 / finished as f64 > rate
            }
        };
        if exceeded {
            self.halt(StopReason::MaxFailures);
        }
    }

    #[inline]
    fn batch_mut(&mut self, batch: u64) -> &mut BatchState<T, E> {
        let slot = (batch - self.first_batch) as usize;
        self.batches[slot].as_mut().expect("a record's batch stays open until the record is final")
    }

    #[inline]
    fn finish(&mut self, batch: u64) {
        let state = self.batch_mut(batch);
        state.remaining -= 1;
        if state.remaining == 0 {
            self.close_batch(batch);
        }
    }

    fn close_batch(&mut self, batch: u64) {
        let slot = (batch - self.first_batch) as usize;
        let state = self.batches[slot].take().expect("open batch");
        while matches!(self.batches.front(), Some(None)) {
            self.batches.pop_front();
            self.first_batch += 1;
        }
        self.batches_completed += 1;
        let duration = self.clock.now() - state.started;
        self.events.push(Event::Batch(BatchDone {
            index: batch,
            size: state.size,
            succeeded: state.succeeded,
            failed: state.failed,
            retries: state.retries,
            duration,
            pending: 0,
            dead: state.dead,
        }));
    }

    /// End of run: report every unfinished batch with its pending count, release every queued
    /// record, and return how many records that were read are pending.
    pub fn close(&mut self) -> u64 {
        let now = self.clock.now();
        let mut unfinished = 0;
        let first = self.first_batch;
        for (offset, slot) in std::mem::take(&mut self.batches).into_iter().enumerate() {
            if let Some(state) = slot {
                unfinished += state.remaining as u64;
                self.events.push(Event::Batch(BatchDone {
                    index: first + offset as u64,
                    size: state.size,
                    succeeded: state.succeeded,
                    failed: state.failed,
                    retries: state.retries,
                    duration: now - state.started,
                    pending: state.remaining,
                    dead: state.dead,
                }));
            }
        }
        self.first_batch = self.next_batch;
        while let Some(work) = self.pop_fresh() {
            self.released.push(work);
        }
        self.released.extend(self.ready.drain(..));
        self.released.extend(self.unblocked.drain(..));
        for (_, waiting) in std::mem::take(&mut self.active_keys) {
            self.released.extend(waiting);
        }
        self.fresh_keys.clear();
        self.released.extend(std::mem::take(&mut self.parked).into_iter().map(|p| p.work));
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
        self.fresh.iter().try_for_each(&mut record)?;
        let works = self
            .ready
            .iter()
            .chain(&self.unblocked)
            .chain(self.active_keys.values().flatten())
            .chain(self.parked.iter().map(|p| &p.work))
            .chain(&self.released);
        for work in works {
            work.visit(&mut record, &mut error)?;
        }
        self.key_errors.values().try_for_each(&mut error)?;
        let dead_in_batches = self.batches.iter().flatten().flat_map(|b| &b.dead);
        let dead_in_events = self.events.iter().flat_map(|event| match event {
            Event::Batch(b) => b.dead.as_slice(),
            Event::Breaker { .. } => &[],
        });
        for dead in dead_in_batches.chain(dead_in_events) {
            record(&dead.record)?;
            dead.attempts.iter().try_for_each(|a| error(&a.error))?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ reading state

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn take_events(&mut self) -> Vec<Event<T, E>> {
        std::mem::take(&mut self.events)
    }

    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    /// Records (with their error history) the scheduler let go of: pending ones.
    pub fn take_released(&mut self) -> Vec<Work<T, E>> {
        std::mem::take(&mut self.released)
    }

    pub fn counters(&self) -> Counters {
        Counters {
            succeeded: self.succeeded,
            failed: self.failed,
            retrying: self.ready.len() + self.parked.len(),
            in_flight: self.in_flight,
            queued: self.fresh.len()
                + self.unblocked.len()
                + self.active_keys.values().map(VecDeque::len).sum::<usize>(),
            batches_completed: self.batches_completed,
            current_batch: self.current_batch,
            breaker_state: self.breaker.as_ref().map_or(BreakerState::Closed, Breaker::state),
            records_read: self.next_index,
        }
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    pub fn retries(&self) -> u64 {
        self.retries
    }

    pub fn records_read(&self) -> u64 {
        self.next_index
    }

    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn breaker_trips(&self) -> u64 {
        self.breaker.as_ref().map_or(0, Breaker::trips)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use super::*;
    use crate::backoff::Jitter;

    /// A virtual clock: tests move time by hand, so backoff and breaker tests take no time.
    #[derive(Default)]
    struct Manual(Cell<f64>);

    impl Clock for &Manual {
        fn now(&self) -> f64 {
            self.0.get()
        }
    }

    type Sched<'c> = Scheduler<u32, &'static str, &'c Manual>;

    fn config(max_attempts: u32, base_delay: f64) -> Config {
        Config {
            batch_size: 4,
            concurrency: 1,
            retry: RetryPolicy::new(max_attempts, base_delay, 2.0, 60.0, Jitter::None).unwrap(),
            breaker: None,
            max_failures: None,
            seed: 7,
            traceback_limit: 100,
            progress_interval: 0.1,
            rate_limit: None,
            delay_between_batches: 0.0,
        }
    }

    /// What a failure plan says about one attempt of one record.
    #[derive(Clone, Copy)]
    enum Plan {
        Ok,
        Fail(ErrorClass),
    }

    struct Outcome {
        succeeded: Vec<u32>,
        dead: Vec<(u64, ErrorClass, usize)>,
        batches: Vec<(u64, usize, usize, usize)>,
        stop: Option<StopReason>,
        pending: u64,
        calls: Vec<(u32, u32)>,
    }

    /// Drive a scheduler at concurrency 1 over `n` records; `plan(record, attempt)` decides.
    fn drive(config: Config, n: u32, clock: &Manual, plan: impl Fn(u32, u32) -> Plan) -> Outcome {
        drive_with(config, n, clock, plan, false)
    }

    /// As [`drive`], optionally through the [`Scheduler::stream`] fast path.
    fn drive_with(config: Config, n: u32, clock: &Manual, plan: impl Fn(u32, u32) -> Plan, fast: bool) -> Outcome {
        let batch_size = config.batch_size;
        let mut s: Sched<'_> = Scheduler::new(config, clock);
        let mut input = 0..n;
        let mut out =
            Outcome { succeeded: vec![], dead: vec![], batches: vec![], stop: None, pending: 0, calls: vec![] };
        loop {
            if fast {
                let calls = &mut out.calls;
                let succeeded = &mut out.succeeded;
                let streamed = s.stream(3, |_, &record| {
                    calls.push((record, 1));
                    match plan(record, 1) {
                        Plan::Ok => {
                            succeeded.push(record);
                            Ok(true)
                        }
                        Plan::Fail(class) => {
                            Err(Failure { class, error: "boom", retry_after: None, wall: 0.0, interrupted: false })
                        }
                    }
                });
                match streamed {
                    Streamed::Paused(0) => {}
                    Streamed::Paused(_) => continue,
                    Streamed::Failed(work, f) => {
                        s.fail(work, f.class, f.error, f.retry_after, f.wall);
                        continue;
                    }
                }
            }
            match s.next_work() {
                Next::Run(work) => {
                    out.calls.push((work.record, work.attempt));
                    match plan(work.record, work.attempt) {
                        Plan::Ok => out.succeeded.push(s.succeed(work).record),
                        Plan::Fail(class) => s.fail(work, class, "boom", None, 0.0),
                    }
                }
                Next::Feed => {
                    let batch: Vec<u32> = input.by_ref().take(batch_size).collect();
                    if !batch.is_empty() {
                        s.add_batch(batch.into_iter());
                    }
                    if s.records_read() == u64::from(n) {
                        s.end_of_input();
                    }
                }
                Next::Wait(Some(until)) => clock.0.set(until),
                Next::Wait(None) => unreachable!("nothing is in flight at concurrency 1"),
                Next::Done => break,
            }
        }
        out.pending = s.close();
        for event in s.take_events() {
            if let Event::Batch(b) = event {
                out.batches.push((b.index, b.succeeded, b.failed, b.pending));
                out.dead.extend(b.dead.iter().map(|d| (d.index, d.class, d.attempts.len())));
            }
        }
        out.dead.sort_by_key(|d| d.0);
        out.stop = s.stop_reason();
        out
    }

    #[test]
    fn every_record_succeeds_in_order_when_nothing_fails() {
        let clock = Manual::default();
        let out = drive(config(3, 0.0), 10, &clock, |_, _| Plan::Ok);
        assert_eq!(out.succeeded, (0..10).collect::<Vec<_>>());
        assert_eq!(out.batches, vec![(0, 4, 0, 0), (1, 4, 0, 0), (2, 2, 0, 0)]);
    }

    #[test]
    fn transient_failures_retry_at_once_before_new_records() {
        let clock = Manual::default();
        let out = drive(config(3, 5.0), 3, &clock, |r, a| {
            if r == 0 && a == 1 {
                Plan::Fail(ErrorClass::Transient)
            } else {
                Plan::Ok
            }
        });
        assert_eq!(out.calls, vec![(0, 1), (0, 2), (1, 1), (2, 1)]);
        assert_eq!(clock.0.get(), 0.0, "a transient retry waits for nothing");
    }

    #[test]
    fn recoverable_retries_are_parked_while_other_records_run() {
        let clock = Manual::default();
        let out = drive(config(3, 5.0), 3, &clock, |r, a| {
            if r == 0 && a == 1 {
                Plan::Fail(ErrorClass::Recoverable)
            } else {
                Plan::Ok
            }
        });
        assert_eq!(out.calls, vec![(0, 1), (1, 1), (2, 1), (0, 2)]);
        assert_eq!(clock.0.get(), 5.0, "the retry ran once its delay was over");
        assert_eq!(out.succeeded, vec![1, 2, 0]);
    }

    #[test]
    fn exhausted_retries_dead_letter_with_the_whole_history() {
        let clock = Manual::default();
        let out = drive(
            config(3, 1.0),
            2,
            &clock,
            |r, _| {
                if r == 1 {
                    Plan::Fail(ErrorClass::Recoverable)
                } else {
                    Plan::Ok
                }
            },
        );
        assert_eq!(out.dead, vec![(1, ErrorClass::Recoverable, 3)]);
        assert_eq!(clock.0.get(), 3.0, "waited 1 s then 2 s");
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let clock = Manual::default();
        let out =
            drive(config(5, 0.0), 2, &clock, |r, _| if r == 0 { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok });
        assert_eq!(out.calls, vec![(0, 1), (1, 1)]);
        assert_eq!(out.dead, vec![(0, ErrorClass::Permanent, 1)]);
    }

    #[test]
    fn fatal_error_leaves_unstarted_records_pending() {
        let clock = Manual::default();
        let out =
            drive(config(3, 0.0), 10, &clock, |r, _| if r == 5 { Plan::Fail(ErrorClass::Fatal) } else { Plan::Ok });
        assert_eq!(out.stop, Some(StopReason::Fatal));
        assert_eq!(out.succeeded.len(), 5);
        assert_eq!(out.dead, vec![(5, ErrorClass::Fatal, 1)]);
        assert_eq!(out.pending, 2, "records 6 and 7 of the open batch");
        assert_eq!(out.batches.last(), Some(&(1, 1, 1, 2)));
    }

    #[test]
    fn the_error_budget_stops_the_run_past_its_count() {
        let clock = Manual::default();
        let mut c = config(1, 0.0);
        c.max_failures = Some(Budget::Count(2));
        let out = drive(c, 20, &clock, |r, _| if r % 2 == 0 { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok });
        assert_eq!(out.stop, Some(StopReason::MaxFailures));
        assert_eq!(out.dead.len(), 3);
    }

    #[test]
    fn a_rate_budget_waits_for_a_sample() {
        let clock = Manual::default();
        let mut c = config(1, 0.0);
        c.max_failures = Some(Budget::Rate(0.5));
        let out =
            drive(
                c,
                30,
                &clock,
                |r, _| if !(2..20).contains(&r) { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok },
            );
        assert_eq!(out.stop, None, "2 of the first 10 is under 50%, 12 of 30 too");
    }

    #[test]
    fn the_breaker_pauses_and_nothing_fails_because_it_is_open() {
        let clock = Manual::default();
        let mut c = config(10, 0.0);
        c.breaker = Some(BreakerPolicy::new(0.5, 4, 4, 30.0, 1, None, vec![ErrorClass::Recoverable]).unwrap());
        // The dependency is down for the first 4 calls.
        let calls = Cell::new(0);
        let out = drive(c, 6, &clock, |_, _| {
            calls.set(calls.get() + 1);
            if calls.get() <= 4 {
                Plan::Fail(ErrorClass::Recoverable)
            } else {
                Plan::Ok
            }
        });
        assert_eq!(out.succeeded.len(), 6);
        assert!(out.dead.is_empty());
        assert_eq!(clock.0.get(), 30.0, "the run waited out open_duration");
    }

    #[test]
    fn the_breaker_abort_rate_stops_the_run() {
        let clock = Manual::default();
        let mut c = config(1, 0.0);
        c.breaker = Some(BreakerPolicy::new(0.9, 4, 4, 30.0, 1, Some(0.5), vec![ErrorClass::Permanent]).unwrap());
        let out = drive(c, 12, &clock, |r, _| if r % 2 == 0 { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok });
        assert_eq!(out.stop, Some(StopReason::BreakerAbort));
        // The 4th call completes the sample at a 50% failure rate, but it is a success and a
        // success never aborts: the 5th call (a failure) does, and nothing after it starts.
        assert_eq!(out.calls.len(), 5);
        assert_eq!(out.succeeded.len() + out.dead.len(), 5);
    }

    #[test]
    fn the_fast_path_reaches_exactly_the_outcomes_of_the_slow_path() {
        let classes = [ErrorClass::Transient, ErrorClass::Recoverable, ErrorClass::Permanent, ErrorClass::Fatal];
        for pattern in 0u32..512 {
            let mut c = config(3, 0.0);
            c.breaker = Some(BreakerPolicy::new(0.5, 4, 2, 1.0, 1, Some(0.9), vec![ErrorClass::Recoverable]).unwrap());
            c.max_failures = Some(Budget::Count(3));
            let plan = |r: u32, a: u32| {
                if (pattern >> (r % 9)) & 1 == 1 && a < 3 {
                    Plan::Fail(classes[((pattern >> (r % 5)) & 0b11) as usize])
                } else {
                    Plan::Ok
                }
            };
            let (slow_clock, fast_clock) = (Manual::default(), Manual::default());
            let slow = drive_with(c.clone(), 11, &slow_clock, plan, false);
            let fast = drive_with(c, 11, &fast_clock, plan, true);
            assert_eq!(slow.calls, fast.calls, "pattern {pattern}");
            assert_eq!(slow.succeeded, fast.succeeded, "pattern {pattern}");
            assert_eq!(slow.dead, fast.dead, "pattern {pattern}");
            assert_eq!(slow.batches, fast.batches, "pattern {pattern}");
            assert_eq!((slow.stop, slow.pending), (fast.stop, fast.pending), "pattern {pattern}");
        }
    }

    #[test]
    fn the_stream_pauses_after_a_success_when_the_driver_asks() {
        let clock = Manual::default();
        let mut s: Sched<'_> = Scheduler::new(config(1, 0.0), &clock);
        s.add_batch(0..4u32);
        s.end_of_input();
        let mut ran = Vec::new();
        assert!(matches!(
            s.stream(100, |_, &r| {
                ran.push(r);
                Ok(r != 1)
            }),
            Streamed::Paused(2)
        ));
        assert_eq!(s.counters().succeeded, 2, "both records are accounted when the stream pauses");
        assert!(matches!(
            s.stream(100, |_, &r| {
                ran.push(r);
                Ok(true)
            }),
            Streamed::Paused(2)
        ));
        assert_eq!(ran, vec![0, 1, 2, 3]);
        assert!(matches!(s.next_work(), Next::Done));
    }

    #[test]
    fn an_attempt_lost_with_its_worker_stops_the_run_and_stays_pending() {
        let clock = Manual::default();
        let mut s: Sched<'_> = Scheduler::new(config(1, 0.0), &clock);
        s.add_batch(0..4u32);
        s.end_of_input();
        let Next::Run(work) = s.next_work() else { panic!("a record is ready") };
        drop(work); // its worker died with it
        s.lose_in_flight();
        assert_eq!(s.stop_reason(), Some(StopReason::Interrupt));
        assert!(matches!(s.next_work(), Next::Done), "nothing waits for the lost attempt");
        assert_eq!(s.close(), 4, "the lost record and the unstarted ones are pending");
    }

    #[test]
    fn visit_sees_every_record_and_error_the_scheduler_holds() {
        let clock = Manual::default();
        let mut s: Sched<'_> = Scheduler::new(config(3, 5.0), &clock);
        s.add_batch(0..4u32);
        let Next::Run(parked) = s.next_work() else { panic!("a record is ready") };
        s.fail(parked, ErrorClass::Recoverable, "parked", None, 0.0);
        let Next::Run(dead) = s.next_work() else { panic!("a record is ready") };
        s.fail(dead, ErrorClass::Permanent, "dead", None, 0.0);
        let (mut records, mut errors) = (Vec::new(), Vec::new());
        s.visit(
            |r| {
                records.push(*r);
                Ok::<(), ()>(())
            },
            |e| {
                errors.push(*e);
                Ok(())
            },
        )
        .unwrap();
        records.sort_unstable();
        errors.sort_unstable();
        assert_eq!(records, vec![0, 1, 2, 3], "queued, parked and dead-lettered records");
        assert_eq!(errors, vec!["dead", "parked"]);
    }

    #[test]
    fn conservation_holds_for_every_plan() {
        // A small exhaustive-ish sweep: per-record failure patterns from a fixed table.
        let classes = [ErrorClass::Transient, ErrorClass::Recoverable, ErrorClass::Permanent, ErrorClass::Fatal];
        for pattern in 0u32..256 {
            let clock = Manual::default();
            let n = 9;
            let out = drive(config(3, 0.5), n, &clock, |r, a| {
                let bits = (pattern >> ((r + a) % 8)) & 0b11;
                if (pattern >> (r % 8)) & 1 == 1 && a < 3 {
                    Plan::Fail(classes[bits as usize])
                } else {
                    Plan::Ok
                }
            });
            let finished = out.succeeded.len() as u64 + out.dead.len() as u64;
            let read = out.batches.iter().map(|b| (b.1 + b.2 + b.3) as u64).sum::<u64>();
            assert_eq!(finished + out.pending, read, "pattern {pattern}");
            let mut seen = HashMap::new();
            for r in out.succeeded.iter().copied().map(u64::from).chain(out.dead.iter().map(|d| d.0)) {
                *seen.entry(r).or_insert(0) += 1;
            }
            assert!(seen.values().all(|&c| c == 1), "pattern {pattern}: a record finished twice");
        }
    }
}
