//! The gates an attempt passes before it starts (circuit breaker, adaptive concurrency limit,
//! retry budget, rate limit, delay between batches), and the error budget that stops the run.

use super::adaptive::Adaptive;
use super::budget::RetryBudget;
use super::{Budget, Clock, Config, Event};
use crate::breaker::{Breaker, State as BreakerState};
use crate::classify::ErrorClass;
use crate::ratelimit::TokenBucket;

/// A rate error budget is judged only once this many records are final.
pub const MIN_RATE_SAMPLE: u64 = 10;

/// What may hold an attempt back, or stop the run, besides the records themselves.
pub(super) struct Gates {
    breaker: Option<Breaker>,
    rate: Option<TokenBucket>,
    /// Seconds from the previous batch's last new record starting to the next batch's first.
    delay_between_batches: f64,
    last_fresh_batch: Option<u64>,
    last_fresh_at: f64,
    budget: Option<Budget>,
    /// The call whose outcome comes next was slower than the breaker's `slow_call_s`.
    slow_pending: bool,
    /// The retry budget and the adaptive concurrency limit: boxed, so that a run with
    /// neither carries one pointer and asks one question (`steers`).
    steering: Option<Box<Steer>>,
}

/// What steers the run's load on its dependency: the retry budget, the adaptive limit.
struct Steer {
    retries: Option<RetryBudget>,
    adaptive: Option<Adaptive>,
    /// Ready retries are held back by the budget (wait mode): each one that starts while
    /// they are has waited for it.
    holding: bool,
}

/// The retry budget's and the adaptive limit's state, for progress and the report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Steering {
    /// The adaptive limit now, its highest and its lowest (None: a fixed concurrency).
    pub limit: Option<(usize, usize, usize)>,
    /// Retries that waited for the retry budget, and records it dead-lettered.
    pub budget_waited: u64,
    pub budget_dead_lettered: u64,
}

impl Gates {
    pub(super) fn new(config: &Config, now: f64) -> Self {
        Self {
            breaker: config.breaker.clone().map(Breaker::new),
            rate: config.rate_limit.clone().map(|limit| TokenBucket::new(limit, now)),
            delay_between_batches: config.delay_between_batches,
            last_fresh_batch: None,
            last_fresh_at: now,
            budget: config.max_failures,
            slow_pending: false,
            steering: (config.retry_budget.is_some() || config.adaptive.is_some()).then(|| {
                Box::new(Steer {
                    retries: config.retry_budget.clone().map(|policy| RetryBudget::new(policy, now)),
                    adaptive: config.adaptive.clone().map(Adaptive::new),
                    holding: false,
                })
            }),
        }
    }

    // ------------------------------------------------------------------ steering

    /// Is a retry budget or an adaptive limit set? Nothing below is asked otherwise.
    #[inline]
    pub(super) fn steers(&self) -> bool {
        self.steering.is_some()
    }

    pub(super) fn adapts(&self) -> bool {
        self.steering.as_ref().is_some_and(|s| s.adaptive.is_some())
    }

    /// Calls that may be in flight (`usize::MAX`: no adaptive limit).
    pub(super) fn concurrency_limit(&self) -> usize {
        self.steering.as_ref().and_then(|s| s.adaptive.as_ref()).map_or(usize::MAX, Adaptive::limit)
    }

    /// May a due retry start now? In wait mode only when the budget allows one; otherwise
    /// the retries stay queued (counted as held) and new records run.
    pub(super) fn pass_budget(&mut self, clock: &impl Clock) -> bool {
        let Some(steer) = self.steering.as_mut() else { return true };
        let Some(budget) = steer.retries.as_mut().filter(|b| b.waits()) else { return true };
        if budget.allows(clock.now()) {
            return true;
        }
        steer.holding = true;
        false
    }

    /// When a retry held by the budget may pass (the window slides).
    pub(super) fn budget_frees_at(&self) -> f64 {
        self.steering.as_ref().and_then(|s| s.retries.as_ref()).map_or(f64::INFINITY, RetryBudget::next_change)
    }

