//! The open batches: their accounting until every record of one is final, then its event.

use std::collections::VecDeque;

use super::Attempt;
use crate::classify::ErrorClass;

/// A record that failed for good.
#[derive(Debug)]
pub struct Dead<T, E> {
    pub index: u64,
    pub batch: u64,
    pub record: T,
    pub class: ErrorClass,
    pub attempts: Vec<Attempt<E>>,
    /// Dead-lettered because the retry budget refused its retry (`over_budget="dead_letter"`).
    pub over_budget: bool,
}

/// A batch's end: all its records are final, or the run stopped (`pending` are not).
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
    /// The values of the batch's successes, `(record index, value)` in record order, when the
    /// driver hands values over per batch (`results=` other than "keep"): the scheduler never
    /// sees values, so it leaves this None and the driver fills it in before delivery.
    pub values: Option<Vec<(u64, T)>>,
}

/// An open batch's counts at a progress snapshot: what a dashboard draws as one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchCounts {
    pub index: u64,
    pub size: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Records waiting for a retry (backing off or due).
    pub retrying: usize,
    /// Records started and not final nor waiting for a retry (a record held behind another of
    /// its key counts here: it left the fresh queue).
    pub in_flight: usize,
    /// Records never started.
    pub queued: usize,
    /// Retries started so far.
    pub retries: usize,
    /// When the batch was read, in seconds since the run started.
    pub started: f64,
    pub elapsed: f64,
}

/// The batches read whose records are not all final yet, in batch order.
pub(super) struct Batches<T, E> {
    /// Open batches, indexed by `batch - first`; finished and skipped ones are None.
    open: VecDeque<Option<Open<T, E>>>,
    first: u64,
    completed: u64,
}

struct Open<T, E> {
    /// The index of the batch's first record.
    first: u64,
    size: usize,
    remaining: usize,
    succeeded: usize,
    failed: usize,
    retries: usize,
    /// Records in the retry queue: kept here (on the failure path only) so a snapshot need
    /// not walk the queue.
    waiting: usize,
    started: f64,
    dead: Vec<Dead<T, E>>,
}

impl<T, E> Open<T, E> {
    fn into_done(self, index: u64, duration: f64, pending: usize) -> BatchDone<T, E> {
        BatchDone {
            index,
            size: self.size,
            succeeded: self.succeeded,
            failed: self.failed,
            retries: self.retries,
            duration,
            pending,
            dead: self.dead,
            values: None,
        }
    }
}

impl<T, E> Batches<T, E> {
    pub(super) fn new() -> Self {
        Self { open: VecDeque::new(), first: 0, completed: 0 }
    }

    /// Batch `batch` of `size` records, the first of which has index `first`, was read at
    /// `now` (batches skipped before it stay closed).
    pub(super) fn open(&mut self, batch: u64, first: u64, size: usize, now: f64) {
        if self.open.is_empty() {
            self.first = batch;
        }
        while self.first + (self.open.len() as u64) < batch {
            self.open.push_back(None); // a skipped batch's slot
        }
        self.open.push_back(Some(Open {
            first,
            size,
            remaining: size,
            succeeded: 0,
            failed: 0,
            retries: 0,
            waiting: 0,
            started: now,
            dead: Vec::new(),
        }));
    }

    /// A record of `batch` failed and waits for a retry.
    pub(super) fn retry_scheduled(&mut self, batch: u64) {
        self.get_mut(batch).waiting += 1;
    }

    /// A retry of a record of `batch` starts.
    pub(super) fn retried(&mut self, batch: u64) {
        let state = self.get_mut(batch);
        state.retries += 1;
        state.waiting -= 1;
    }

    /// Every open batch's counts, in batch order, at `now` for a run started at `run_started`;
    /// the records before `cursor` (the first record never started) have started. Built only
    /// when a progress snapshot is taken, so the per-record paths pay nothing for it.
    pub(super) fn counts(&self, cursor: u64, now: f64, run_started: f64) -> Vec<BatchCounts> {
        let first = self.first;
        let open = self.open.iter().enumerate();
        open.filter_map(|(offset, slot)| slot.as_ref().map(|b| (first + offset as u64, b)))
            .map(|(index, b)| {
                let started_records = cursor.saturating_sub(b.first).min(b.size as u64) as usize;
                let queued = b.size - started_records;
                let in_flight = b.remaining.saturating_sub(queued + b.waiting);
                BatchCounts {
                    index,
                    size: b.size,
                    succeeded: b.succeeded,
                    failed: b.failed,
                    retrying: b.waiting,
                    in_flight,
                    queued,
                    retries: b.retries,
                    started: b.started - run_started,
                    elapsed: now - b.started,
                }
            })
            .collect()
    }

    /// `n` records of `batch` succeeded. True when that made the batch complete: then
    /// [`close`](Self::close) it.
    #[inline]
    pub(super) fn succeeded(&mut self, batch: u64, n: usize) -> bool {
        let state = self.get_mut(batch);
        state.succeeded += n;
        state.remaining -= n;
        state.remaining == 0
    }

    /// A record was dead-lettered. True when that made its batch complete: then
    /// [`close`](Self::close) it.
    pub(super) fn dead_lettered(&mut self, dead: Dead<T, E>) -> bool {
        let state = self.get_mut(dead.batch);
        state.failed += 1;
        state.dead.push(dead);
        state.remaining -= 1;
        state.remaining == 0
    }

    /// The complete batch `batch`'s event.
    pub(super) fn close(&mut self, batch: u64, now: f64) -> BatchDone<T, E> {
        let slot = (batch - self.first) as usize;
        let state = self.open[slot].take().expect("open batch");
        while matches!(self.open.front(), Some(None)) {
            self.open.pop_front();
            self.first += 1;
        }
        self.completed += 1;
        let duration = now - state.started;
        state.into_done(batch, duration, 0)
    }

    /// End of run: the event of every batch still open, with its unfinished records pending.
    pub(super) fn close_all(&mut self, now: f64) -> impl Iterator<Item = BatchDone<T, E>> {
        let first = self.first;
        std::mem::take(&mut self.open).into_iter().enumerate().filter_map(move |(offset, slot)| {
            slot.map(|state| {
                let (duration, pending) = (now - state.started, state.remaining);
                state.into_done(first + offset as u64, duration, pending)
            })
        })
    }

    pub(super) fn completed(&self) -> u64 {
        self.completed
    }

    /// The records dead-lettered in open batches.
    pub(super) fn dead(&self) -> impl Iterator<Item = &Dead<T, E>> {
        self.open.iter().flatten().flat_map(|b| &b.dead)
    }

    #[inline]
    fn get_mut(&mut self, batch: u64) -> &mut Open<T, E> {
        let slot = (batch - self.first) as usize;
        self.open[slot].as_mut().expect("a record's batch stays open until the record is final")
    }
}
