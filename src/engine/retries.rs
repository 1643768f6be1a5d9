//! The retry queue: failed records that will be tried again, due at once or parked on a timer.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::{Clock, Config, Work};
use crate::backoff::{Backoff, RetryPolicy};
use crate::classify::ErrorClass;

/// The retry policy of index `policy` (a [`crate::classify::Verdict`]'s): 0 is the run's
/// default (`config.retry`), the others `RetryPolicies.by_error`'s in order.
pub(super) fn policy_of(config: &Config, policy: u16) -> &RetryPolicy {
    match policy {
        0 => &config.retry,
        n => config.policies.get(usize::from(n) - 1).unwrap_or(&config.retry),
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

/// The attempts a record may have under the retry policy of index `policy`.
pub(super) fn max_attempts(config: &Config, policy: u16) -> u32 {
    policy_of(config, policy).max_attempts()
}

/// What a record carries once it has failed: its history and its backoff stream.
#[derive(Debug)]
pub(super) struct RetryState<E> {
    pub(super) history: Vec<Attempt<E>>,
    backoff: Option<Backoff>,
    /// When the first try failed (the scheduler's clock), read only when a policy has a
    /// `max_elapsed`, which counts from here.
    first_failed: f64,
}

impl<T, E> Work<T, E> {
    /// Add this attempt's failure to the record's history.
    pub(super) fn push_failure(&mut self, error: E, wall: f64) {
        let retry = self
            .retry
            .get_or_insert_with(|| Box::new(RetryState { history: Vec::new(), backoff: None, first_failed: 0.0 }));
        retry.history.push(Attempt { attempt: self.attempt, wall, error, delay: None });
    }

    /// The error of the record's last failed try.
    pub(super) fn last_error(&self) -> &E {
        &self.retry.as_ref().and_then(|r| r.history.last()).expect("a failed record has a history").error
    }
}

/// Records waiting for their next try: the due ones in order, the others parked until due.
pub(super) struct Retries<T, E> {
    ready: VecDeque<Work<T, E>>,
    parked: BinaryHeap<Parked<T, E>>,
    /// Parking order, so that records due at the same time leave in the order they came.
    seq: u64,
    /// Retries started so far.
    started: u64,
    /// Some policy has a `max_elapsed`: a record's first failure is timed.
    timed: bool,
}

impl<T, E> Retries<T, E> {
    pub(super) fn new(config: &Config) -> Self {
        let timed = config.retry.max_elapsed().is_some() || config.policies.iter().any(|p| p.max_elapsed().is_some());
        Self { ready: VecDeque::new(), parked: BinaryHeap::new(), seq: 0, started: 0, timed }
    }

    /// The wait before the next try of `work`, which just failed with an error of `class`
    /// (retryable, attempts left) under the policy of index `policy`: none for a transient
    /// error, else its backoff delay, or the wait the error asked for (`retry_after`) when that
    /// is longer. Err: the retry would start past the policy's `max_elapsed`, so it must not be
    /// scheduled; the record is dead-lettered, its last attempt keeping this refused delay (the
    /// only dead record whose last attempt has one: the recorder names the reason from it).
    pub(super) fn delay_for(
        &self,
        work: &mut Work<T, E>,
        class: ErrorClass,
        policy: u16,
        retry_after: Option<f64>,
        config: &Config,
        clock: &impl Clock,
    ) -> Result<f64, f64> {
        let policy = policy_of(config, policy);
        let index = work.index;
        let retry = work.retry.as_mut().expect("a failed record has a history");
        let now = if self.timed { clock.now() } else { 0.0 };
        if self.timed && retry.history.len() == 1 {
            retry.first_failed = now;
        }
        let mut delay = if class == ErrorClass::Transient {
            0.0
        } else {
            retry.backoff.get_or_insert_with(|| Backoff::new(policy, config.seed, index)).next_delay(policy)
        };
        if let Some(after) = retry_after {
            let after = policy.capped_retry_after(after);
            if after > delay {
                delay = after;
            }
        }
        if !self.timed || policy.within_elapsed(retry.first_failed, now + delay) {
            return Ok(delay);
        }
        if let Some(last) = retry.history.last_mut() {
            last.delay = Some(delay);
        }
        Err(delay)
    }

    /// Queue the next try of `work` after `delay` ([`delay_for`](Self::delay_for)), recorded
    /// as its last attempt's delay.
    pub(super) fn schedule(&mut self, mut work: Work<T, E>, delay: f64, clock: &impl Clock) {
        if let Some(last) = work.retry.as_mut().and_then(|r| r.history.last_mut()) {
            last.delay = Some(delay);
        }
        work.attempt += 1;
        if delay <= 0.0 {
            self.ready.push_back(work);
        } else {
            let due = clock.now() + delay;
            self.seq += 1;
            self.parked.push(Parked { due, seq: self.seq, work });
        }
    }

    /// Move the parked records that are due to the ready queue (reads the clock only when a
    /// record is parked).
    #[inline]
    pub(super) fn release_due(&mut self, clock: &impl Clock) {
        if let Some(top) = self.parked.peek() {
            let now = clock.now();
            if top.due <= now {
                while self.parked.peek().is_some_and(|p| p.due <= now) {
                    let parked = self.parked.pop().expect("peeked");
                    self.ready.push_back(parked.work);
                }
            }
        }
    }

    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Start the next due retry.
    pub(super) fn pop_ready(&mut self) -> Option<Work<T, E>> {
        let work = self.ready.pop_front()?;
        self.started += 1;
        Some(work)
    }

    /// When the earliest parked record is due.
    pub(super) fn next_due(&self) -> Option<f64> {
        self.parked.peek().map(|p| p.due)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.parked.is_empty()
    }

    /// Records waiting for a retry, due or not.
    pub(super) fn len(&self) -> usize {
        self.ready.len() + self.parked.len()
    }

    pub(super) fn started(&self) -> u64 {
        self.started
    }

    /// Every waiting record, as pending work (end of run).
    pub(super) fn drain_into(&mut self, out: &mut Vec<Work<T, E>>) {
        out.extend(self.ready.drain(..));
        out.extend(std::mem::take(&mut self.parked).into_iter().map(|p| p.work));
    }

    pub(super) fn works(&self) -> impl Iterator<Item = &Work<T, E>> {
        self.ready.iter().chain(self.parked.iter().map(|p| &p.work))
    }
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