    /// A due retry starts; `more_ready`: others are still due after it.
    pub(super) fn retry_started(&mut self, more_ready: bool, clock: &impl Clock) {
        let Some(steer) = self.steering.as_mut() else { return };
        if let Some(budget) = steer.retries.as_mut().filter(|b| b.waits()) {
            budget.retry_started(clock.now());
            if steer.holding {
                budget.waited += 1;
            }
        }
        steer.holding &= more_ready;
    }

    /// A record failed and would be retried: in dead-letter mode the budget takes the retry
    /// now or refuses it (the record is then dead-lettered). Always true in wait mode.
    pub(super) fn retry_within_budget(&mut self, clock: &impl Clock) -> bool {
        let Some(steer) = self.steering.as_mut() else { return true };
        match steer.retries.as_mut() {
            Some(budget) if !budget.waits() => budget.take_or_refuse(clock.now()),
            _ => true,
        }
    }

    /// A call starts (attempt number `attempt`): a first attempt earns retry budget; with an
    /// adaptive limit, returns the call's number.
    pub(super) fn call_started(&mut self, attempt: u32, clock: &impl Clock) -> u64 {
        let Some(steer) = self.steering.as_mut() else { return 0 };
        if attempt == 1 {
            if let Some(budget) = steer.retries.as_mut() {
                budget.first_attempt(clock.now());
            }
        }
        steer.adaptive.as_mut().map_or(0, Adaptive::started)
    }

    /// A call succeeded with `in_flight` calls (itself included) in flight.
    pub(super) fn call_succeeded(&mut self, in_flight: usize) {
        if let Some(adaptive) = self.steering.as_mut().and_then(|s| s.adaptive.as_mut()) {
            adaptive.succeeded(in_flight);
        }
    }

    /// Call number `call` ended with an overload signal.
    pub(super) fn call_overloaded(&mut self, call: u64) {
        if let Some(adaptive) = self.steering.as_mut().and_then(|s| s.adaptive.as_mut()) {
            adaptive.overloaded(call);
        }
    }

    pub(super) fn steering(&self) -> Steering {
        let Some(steer) = self.steering.as_ref() else { return Steering::default() };
        let (waited, dead) = steer.retries.as_ref().map_or((0, 0), |b| (b.waited, b.dead_lettered));
        Steering {
            limit: steer.adaptive.as_ref().map(|a| (a.limit(), a.peak, a.low)),
            budget_waited: waited,
            budget_dead_lettered: dead,
        }
    }

    // ------------------------------------------------------------------ breaker

    pub(super) fn has_breaker(&self) -> bool {
        self.breaker.is_some()
    }

    /// May an attempt start? `Err(until)`: not before `until`, or (None) an outcome arrives.
    /// Passing may move an open breaker to half-open: take its transitions afterwards.
    pub(super) fn pass_breaker(&mut self, clock: &impl Clock) -> Result<(), Option<f64>> {
        match self.breaker.as_mut() {
            Some(breaker) => breaker.gate(|| clock.now()),
            None => Ok(()),
        }
    }

    /// An attempt starts: the breaker generation its outcome belongs to (None: no breaker).
    #[inline]
    pub(super) fn started(&mut self) -> Option<u64> {
        self.breaker.as_mut().map(Breaker::started)
    }

    /// Whether a failure of `class` counts against the breaker (None: no breaker).
    pub(super) fn breaker_counts(&self, class: ErrorClass) -> Option<bool> {
        self.breaker.as_ref().map(|b| b.counts(class))
    }

    /// One attempt of `generation` ended. True when the breaker's abort rate is reached.
    pub(super) fn record(&mut self, generation: u64, failed: bool, clock: &impl Clock) -> bool {
        let Some(breaker) = self.breaker.as_mut() else { return false };
        if breaker.slow_call_s().is_some() {
            let slow = std::mem::take(&mut self.slow_pending);
            return breaker.record_timed(generation, failed, slow, || clock.now());
        }
        breaker.record(generation, failed, || clock.now())
    }

