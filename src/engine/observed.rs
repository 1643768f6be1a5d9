//! Retry events for `on_retry` hooks: collected only when the run asks for them
//! (`Config::collect_retries`), and handed to the driver with the next batch end or breaker
//! transition, so a run that retries does not meet Python more often than one that does not.

use super::Event;
use crate::classify::ErrorClass;

/// A second handle on a value the scheduler keeps (a record, an error), for a retry event:
/// the bindings share a Python object (a new reference), a test copies its value.
pub trait Share {
    #[must_use]
    fn share(&self) -> Self;
}

/// One record's failed try that will be tried again, as the run's `on_retry` hook sees it.
#[derive(Debug)]
pub struct Retried<T, E> {
    pub index: u64,
    pub batch: u64,
    /// The try that failed (1-based).
    pub attempt: u32,
    pub class: ErrorClass,
    /// The wait before the next try.
    pub delay: f64,
    pub record: T,
    pub error: E,
}

/// The retry events not handed over yet; empty and never touched unless `enabled`.
pub(super) struct RetryEvents<T, E> {
    pub(super) enabled: bool,
    waiting: Vec<Event<T, E>>,
}

impl<T, E> RetryEvents<T, E> {
    pub(super) fn new(enabled: bool) -> Self {
        Self { enabled, waiting: Vec::new() }
    }

    pub(super) fn push(&mut self, retried: Retried<T, E>) {
        self.waiting.push(Event::Retry(retried));
    }

    /// Put the waiting retry events into `events` at `at`, before the events pushed after it
    /// (a batch end, breaker transitions): they happened first.
    pub(super) fn flush_into(&mut self, events: &mut Vec<Event<T, E>>, at: usize) {
        if !self.waiting.is_empty() {
            events.splice(at..at, self.waiting.drain(..));
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Retried<T, E>> {
        self.waiting.iter().filter_map(|event| match event {
            Event::Retry(r) => Some(r),
            _ => None,
        })
    }
}
