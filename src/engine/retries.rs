//! The retry queue: failed records that will be tried again, due at once or parked on a timer.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::{Clock, Config, Work};
use crate::backoff::Backoff;
use crate::classify::ErrorClass;

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

/// What a record carries once it has failed: its history and its backoff stream.
#[derive(Debug)]
pub(super) struct RetryState<E> {
    pub(super) history: Vec<Attempt<E>>,
    backoff: Option<Backoff>,
}

impl<T, E> Work<T, E> {
    /// Add this attempt's failure to the record's history.
    pub(super) fn push_failure(&mut self, error: E, wall: f64) {
        let retry = self.retry.get_or_insert_with(|| Box::new(RetryState { history: Vec::new(), backoff: None }));
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
}

impl<T, E> Retries<T, E> {
    pub(super) fn new() -> Self {
        Self { ready: VecDeque::new(), parked: BinaryHeap::new(), seq: 0, started: 0 }
    }

    /// Queue the next try of `work`, which just failed with an error of `class` (retryable,
    /// attempts left): transient errors retry at once, the others after their backoff delay,
    /// or after the wait the error asked for (`retry_after`) when that is longer. Returns the wait.
    pub(super) fn schedule(
        &mut self,
        mut work: Work<T, E>,
        class: ErrorClass,
        retry_after: Option<f64>,
        config: &Config,
        clock: &impl Clock,
    ) -> f64 {
        let policy = &config.retry;
        let index = work.index;
        let retry = work.retry.as_mut().expect("a failed record has a history");
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
        if let Some(last) = retry.history.last_mut() {
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
        delay
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