    /// Seconds past which a call is slow, when the breaker counts slow calls.
    pub(super) fn slow_call_s(&self) -> Option<f64> {
        self.breaker.as_ref().and_then(Breaker::slow_call_s)
    }

    /// The outcome reported next is of a call slower than `slow_call_s`.
    pub(super) fn slow_call(&mut self) {
        self.slow_pending = true;
    }

    /// `n` attempts of `generation` succeeded, on the fast path (the breaker is closed and its
    /// window holds no failure, so they cannot move it).
    pub(super) fn record_successes(&mut self, generation: u64, n: usize) {
        if let Some(breaker) = self.breaker.as_mut() {
            breaker.record_successes(generation, n);
        }
    }

    /// The breaker's state changes since the last call, as events (times from `started_at`).
    pub(super) fn take_transitions<T, E>(&mut self, started_at: f64, events: &mut Vec<Event<T, E>>) {
        if let Some(breaker) = self.breaker.as_mut() {
            if breaker.has_transitions() {
                for t in breaker.take_transitions() {
                    events.push(Event::Breaker { at: t.at - started_at, from: t.from, to: t.to });
                }
            }
        }
    }

    pub(super) fn breaker_state(&self) -> BreakerState {
        self.breaker.as_ref().map_or(BreakerState::Closed, Breaker::state)
    }

    pub(super) fn breaker_trips(&self) -> u64 {
        self.breaker.as_ref().map_or(0, Breaker::trips)
    }

    // ------------------------------------------------------------------ rate and delay

    /// Take a start from the rate limit: None when granted, else when one will be there.
    pub(super) fn pass_rate(&mut self, clock: &impl Clock) -> Option<f64> {
        self.rate.as_mut()?.take(clock.now())
    }

    /// When the next new record, of `batch`, may start, if not now: a new batch waits
    /// `delay_between_batches` after the previous batch's last new record started.
    pub(super) fn batch_delay(&self, batch: Option<u64>, clock: &impl Clock) -> Option<f64> {
        if !self.delays_batches() {
            return None;
        }
        let (last, batch) = (self.last_fresh_batch?, batch?);
        let until = self.last_fresh_at + self.delay_between_batches;
        (batch != last && clock.now() < until).then_some(until)
    }

    fn delays_batches(&self) -> bool {
        self.delay_between_batches > 0.0
    }

    /// A new record of `batch` starts.
    pub(super) fn fresh_started(&mut self, batch: u64, clock: &impl Clock) {
        if self.delays_batches() {
            self.last_fresh_batch = Some(batch);
            self.last_fresh_at = clock.now();
        }
    }

    /// May new records run through [`Scheduler::stream`](super::Scheduler::stream), which
    /// passes no gate? Only when no gate could hold one back: no rate limit, no delay between
    /// batches, and a breaker that successes cannot move — closed, with no failure in its
    /// window (otherwise successes go one at a time through `next_work`, exactly as the
    /// reference engine takes them).
    pub(super) fn open_for_streams(&self) -> bool {
        self.rate.is_none()
            && self.steering.is_none()
            && !self.delays_batches()
            && self.breaker.as_ref().is_none_or(|b| {
                b.state() == BreakerState::Closed && b.window_failures() == 0 && b.slow_call_s().is_none()
            })
    }

    // ------------------------------------------------------------------ error budget

    /// Are more records dead-lettered than `max_failures` allows?
    pub(super) fn over_budget(&self, succeeded: u64, failed: u64) -> bool {
        match self.budget {
            None => false,
            Some(Budget::Count(limit)) => failed > limit,
            Some(Budget::Rate(rate)) => {
                let finished = succeeded + failed;
                finished >= MIN_RATE_SAMPLE && failed as f64 / finished as f64 > rate
            }
        }
    }
}

#[cfg(test)]
#[path = "steering_tests.rs"]
mod tests;
