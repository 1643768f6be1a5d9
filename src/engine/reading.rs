//! Reading the scheduler's state (counters, events, what it let go of) and the steering calls
//! a driver makes besides outcomes: split from `mod.rs`, which keeps the decisions.

use super::{BatchCounts, Clock, Counters, Event, Scheduler, Steering, StopReason, Work};

impl<T, E, C: Clock> Scheduler<T, E, C> {
    /// Does concurrency adapt (`Adaptive`)? Then a driver reports each failed call's overload
    /// signal (HTTP 429/503, a timeout, a Retry-After) with [`overloaded`](Self::overloaded)
    /// before [`fail`](Self::fail).
    #[inline]
    pub fn adapts(&self) -> bool {
        self.gates.adapts()
    }

    /// The call of `work` ended with an overload signal: the concurrency limit goes down,
    /// unless a signal from the same round of calls already took it down.
    pub fn overloaded(&mut self, work: &Work<T, E>) {
        self.gates.call_overloaded(work.call);
    }

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
            retrying: self.retries.len(),
            in_flight: self.in_flight,
            queued: self.fresh.len() + self.keys.queued(),
            batches_completed: self.batches.completed(),
            current_batch: self.current_batch,
            breaker_state: self.gates.breaker_state(),
            records_read: self.fresh.records_read(),
            concurrency_limit: if self.gates.adapts() { Some(self.gates.concurrency_limit()) } else { None },
        }
    }

    /// The open batches' counts, in batch order: taken only for a progress snapshot.
    pub fn open_batches(&self) -> Vec<BatchCounts> {
        self.batches.counts(self.fresh.cursor(), self.clock.now(), self.started_at)
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    pub fn retries(&self) -> u64 {
        self.retries.started()
    }

    pub fn records_read(&self) -> u64 {
        self.fresh.records_read()
    }

    pub fn exhausted(&self) -> bool {
        self.fresh.exhausted()
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn breaker_trips(&self) -> u64 {
        self.gates.breaker_trips()
    }

    /// Seconds past which a call is slow (`CircuitBreaker(slow_call_s=...)`): only then do the
    /// drivers time calls, and report a slow one with [`slow_call`](Self::slow_call).
    pub fn slow_call_s(&self) -> Option<f64> {
        self.gates.slow_call_s()
    }

    /// The call whose outcome the driver reports next (`succeed` or `fail`) was slow.
    pub fn slow_call(&mut self) {
        self.gates.slow_call();
    }

    /// The retry budget's and the adaptive limit's state, for progress and the report.
    pub fn steering(&self) -> Steering {
        self.gates.steering()
    }
}
